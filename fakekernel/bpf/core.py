"""Running a loaded program — kernel/bpf/core.c (bpf_prog_run / __bpf_prog_run).

`bpf_prog_run` is the one way the simulated kernel executes a program: test runs and
hook points both come through here.  The program's engine (the decoded interpreter form)
and its helper table are built once, on first run.
"""
from __future__ import annotations

from fakekernel.helpers import HELPERS, HelperNotImplemented
from uapi.bpf import FuncId

__all__ = ["bpf_prog_run", "prog_helpers"]


def prog_helpers(prog) -> dict:
    """helper id -> runtime function, as the prog type's get_func_proto allows them."""
    table = prog.helpers
    if table is None:
        get_proto = prog.ops.verifier_ops.get_func_proto
        table = {}
        for fid in FuncId:
            if get_proto(fid, prog) is None:
                continue
            fn = HELPERS.get(int(fid))
            table[int(fid)] = fn if fn is not None else _not_implemented(int(fid))
        prog.helpers = table
    return table


def _not_implemented(func_id: int):
    """A helper the verifier allows but whose runtime is not written: fail loudly when called."""
    def call(env, r1, r2, r3, r4, r5):
        raise HelperNotImplemented(func_id)
    return call


def _engine(prog):
    if prog.engine is None:
        from fakekernel.interp.run import Interpreter
        from uapi.insn import decode_prog
        xl = prog.xlated if prog.xlated is not None else decode_prog(prog.insns)
        prog.engine = Interpreter(xl)
    return prog.engine


def bpf_prog_run(kern, prog, ctx_addr: int, *, ctx=None, skb_data=None, cpu: int = 0) -> int:
    """Run `prog` once with r1 = ctx_addr; returns r0 (u64)."""
    from fakekernel.interp.run import RunEnv
    env = RunEnv(mem=kern.mem, prog=prog, kernel=kern, ctx=ctx)
    env.cpu = cpu
    saved_cpu, kern.cpu = kern.cpu, cpu           # per-CPU map ops read smp_processor_id() here
    try:
        r0 = _engine(prog).run(kern.mem, ctx_addr, helpers=prog_helpers(prog), env=env,
                               skb_data=skb_data)
    finally:
        kern.cpu = saved_cpu
    prog.aux.run_cnt += 1
    return r0
