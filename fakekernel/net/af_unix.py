"""Unix-domain sockets — net/unix/af_unix.c (unix_create, unix_bind, unix_listen,
unix_stream_connect, unix_accept, unix_socketpair), reduced to what BPF maps see.

Names live in the simulated namespace only (``net.unix_names``; nothing is created on the
host filesystem).  A stream/seqpacket socket is ESTABLISHED once paired or connected, a
listener is LISTEN; datagram sockets are ESTABLISHED when paired or connected.  SOCK_RAW is
SOCK_DGRAM, as in unix_create().
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.socket import (AF_UNIX, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET, SOCK_STREAM,
                                   Socket, TcpState)

__all__ = ["UnixSocket", "unix_create"]

PF_UNIX = AF_UNIX
UNIX_PATH_MAX = 108


@attrs.define(eq=False)
class UnixSocket(Socket):
    """struct unix_sock."""

    name: object = None                 # bound path (str/bytes), None when unbound
    peer_sock: "UnixSocket | None" = None
    accept_queue: list = attrs.field(factory=list)

    @property
    def psock_update_sk_prot(self) -> bool:
        """unix_dgram_proto / unix_stream_proto have it; seqpacket does not."""
        return self.type in (SOCK_STREAM, SOCK_DGRAM)

    def sk_is_stream_unix(self) -> bool:
        return self.type == SOCK_STREAM

    def sk_hashed(self) -> bool:
        return True

    def getsockname(self):
        return self.name if self.name is not None else ""

    def bind(self, addr) -> None:
        """unix_bind()."""
        if not isinstance(addr, (str, bytes)) or not addr:
            raise KernelError(Errno.EINVAL, "bad unix address")
        if len(addr.encode() if isinstance(addr, str) else addr) >= UNIX_PATH_MAX:
            raise KernelError(Errno.EINVAL, "unix path too long")
        if self.name is not None:
            raise KernelError(Errno.EINVAL, "already bound")
        if addr in self.net.unix_names:
            raise KernelError(Errno.EADDRINUSE, "name in use")
        self.net.unix_names[addr] = self
        self.name = addr

    def listen(self, backlog: int) -> None:
        """unix_listen()."""
        if self.type not in (SOCK_STREAM, SOCK_SEQPACKET):
            raise KernelError(Errno.EOPNOTSUPP, "listen on a datagram socket")
        if self.name is None:
            raise KernelError(Errno.EINVAL, "listen before bind")
        if self.state not in (TcpState.CLOSE, TcpState.LISTEN):
            raise KernelError(Errno.EINVAL, "listen on a connected socket")
        self.state = TcpState.LISTEN

    def _pair(self, other: "UnixSocket") -> None:
        self.peer_sock, other.peer_sock = other, self
        self.state = other.state = TcpState.ESTABLISHED

    def socketpair(self, other: "UnixSocket") -> None:
        self._pair(other)

    def connect(self, addr) -> None:
        """unix_stream_connect() / unix_dgram_connect()."""
        target = self.net.unix_names.get(addr)
        if target is None or target.released:
            raise KernelError(Errno.ENOENT if isinstance(addr, str) and addr[:1] != "\0"
                              else Errno.ECONNREFUSED, "no socket bound there")
        if target.type != self.type:
            raise KernelError(Errno.EPROTOTYPE, "socket type mismatch")
        if self.type == SOCK_DGRAM:
            self.peer_sock, self.state = target, TcpState.ESTABLISHED
            return
        if self.state == TcpState.ESTABLISHED:
            raise KernelError(Errno.EISCONN, "already connected")
        if self.state != TcpState.CLOSE:
            raise KernelError(Errno.EINVAL, "not a closed socket")
        if target.state != TcpState.LISTEN:
            raise KernelError(Errno.ECONNREFUSED, "not listening")
        child = self.net.add(UnixSocket(net=self.net, family=AF_UNIX, type=self.type,
                                        protocol=self.protocol))
        self._pair(child)
        target.accept_queue.append(child)

    def accept(self) -> "UnixSocket":
        if self.type == SOCK_DGRAM:
            raise KernelError(Errno.EOPNOTSUPP, "accept on a datagram socket")
        if self.state != TcpState.LISTEN:
            raise KernelError(Errno.EINVAL, "accept on a socket that is not listening")
        if not self.accept_queue:
            raise KernelError(Errno.EAGAIN, "no connection to accept")
        return self.accept_queue.pop(0)

    def release(self) -> None:
        """unix_release_sock(): the name goes; unaccepted children are released too."""
        if self.released:
            return
        if self.name is not None and self.net.unix_names.get(self.name) is self:
            del self.net.unix_names[self.name]
        for child in self.accept_queue:
            child.release()
        self.accept_queue.clear()
        super().release()
        self.state = TcpState.CLOSE


def unix_create(net, sock_type: int, protocol: int) -> UnixSocket:
    """unix_create()."""
    if protocol and protocol != PF_UNIX:
        raise KernelError(Errno.EPROTONOSUPPORT, "unix sockets take protocol 0")
    if sock_type == SOCK_RAW:
        sock_type = SOCK_DGRAM
    if sock_type not in (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET):
        raise KernelError(Errno.ESOCKTNOSUPPORT, "socket type not supported")
    return UnixSocket(net=net, family=AF_UNIX, type=sock_type, protocol=0)   # sk_protocol stays 0
