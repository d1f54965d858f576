"""The in-process syscall entry — arch/x86/entry/syscall_64.c (do_syscall_64) for one simulated task.

For Python loaders that take the syscall function as a parameter (or call it through a
module attribute a test can monkeypatch, e.g. ``mylib.libc.syscall``): ::

    kern = fakekernel.Kernel()
    syscall = fakekernel.syscall_shim(kern)
    fd = syscall(321, BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))

The callable behaves like glibc's ``syscall(3)`` as ctypes sees it (``CDLL(...,
use_errno=True)``): the result, or -1 with the error in ``ctypes.get_errno()``
(``raw=True`` returns ``-errno`` instead, the kernel's own convention).  Arguments may be
ints, ctypes scalars, ``ctypes.byref()``/``pointer()`` results, ctypes arrays and
structures (passed by address, as a C call would), bytearrays, cffi pointers, or None.

What is emulated: ``bpf`` (answered by ``kern`` for ``task``, default ``kern.current``),
and ``close``/``dup``/``dup3`` of a descriptor that is open in the task's simulated fd
table.  Every other call -- and close/dup of any other descriptor -- goes to the real
kernel.  Simulated fd numbers are the lowest free ones in the *simulated* table, so they
can coincide with real descriptors of this process; an fd number the simulated table
holds is treated as simulated.
"""
from __future__ import annotations

import ctypes

from fakekernel.errors import Errno, KernelError
from fakekernel.syscall import sys_bpf
from uapi.backend import buffer_address
from uapi.seccomp import NR_X86_64

__all__ = ["syscall_shim", "SyscallShim"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_O_CLOEXEC = 0o2000000


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def user_address(arg) -> int:
    """The register value a C caller would pass for `arg` (a pointer's address, an int's value)."""
    if arg is None:
        return 0
    if isinstance(arg, bool):
        return int(arg)
    if isinstance(arg, int):
        return arg & 0xFFFFFFFFFFFFFFFF
    if isinstance(arg, (ctypes._SimpleCData,)) and not isinstance(arg, (ctypes.c_char_p,
                                                                        ctypes.c_wchar_p,
                                                                        ctypes.c_void_p)):
        return int(arg.value) & 0xFFFFFFFFFFFFFFFF
    if isinstance(arg, (ctypes.c_char_p, ctypes.c_void_p, ctypes._Pointer, ctypes.c_wchar_p)):
        return ctypes.cast(arg, ctypes.c_void_p).value or 0
    if isinstance(arg, (ctypes.Array, ctypes.Structure, ctypes.Union)):
        return ctypes.addressof(arg)
    if type(arg).__name__ == "CArgObject":          # ctypes.byref(obj[, offset])
        return ctypes.cast(arg, ctypes.c_void_p).value or 0
    if isinstance(arg, bytes):
        return ctypes.cast(ctypes.c_char_p(arg), ctypes.c_void_p).value or 0
    return buffer_address(arg)          # bytearray, memoryview, cffi cdata/buffer


class SyscallShim:
    """``syscall(nr, *args)`` answered by a simulated kernel (see the module docstring)."""

    def __init__(self, kern, task=None, *, raw: bool = False, lock=None):
        self.kern = kern
        self.task = task
        self.raw = raw
        self.lock = lock

    def __call__(self, nr, *args) -> int:
        nr = user_address(nr)
        regs = [user_address(a) for a in args] + [0] * (6 - len(args))
        ret = self._dispatch(nr, regs, args)
        if ret < 0 and not self.raw:
            ctypes.set_errno(-ret)
            return -1
        return ret

    def _dispatch(self, nr: int, regs: list[int], args) -> int:
        task = self.task if self.task is not None else self.kern.current
        if nr == NR_X86_64.bpf:
            if self.lock is None:
                return sys_bpf(self.kern, task, _s32(regs[0]), regs[1], regs[2] & 0xFFFFFFFF)
            with self.lock:
                return sys_bpf(self.kern, task, _s32(regs[0]), regs[1], regs[2] & 0xFFFFFFFF)
        if nr in (NR_X86_64.close, NR_X86_64.dup, NR_X86_64.dup3) \
                and task.files.lookup(_s32(regs[0])) is not None:
            return self._fd_call(nr, task, regs)
        return self._host(nr, regs)

    def _fd_call(self, nr: int, task, regs: list[int]) -> int:
        fd = _s32(regs[0])
        try:
            if nr == NR_X86_64.close:
                task.files.close(fd)
                return 0
            if nr == NR_X86_64.dup:
                return task.files.dup(fd)
        except KernelError as e:
            return -e.errno
        return -Errno.EOPNOTSUPP         # dup3 onto a chosen number: not modelled

    @staticmethod
    def _host(nr: int, regs: list[int]) -> int:
        r = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(v) for v in regs))
        return r if r >= 0 else -ctypes.get_errno()


def syscall_shim(kern, task=None, *, raw: bool = False, lock=None) -> SyscallShim:
    """A ``syscall(nr, *args)`` for ctypes-based loaders, answered by `kern` (see module doc)."""
    return SyscallShim(kern, task, raw=raw, lock=lock)
