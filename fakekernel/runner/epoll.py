"""epoll on emulated fds — fs/eventpoll.c (epoll_ctl, ep_poll) for objects that live in the emulator.

A target's fd for a ring buffer is a re-opened memfd (remote_files.py), and the real
epoll refuses regular files (EPERM).  So epoll_ctl(2) is trapped: for an fd whose object
can be polled (it has ``map_poll`` and a ``waitq``) the supervisor takes a copy of the
target's epoll fd (pidfd_getfd) and registers, in that same epoll instance, an eventfd of
its own carrying the target's ``epoll_data``.  Everything else CONTINUEs.  Epoll
instances are told apart with kcmp(KCMP_FILE) against the copies we keep (all epoll fds
share one anonymous inode, so stat cannot).

Edge-triggered registrations (EPOLLET) get an edge-triggered eventfd, written where the
kernel wakes the object's pollers (its wait queue); so do perf events (see `_events`).
Level-triggered ones on maps (ring buffers) -- the kernel
calls the file's poll() at every epoll_wait -- get a level-triggered eventfd whose counter
is kept non-zero exactly while ``map_poll()`` says the object is ready: set when the wait
queue wakes, and re-synchronised at each epoll_wait/epoll_pwait/epoll_pwait2 of the target
on that instance (those are trapped, and CONTINUE after the sync), since a consumer
catching up in shared memory wakes nobody.  So a waiter that leaves data unconsumed is
reported ready again, as on Linux.  Removing the target's fd (close) does not remove the
registration, as it would in the kernel; it goes when the target deletes it or the
object dies.
"""
from __future__ import annotations

import os

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.runner.remote_files import OTHER_FILE_KIND
from uapi.seccomp import NR_X86_64
from uapi.vfs import EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLET, ffi, libc

__all__ = ["EpollBridge"]

_EVENT_SIZE = ffi.sizeof("struct epoll_event")
_KCMP_FILE = 0                      # include/uapi/linux/kcmp.h


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@attrs.define(eq=False)
class _Registration:
    efd: int
    obj: object
    events: int
    level: bool                     # level-triggered (else our eventfd is EPOLLET)
    waker: object = None
    armed: bool = False             # level-triggered: our eventfd's counter is non-zero

    def sync(self) -> None:
        """Level-triggered: make our eventfd ready iff the object is (ep_item_poll)."""
        ready = bool(self.obj.map_poll() & self.events)
        if ready and not self.armed:
            _kick(self.efd)
            self.armed = True
        elif not ready and self.armed:
            _drain(self.efd)
            self.armed = False

    def wake(self) -> None:
        """The object's wait queue woke its pollers."""
        if self.level:
            self.sync()
        else:
            _kick(self.efd)


@attrs.define(eq=False)
class _Instance:
    """One target epoll instance (struct eventpoll) we registered eventfds in."""
    ep: int                         # our reference to it
    regs: dict = attrs.Factory(dict)     # target fd number -> _Registration


