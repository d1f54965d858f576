"""printf-like helpers — kernel/bpf/helpers.c (bpf_bprintf_prepare, bpf_snprintf, the verifier's
check_bpf_snprintf_call) + kernel/trace/bpf_trace.c (bpf_trace_printk, bpf_trace_vprintk).

`bpf_bprintf_prepare` checks a format the way the kernel does (which conversions are legal,
at most ``num_args`` of them) and, given the arguments, builds what the kernel's per-CPU
binary-argument buffer would hold: integers (4 or 8 bytes, 4-aligned), strings copied from
kernel or user memory, IP addresses and ``%pB`` symbols pre-formatted, all within
``MAX_BPRINTF_BIN_ARGS`` bytes (-ENOSPC past that).  `fakekernel.helpers.vsprintf.bstr_printf`
renders the result.  Measured on 6.18: bytes >= 0x80 pass through in plain text (UTF-8),
control bytes are refused, a ``%p`` conversion swallows the letters and digits that follow it
(``%pI6c`` prints as ``%pI6``); the verifier refuses a bad constant format at load (EINVAL).
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.vsprintf import (bstr_printf, format_ip, isalnum, isascii, isprint, ispunct,
                                         isspace, symbol_string)
from fakekernel.helpers.trace import _read_cstr, copy_from_kernel_nofault_allowed, TASK_SIZE
from uapi.bpf import FuncId, MapFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32, u64

__all__ = ["MAX_BPRINTF_VARARGS", "MAX_BPRINTF_BUF", "MAX_BPRINTF_BIN_ARGS", "bpf_bprintf_prepare",
           "bstr_printf", "trace_printk_common", "bprintf_text", "check_bpf_snprintf_call", "check_reg_const_str", "PRINTF_RUNTIME"]

MAX_BPRINTF_VARARGS = 12          # include/linux/bpf.h
MAX_BPRINTF_BUF = 1024
MAX_BPRINTF_BIN_ARGS = 512        # kernel/bpf/helpers.c
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_INT = ffi.sizeof("int")
_LONG = ffi.sizeof("long")
_PTR = ffi.sizeof("void *")
_IPV4 = 4
_IPV6 = 16

# ---- the prepared format: literal bytes and conversions ----
# A conversion is (kind, flags, width, value): kind "int" (value = (int, size, conv)),
# "char", "str" and "pre" (value = bytes), "ptr" (value = (ptype, address)).

_FLAG_CHARS = b"0+- "


class _BinArgs:
    """The per-CPU bin_args buffer: a byte budget with the kernel's 4-byte alignment of ints."""

    def __init__(self):
        self.pos = 0

    def left(self) -> int:
        return MAX_BPRINTF_BIN_ARGS - self.pos

    def put_num(self, size: int) -> bool:
        self.pos = (self.pos + _U32 - 1) // _U32 * _U32        # PTR_ALIGN(tmp_buf, sizeof(u32))
        if self.left() < size:
            return False
        self.pos += size
        return True


def _copy_string(env, addr: int, ptype: str, bufsz: int) -> bytes:
    """bpf_trace_copy_string() + strncpy_from_{user,kernel}_nofault(): at most bufsz-1 bytes;
    an unreadable string is empty."""
    if ptype == "u" or (ptype == "s" and addr < TASK_SIZE):
        task = getattr(env, "task", None) or env.kernel.current
        try:
            s = task.mm.strncpy_from_user(addr, bufsz)
        except KernelError:
            return b""
        return s.split(b"\0", 1)[0][:bufsz - 1]
    if not copy_from_kernel_nofault_allowed(addr):
        return b""
    s = _read_cstr(env, addr, bufsz - 1)
    return b"" if s is None else s


def _copy_ip(env, addr: int, size: int) -> bytes:
    """copy_from_kernel_nofault() of the address bytes, zeros when it faults."""
    from fakekernel.interp.memory import InterpreterFault
    if not copy_from_kernel_nofault_allowed(addr):
        return bytes(size)
    try:
        return env.mem.read(addr, size)
    except InterpreterFault:
        return bytes(size)


