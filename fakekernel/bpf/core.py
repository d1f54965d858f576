"""Running a loaded program — kernel/bpf/core.c (bpf_prog_run / __bpf_prog_run).

`bpf_prog_run` is the one way the simulated kernel executes a program: test runs and
hook points both come through here.  The program's engine (the decoded interpreter form)
and its helper table are built once, on first run.
"""
from __future__ import annotations

import os

from fakekernel.helpers import HELPERS, HelperNotImplemented
from fakekernel.interp.run import RunEnv
from fakekernel.kfuncs import kfunc_key, kfunc_ret_size, kfunc_runtime
from fakekernel.jit import ENGINE_ENV, compile_prog, engine_tier
from uapi.insn import decode_prog
from uapi.bpf import FuncId

__all__ = ["bpf_prog_run", "prog_helpers", "bpf_stats_enabled"]


def bpf_stats_enabled(kern) -> bool:
    """static_branch_unlikely(&bpf_stats_enabled_key): the sysctl kernel.bpf_stats_enabled
    or an open ENABLE_STATS fd (syscall/prog_aux_cmds.py) turns run-time stats on."""
    return bool(kern.sysctls.get("kernel.bpf_stats_enabled", 0)) or kern.bpf_stats_enabled_key > 0


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
        for btf_id, name in prog.aux.kfunc_tab.items():      # the kfuncs its verification admitted
            table[kfunc_key(btf_id)] = kfunc_runtime(name, kfunc_ret_size(prog.kern.btf_vmlinux, btf_id))
        prog.helpers = table
    return table


def _not_implemented(func_id: int):
    """A helper the verifier allows but whose runtime is not written: fail loudly when called."""
    def call(env, r1, r2, r3, r4, r5):
        raise HelperNotImplemented(func_id)
    return call


# Tiering (bpf_prog_select_runtime, made lazy): a program starts on the generated-Python tier
# (about 2 ms to build) and is promoted to the C tier (about 0.6 s to build, cached on disk
# by content) once it has executed this many times, or when one test run asks for that many
# repetitions.  FAKEKERNEL_ENGINE=interp|python|c pins one tier for every program.
C_TIER_AFTER_RUNS = 20_000


def _engine(prog, upcoming: int = 1):
    """The program's engine, built on first run and promoted to C once it has run enough."""
    forced = os.environ.get(ENGINE_ENV)
    wants_c = not forced and prog.runs + upcoming >= C_TIER_AFTER_RUNS
    eng = prog.engine
    if eng is not None and not (wants_c and eng.tier == "python" and engine_tier() == "c"):
        return eng
    xl = prog.xlated if prog.xlated is not None else decode_prog(prog.insns)
    # None: the forced tier, or the best available one
    prog.engine = eng = compile_prog(xl, prog=prog, tier=None if forced or wants_c else "python")
    return eng


def bpf_prog_run(kern, prog, ctx_addr: int, *, ctx=None, skb_data=None, cpu: int = 0,
                 repeat: int = 1) -> int:
    """Run `prog` with r1 = ctx_addr (`repeat` times on the same ctx, as PROG_TEST_RUN's
    loop does); returns the last r0 (u64)."""
    env = RunEnv(mem=kern.mem, prog=prog, kernel=kern, ctx=ctx)
    env.cpu = cpu
    saved_cpu, kern.cpu = kern.cpu, cpu           # per-CPU map ops read smp_processor_id() here
    stats = bpf_stats_enabled(kern)               # run_cnt/run_time_ns only while enabled
    start = kern.ktime_get_ns() if stats else 0
    try:
        if repeat <= 1:
            r0 = _engine(prog).run(kern.mem, ctx_addr, helpers=prog_helpers(prog), env=env,
                                   skb_data=skb_data)
        else:
            r0 = _engine(prog, repeat).run_repeat(repeat, kern.mem, ctx_addr,
                                                  helpers=prog_helpers(prog), env=env,
                                                  skb_data=skb_data)
    finally:
        kern.cpu = saved_cpu
    n = max(repeat, 1)
    prog.runs += n
    if stats:
        prog.aux.run_cnt += n
        prog.aux.run_time_ns += kern.ktime_get_ns() - start
    return r0
