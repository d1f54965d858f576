"""The cgroup/sock_addr hooks — kernel/bpf/cgroup.c (__cgroup_bpf_run_filter_sock_addr) where
net/ipv4/af_inet.c, net/ipv6/af_inet6.c, tcp_ipv4.c and udp.c call it: bind (inet_bind_sk,
before any check), connect (the pre_connect of TCP and UDP sockets), getsockname (inet_getname)
and, from a connect program, the bpf_bind() helper.

The program sees a ``struct bpf_sock_addr`` holding the user's address (``user_ip4`` /
``user_ip6`` in network order, ``user_port`` as a __be16 in the low half) and may rewrite it;
the rewritten address is what the socket call then uses (or, for getsockname, returns).
A refusal makes the call fail with EPERM (or the errno bpf_set_retval() chose).  Raw sockets
(their own bind) and sockets of other families are not filtered.  AF_UNIX connect and
getsockname run their programs for the verdict only (the path is reachable only through the
bpf_sock_addr_set_sun_path kfunc, not modelled).  Not modelled: the UDP and unix
sendmsg/recvmsg hooks (the simulated sockets have no sendmsg) and unix getpeername.
"""
from __future__ import annotations

import ipaddress

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, raise_retval, sock_cgroup
from fakekernel.cgroup_sock import inet_post_bind
from fakekernel.errors import Errno, KernelError
from fakekernel.net.socket import AF_INET, AF_INET6, AF_UNIX, SOCK_RAW, TcpState
from uapi.bpf import AttachType as A
from uapi.ffi import ffi

__all__ = ["inet_bind", "inet_connect", "inet_getname", "SockAddrCtx"]

_PORT_SIZE = ffi.sizeof("__be16")
_PORT_MASK = (1 << (8 * _PORT_SIZE)) - 1
_SA_FAMILY_END = ffi.sizeof("unsigned short")     # offsetofend(struct sockaddr, sa_family)
_SOCKADDR_IN = 16                                 # sizeof(struct sockaddr_in)
_SIN6_LEN_RFC2133 = 24
_BIND = {AF_INET: A.CGROUP_INET4_BIND, AF_INET6: A.CGROUP_INET6_BIND}
_CONNECT = {AF_INET: A.CGROUP_INET4_CONNECT, AF_INET6: A.CGROUP_INET6_CONNECT}
_UNIX_CONNECT = {AF_UNIX: A.CGROUP_UNIX_CONNECT}
_GETSOCKNAME = {AF_INET: A.CGROUP_INET4_GETSOCKNAME, AF_INET6: A.CGROUP_INET6_GETSOCKNAME,
                AF_UNIX: A.CGROUP_UNIX_GETSOCKNAME}
_GETPEERNAME = {AF_INET: A.CGROUP_INET4_GETPEERNAME, AF_INET6: A.CGROUP_INET6_GETPEERNAME}
_UNIX_PATH_MAX = 108


class SockAddrCtx(CgCtx):
    """struct bpf_sock_addr_kern, and bpf_bind() for connect programs."""

    def after_run(self, run_ctx) -> None:
        """user_port is the address's __be16 sin_port: a 4-byte store keeps its low half."""
        self.uapi.user_port &= _PORT_MASK

    def bpf_bind(self, env, addr: int, addr_len: int) -> int:
        """bpf_bind(ctx, addr, addr_len): bind the connecting socket (port 0: address only)."""
        if addr_len < _SA_FAMILY_END:
            raise KernelError(Errno.EINVAL, "address shorter than its family")
        raw = bytes(env.mem.read(addr, addr_len))
        family = int.from_bytes(raw[:_SA_FAMILY_END], "little")
        if family == AF_INET and addr_len < _SOCKADDR_IN or \
                family == AF_INET6 and addr_len < _SIN6_LEN_RFC2133:
            raise KernelError(Errno.EINVAL, "address too short")
        if family not in (AF_INET, AF_INET6):
            raise KernelError(Errno.EAFNOSUPPORT, "not an inet address")
        if family != self.sk.family:
            raise KernelError(Errno.EAFNOSUPPORT, "address of another family")
        port = int.from_bytes(raw[2:4], "big")
        n = 4 if family == AF_INET else 16
        off = 4 if family == AF_INET else 8
        host = str(ipaddress.ip_address(raw[off:off + n]))
        sk = self.sk
        if sk.state != TcpState.CLOSE or sk.port:
            raise KernelError(Errno.EINVAL, "already bound")
        if port:
            sk.bind(_sockaddr(family, host, port))      # BIND_FROM_BPF: no post_bind run
        else:                                           # BIND_FORCE_ADDRESS_NO_PORT
            sk.addr = ipaddress.ip_address(host).packed
        return 0


def _sockaddr(family: int, host: str, port: int):
    return (host, port) if family == AF_INET else (host, port, 0, 0)


def _filtered(kern, sk, table: dict) -> int | None:
    """The attach type to run for `sk`, or None (no program, or a socket not filtered)."""
    if sk.family not in table or sk.type == SOCK_RAW:
        return None
    atype = table[sk.family]
    return atype if sock_cgroup(kern, sk).bpf.effective.get(atype) else None


