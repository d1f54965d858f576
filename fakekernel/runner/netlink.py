"""NETLINK_ROUTE sockets of targets — net/netlink/af_netlink.c (socket, bind, getsockname,
setsockopt) in front of the emulated rtnetlink (fakekernel/net/rtnetlink.py).

socket(AF_NETLINK, type, NETLINK_ROUTE) is trapped (the filter checks the arguments) and
answered with one end of an AF_UNIX SOCK_SEQPACKET pair: message boundaries are kept,
send/recv/recvmsg (MSG_PEEK|MSG_TRUNC included), poll, dup, fork and close all work
natively on it.  The supervisor keeps the other end in its epoll loop, reads each
datagram with the sender's credentials (SO_PASSCRED: whose fd table the IFLA_XDP_FD of a
request names), runs it through `NetlinkSock.rcv` and writes the replies back, one
datagram per message.  What AF_UNIX would answer differently is trapped on our sockets:
bind (a sockaddr_nl), getsockname (the port id), setsockopt(SOL_NETLINK, ...) (ext ack,
cap ack, strict checking).  A closed socket is seen as EPOLLHUP on our end.
"""
from __future__ import annotations

import os
import socket

from fakekernel.errors import Errno, KernelError
from fakekernel.net.rtnetlink import NetlinkSock
from fakekernel.runner.notify import NotifError
from uapi import netlink as nl

__all__ = ["NetlinkSockets"]

_SOCK_TYPE_MASK = 0xF
_SOCK_RAW, _SOCK_DGRAM = 3, 2
_SOCK_NONBLOCK, _SOCK_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_SOCKADDR_NL = nl.ffi.sizeof("struct sockaddr_nl")
_UCRED = socket.CMSG_SPACE(12)


