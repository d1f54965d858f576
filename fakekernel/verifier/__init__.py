"""The BPF verifier — kernel/bpf/verifier.c bpf_check(): the order of the passes lives here.

First pass: it rejects what Linux 6.18 rejects for the common cases, with the same errno and log
text, and never rejects what Linux would accept — where its analysis is coarser than the kernel's
it gives up and accepts (`env.GiveUp`), leaving safety to the run-time bounds checks.

After a successful load ``prog.xlated`` (list[Insn]) and ``prog.insns`` (the same as bytes) hold
the rewritten program: map references are plain LD_IMM64 immediates (``kern.mem.map_object(map)``
handles and map value addresses) and ctx packet-pointer loads read the kernel ctx slots.
"""
from __future__ import annotations

import time

from fakekernel.errors import KernelError
from fakekernel.verifier.btf_info import check_btf_info, check_btf_info_early
from fakekernel.verifier.calls import check_pseudo_func_info, resolve_pseudo_ldimm64
from fakekernel.verifier.cfg import add_subprogs, check_cfg, check_subprogs, compute_live_regs
from fakekernel.verifier.check import do_check
from fakekernel.verifier.func_call import check_max_stack_depth, init_subprogs
from fakekernel.verifier.global_func import do_check_subprogs
from fakekernel.verifier.env import BPF_COMPLEXITY_LIMIT_INSNS, GiveUp, InsnAux, VerifierEnv, VerifierError
from fakekernel.verifier.kfunc import fixup_kfunc_calls
from fakekernel.verifier.fixups import convert_ctx_accesses, convert_pseudo_ld_imm64
from fakekernel.verifier.log import BPF_LOG_LEVEL2, BPF_LOG_STATS, VerifierLog
from uapi.errno import Errno
from uapi.ffi import offsetofend
from uapi.insn import BPF_SIZE, BPF_SIZE_BYTES, decode_prog, encode_prog

__all__ = ["bpf_check", "VerifierLog"]

_LOG_TRUE_SIZE_END = offsetofend("union bpf_attr", "log_true_size")


def _verifier_ops(prog):
    if prog.ops is not None and getattr(prog.ops, "verifier_ops", None) is not None:
        return prog.ops.verifier_ops
    from fakekernel.progs import VERIFIER_OPS_BY_TYPE
    return VERIFIER_OPS_BY_TYPE.get(prog.type)


def _check_attach_btf_id(env) -> None:
    # imported here: attach_btf reads the BTF modules, which import the verifier log
    from fakekernel.verifier.attach_btf import check_attach_btf_id
    check_attach_btf_id(env)


def _stats(env, elapsed_ns: int) -> str:
    """print_verification_stats()."""
    text = ""
    if env.log.level & BPF_LOG_STATS:
        depths = [s.stack_depth for s in env.subprogs] if env.subprogs else [env.stack_depth]
        text = f"verification time {elapsed_ns // 1000} usec\nstack depth {'+'.join(map(str, depths))}\n"
    return text + (f"processed {env.insn_processed} insns (limit {BPF_COMPLEXITY_LIMIT_INSNS}) max_states_per_insn "
            f"{env.max_states_per_insn} total_states {env.total_states} peak_states {env.peak_states} "
            f"mark_read 0\n")


def _max_ctx_offset_unwalked(env) -> None:
    """Without a complete walk, aux.max_ctx_offset comes from every load/store that may go
    through the ctx pointer (what the walk would have recorded, or more)."""
    from fakekernel.verifier.fixups import ctx_load_sites
    for i in ctx_load_sites(env.insns):
        insn = env.insns[i]
        env.prog.aux.max_ctx_offset = max(env.prog.aux.max_ctx_offset,
                                          insn.off + BPF_SIZE_BYTES[BPF_SIZE(insn.code)])


def bpf_check(kern, task, prog, attr, ctx) -> None:
    """Verify ``prog`` (raises KernelError); on success rewrite ``prog.insns`` for execution."""
    start = time.monotonic_ns()
    log = VerifierLog.init(int(attr.log_level), int(attr.log_buf), int(attr.log_size))
    env = VerifierEnv(kern=kern, task=task, prog=prog, log=log, ops=_verifier_ops(prog),
                      insns=decode_prog(prog.insns))
    env.aux = [InsnAux() for _ in env.insns]
    env.bpf_capable = task.bpf_capable()
    env.allow_ptr_leaks = env.allow_uninit_stack = task.perfmon_capable()
    if hasattr(prog.aux, "loader"):
        prog.aux.loader = task
    err = 0
    walked = False
    try:
        check_btf_info_early(env, attr, ctx)
        starts = add_subprogs(env)
        check_subprogs(env, starts)
        check_btf_info(env, attr, ctx, starts)
        init_subprogs(env, starts)
        resolve_pseudo_ldimm64(env)
        check_cfg(env)
        check_pseudo_func_info(env)
        _check_attach_btf_id(env)
        compute_live_regs(env)
        do_check(env)
        if not log.level & BPF_LOG_LEVEL2:
            log.reset(0)                # do_check_common(): a verified walk leaves no trace at level 1
        do_check_subprogs(env)
        check_max_stack_depth(env)
        walked = True
    except VerifierError as e:
        err = e.errno
    except GiveUp:
        walked = False
    if not err:
        if not walked and not log.level & BPF_LOG_LEVEL2:
            log.reset(0)                # (a complete walk reset it as do_check_common does)
        if not walked:
            _max_ctx_offset_unwalked(env)
        convert_ctx_accesses(env, complete=walked)
        err = fixup_kfunc_calls(env)
    log.write(_stats(env, time.monotonic_ns() - start))
    prog.aux.verified_insns = env.insn_processed
    try:
        true_size = log.finalize(task)
        if ctx.size >= _LOG_TRUE_SIZE_END:
            ctx.put_attr_field("log_true_size", true_size)
        if log.truncated():
            err = Errno.ENOSPC
    except KernelError:
        err = Errno.EFAULT
    if err:
        for m in env.used_maps:
            m.put()
        btf, prog.aux.btf = prog.aux.btf, None      # the prog's BTF goes with the failed prog
        if btf is not None:
            btf.put()
        raise KernelError(err, "verifier rejected the program")
    convert_pseudo_ld_imm64(env)
    prog.aux.used_maps = env.used_maps
    prog.xlated = list(env.insns)
    prog.insns = encode_prog(env.insns)
