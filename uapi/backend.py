"""The `bpf()` backends: anything with ``bpf(cmd, attr, size) -> int`` (>= 0 or -errno).

`HostKernel` is the real thing — ``syscall(__NR_bpf, ...)`` on this machine — used as the
oracle by tests/differential and by benchmarks.  ``fakekernel.Kernel`` is the other backend.
"""
from __future__ import annotations

import os
from typing import Protocol

from uapi.ffi import libc, libc_ffi

__all__ = ["BpfBackend", "HostKernel", "NR_BPF", "buffer_address"]

NR_BPF = 321    # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)


class BpfBackend(Protocol):
    def bpf(self, cmd: int, attr, size: int) -> int: ...
    def close(self, fd: int) -> int: ...


def buffer_address(buf) -> int:
    """The address of a writable buffer (bytearray, cffi buffer/cdata) or an int as is."""
    if isinstance(buf, int):
        return buf
    from uapi.ffi import ffi
    if isinstance(buf, ffi.CData):
        return int(ffi.cast("uintptr_t", buf))
    return int(libc_ffi.cast("uintptr_t", libc_ffi.from_buffer(buf)))


class HostKernel:
    """The machine's own kernel."""

    name = "kernel"

    def bpf(self, cmd: int, attr, size: int) -> int:
        addr = buffer_address(attr) if attr is not None else 0
        ret = libc.syscall(NR_BPF, libc_ffi.cast("long", int(cmd)),
                           libc_ffi.cast("void *", addr), libc_ffi.cast("unsigned long", size))
        if ret < 0:
            return -libc_ffi.errno
        return ret

    def close(self, fd: int) -> int:
        try:
            os.close(fd)
        except OSError as e:
            return -e.errno
        return 0

    def dup(self, fd: int) -> int:
        try:
            return os.dup(fd)
        except OSError as e:
            return -e.errno

    @staticmethod
    def available() -> bool:
        """True when real bpf() works here (a trivial BPF_PROG_GET_NEXT_ID answers)."""
        attr = bytearray(16)
        ret = HostKernel().bpf(11, attr, 12)   # BPF_PROG_GET_NEXT_ID
        return ret == 0 or ret == -2           # 0 or ENOENT: we are allowed to talk
