"""IPv4/IPv6 sockets — net/ipv4/af_inet.c + net/ipv6/af_inet6.c (inet_create, inet_bind,
inet_listen, inet_stream_connect, inet_accept), reduced to one loopback host.

TCP, UDP and raw sockets with the state the BPF socket maps look at: the bound address and
port (the kernel's port tables: EADDRINUSE unless SO_REUSEPORT on both / SO_REUSEADDR with no
listener), hashing (UDP once bound, TCP when listening or connected), SO_REUSEPORT groups,
and TCP connections over loopback: ``connect`` to a listener makes an ESTABLISHED pair whose
server half waits in the listener's accept queue.  Closing a TCP socket sends FIN (the peer
goes CLOSE_WAIT); closing a listener resets the connections nobody accepted (their clients
go CLOSE with ECONNRESET — they stay in any socket map, as 6.18 has no sockmap unhash hook
for TCP/UDP: only close() or a map delete takes a socket out).
Bound UDP sockets and TCP listeners also appear in ``net.sockets`` (fakekernel.net.rx) so
that frames received on a device are delivered to them.

Not modelled: after a refused connect the kernel's getsockname still shows the ephemeral
source port it had picked (here: port 0); IPV6_V6ONLY; SO_REUSEADDR's finer TCP rules.

Addresses are what Python's socket module uses: ``(host, port)`` for AF_INET,
``(host, port[, flowinfo, scope_id])`` for AF_INET6.  Only local addresses exist:
0.0.0.0 / 127.0.0.0/8 and :: / ::1.
"""
from __future__ import annotations

import ipaddress

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.socket import (AF_INET, AF_INET6, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM, Socket,
                                   TcpState)

__all__ = ["InetSocket", "inet_create", "inet6_create", "IPPROTO_TCP", "IPPROTO_UDP",
           "IPPROTO_ICMP", "EPHEMERAL_LOW", "EPHEMERAL_HIGH"]

# include/uapi/linux/in.h, in6.h
IPPROTO_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 0, 1, 6, 17, 58
IPPROTO_RAW = 255
SOCK_PACKET = 10
# net.ipv4.ip_local_port_range default
EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999
_PORT_MAX = 0xFFFF

# inetsw[]: the protocols each socket type may be opened with (protocol 0 = the first)
_INETSW = {
    AF_INET: {SOCK_STREAM: (IPPROTO_TCP,), SOCK_DGRAM: (IPPROTO_UDP, IPPROTO_ICMP)},
    AF_INET6: {SOCK_STREAM: (IPPROTO_TCP,), SOCK_DGRAM: (IPPROTO_UDP, IPPROTO_ICMPV6)},
}


