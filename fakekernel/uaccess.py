"""User memory — arch/x86/lib usercopy + include/linux/uaccess.h.

Handlers reach the caller's memory only through a `UserMemory`:
``copy_from_user`` / ``copy_to_user`` / ``check_zeroed_user`` / ``strncpy_from_user``.
A bad address is ``KernelError(EFAULT)``, never a crash: the in-process implementation
reads our own address space with ``process_vm_readv`` (the kernel checks the address for
us), and the remote one reads another process the same way.
"""
from __future__ import annotations

import os
from typing import Protocol

from fakekernel.errors import Errno, KernelError
from uapi.ffi import libc, libc_ffi

__all__ = ["UserMemory", "ProcessMemory"]

_ZERO_CHUNK = 4096


class UserMemory(Protocol):
    def copy_from_user(self, addr: int, n: int) -> bytes: ...
    def copy_to_user(self, addr: int, data: bytes) -> None: ...
    def check_zeroed_user(self, addr: int, n: int) -> bool: ...
    def strncpy_from_user(self, addr: int, maxlen: int) -> bytes: ...


class ProcessMemory:
    """The address space of process `pid` (default: this process), via process_vm_{read,write}v."""

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        self._local = libc_ffi.new("struct iovec *")
        self._remote = libc_ffi.new("struct iovec *")

    def _xfer(self, fn, addr: int, buf, n: int) -> int:
        if n == 0:
            return 0
        if addr <= 0 or addr + n > 1 << 64:
            return -1
        self._local.iov_base = libc_ffi.from_buffer(buf)
        self._local.iov_len = n
        self._remote.iov_base = libc_ffi.cast("void *", addr)
        self._remote.iov_len = n
        return fn(self.pid, self._local, 1, self._remote, 1, 0)

    def copy_from_user(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        buf = bytearray(n)
        if self._xfer(libc.process_vm_readv, addr, buf, n) != n:
            raise KernelError(Errno.EFAULT, f"read of {n} bytes at {addr:#x}")
        return bytes(buf)

    def copy_to_user(self, addr: int, data: bytes) -> None:
        n = len(data)
        if n == 0:
            return
        buf = bytearray(data)
        if self._xfer(libc.process_vm_writev, addr, buf, n) != n:
            raise KernelError(Errno.EFAULT, f"write of {n} bytes at {addr:#x}")

    def check_zeroed_user(self, addr: int, n: int) -> bool:
        """True if the n bytes at addr are all zero; EFAULT if they cannot be read."""
        while n > 0:
            k = min(n, _ZERO_CHUNK)
            if any(self.copy_from_user(addr, k)):
                return False
            addr += k
            n -= k
        return True

    def strncpy_from_user(self, addr: int, maxlen: int) -> bytes:
        """The string at addr without its NUL; E2BIG-free: the caller checks the length.

        Returns at most `maxlen` bytes; if no NUL was found within maxlen the result has
        length maxlen (the kernel's "too long" signal).
        """
        out = bytearray()
        while len(out) < maxlen:
            # never read across a page boundary in one go: the next page may be unmapped
            k = min(maxlen - len(out), 4096 - (addr % 4096))
            chunk = self.copy_from_user(addr, k)
            z = chunk.find(b"\0")
            if z >= 0:
                out += chunk[:z]
                return bytes(out)
            out += chunk
            addr += k
        return bytes(out)