def bpf_bprintf_prepare(fmt: bytes, num_args: int, raw_args: list[int] | None = None,
                        env=None) -> list | int:
    """Check `fmt` (the bytes before its NUL) against `num_args`; -errno, or the parsed format.
    Without `raw_args` (the verifier's call) nothing is copied and no -ENOSPC can happen."""
    out: list = []
    lit = bytearray()
    buf = _BinArgs() if raw_args is not None and num_args else None
    n = len(fmt)
    at = lambda k: fmt[k] if k < n else 0        # noqa: E731  (the string is NUL-terminated)
    i, num_spec = 0, 0
    while i < n:
        c = fmt[i]
        if isascii(c) and not isprint(c) and not isspace(c):
            return -Errno.EINVAL
        if c != ord("%"):
            lit.append(c)
            i += 1
            continue
        if at(i + 1) == ord("%"):
            lit.append(c)
            i += 2
            continue
        if num_spec >= num_args:
            return -Errno.EINVAL
        i += 1
        if not isascii(at(i)):
            return -Errno.EINVAL
        flags = bytearray()
        while at(i) in _FLAG_CHARS and at(i):
            flags.append(at(i))
            i += 1
        width = -1
        if ord("1") <= at(i) <= ord("9"):
            j = i
            while ord("0") <= at(i) <= ord("9"):
                i += 1
            width = int(fmt[j:i])
        arg = raw_args[num_spec] if buf is not None else 0
        conv = None
        eat = True                       # bstr_printf() swallows alnum after a %p conversion
        if at(i) == ord("p"):
            nxt = at(i + 1)
            if nxt == 0 or isspace(nxt) or ispunct(nxt):
                conv = ("ptr", ("", arg), _PTR)
                i += 1
            elif nxt in b"ku" and at(i + 2) == ord("s"):
                conv = _prepare_str(env, buf, fmt, i + 2, chr(nxt), arg)
                if isinstance(conv, int):
                    return conv
                eat = False                  # punctuation follows, as checked
                i += 3
            elif nxt in b"KxsS":
                conv = ("ptr", (chr(nxt), arg), _PTR)
                i += 2
            elif nxt == ord("B"):
                text = b""
                if buf is not None:
                    text = symbol_string(env, arg, "B").encode()
                    room = buf.left()
                    buf.pos += len(text) + 1
                    text = text[:max(room - 1, 0)]
                conv = ("pre", text, 0)
                i += 2
            elif nxt in b"iI" and at(i + 2) in b"46":
                kind = fmt[i + 1:i + 3]
                text = b""
                if buf is not None:
                    size = _IPV4 if kind[1:] == b"4" else _IPV6
                    if buf.left() < size:
                        return -Errno.ENOSPC
                    text = format_ip(kind, _copy_ip(env, arg, size))
                    room = buf.left()
                    buf.pos += len(text) + 1
                    text = text[:room - 1]
                conv = ("pre", text, 0)
                i += 3
            else:
                return -Errno.EINVAL
        elif at(i) == ord("s"):
            eat = False
            conv = _prepare_str(env, buf, fmt, i, "s", arg)
            if isinstance(conv, int):
                return conv
            i += 1
        elif at(i) == ord("c"):
            eat = False
            if buf is not None:
                if buf.left() == 0:
                    return -Errno.ENOSPC
                buf.pos += 1
            conv = ("char", arg & 0xFF, 0)
            i += 1
        else:
            eat = False
            size = _INT
            if at(i) == ord("l"):
                size = _LONG
                i += 1
            if at(i) == ord("l"):
                size = _U64
                i += 1
            if at(i) not in b"iduxX" or at(i) == 0:
                return -Errno.EINVAL
            conv = ("int", (arg, size, chr(at(i))), size)
            i += 1
        kind, value, size = conv
        if kind in ("ptr", "int") and buf is not None and not buf.put_num(size):
            return -Errno.ENOSPC
        if lit:
            out.append(bytes(lit))
            lit = bytearray()
        out.append((kind, bytes(flags), width, value))
        num_spec += 1
        if eat:
            i = _skip_alnum(fmt, i)
    if lit:
        out.append(bytes(lit))
    return out


def _skip_alnum(fmt: bytes, i: int) -> int:
    """bstr_printf() swallows the letters and digits after a %p conversion."""
    while i < len(fmt) and isalnum(fmt[i]):
        i += 1
    return i


def _prepare_str(env, buf, fmt: bytes, i: int, ptype: str, arg: int):
    """The fmt_str branch: %s / %pks / %pus must be followed by NUL, space or punctuation."""
    nxt = fmt[i + 1] if i + 1 < len(fmt) else 0
    if nxt != 0 and not isspace(nxt) and not ispunct(nxt):
        return -Errno.EINVAL
    if buf is None:
        return ("str" if ptype == "s" else "pre", b"", 0)
    if buf.left() == 0:
        return -Errno.ENOSPC
    s = _copy_string(env, arg, ptype, buf.left()) if buf.left() > 0 else b""
    buf.pos += len(s) + 1
    return ("str" if ptype == "s" else "pre", s, 0)


def _args(env, addr: int, data_len: int) -> list[int]:
    data = env.mem.read(addr, data_len) if data_len else b""
    return [int.from_bytes(data[k:k + _U64], "little") for k in range(0, len(data), _U64)]


def _bad_data_len(data_len: int, args: int) -> bool:
    return bool(data_len % _U64 or data_len > MAX_BPRINTF_VARARGS * _U64 or (data_len and not args))