def _build(sk, addr) -> object:
    sa = ffi.new("struct bpf_sock_addr *")
    sa.family, sa.type, sa.protocol = sk.family, sk.type, sk.protocol
    if sk.family == AF_UNIX:
        sa.user_family = AF_UNIX              # sun_path is only reachable through kfuncs
        return sa
    if addr is not None:
        host, port = addr[0], addr[1]
        sa.user_family = sk.family
        packed = ipaddress.ip_address(host or ("0.0.0.0" if sk.family == AF_INET else "::")).packed
        if len(packed) == 4:
            ffi.memmove(ffi.addressof(sa, "user_ip4"), packed, len(packed))
        else:
            ffi.memmove(sa.user_ip6, packed, len(packed))
        ffi.memmove(ffi.addressof(sa, "user_port"), int(port).to_bytes(_PORT_SIZE, "big"), _PORT_SIZE)
    return sa


def _read_back(sk, sa, addr):
    """The (possibly rewritten) address as the socket calls take it."""
    if sk.family == AF_UNIX:
        return addr
    if sk.family == AF_INET:
        host = str(ipaddress.ip_address(bytes(ffi.buffer(ffi.addressof(sa, "user_ip4"), 4))))
    else:
        host = str(ipaddress.ip_address(bytes(ffi.buffer(sa.user_ip6, 16))))
    port = int.from_bytes(bytes(ffi.buffer(ffi.addressof(sa, "user_port"), _PORT_SIZE)), "big")
    return (host, port) + tuple(addr[2:])


def run_filter_sock_addr(kern, sk, addr, atype: int, flags: list | None = None):
    """__cgroup_bpf_run_filter_sock_addr(): the address after the programs; KernelError when
    one refused."""
    sa = _build(sk, addr)
    ctx = SockAddrCtx(uapi=sa, name="bpf_sock_addr", sk=sk)
    ctx.map_sock(kern, lambda a: setattr(sa, "sk", ffi.cast("void *", a)))
    ret = bpf_prog_run_array_cg(kern, sock_cgroup(kern, sk), atype, ctx, 0, flags)
    if ret:
        raise_retval(ret, "a cgroup sock_addr program refused")
    return _read_back(sk, sa, addr)


def _valid_shape(sk, addr) -> bool:
    if sk.family == AF_UNIX:                  # unix_validate_addr()
        raw = addr.encode() if isinstance(addr, str) else addr
        return isinstance(raw, bytes) and 0 < len(raw) <= _UNIX_PATH_MAX
    return isinstance(addr, tuple) and 2 <= len(addr) <= (2 if sk.family == AF_INET else 4)


def inet_bind(kern, sk, addr) -> None:
    """inet_bind_sk(): the bind programs first (they see the address before any check), then
    the bind, then the post_bind programs (a refusal undoes the bind)."""
    atype = _filtered(kern, sk, _BIND)
    if atype is not None and _valid_shape(sk, addr):
        addr = run_filter_sock_addr(kern, sk, addr, atype, [0])
    sk.bind(addr)
    if sk.type == SOCK_RAW or sk.family not in _BIND:
        return
    ret = inet_post_bind(kern, sk)
    if ret:
        if sk.sk_hashed():
            sk._unhash()
        sk.addr, sk.port = None, 0
        raise_retval(ret, "a cgroup post_bind program refused")


def inet_connect(kern, sk, addr) -> None:
    """inet_stream_connect / inet_dgram_connect: pre_connect runs the connect programs once the
    socket is known to be unconnected (TCP) — a connected TCP socket fails as before; a TCP
    handshake then runs the sock_ops callbacks (fakekernel.cgroup_sock_ops).  AF_UNIX sockets
    run the unix_connect programs once the address is well-formed (their verdict only)."""
    atype = _filtered(kern, sk, _UNIX_CONNECT if sk.family == AF_UNIX else _CONNECT)
    if atype is not None and _valid_shape(sk, addr) and \
            not (sk.sk_is_tcp() and sk.state != TcpState.CLOSE):
        addr = run_filter_sock_addr(kern, sk, addr, atype)
    if not (sk.family in _CONNECT and sk.sk_is_tcp() and sk.state == TcpState.CLOSE):
        sk.connect(addr)
        return
    from fakekernel.cgroup_sock_ops import tcp_connect_sock_ops
    try:
        sk.connect(addr)
    except KernelError as e:
        if e.errno == Errno.ECONNREFUSED:     # the SYN went out before the reset came back
            tcp_connect_sock_ops(kern, sk, addr)
        raise
    tcp_connect_sock_ops(kern, sk)


def inet_getname(kern, sk, peer: bool = False):
    """inet_getname(): the address the socket reports, after the get{sock,peer}name programs
    (which must return 1 and may only rewrite it)."""
    if peer:
        if getattr(sk, "peer", None) is None or sk.state in (TcpState.CLOSE, TcpState.SYN_SENT):
            raise KernelError(Errno.ENOTCONN, "not connected")
        addr = sk._sockaddr(sk.peer[0], sk.peer[1])
    else:
        addr = sk.getsockname()
    atype = _filtered(kern, sk, _GETPEERNAME if peer else _GETSOCKNAME)
    if atype is None:
        return addr
    return run_filter_sock_addr(kern, sk, addr, atype)
