"""epoll on emulated fds — fs/eventpoll.c (epoll_ctl) for objects that live in the emulator.

A target's fd for a ring buffer is a re-opened memfd (remote_files.py), and the real
epoll refuses regular files (EPERM).  So epoll_ctl(2) is trapped: for an fd whose object
can be polled (it has ``map_poll`` and a ``waitq``) the supervisor takes a copy of the
target's epoll fd (pidfd_getfd) and registers, in that same epoll instance, an eventfd of
its own carrying the target's ``epoll_data``; the object's wait queue writes to the
eventfd where the kernel would wake its pollers.  Everything else CONTINUEs.

The eventfd is registered edge-triggered (EPOLLET): nobody in the target reads it, so a
level-triggered eventfd would stay ready forever.  The difference from the kernel: a
level-triggered waiter that leaves data unconsumed is not woken again until the next
wakeup (libbpf's ring_buffer__poll consumes everything it is woken for).  Removing the
target's fd (close) does not remove the registration, as it would in the kernel; it goes
when the target deletes it or the object dies.
"""
from __future__ import annotations

import os

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.runner.remote_files import OTHER_FILE_KIND
from uapi.seccomp import NR_X86_64
from uapi.vfs import EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLET, ffi, libc

__all__ = ["EpollBridge"]

_EVENT_SIZE = ffi.sizeof("struct epoll_event")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@attrs.define(eq=False)
class _Registration:
    efd: int
    obj: object
    waker: object


class EpollBridge:
    """Per supervisor: (target epoll inode, target fd number) -> our eventfd registration."""

    def __init__(self) -> None:
        self._regs: dict[tuple[int, int, int], _Registration] = {}

    def epoll_ctl(self, task, n, cont):
        """SYSCALL_DEFINE4(epoll_ctl, ...) when `fd` is pollable and emulated; `cont` else."""
        epfd, op, fd = _s32(n.data.args[0]), _s32(n.data.args[1]), _s32(n.data.args[2])
        f = task.files.lookup(fd)
        if f is None or f.kind == OTHER_FILE_KIND:
            return cont
        obj = f.private_data
        if getattr(obj, "map_poll", None) is None or getattr(obj, "waitq", None) is None:
            return cont
        if op not in (EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD):
            return -Errno.EINVAL
        ev = None
        if op != EPOLL_CTL_DEL:
            raw = task.mm.copy_from_user(n.data.args[3], _EVENT_SIZE)
            ev = ffi.new("struct epoll_event *")
            ffi.memmove(ev, raw, _EVENT_SIZE)
        try:
            st = os.stat(f"/proc/{task.pid}/fd/{epfd}")
        except OSError:
            return -Errno.EBADF
        key = (st.st_dev, st.st_ino, fd)
        ep = self._target_epoll(task, epfd)
        try:
            return self._ctl(ep, op, key, obj, ev)
        finally:
            os.close(ep)

    def _target_epoll(self, task, epfd: int) -> int:
        pidfd = os.pidfd_open(task.tgid)
        try:
            ep = libc.syscall(NR_X86_64.pidfd_getfd, ffi.cast("int", pidfd), ffi.cast("int", epfd),
                              ffi.cast("unsigned int", 0))
            if ep < 0:
                raise KernelError(Errno(ffi.errno), "pidfd_getfd of the target's epoll fd")
        finally:
            os.close(pidfd)
        return ep

    def _ctl(self, ep: int, op: int, key, obj, ev) -> int:
        reg = self._regs.get(key)
        if op == EPOLL_CTL_ADD:
            if reg is not None:
                return -Errno.EEXIST
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            ours = ffi.new("struct epoll_event *", {"events": ev.events | EPOLLET, "data": ev.data})
            if libc.epoll_ctl(ep, EPOLL_CTL_ADD, efd, ours) < 0:
                err = ffi.errno
                os.close(efd)
                return -err
            reg = _Registration(efd=efd, obj=obj, waker=lambda: _kick(efd))
            obj.waitq.add(reg.waker)
            self._regs[key] = reg
            if obj.map_poll() & ev.events:
                _kick(efd)
            return 0
        if reg is None:
            return -Errno.ENOENT
        if op == EPOLL_CTL_MOD:
            ours = ffi.new("struct epoll_event *", {"events": ev.events | EPOLLET, "data": ev.data})
            if libc.epoll_ctl(ep, EPOLL_CTL_MOD, reg.efd, ours) < 0:
                return -ffi.errno
            if obj.map_poll() & ev.events:
                _kick(reg.efd)
            return 0
        libc.epoll_ctl(ep, EPOLL_CTL_DEL, reg.efd, ffi.NULL)
        self._drop(key)
        return 0

    def _drop(self, key) -> None:
        reg = self._regs.pop(key)
        reg.obj.waitq.remove(reg.waker)
        os.close(reg.efd)

    def close(self) -> None:
        for key in list(self._regs):
            self._drop(key)


def _kick(efd: int) -> None:
    try:
        os.eventfd_write(efd, 1)
    except OSError:         # the counter is saturated: the waiter is long awake
        pass
