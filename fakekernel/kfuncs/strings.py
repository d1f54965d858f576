"""String kfuncs — kernel/bpf/helpers.c (bpf_strcmp, bpf_strcasecmp, bpf_strchr, bpf_strnchr,
bpf_strchrnul, bpf_strrchr, bpf_strlen, bpf_strnlen, bpf_strspn, bpf_strcspn, bpf_strstr,
bpf_strnstr).

Their arguments are unchecked pointers: the kernel reads them byte by byte with page faults
disabled and reports what went wrong instead of faulting — -ERANGE for an address outside kernel
space, -EFAULT where reading stops at unmapped memory, -E2BIG once XATTR_SIZE_MAX characters
have been scanned without an end, -ENOENT for what is not there (6.18; the first
version of these kfuncs said -1).  Results are indexes, never pointers.  ``char`` is unsigned
in the kernel (-funsigned-char since 6.2), which orders strcmp's results.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.trace import copy_from_kernel_nofault_allowed
from uapi.errno import Errno
from uapi.insn import u32, u64

__all__ = ["STRING_KFUNCS", "XATTR_SIZE_MAX"]

XATTR_SIZE_MAX = 65536                  # include/uapi/linux/limits.h


class _Fault(Exception):
    pass


class _Str:
    """The readable bytes from `addr` on (to the end of its mapping); indexing past them is the
    kernel's failed __get_kernel_nofault."""

    __slots__ = ("data",)

    def __init__(self, env, addr: int):
        region = env.mem.region_at(addr)
        self.data = b"" if region is None else bytes(region.buf[addr - region.base:
                                                              min(region.size, addr - region.base + XATTR_SIZE_MAX + 1)])

    def __getitem__(self, i: int) -> int:
        if i >= len(self.data):
            raise _Fault
        return self.data[i]


def _kfunc(nargs_ptr: int):
    """Wrap a body taking (_Str..., other args): the -ERANGE check on every string pointer
    first, -EFAULT from a fault anywhere, the int result sign-extended into r0."""
    def wrap(body):
        def fn(env, r1, r2, r3, r4, r5):
            ptrs = (r1, r2, r3)[:nargs_ptr]
            if not all(copy_from_kernel_nofault_allowed(p) for p in ptrs):
                return neg_errno(Errno.ERANGE)
            try:
                ret = body(*(_Str(env, p) for p in ptrs), *(r2, r3, r4)[nargs_ptr - 1:])
            except _Fault:
                return neg_errno(Errno.EFAULT)
            return u64(ret)
        fn.__name__ = body.__name__
        return fn
    return wrap


def _lower(c: int) -> int:
    """The kernel's tolower(): lib/ctype.c counts Latin-1 capitals (0xC0-0xDE but 0xD7) as upper case."""
    return c + 32 if 0x41 <= c <= 0x5A or (0xC0 <= c <= 0xDE and c != 0xD7) else c


def _cmp(s1: _Str, s2: _Str, fold) -> int:
    for i in range(XATTR_SIZE_MAX):
        c1, c2 = fold(s1[i]), fold(s2[i])
        if c1 != c2:
            return -1 if c1 < c2 else 1
        if c1 == 0:
            return 0
    return -Errno.E2BIG


@_kfunc(2)
def bpf_strcmp(s1, s2, *_):
    return _cmp(s1, s2, int)


@_kfunc(2)
def bpf_strcasecmp(s1, s2, *_):
    return _cmp(s1, s2, _lower)


def _strnchr(s: _Str, count: int, c: int) -> int:
    i = 0
    while i < count and i < XATTR_SIZE_MAX:
        sc = s[i]
        if sc == c:
            return i
        if sc == 0:
            return -Errno.ENOENT
        i += 1
    return -Errno.E2BIG if i == XATTR_SIZE_MAX else -Errno.ENOENT


@_kfunc(1)
def bpf_strnchr(s, count, c, *_):
    return _strnchr(s, count, c & 0xFF)


@_kfunc(1)
def bpf_strchr(s, c, *_):
    return _strnchr(s, XATTR_SIZE_MAX, c & 0xFF)


@_kfunc(1)
def bpf_strchrnul(s, c, *_):
    c &= 0xFF
    for i in range(XATTR_SIZE_MAX):
        sc = s[i]
        if sc == 0 or sc == c:
            return i
    return -Errno.E2BIG


@_kfunc(1)
def bpf_strrchr(s, c, *_):
    c, last = u32(c), -Errno.ENOENT          # an int compared with a char: only 0..255 can ever match
    for i in range(XATTR_SIZE_MAX):
        sc = s[i]
        if sc == c:                # the terminating NUL counts as part of the string
            last = i
        if sc == 0:
            return last
    return -Errno.E2BIG


def _strnlen(s: _Str, count: int) -> int:
    i = 0
    while i < count and i < XATTR_SIZE_MAX:
        if s[i] == 0:
            return i
        i += 1
    return -Errno.E2BIG if i == XATTR_SIZE_MAX else i


@_kfunc(1)
def bpf_strnlen(s, count, *_):
    return _strnlen(s, count)


@_kfunc(1)
def bpf_strlen(s, *_):
    return _strnlen(s, XATTR_SIZE_MAX)


def _span(s: _Str, chars: _Str, stop_when_found: bool) -> int:
    for i in range(XATTR_SIZE_MAX):
        cs = s[i]
        if cs == 0:
            return i
        found = False
        for j in range(XATTR_SIZE_MAX):
            ca = chars[j]
            if cs == ca:
                found = True
                break
            if ca == 0:
                break
        if found == stop_when_found:
            return i
    return -Errno.E2BIG


@_kfunc(2)
def bpf_strspn(s, accept, *_):
    return _span(s, accept, False)


@_kfunc(2)
def bpf_strcspn(s, reject, *_):
    return _span(s, reject, True)


def _strnstr(s1: _Str, s2: _Str, length: int) -> int:
    """One byte of s2 past the first `length` of s1 is read, so that a suffix of those
    `length` characters is found (6.18's fixed bpf_strnstr)."""
    for i in range(XATTR_SIZE_MAX):
        j = 0
        while i + j <= length and j < XATTR_SIZE_MAX:
            c2 = s2[j]
            if c2 == 0:
                return i
            if i + j == length:
                return -Errno.ENOENT
            c1 = s1[i + j]
            if c1 == 0:
                return -Errno.ENOENT
            if c1 != c2:
                break
            j += 1
        if j == XATTR_SIZE_MAX:
            return -Errno.E2BIG
    return -Errno.E2BIG


@_kfunc(2)
def bpf_strnstr(s1, s2, length, *_):
    return _strnstr(s1, s2, length)


@_kfunc(2)
def bpf_strstr(s1, s2, *_):
    return _strnstr(s1, s2, XATTR_SIZE_MAX)


STRING_KFUNCS = {fn.__name__: fn for fn in (
    bpf_strcmp, bpf_strcasecmp, bpf_strnchr, bpf_strchr, bpf_strchrnul, bpf_strrchr, bpf_strnlen,
    bpf_strlen, bpf_strspn, bpf_strcspn, bpf_strnstr, bpf_strstr)}
