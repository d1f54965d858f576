"""The single cffi FFI object holding the UAPI layouts (generated cdef)."""
from __future__ import annotations

import sys

import cffi

from uapi._bpf_cdef import CDEF

__all__ = ["ffi", "offsetofend", "sizeof"]

if sys.byteorder != "little" or sys.maxsize <= 2**32:
    raise ImportError("uapi layouts are generated for a 64-bit little-endian ABI (x86_64)")

ffi = cffi.FFI()
ffi.cdef(CDEF)

# Import-time sanity on the layouts everything depends on.
assert ffi.sizeof("struct bpf_insn") == 8
assert ffi.sizeof("union bpf_attr") >= 144


def sizeof(ctype: str) -> int:
    return ffi.sizeof(ctype)


def offsetofend(ctype: str, *field: str) -> int:
    """offsetof(ctype, field) + sizeof(field), the way libbpf computes attr sizes."""
    off = ffi.offsetof(ctype, *field)
    ptr = ffi.new(ctype + " *" if not ctype.endswith("*") else ctype)
    obj = ptr[0]
    for f in field:
        obj = getattr(obj, f)
    try:
        size = ffi.sizeof(ffi.typeof(obj))
    except TypeError:       # plain Python int for scalar fields
        size = _scalar_size(ctype, field)
    return off + size


def _scalar_size(ctype: str, field: tuple[str, ...]) -> int:
    t = ffi.typeof(ctype)
    for f in field:
        t = dict(t.fields)[f].type
    return ffi.sizeof(t)


# ---- libc entry points (ABI mode): the host syscall and cross-address-space copies ----
_LIBC_CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
long syscall(long number, ...);
ssize_t process_vm_readv(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                         const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
ssize_t process_vm_writev(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                          const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
int getpid(void);
"""
libc_ffi = cffi.FFI()
libc_ffi.cdef(_LIBC_CDEF)
libc = libc_ffi.dlopen(None)
__all__ += ["libc", "libc_ffi"]