@attrs.define(eq=False)
class InetSocket(Socket):
    """struct inet_sock / tcp_sock / udp_sock."""

    addr: bytes | None = None          # inet_rcv_saddr (None: not bound)
    port: int = 0                      # inet_num
    peer: tuple | None = None          # (daddr, dport) once connected
    peer_sock: "InetSocket | None" = None
    accept_queue: list = attrs.field(factory=list)
    listener: "InetSocket | None" = None   # a connection not yet accepted: its listener
    hashed: bool = False
    reuseport_cb: object = False       # sk_reuseport_cb: the SO_REUSEPORT group (sock_reuseport.py)
    rx_entry: object = None            # the fakekernel.net.rx.Socket for local delivery

    @property
    def psock_update_sk_prot(self) -> bool:
        """tcp_prot / udp_prot have psock_update_sk_prot; raw and ping sockets do not."""
        return self.sk_is_tcp() or self.sk_is_udp()

    def sk_is_tcp(self) -> bool:
        return self.type == SOCK_STREAM and self.protocol == IPPROTO_TCP

    def sk_is_udp(self) -> bool:
        return self.type == SOCK_DGRAM and self.protocol == IPPROTO_UDP

    def sk_hashed(self) -> bool:
        return self.hashed

    # ---- addresses ----
    def _any(self) -> bytes:
        return bytes(4 if self.family == AF_INET else 16)

    def _parse(self, addr) -> tuple[bytes, int]:
        if not isinstance(addr, tuple) or len(addr) < 2 or \
                len(addr) > (2 if self.family == AF_INET else 4):
            raise KernelError(Errno.EINVAL, "bad address")
        host, port = addr[0], addr[1]
        if not isinstance(port, int) or not 0 <= port <= _PORT_MAX:
            raise KernelError(Errno.EINVAL, "bad port")
        try:
            ip = ipaddress.ip_address(host or ("0.0.0.0" if self.family == AF_INET else "::"))
        except ValueError:
            raise KernelError(Errno.EINVAL, f"bad host {host!r}") from None
        if ip.version != (4 if self.family == AF_INET else 6):
            raise KernelError(Errno.EAFNOSUPPORT, "address of another family")
        if not (ip.is_unspecified or ip.is_loopback):
            raise KernelError(Errno.EADDRNOTAVAIL, f"{host} is not a local address")
        return ip.packed, port

    def _loopback(self) -> bytes:
        return ipaddress.ip_address("127.0.0.1" if self.family == AF_INET else "::1").packed

    def _sockaddr(self, addr: bytes | None, port: int):
        ip = ipaddress.ip_address(addr or self._any())
        if self.family == AF_INET:
            return (str(ip), port)
        return (str(ip), port, 0, 0)

    def getsockname(self):
        return self._sockaddr(self.addr, self.port)

    # ---- the port tables (inet_csk_get_port / udp_lib_get_port) ----
    def _same_table(self, other: "InetSocket") -> bool:
        """One port table per protocol, shared by IPv4 and IPv6."""
        return other is not self and other.protocol == self.protocol and \
            other.type == self.type and bool(other.port)

    def _conflicts(self, other: "InetSocket", addr: bytes, port: int) -> bool:
        if not self._same_table(other) or other.port != port:
            return False
        if other.family != self.family:
            # only a dual-stack IPv6 wildcard (no IPV6_V6ONLY) overlaps the IPv4 addresses
            v6_addr = addr if self.family == AF_INET6 else other.addr
            if v6_addr not in (None, bytes(16)):
                return False
        elif other.addr not in (None, self._any()) and addr != self._any() and other.addr != addr:
            return False
        if self.reuseport and other.reuseport:
            return False
        if self.sk_is_tcp() and self.reuseaddr and other.reuseaddr and \
                other.state != TcpState.LISTEN:
            return False
        return True

    def _legacy_holds(self, port: int) -> bool:
        """A socket made with world.net.bind (fakekernel.net.rx) holds the port."""
        ours = {id(s.rx_entry) for s in self.net.socks if isinstance(s, InetSocket)}
        return any(id(r) not in ours and r.protocol == self.protocol and r.port == port
                   for r in self.net.kern.world.net.sockets)

    def _get_port(self, addr: bytes, port: int) -> int:
        others = [s for s in self.net.socks if isinstance(s, InetSocket)]
        if port:
            if any(self._conflicts(o, addr, port) for o in others) or self._legacy_holds(port):
                raise KernelError(Errno.EADDRINUSE, f"port {port} in use")
            return port
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self.net.kern.prandom.randrange(span)
        for i in range(span):
            cand = EPHEMERAL_LOW + (start + i) % span
            if not any(o._same_table(self) and o.port == cand for o in others) and \
                    not self._legacy_holds(cand):
                return cand
        raise KernelError(Errno.EADDRINUSE, "no free ephemeral port")

    def _autobind(self) -> None:
        if not self.port:
            self.addr = self.addr or self._any()
            self.port = self._get_port(self.addr, 0)

    def _hash(self) -> None:
        """Into the lookup tables (and the receive path's socket list)."""
        was_hashed, self.hashed = self.hashed, True
        if self.reuseport and (self.sk_is_udp() or self.state == TcpState.LISTEN) and not was_hashed:
            from fakekernel.net.sock_reuseport import reuseport_hash
            reuseport_hash(self)               # reuseport_alloc() / reuseport_add_sock()
        if self.rx_entry is None and (self.sk_is_udp() or self.state == TcpState.LISTEN):
            from fakekernel.net.rx import Socket as RxSocket
            kern = self.net.kern
            cg = kern.current.cgroup or kern.world.cgroup.root
            any_ = self.addr in (None, self._any())
            self.rx_entry = RxSocket(family=self.family, protocol=self.protocol, port=self.port,
                                     cgroup=cg, addr=None if any_ else self.addr, owner=self)
            kern.world.net.sockets.append(self.rx_entry)

    def _unhash(self) -> None:
        if self.rx_entry is not None:
            sockets = self.net.kern.world.net.sockets
            if self.rx_entry in sockets:
                sockets.remove(self.rx_entry)
            self.rx_entry = None
        from fakekernel.net.sock_reuseport import reuseport_detach_sock
        reuseport_detach_sock(self)
        self.hashed = False

    # ---- proto_ops ----
    def bind(self, addr) -> None:
        """inet_bind() / inet6_bind()."""
        host, port = self._parse(addr)
        if self.type == SOCK_RAW:
            self.addr = host
            return
        if self.port or self.state != TcpState.CLOSE:
            raise KernelError(Errno.EINVAL, "already bound")
        self.port = self._get_port(host, port)
        self.addr = host
        if self.sk_is_udp():
            self._hash()

    def listen(self, backlog: int) -> None:
        """inet_listen()."""
        if not self.sk_is_tcp():
            raise KernelError(Errno.EOPNOTSUPP, "listen on a non-stream socket")
        if self.state not in (TcpState.CLOSE, TcpState.LISTEN):
            raise KernelError(Errno.EINVAL, "listen on a connected socket")
        if self.state == TcpState.LISTEN:
            return
        self._autobind()
        self.state = TcpState.LISTEN
        self._hash()

    def connect(self, addr) -> None:
        """inet_stream_connect() / udp connect (ip4_datagram_connect)."""
        if self.sk_is_tcp():
            if self.state == TcpState.ESTABLISHED:
                raise KernelError(Errno.EISCONN, "already connected")
            if self.state != TcpState.CLOSE:
                raise KernelError(Errno.EISCONN if self.state == TcpState.LISTEN else Errno.EINVAL,
                                  "not a closed socket")
        host, port = self._parse(addr)
        if self.sk_is_tcp():
            self._tcp_connect(host, port)
            return
        self._autobind()
        if self.addr == self._any():           # ip4_datagram_connect(): the route's source
            self.addr = self._loopback()
        self.peer = (host, port)
        self.state = TcpState.ESTABLISHED
        if self.sk_is_udp():
            self._hash()

    def _tcp_connect(self, host: bytes, port: int) -> None:
        lst = next((s for s in self.net.socks if isinstance(s, InetSocket) and s.sk_is_tcp()
                    and s.family == self.family and s.state == TcpState.LISTEN and s.port == port
                    and s.addr in (self._any(), host)), None)
        if lst is None:
            raise KernelError(Errno.ECONNREFUSED, "nothing listens there")
        local = host if host != self._any() else self._loopback()
        if not self.port:
            self.addr = local
            self.port = self._get_port(local, 0)
        if lst.reuseport_cb:
            from fakekernel.net.sock_reuseport import tcp_lookup_listener
            lst = tcp_lookup_listener(self.net.kern, lst, local, self.port, local, port)
            if lst is None:
                raise KernelError(Errno.ECONNREFUSED, "the reuseport program dropped the SYN")
        child = InetSocket(net=self.net, family=self.family, type=self.type,
                           protocol=self.protocol, state=TcpState.ESTABLISHED, addr=local,
                           port=lst.port, peer=(self.addr, self.port), peer_sock=self,
                           listener=lst)
        self.net.add(child)
        if lst.sk_bpf_storage:                       # sk_clone_lock()
            from fakekernel.maps.sk_storage import bpf_sk_storage_clone
            bpf_sk_storage_clone(lst, child)
        self.peer, self.peer_sock = (local, lst.port), child
        self.state = TcpState.ESTABLISHED
        self.hashed = child.hashed = True
        lst.accept_queue.append(child)

    def accept(self) -> "InetSocket":
        """inet_accept() (sock_no_accept for datagram sockets)."""
        if not self.sk_is_tcp():
            raise KernelError(Errno.EOPNOTSUPP, "accept on a non-stream socket")
        if self.state != TcpState.LISTEN:
            raise KernelError(Errno.EINVAL, "accept on a socket that is not listening")
        if not self.accept_queue:
            raise KernelError(Errno.EAGAIN, "no connection to accept")
        child = self.accept_queue.pop(0)
        child.listener = None
        return child

    # ---- teardown (tcp_close / udp_lib_close) ----
    def _peer_event(self, new_state: int, err: int = 0) -> None:
        peer = self.peer_sock
        if peer is None or peer.released:
            return
        if new_state == TcpState.CLOSE:
            peer.state, peer.err, peer.peer_sock = TcpState.CLOSE, err, None
            peer._unhash()
        elif peer.state == TcpState.ESTABLISHED:
            peer.state = TcpState.CLOSE_WAIT

    def release(self) -> None:
        if self.released:
            return
        if self.sk_is_tcp():
            if self.state == TcpState.LISTEN:
                for child in self.accept_queue:      # inet_csk_listen_stop: reset them
                    child._peer_event(TcpState.CLOSE, Errno.ECONNRESET)
                    child.released = True
                    self.net.forget(child)
                self.accept_queue.clear()
            elif self.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                self._peer_event(TcpState.CLOSE_WAIT)
        super().release()
        self.state = TcpState.CLOSE
        self._unhash()