def _errno_on_fault(fn):
    """A KernelError (EFAULT from user memory) becomes the syscall's -errno."""
    def wrapper(self, task, n, cont):
        try:
            return fn(self, task, n, cont)
        except KernelError as e:
            return -e.errno
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _bind_as_kernel_port(ours: socket.socket) -> None:
    """The target reads our end's address as the sender of every reply (recvmsg's msg_name).
    iproute2 (`tc`, `ip`) checks it as a sockaddr_nl: 12 bytes long and nl_pid 0 (the
    kernel), else it skips the message (dumps) or exits (requests).  Bind our end to an
    abstract AF_UNIX name of exactly that size whose bytes at nl_pid's offset are zero, the
    others random (names are unique per namespace) — rather than the autobind name
    SO_PASSCRED would give it."""
    while True:
        tag = os.urandom(5)
        try:                  # sun_path: NUL, [nl_pad high byte], nl_pid (0), nl_groups
            ours.bind(b"\0" + tag[:1] + bytes(4) + tag[1:])
            return
        except OSError as e:
            if e.errno != Errno.EADDRINUSE:
                raise


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class NetlinkSockets:
    """The supervisor's emulated NETLINK_ROUTE sockets, keyed by their target-side inode."""

    def __init__(self, sup):
        self.sup = sup
        self._by_key: dict[tuple[int, int], tuple[socket.socket, NetlinkSock]] = {}
        self._by_fd: dict[int, tuple[tuple[int, int], socket.socket, NetlinkSock]] = {}

    # ---- socket(2) ----
    def socket(self, task, n):
        stype = _s32(n.data.args[1])
        if stype & _SOCK_TYPE_MASK not in (_SOCK_RAW, _SOCK_DGRAM):
            return -Errno.ESOCKTNOSUPPORT
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _bind_as_kernel_port(ours)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        if stype & _SOCK_NONBLOCK:
            theirs.setblocking(False)
        st = os.fstat(theirs.fileno())
        key = (st.st_dev, st.st_ino)
        nlsk = NetlinkSock(self.sup.kern, portid=task.tgid)
        try:
            fd = self.sup.listener.addfd(n.id, theirs.fileno(), send=True,
                                         cloexec=bool(stype & _SOCK_CLOEXEC))
        except NotifError as e:
            ours.close()
            if e.errno == Errno.ENOENT:             # the target is gone
                task.files.replied = True
                return 0
            return -e.errno
        finally:
            theirs.close()
        task.files.replied = True
        self._by_key[key] = (ours, nlsk)
        self._by_fd[ours.fileno()] = (key, ours, nlsk)
        self.sup.watch(ours.fileno(), self._readable)
        self.sup._trace(task.pid, f"socket(AF_NETLINK, {stype:#x}, NETLINK_ROUTE) = {fd}")
        return fd

    def _ours(self, task, fd: int) -> NetlinkSock | None:
        try:
            st = os.stat(f"/proc/{task.pid}/fd/{fd}")
        except OSError:
            return None
        entry = self._by_key.get((st.st_dev, st.st_ino))
        return entry[1] if entry is not None else None

    # ---- bind(2), getsockname(2), setsockopt(2) ----
    @_errno_on_fault
    def bind(self, task, n, cont):
        nlsk = self._ours(task, _s32(n.data.args[0]))
        if nlsk is None:
            return cont
        if n.data.args[2] < _SOCKADDR_NL:
            return -Errno.EINVAL
        sa = nl.ffi.new("struct sockaddr_nl *")
        raw = task.mm.copy_from_user(n.data.args[1], _SOCKADDR_NL)
        nl.ffi.memmove(sa, raw, _SOCKADDR_NL)
        if sa.nl_family != nl.AF_NETLINK:
            return -Errno.EINVAL
        if sa.nl_pid:
            nlsk.portid = sa.nl_pid
        return 0

    @_errno_on_fault
    def getsockname(self, task, n, cont):
        nlsk = self._ours(task, _s32(n.data.args[0]))
        if nlsk is None:
            return cont
        lenp = n.data.args[2]
        length = int.from_bytes(task.mm.copy_from_user(lenp, 4), "little", signed=True)
        if length < 0:
            return -Errno.EINVAL
        sa = nl.ffi.new("struct sockaddr_nl *", {"nl_family": nl.AF_NETLINK,
                                                 "nl_pid": nlsk.portid})
        task.mm.copy_to_user(n.data.args[1], bytes(nl.ffi.buffer(sa))[:length])
        task.mm.copy_to_user(lenp, _SOCKADDR_NL.to_bytes(4, "little"))
        return 0

    @_errno_on_fault
    def setsockopt(self, task, n, cont):
        nlsk = self._ours(task, _s32(n.data.args[0]))
        if nlsk is None:
            return cont
        opt, optlen = _s32(n.data.args[2]), n.data.args[4] & 0xFFFFFFFF
        if optlen < 4:
            return -Errno.EINVAL
        on = bool(int.from_bytes(task.mm.copy_from_user(n.data.args[3], 4), "little"))
        if opt == nl.NETLINK_EXT_ACK:
            nlsk.ext_ack = on
        elif opt == nl.NETLINK_CAP_ACK:
            nlsk.cap_ack = on
        elif opt != nl.NETLINK_GET_STRICT_CHK:
            return -Errno.ENOPROTOOPT
        return 0

    # ---- requests ----
    def _readable(self, fd: int, events: int) -> None:
        key, ours, nlsk = self._by_fd[fd]
        while True:
            try:
                data, anc, _, _ = ours.recvmsg(1 << 16, _UCRED)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:                    # the target's end is closed everywhere
                self.sup.unwatch(fd)
                del self._by_fd[fd], self._by_key[key]
                ours.close()
                return
            pid = next((int.from_bytes(d[:4], "little") for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), None)
            task = self.sup.task_for(pid) if pid else self.sup.kern.current
            with self.sup.lock:
                saved, self.sup.kern.current = self.sup.kern.current, task
                try:
                    replies = nlsk.rcv(task, data)
                finally:
                    self.sup.kern.current = saved
            for r in replies:
                try:
                    ours.send(r)
                except OSError:
                    break

    def close(self) -> None:
        for _, ours, _ in list(self._by_fd.values()):
            self.sup.unwatch(ours.fileno())
            ours.close()
        self._by_fd.clear()
        self._by_key.clear()