class EpollBridge:
    """Per supervisor: the target epoll instances holding our eventfd registrations."""

    def __init__(self) -> None:
        self._instances: list[_Instance] = []
        self._level = 0                 # level-triggered registrations alive
        # the target's epoll waits reach us (seccomp, ptrace); the LD_PRELOAD library does
        # not forward them, so there every registration stays edge-triggered
        self.sees_waits = True

    def _events(self, ev, obj) -> tuple[int, bool]:
        """(events for our eventfd, level-triggered?) for the target's `ev.events` on `obj`.

        Only a map's poll reports a state (ringbuf_map_poll_kern/_user); perf_poll() takes
        the pending wakeup, so on Linux a level-triggered waiter is reported each wakeup
        once -- exactly what an edge-triggered eventfd gives."""
        level = not ev.events & EPOLLET and self.sees_waits and isinstance(obj, BpfMap)
        return (ev.events if level else ev.events | EPOLLET), level

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
        inst = self._instance(task, epfd, create=op == EPOLL_CTL_ADD)
        if inst is None:
            return -Errno.ENOENT
        return self._ctl(inst, op, fd, obj, ev)

    def epoll_wait(self, task, n, cont):
        """epoll_wait/epoll_pwait/epoll_pwait2: re-poll our level-triggered registrations
        in that instance (ep_send_events calls ->poll for them), then `cont`."""
        if not self._level:
            return cont
        try:
            inst = self._instance(task, _s32(n.data.args[0]), create=False)
        except KernelError:
            return cont                 # not an fd of the target's: the kernel says EBADF
        if inst is not None:
            for reg in inst.regs.values():
                if reg.level:
                    reg.sync()
        return cont

    def _instance(self, task, epfd: int, create: bool) -> _Instance | None:
        ep = self._target_epoll(task, epfd)
        for inst in self._instances:
            if libc.syscall(NR_X86_64.kcmp, ffi.cast("int", os.getpid()),
                            ffi.cast("int", os.getpid()), ffi.cast("int", _KCMP_FILE),
                            ffi.cast("unsigned long", ep),
                            ffi.cast("unsigned long", inst.ep)) == 0:
                os.close(ep)
                return inst
        if not create:
            os.close(ep)
            return None
        inst = _Instance(ep=ep)
        self._instances.append(inst)
        return inst

    def _target_epoll(self, task, epfd: int) -> int:
        try:
            pidfd = os.pidfd_open(task.tgid)
        except OSError as e:
            raise KernelError(Errno(e.errno), "pidfd_open of the target") from None
        try:
            ep = libc.syscall(NR_X86_64.pidfd_getfd, ffi.cast("int", pidfd), ffi.cast("int", epfd),
                              ffi.cast("unsigned int", 0))
            if ep < 0:
                raise KernelError(Errno(ffi.errno), "pidfd_getfd of the target's epoll fd")
        finally:
            os.close(pidfd)
        return ep

    def _ctl(self, inst: _Instance, op: int, fd: int, obj, ev) -> int:
        reg = inst.regs.get(fd)
        if op == EPOLL_CTL_ADD:
            if reg is not None:
                return -Errno.EEXIST
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            events, level = self._events(ev, obj)
            ours = ffi.new("struct epoll_event *", {"events": events, "data": ev.data})
            if libc.epoll_ctl(inst.ep, EPOLL_CTL_ADD, efd, ours) < 0:
                err = ffi.errno
                os.close(efd)
                self._forget_if_empty(inst)
                return -err
            reg = _Registration(efd=efd, obj=obj, events=ev.events, level=level)
            reg.waker = reg.wake
            obj.waitq.add(reg.waker)
            inst.regs[fd] = reg
            self._level += reg.level
            self._arm(reg)
            return 0
        if reg is None:
            return -Errno.ENOENT
        if op == EPOLL_CTL_MOD:
            events, level = self._events(ev, obj)
            ours = ffi.new("struct epoll_event *", {"events": events, "data": ev.data})
            _drain(reg.efd)             # MOD re-polls: start from the object's state
            reg.armed = False
            if libc.epoll_ctl(inst.ep, EPOLL_CTL_MOD, reg.efd, ours) < 0:
                err = ffi.errno
                self._arm(reg)
                return -err
            self._level += level - reg.level
            reg.events, reg.level = ev.events, level
            self._arm(reg)
            return 0
        libc.epoll_ctl(inst.ep, EPOLL_CTL_DEL, reg.efd, ffi.NULL)
        self._drop(inst, fd)
        return 0

    @staticmethod
    def _arm(reg: _Registration) -> None:
        """ep_insert/ep_modify poll the file once: ready now means an event now."""
        if reg.level:
            reg.sync()
        elif reg.obj.map_poll() & reg.events:
            _kick(reg.efd)

    def _drop(self, inst: _Instance, fd: int) -> None:
        reg = inst.regs.pop(fd)
        self._level -= reg.level
        reg.obj.waitq.remove(reg.waker)
        os.close(reg.efd)
        self._forget_if_empty(inst)

    def _forget_if_empty(self, inst: _Instance) -> None:
        if not inst.regs and inst in self._instances:
            self._instances.remove(inst)
            os.close(inst.ep)

    def close(self) -> None:
        for inst in list(self._instances):
            for fd in list(inst.regs):
                self._drop(inst, fd)
            self._forget_if_empty(inst)


def _kick(efd: int) -> None:
    try:
        os.eventfd_write(efd, 1)
    except OSError:         # the counter is saturated: the waiter is long awake
        pass


def _drain(efd: int) -> None:
    try:
        os.eventfd_read(efd)
    except BlockingIOError:
        pass