def _inet_create_family(family: int):
    def create(net, sock_type: int, protocol: int) -> InetSocket:
        """inet_create() / inet6_create()."""
        if family == AF_INET and sock_type == SOCK_PACKET:
            raise KernelError(Errno.EAFNOSUPPORT, "SOCK_PACKET is AF_PACKET's (not modelled)")
        if sock_type == SOCK_RAW:
            if protocol == IPPROTO_IP:
                raise KernelError(Errno.EPROTONOSUPPORT, "raw sockets need a protocol")
            if not 0 < protocol <= IPPROTO_RAW:
                raise KernelError(Errno.EPROTONOSUPPORT, "bad protocol")
        else:
            protos = _INETSW[family].get(sock_type)
            if protos is None:
                raise KernelError(Errno.ESOCKTNOSUPPORT, "socket type not supported")
            if protocol == IPPROTO_IP:
                protocol = protos[0]
            elif protocol not in protos:
                raise KernelError(Errno.EPROTONOSUPPORT, "protocol not supported for this type")
            if protocol == IPPROTO_ICMP:
                raise KernelError(Errno.EACCES, "not in net.ipv4.ping_group_range")
            if protocol == IPPROTO_ICMPV6:
                raise KernelError(Errno.EPROTONOSUPPORT, "IPv6 ping sockets are not modelled")
        return InetSocket(net=net, family=family, type=sock_type, protocol=protocol)
    return create


inet_create = _inet_create_family(AF_INET)
inet6_create = _inet_create_family(AF_INET6)
