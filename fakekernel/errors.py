"""Failure on the syscall path — the kernel's `return -EXXX`.

`KernelError` is the only way a handler reports failure; `sys_bpf` is the only place
that turns it into ``-errno``.  Anything else escaping a handler is an emulator bug.
"""
from __future__ import annotations

from uapi.errno import Errno

__all__ = ["KernelError", "Errno"]


class KernelError(Exception):
    """A syscall-level failure carrying a Linux errno and a human-readable reason."""

    def __init__(self, errno: Errno, detail: str = ""):
        super().__init__(errno, detail)
        self.errno = Errno(errno)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.errno.name}: {self.detail}" if self.detail else self.errno.name