def bpf_snprintf(env, r1, r2, r3, r4, r5) -> int:
    """bpf_snprintf(str, str_size, fmt, data, data_len): the untruncated length + 1, or -errno."""
    str_size, data_len = u32(r2), u32(r5)
    if _bad_data_len(data_len, r4):
        return neg_errno(Errno.EINVAL)
    fmt = _read_cstr(env, r3, 1 << 32) or b""      # ARG_PTR_TO_CONST_STR: NUL-terminated
    prepared = bpf_bprintf_prepare(fmt, data_len // _U64, _args(env, r4, data_len), env)
    if isinstance(prepared, int):
        return neg_errno(-prepared)
    text = bstr_printf(env, prepared)
    if str_size:
        out = text[:str_size - 1]
        env.mem.write(r1, out + b"\0")
    return u64(len(text) + 1)


def trace_printk_common(env, fmt_addr: int, fmt_size: int, args: list[int]) -> int:
    """bpf_trace_printk / bpf_trace_vprintk after their argument checks: the line goes to the
    trace pipe (at most MAX_BPRINTF_BUF - 1 bytes); returns bstr_printf()'s length (measured
    on 6.18: "hi 5\n" gives 5)."""
    fmt = env.mem.read(fmt_addr, fmt_size)
    if b"\0" not in fmt:
        return neg_errno(Errno.EINVAL)
    fmt = fmt.split(b"\0", 1)[0]
    prepared = bpf_bprintf_prepare(fmt, len(args), args, env)
    if isinstance(prepared, int):
        return neg_errno(-prepared)
    text = bstr_printf(env, prepared)
    line = text[:MAX_BPRINTF_BUF - 1].decode("latin-1")
    env.kernel.trace_lines.append(line[:-1] if line.endswith("\n") else line)
    return u64(len(text))


def bpf_trace_vprintk(env, r1, r2, r3, r4, r5) -> int:
    """bpf_trace_vprintk(fmt, fmt_size, data, data_len)."""
    fmt_size, data_len = u32(r2), u32(r4)
    if _bad_data_len(data_len, r3):
        return neg_errno(Errno.EINVAL)
    return trace_printk_common(env, r1, fmt_size, _args(env, r3, data_len))


def bprintf_text(env, fmt: bytes, args: list[int]) -> str | None:
    """The formatted text of `fmt` (without its NUL) over `args`, None when the kernel would
    refuse it (what bpf_seq_printf needs)."""
    prepared = bpf_bprintf_prepare(fmt, len(args), args, env)
    return None if isinstance(prepared, int) else bstr_printf(env, prepared).decode("latin-1")


def check_reg_const_str(env, state, regno: int) -> None:
    """check_reg_const_str() (kernel/bpf/verifier.c) for ARG_PTR_TO_CONST_STR, once the register
    is known to be a map value pointer: a frozen BPF_F_RDONLY_PROG map, a constant offset, a
    NUL before the end of the value."""
    reg = state.regs[regno]
    bpf_map = reg.map
    if bpf_map is None:
        return
    if not (bpf_map.map_flags & MapFlags.RDONLY_PROG and bpf_map.frozen):
        raise env.fail(state, Errno.EACCES, f"R{regno} does not point to a readonly map'\n")
    if not reg.var_off.is_const():
        raise env.fail(state, Errno.EACCES, f"R{regno} is not a constant address'\n")
    if getattr(bpf_map, "map_direct_value_addr", None) is None:
        raise env.fail(state, Errno.EACCES, "no direct value access support for this map type\n")
    off = reg.off + reg.var_off.value
    try:
        base = bpf_map.map_direct_value_addr(off)
    except KernelError as e:
        raise env.fail(state, e.errno, "direct value access on string failed\n") from None
    if b"\0" not in bytes(env.prog.kern.mem.read(base + off, bpf_map.value_size - off)):
        raise env.fail(state, Errno.EINVAL, "string is not zero-terminated\n")


def check_bpf_snprintf_call(env, state) -> None:
    """check_bpf_snprintf_call(): the verifier runs the format check on the constant format
    (R3, a read-only map value) with the constant number of arguments (R5 / 8)."""
    fmt_reg, len_reg = state.regs[3], state.regs[5]
    data_len = len_reg.var_off.value
    if data_len % _U64:
        raise env.fail(state, Errno.EINVAL, "")
    bpf_map = fmt_reg.map
    if bpf_map is None or not fmt_reg.var_off.is_const():
        return                              # ARG_PTR_TO_CONST_STR is not enforced here yet
    off = fmt_reg.off + fmt_reg.var_off.value
    if getattr(bpf_map, "map_direct_value_addr", None) is None:
        return
    try:
        base = bpf_map.map_direct_value_addr(off)
    except KernelError:                     # the kernel's "verifier bug" case
        raise env.fail(state, Errno.EFAULT, "verifier bug\n") from None
    fmt = bytes(env.prog.kern.mem.read(base + off, bpf_map.value_size - off)).split(b"\0", 1)[0]
    if isinstance(bpf_bprintf_prepare(fmt, data_len // _U64), int):
        raise env.fail(state, Errno.EINVAL, "Invalid format string\n")


PRINTF_RUNTIME = {
    FuncId.snprintf: bpf_snprintf,
    FuncId.trace_vprintk: bpf_trace_vprintk,
}
