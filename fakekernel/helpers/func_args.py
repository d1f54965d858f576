"""Traced-function helpers — kernel/trace/bpf_trace.c (bpf_get_func_ip_kprobe,
bpf_get_func_ip_kprobe_multi, bpf_get_func_ip_tracing, get_func_arg, get_func_ret,
get_func_arg_cnt, bpf_probe_write_user + bpf_get_probe_write_proto's lockdown gate).

A trampoline program's ctx is the u64 array of the traced function's arguments (then its
return value for fexit/fmod_ret); the kernel keeps the argument count at ctx[-1] and the
function address at ctx[-2] and inlines these helpers.  Here the count and address come from
the program's attach target (``prog.aux.attach_target``: its FuncModel and address; a name
only known to BTF gets a kallsyms address on first use).
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from uapi.bpf import AttachType, FuncId, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32, u64

__all__ = ["FUNC_ARGS_PROTOS", "FUNC_ARGS_RUNTIME", "bpf_prog_has_trampoline", "trampoline_func_proto",
           "PROBE_WRITE_USER_PROTO", "LOCKDOWN_KEY", "lockdown_bpf_write_user"]

_U64 = ffi.sizeof("__u64")
_FIXED_U64_OUT = (ArgType.PTR_TO_FIXED_SIZE_MEM | TypeFlag.MEM_UNINIT | TypeFlag.MEM_WRITE
                  | TypeFlag.MEM_ALIGNED)

FUNC_ARGS_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.get_func_arg, ret_type=RetType.INTEGER,                  # bpf_get_func_arg_proto
              arg_types=(ArgType.PTR_TO_CTX, ArgType.ANYTHING, _FIXED_U64_OUT)),
    FuncProto(func=FuncId.get_func_ret, ret_type=RetType.INTEGER,                  # bpf_get_func_ret_proto
              arg_types=(ArgType.PTR_TO_CTX, _FIXED_U64_OUT)),
    FuncProto(func=FuncId.get_func_arg_cnt, ret_type=RetType.INTEGER,              # bpf_get_func_arg_cnt_proto
              arg_types=(ArgType.PTR_TO_CTX,)),
)}

#: bpf_probe_write_user_proto (handed out by bpf_get_probe_write_proto() to CAP_SYS_ADMIN only)
PROBE_WRITE_USER_PROTO = FuncProto(func=FuncId.probe_write_user, gpl_only=True, ret_type=RetType.INTEGER,
                                   arg_types=(ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                                              ArgType.CONST_SIZE))

#: /sys/kernel/security/lockdown of the simulated machine, kept in ``kern.sysctls`` under this
#: key; the measured 6.18 machine runs in "integrity" mode, which refuses bpf_probe_write_user
LOCKDOWN_KEY = "security.lockdown"
LOCKDOWN_DEFAULT = "integrity"


def lockdown_bpf_write_user(kern) -> bool:
    """security_locked_down(LOCKDOWN_BPF_WRITE_USER) < 0: any lockdown mode refuses it."""
    return kern.sysctls.get(LOCKDOWN_KEY, LOCKDOWN_DEFAULT) != "none"


_TRAMPOLINE_EATS = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN)
_RET_EATS = (AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN)


def bpf_prog_has_trampoline(prog) -> bool:
    eat = prog.expected_attach_type
    return ((prog.type == ProgType.TRACING and eat in _TRAMPOLINE_EATS)
            or (prog.type == ProgType.LSM and eat == AttachType.LSM_MAC))


def trampoline_func_proto(func_id: int, prog) -> FuncProto | None:
    """tracing_prog_func_proto()'s get_func_arg/ret/arg_cnt cases: trampoline programs only."""
    proto = FUNC_ARGS_PROTOS.get(func_id)
    if proto is None or not bpf_prog_has_trampoline(prog):
        return None
    return proto


def _nr_args(prog) -> int:
    tgt = prog.aux.attach_target
    fmodel = getattr(tgt, "fmodel", None)
    return getattr(fmodel, "nr_args", 0) if fmodel is not None else 0


def _func_addr(env) -> int:
    """The traced function's address (ctx[-2]): the attach target's, else its kallsyms entry."""
    tgt = env.prog.aux.attach_target
    if tgt is None:
        return 0
    if tgt.addr:
        return tgt.addr
    return env.kernel.world.trace.kallsyms.add(tgt.name.decode(), _nr_args(env.prog)).addr


def bpf_get_func_arg(env, r1, r2, r3, r4, r5) -> int:
    """get_func_arg(ctx, n, value): -EINVAL (value zeroed) past the argument count."""
    n = u32(r2)
    if n >= _nr_args(env.prog):
        env.mem.write(r3, bytes(_U64))
        return neg_errno(Errno.EINVAL)
    env.mem.write(r3, env.mem.read(r1 + n * _U64, _U64))
    return 0


def bpf_get_func_ret(env, r1, r2, r3, r4, r5) -> int:
    """get_func_ret(ctx, value): the return value for fexit/fmod_ret, -EOPNOTSUPP otherwise."""
    if env.prog.expected_attach_type not in _RET_EATS:
        return neg_errno(Errno.EOPNOTSUPP)
    env.mem.write(r2, env.mem.read(r1 + _nr_args(env.prog) * _U64, _U64))
    return 0


def bpf_get_func_arg_cnt(env, r1, r2, r3, r4, r5) -> int:
    return _nr_args(env.prog)


def bpf_get_func_ip(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_func_ip_{kprobe_multi,kprobe,tracing}: the probed function's entry address
    (0 for a kprobe that is not on a function entry)."""
    entry_ip = getattr(env.ctx, "entry_ip", None)
    if entry_ip is not None:
        return u64(entry_ip)
    probe = getattr(env.ctx, "probe", None)             # a perf kprobe event: ("kprobe", func, off, ret)
    if probe is not None:
        if probe[0] != "kprobe" or probe[2] or probe[3]:   # KPROBE_FLAG_ON_FUNC_ENTRY only
            return 0
        f = env.kernel.world.trace.kallsyms.lookup_name(probe[1])
        return f.addr if f is not None else 0
    if env.prog is not None and env.prog.type in (ProgType.TRACING, ProgType.LSM):
        return _func_addr(env)
    return 0


def bpf_probe_write_user(env, r1, r2, r3, r4, r5) -> int:
    """bpf_probe_write_user(dst, src, len): copy_to_user_nofault() into the current task."""
    task = getattr(env, "task", None) or env.kernel.current
    size = u32(r3)
    try:
        task.mm.copy_to_user(r1, env.mem.read(r2, size))
    except KernelError:
        return neg_errno(Errno.EFAULT)
    return 0


FUNC_ARGS_RUNTIME = {
    FuncId.get_func_arg: bpf_get_func_arg,
    FuncId.get_func_ret: bpf_get_func_ret,
    FuncId.get_func_arg_cnt: bpf_get_func_arg_cnt,
    FuncId.get_func_ip: bpf_get_func_ip,
    FuncId.probe_write_user: bpf_probe_write_user,
}
