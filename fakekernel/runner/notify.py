"""The seccomp listener fd — kernel/seccomp.c: seccomp_notify_ioctl() (RECV/SEND/ID_VALID/ADDFD).

A thin cffi wrapper; errors come back as the (positive) errno of the failed ioctl so the
supervisor can tell "the target is gone" (ENOENT) from real failures.
"""
from __future__ import annotations

import os

import attrs

from uapi.errno import Errno
from uapi.seccomp import NOTIF_FD_SYNC_WAKE_UP, AddfdFlag, Ioctl, NotifFlag, ffi, libc

__all__ = ["Listener", "NotifError", "NotifData", "Notif"]

O_CLOEXEC = os.O_CLOEXEC


@attrs.define(eq=False)
class NotifData:
    """struct seccomp_data as the supervisor reads it (arch, syscall number, six args)."""

    arch: int
    nr: int
    args: tuple


@attrs.define(eq=False)
class Notif:
    """A syscall to answer that did not come from a seccomp listener (the LD_PRELOAD shim's
    forwards, ptrace stops) in the shape `Supervisor.handle` takes."""

    id: int
    pid: int
    data: NotifData


class NotifError(OSError):
    """A listener ioctl failed; `.errno` is the host errno (Linux values)."""


class Listener:
    def __init__(self, fd: int):
        self.fd = fd
        self.addfd_send = True          # SECCOMP_ADDFD_FLAG_SEND (5.14); cleared on EINVAL
        self._id = ffi.new("uint64_t *")

    def _ioctl(self, req: int, arg) -> int:
        while True:
            r = libc.ioctl(self.fd, req, arg)
            if r >= 0:
                return r
            e = ffi.errno
            if e != Errno.EINTR:
                raise NotifError(e, f"{Ioctl(req).name}: {os.strerror(e)}")

    def recv(self):
        """NOTIF_RECV into a zeroed struct seccomp_notif (the kernel wants it zeroed)."""
        n = ffi.new("struct seccomp_notif *")
        self._ioctl(Ioctl.NOTIF_RECV, n)
        return n

    def id_valid(self, notif_id: int) -> bool:
        self._id[0] = notif_id
        try:
            self._ioctl(Ioctl.NOTIF_ID_VALID, self._id)
        except NotifError as e:
            if e.errno == Errno.ENOENT:
                return False
            raise
        return True

    def send(self, notif_id: int, ret: int) -> bool:
        """Reply `ret` (>= 0: the syscall's value, < 0: -errno). False if the target is gone."""
        r = ffi.new("struct seccomp_notif_resp *")
        r.id = notif_id
        if ret < 0:
            r.error = ret
        else:
            r.val = ret
        return self._send(r)

    def send_continue(self, notif_id: int) -> bool:
        """Let the real kernel run the syscall (SECCOMP_USER_NOTIF_FLAG_CONTINUE)."""
        r = ffi.new("struct seccomp_notif_resp *")
        r.id = notif_id
        r.flags = NotifFlag.CONTINUE
        return self._send(r)

    def _send(self, r) -> bool:
        try:
            self._ioctl(Ioctl.NOTIF_SEND, r)
        except NotifError as e:
            if e.errno == Errno.ENOENT:
                return False
            raise
        return True

    def addfd(self, notif_id: int, srcfd: int, *, send: bool, cloexec: bool = True) -> int:
        """Install our `srcfd` as the target's lowest free fd; with `send`, also reply with it.

        Raises NotifError: ENOENT when the target is gone (nothing was installed),
        EMFILE when its fd table is full.  Without kernel support for the SEND flag the
        install and the reply are two steps (SEND is then done by the caller).
        """
        a = ffi.new("struct seccomp_notif_addfd *")
        a.id = notif_id
        a.srcfd = srcfd
        a.newfd_flags = O_CLOEXEC if cloexec else 0
        if send and self.addfd_send:
            a.flags = AddfdFlag.SEND
            try:
                return self._ioctl(Ioctl.NOTIF_ADDFD, a)
            except NotifError as e:
                if e.errno != Errno.EINVAL:
                    raise
                self.addfd_send = False     # kernel < 5.14
                a.flags = 0
        fd = self._ioctl(Ioctl.NOTIF_ADDFD, a)
        if send:
            self.send(notif_id, fd)
        return fd

    def set_sync_wakeup(self) -> bool:
        """NOTIF_SET_FLAGS(SYNC_WAKE_UP) (6.6+): wake the target on our CPU. False if unsupported."""
        try:       # the flags are the ioctl argument itself, not a pointer
            self._ioctl(Ioctl.NOTIF_SET_FLAGS, ffi.cast("unsigned long", NOTIF_FD_SYNC_WAKE_UP))
        except NotifError:
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
