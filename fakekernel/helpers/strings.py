"""String helpers — kernel/bpf/helpers.c (bpf_strtol, bpf_strtoul, bpf_strncmp) over lib/kstrtox.c
(_parse_integer_fixup_radix, _parse_integer_limit) and lib/string.c (strncmp).

`bpf_strtoull_parse` is the shared parser: leading white space (the kernel's ``isspace``,
so 0xA0 too), one optional '-', then at most 63 bytes with the radix rules of kstrtox
(base 0 guesses 8/10/16 from the prefix, base 16 skips ``0x``).  It returns the number of
bytes consumed or -errno, like the kernel.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.vsprintf import isspace
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import s64, u32, u64

__all__ = ["BPF_STRTOX_BASE_MASK", "bpf_strtoull_parse", "bpf_strtoll_parse", "STRINGS_RUNTIME"]

BPF_STRTOX_BASE_MASK = 0x1F
_STR_MAX = 64 - 1                 # char str[64] in __bpf_strtoull, NUL-terminated
_U64_MAX = (1 << 64) - 1
_S64_MAX = (1 << 63) - 1
_LONG = ffi.sizeof("long")
_BASES = (0, 8, 10, 16)


_NO_DIGIT = 99


def _hexval(c: int) -> int:
    """A digit's value as _parse_integer_limit() reads it (_tolower() is ``c | 0x20``)."""
    if ord("0") <= c <= ord("9"):
        return c - ord("0")
    if ord("a") <= (c | 0x20) <= ord("f"):
        return (c | 0x20) - ord("a") + 10
    return _NO_DIGIT


def _fixup_radix(s: bytes, base: int) -> tuple[int, int]:
    """_parse_integer_fixup_radix(): (base, bytes of prefix skipped)."""
    at = lambda k: s[k] if k < len(s) else 0        # noqa: E731
    if base == 0:
        if at(0) == ord("0"):
            base = 16 if at(1) | 0x20 == ord("x") and _hexval(at(2)) < 16 else 8
        else:
            base = 10
    if base == 16 and at(0) == ord("0") and at(1) | 0x20 == ord("x"):
        return base, 2
    return base, 0


def bpf_strtoull_parse(buf: bytes, flags: int) -> tuple[int, int, bool]:
    """__bpf_strtoull(): (consumed or -errno, value, is_negative)."""
    base = flags & BPF_STRTOX_BASE_MASK
    if not buf or base not in _BASES or flags & ~BPF_STRTOX_BASE_MASK:
        return -Errno.EINVAL, 0, False
    i = 0
    while i < len(buf) and isspace(buf[i]):
        i += 1
    negative = i < len(buf) and buf[i] == ord("-")
    if negative:
        i += 1
    consumed = i
    if consumed == len(buf):
        return -Errno.EINVAL, 0, negative
    s = buf[i:i + _STR_MAX].split(b"\0", 1)[0]
    base, skip = _fixup_radix(s, base)
    val, n, overflow = 0, skip, False
    while n < len(s):
        d = _hexval(s[n])
        if d >= base:
            break
        if val >> 60 and val > (_U64_MAX - d) // base:
            overflow = True
        val = (val * base + d) & _U64_MAX
        n += 1
    if overflow:
        return -Errno.ERANGE, 0, negative
    if n == skip:
        return -Errno.EINVAL, 0, negative
    return consumed + n, val, negative


def bpf_strtoll_parse(buf: bytes, flags: int) -> tuple[int, int]:
    """__bpf_strtoll(): (consumed or -errno, signed value)."""
    err, val, negative = bpf_strtoull_parse(buf, flags)
    if err < 0:
        return err, 0
    if negative:
        if s64(-val) > 0:
            return -Errno.ERANGE, 0
        return err, s64(-val)
    if s64(val) < 0:
        return -Errno.ERANGE, 0
    return err, val


def _store_result(env, addr: int, value: int) -> None:
    env.mem.write(addr, u64(value).to_bytes(_LONG, "little"))


def bpf_strtol(env, r1, r2, r3, r4, r5) -> int:
    """bpf_strtol(buf, buf_len, flags, res): *res = 0 on error."""
    _store_result(env, r4, 0)
    err, val = bpf_strtoll_parse(env.mem.read(r1, r2), r3)
    if err < 0:
        return neg_errno(-err)
    _store_result(env, r4, val)
    return err


def bpf_strtoul(env, r1, r2, r3, r4, r5) -> int:
    """bpf_strtoul(buf, buf_len, flags, res): a '-' sign is -EINVAL."""
    _store_result(env, r4, 0)
    err, val, negative = bpf_strtoull_parse(env.mem.read(r1, r2), r3)
    if err < 0:
        return neg_errno(-err)
    if negative:
        return neg_errno(Errno.EINVAL)
    _store_result(env, r4, val)
    return err


def kernel_strncmp(s1: bytes, s2: bytes, count: int) -> int:
    """lib/string.c strncmp(): -1, 0 or 1 (bytes compared unsigned)."""
    for k in range(count):
        c1 = s1[k] if k < len(s1) else 0
        c2 = s2[k] if k < len(s2) else 0
        if c1 != c2:
            return -1 if c1 < c2 else 1
        if not c1:
            break
    return 0


def bpf_strncmp(env, r1, r2, r3, r4, r5) -> int:
    """bpf_strncmp(s1, s1_sz, s2): s2 is a NUL-terminated constant string."""
    from fakekernel.helpers.trace import _read_cstr
    size = u32(r2)
    s1 = env.mem.read(r1, size)
    s2 = _read_cstr(env, r3, size) or b""
    return u64(kernel_strncmp(s1, s2, size))


STRINGS_RUNTIME = {
    FuncId.strtol: bpf_strtol,
    FuncId.strtoul: bpf_strtoul,
    FuncId.strncmp: bpf_strncmp,
}
