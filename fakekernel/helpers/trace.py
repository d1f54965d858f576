"""Tracing helpers — kernel/trace/bpf_trace.c (bpf_trace_printk, bpf_probe_read_*, get_stack, ...).

``TRACE_PROTOS`` are the prototypes defined in bpf_trace.c; `bpf_tracing_func_proto` is the set
KPROBE and TRACEPOINT programs share before falling back to `bpf_base_func_proto`.
"""
from __future__ import annotations

from fakekernel.helpers.base import bpf_base_func_proto, neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from uapi.bpf import FuncId
from uapi.capability import Cap
from uapi.errno import Errno
from uapi.insn import u32

__all__ = ["TRACE_PROTOS", "bpf_tracing_func_proto", "TRACE_RUNTIME", "bstr_printf"]


def _proto(func, gpl_only, ret_type, arg_types, **kw) -> FuncProto:
    return FuncProto(func=func, gpl_only=gpl_only, ret_type=ret_type, arg_types=arg_types, **kw)


TRACE_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    _proto(FuncId.probe_read, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_compat_proto
    _proto(FuncId.trace_printk, True, RetType.INTEGER, (ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE)),  # bpf_trace_printk_proto
    _proto(FuncId.perf_event_read, True, RetType.INTEGER, (ArgType.CONST_MAP_PTR, ArgType.ANYTHING)),  # bpf_perf_event_read_proto
    _proto(FuncId.perf_event_output, True, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO)),  # bpf_perf_event_output_proto
    _proto(FuncId.get_current_task, True, RetType.INTEGER, ()),  # bpf_get_current_task_proto
    _proto(FuncId.probe_read_str, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_compat_str_proto
    _proto(FuncId.perf_event_read_value, True, RetType.INTEGER, (ArgType.CONST_MAP_PTR, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)),  # bpf_perf_event_read_value_proto
    _proto(FuncId.send_signal, False, RetType.INTEGER, (ArgType.ANYTHING,)),  # bpf_send_signal_proto
    _proto(FuncId.probe_read_user, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_user_proto
    _proto(FuncId.probe_read_kernel, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_kernel_proto
    _proto(FuncId.probe_read_user_str, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_user_str_proto
    _proto(FuncId.probe_read_kernel_str, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_probe_read_kernel_str_proto
    _proto(FuncId.send_signal_thread, False, RetType.INTEGER, (ArgType.ANYTHING,)),  # bpf_send_signal_thread_proto
    _proto(FuncId.snprintf_btf, False, RetType.INTEGER, (ArgType.PTR_TO_MEM, ArgType.CONST_SIZE, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_snprintf_btf_proto
    _proto(FuncId.get_current_task_btf, True, RetType.PTR_TO_BTF_ID_TRUSTED, ()),  # bpf_get_current_task_btf_proto
    _proto(FuncId.get_func_ip, True, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_func_ip_proto_kprobe
    _proto(FuncId.task_pt_regs, True, RetType.PTR_TO_BTF_ID, (ArgType.PTR_TO_BTF_ID,)),  # bpf_task_pt_regs_proto
    _proto(FuncId.get_branch_snapshot, True, RetType.INTEGER, (ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE_OR_ZERO)),  # bpf_get_branch_snapshot_proto
    _proto(FuncId.trace_vprintk, True, RetType.INTEGER, (ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.PTR_TO_MEM | TypeFlag.PTR_MAYBE_NULL | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO)),  # bpf_trace_vprintk_proto
)}

# bpf_tracing_func_proto(): the kprobe/tracepoint-only helpers on top of the base set
_TRACING_FUNCS = frozenset({
    FuncId.get_attach_cookie, FuncId.get_func_ip, FuncId.get_stack, FuncId.get_stackid,
    FuncId.probe_read, FuncId.probe_read_str,
})


def bpf_tracing_func_proto(func_id: int, prog) -> FuncProto | None:
    if func_id == FuncId.probe_write_user:      # bpf_get_probe_write_proto(): CAP_SYS_ADMIN, no lockdown
        from fakekernel.helpers.base import prog_loader
        from fakekernel.helpers.func_args import PROBE_WRITE_USER_PROTO, lockdown_bpf_write_user
        if not prog_loader(prog).capable(Cap.SYS_ADMIN) or lockdown_bpf_write_user(prog.kern):
            return None
        return PROBE_WRITE_USER_PROTO
    if func_id in _TRACING_FUNCS:
        from fakekernel.helpers import PROTOS
        return PROTOS[func_id]
    return bpf_base_func_proto(func_id, prog)


# ---- runtime ----

def _read_cstr(env, addr: int, limit: int) -> bytes | None:
    """Bytes up to the NUL (excluded), or None when the memory is not mapped."""
    from fakekernel.interp.memory import InterpreterFault
    out = bytearray()
    try:
        while len(out) < limit:
            b = env.mem.read(addr + len(out), 1)
            if b == b"\0":
                break
            out += b
    except InterpreterFault:
        return None
    return bytes(out)


_MAX_ARGS = 3                     # MAX_TRACE_PRINTK_VARARGS


def bstr_printf(env, fmt: bytes, args: list[int], max_args: int = _MAX_ARGS) -> str | None:
    """bpf_bprintf_prepare() + bstr_printf() (fakekernel.helpers.printf) over at most
    `max_args` of `args`: the text, or None when the kernel refuses the format."""
    from fakekernel.helpers.printf import bprintf_text
    return bprintf_text(env, fmt, list(args)[:max_args])


def bpf_trace_printk(env, r1, r2, r3, r4, r5) -> int:
    """bpf_trace_printk(fmt, fmt_size, arg1, arg2, arg3): appends the message to kern.trace_lines."""
    from fakekernel.helpers.printf import trace_printk_common
    return trace_printk_common(env, r1, u32(r2), [r3, r4, r5])


# x86 copy_from_kernel_nofault_allowed(): user addresses (and the guard page after them), the
# vsyscall page and non-canonical addresses (48-bit virtual addresses) are refused with -ERANGE
_USER_END = 0x00007FFFFFFFF000 + 0x1000
_CANONICAL_HIGH = 0xFFFF800000000000
_VSYSCALL_PAGE = 0xFFFFFFFFFF600000
_PAGE_MASK = ~0xFFF & ((1 << 64) - 1)


def copy_from_kernel_nofault_allowed(addr: int) -> bool:
    if addr < _USER_END or addr & _PAGE_MASK == _VSYSCALL_PAGE:
        return False
    return addr >= _CANONICAL_HIGH


def bpf_probe_read_kernel(env, r1, r2, r3, r4, r5) -> int:
    """probe_read_kernel(dst, size, unsafe_ptr): -ERANGE for an address that is not a kernel
    one, -EFAULT for an unmapped one; dst zeroed on either."""
    from fakekernel.interp.memory import InterpreterFault
    if r2 == 0:
        return 0
    if not copy_from_kernel_nofault_allowed(r3):
        env.mem.write(r1, bytes(r2))
        return neg_errno(Errno.ERANGE)
    try:
        data = env.mem.read(r3, r2)
    except InterpreterFault:
        env.mem.write(r1, bytes(r2))
        return neg_errno(Errno.EFAULT)
    env.mem.write(r1, data)
    return 0


def bpf_probe_read_kernel_str(env, r1, r2, r3, r4, r5) -> int:
    if r2 == 0:
        return 0
    if not copy_from_kernel_nofault_allowed(r3):
        env.mem.write(r1, bytes(r2))
        return neg_errno(Errno.ERANGE)
    s = _read_cstr(env, r3, r2 - 1)
    if s is None:
        env.mem.write(r1, bytes(r2))
        return neg_errno(Errno.EFAULT)
    env.mem.write(r1, s + b"\0")
    return len(s) + 1


def bpf_get_attach_cookie(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_attach_cookie_trace/_tracing/_kmulti: the cookie of the run ctx (0 without one)."""
    return getattr(env.ctx, "cookie", 0)


# x86_64 TASK_SIZE_MAX with 4-level page tables: below it an address is a user address
TASK_SIZE = 0x00007FFFFFFFF000


def _user_mm(env):
    return (getattr(env, "task", None) or env.kernel.current).mm


def bpf_probe_read_user(env, r1, r2, r3, r4, r5) -> int:
    """probe_read_user(dst, size, unsafe_ptr): the current task's memory; -EFAULT, dst zeroed."""
    from fakekernel.errors import KernelError
    size = u32(r2)
    try:
        data = _user_mm(env).copy_from_user(r3, size)
    except KernelError:
        env.mem.write(r1, bytes(size))
        return neg_errno(Errno.EFAULT)
    env.mem.write(r1, data)
    return 0


def bpf_probe_read_user_str(env, r1, r2, r3, r4, r5) -> int:
    """probe_read_user_str(): strncpy_from_user_nofault() — the length with its NUL, or size
    (truncated, NUL-terminated); -EFAULT with dst zeroed."""
    from fakekernel.errors import KernelError
    size = u32(r2)
    if not size:
        return 0
    try:
        s = _user_mm(env).strncpy_from_user(r3, size)
    except KernelError:
        env.mem.write(r1, bytes(size))
        return neg_errno(Errno.EFAULT)
    if len(s) >= size:
        env.mem.write(r1, s[:size - 1] + b"\0")
        return size
    env.mem.write(r1, s + b"\0")
    return len(s) + 1


def bpf_probe_read_compat(env, r1, r2, r3, r4, r5) -> int:
    """bpf_probe_read_compat(): a user address reads user memory, anything else kernel memory."""
    if r3 < TASK_SIZE:
        return bpf_probe_read_user(env, r1, r2, r3, r4, r5)
    return bpf_probe_read_kernel(env, r1, r2, r3, r4, r5)


def bpf_probe_read_compat_str(env, r1, r2, r3, r4, r5) -> int:
    if r3 < TASK_SIZE:
        return bpf_probe_read_user_str(env, r1, r2, r3, r4, r5)
    return bpf_probe_read_kernel_str(env, r1, r2, r3, r4, r5)


TRACE_RUNTIME = {
    FuncId.probe_read_user: bpf_probe_read_user,
    FuncId.probe_read_user_str: bpf_probe_read_user_str,
    FuncId.get_attach_cookie: bpf_get_attach_cookie,
    FuncId.trace_printk: bpf_trace_printk,
    FuncId.probe_read_kernel: bpf_probe_read_kernel,
    FuncId.probe_read_kernel_str: bpf_probe_read_kernel_str,
    FuncId.probe_read: bpf_probe_read_compat,
    FuncId.probe_read_str: bpf_probe_read_compat_str,
}
