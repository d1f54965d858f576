"""Sockets — net/socket.c (socket(2), bind, listen, connect, accept, [gs]etsockopt),
net/core/sock.c (the SOL_SOCKET options) and net/core/sock_diag.c (sock_gen_cookie).

A socket is a `File(kind="socket", private_data=<Socket>)`.  `Socket` merges the kernel's
``struct socket`` and ``struct sock``: family / type / protocol, the TCP-style ``state``,
the SOL_SOCKET options, and what BPF attaches to a socket — the ``psock`` of sockmaps
(net/core/skmsg.c), ``user_data`` (sk_user_data: a reuseport-array slot or the psock),
``sk_bpf_storage`` (SK_STORAGE maps) and a lazily made ``cookie``.

Families plug in through `register_family(family, create_fn)`; AF_INET / AF_INET6
(`af_inet`) and AF_UNIX (`af_unix`) are listed in `_builtin_families()`.

The family API (for AF_XDP & co)
--------------------------------
``create_fn(net, sock_type, protocol) -> Socket`` returns a new socket object (a `Socket`
subclass) or raises ``KernelError`` (EPROTONOSUPPORT / ESOCKTNOSUPPORT / EPERM ...).
``sock_type`` has SOCK_NONBLOCK / SOCK_CLOEXEC already removed; ``net`` is the `SocketTable`
(``net.kern`` is the Kernel).  The subclass overrides the operations it has (struct
proto_ops), each raising ``KernelError`` on failure:

* ``bind(addr)``, ``listen(backlog)``, ``connect(addr)``, ``accept() -> Socket``,
  ``getsockname() -> addr`` — ``addr`` as Python's socket module spells it;
* ``setsockopt(level, optname, value)`` (``value``: int or bytes) and
  ``getsockopt(level, optname, optlen) -> bytes`` for levels other than SOL_SOCKET
  (SOL_SOCKET is handled here: call ``super()`` for it);
* ``release()`` — the last fd closed; call ``super().release()`` last.

Defaults answer as the kernel's sock_no_* stubs (EOPNOTSUPP).

Syscall entry points (`Kernel.socket` & co call these; they return ``-errno`` ints):
`sys_socket`, `sys_socketpair`, `sys_bind`, `sys_listen`, `sys_connect`, `sys_accept`,
`sys_getsockname`, `sys_setsockopt`, `sys_getsockopt`.
"""
from __future__ import annotations

import weakref
from typing import Callable

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import File

__all__ = ["Socket", "SocketTable", "SOCKET_FILE_KIND", "register_family", "sockfd_lookup",
           "sys_socket", "sys_socketpair", "sys_bind", "sys_listen", "sys_connect", "sys_accept",
           "sys_getsockname", "sys_setsockopt", "sys_getsockopt", "TcpState", "SOCK_STREAM",
           "SOCK_DGRAM", "SOCK_RAW", "SOCK_SEQPACKET", "SOL_SOCKET", "SO_REUSEADDR",
           "SO_REUSEPORT", "SO_COOKIE", "AF_UNIX", "AF_INET", "AF_INET6", "AF_XDP"]

SOCKET_FILE_KIND = "socket"

# include/linux/socket.h
AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_XDP = 0, 1, 2, 10, 44
AF_MAX = 46                       # NPROTO
# include/linux/net.h (enum sock_type) and the socket(2) flag bits
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET = 1, 2, 3, 4, 5
SOCK_MAX = 11
SOCK_TYPE_MASK = 0xF
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
# include/uapi/asm-generic/socket.h
SOL_SOCKET = 1
SO_REUSEADDR, SO_TYPE, SO_ERROR = 2, 3, 4
SO_RCVBUF = 8
SO_REUSEPORT = 15
SO_PRIORITY, SO_MARK = 12, 36
SO_ACCEPTCONN = 30
SO_PROTOCOL, SO_DOMAIN = 38, 39
SO_COOKIE = 57
SOMAXCONN = 4096                  # net.core.somaxconn default

_INT = 4                          # sizeof(int) of the int-valued options
_U64 = 8


class TcpState:
    """include/net/tcp_states.h (sk_state; AF_UNIX and UDP reuse the values)."""

    ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT = 1, 2, 3, 4, 5, 6
    CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV = 7, 8, 9, 10, 11, 12


# family -> create_fn(net, sock_type, protocol) -> Socket   (net/socket.c: net_families[])
_FAMILIES: dict[int, Callable] = {}


def register_family(family: int, create_fn: Callable) -> None:
    """sock_register(): `create_fn` makes the sockets of `family` (see the module docstring)."""
    _FAMILIES[family] = create_fn


@attrs.define(eq=False)
class Socket:
    """struct socket + struct sock."""

    net: object                       # the SocketTable (sock_net)
    family: int
    type: int
    protocol: int
    state: int = TcpState.CLOSE
    cookie: int = 0                   # sk_cookie: 0 until sock_gen_cookie()
    reuseaddr: bool = False           # sk_reuse
    reuseport: bool = False           # sk_reuseport
    rcvbuf: int = 212992              # net.core.rmem_default
    err: int = 0                      # sk_err
    user_data: object = None          # sk_user_data (psock or a reuseport-array slot)
    psock: object = None              # struct sk_psock (fakekernel.maps.sock_map.SkPsock)
    sk_bpf_storage: dict = attrs.field(factory=dict)   # SK_STORAGE elements: {map: elem}
    released: bool = False
    id: int = 0                       # creation order (debugging aid)
    # cgroup BPF (fakekernel/cgroup_sock.py): the creating task's cgroup (sk_cgrp_data) and
    # the fields cgroup/sock programs may write
    sk_cgrp_data: object = None
    sk_bound_dev_if: int = 0
    sk_mark: int = 0
    sk_priority: int = 0
    bpf_sock_ops_cb_flags: int = 0    # tcp_sock->bpf_sock_ops_cb_flags (bpf_sock_ops_cb_flags_set)
    bpf_refs: int = 0                 # references programs took (bpf_sk_lookup_*) and not yet released

    # ---- what sockmap / reuseport / sk_storage ask about the protocol (struct proto) ----
    psock_update_sk_prot = False      # sk_prot->psock_update_sk_prot exists (sockmap-able)

    def sk_is_tcp(self) -> bool:
        return False

    def sk_is_udp(self) -> bool:
        return False

    def sk_is_stream_unix(self) -> bool:
        return False

    def sk_hashed(self) -> bool:
        return False

    def sk_fullsock(self) -> bool:
        return True

    def sock_gen_cookie(self) -> int:
        """sock_gen_cookie(): the socket's cookie, made on first use from a counter."""
        if not self.cookie:
            self.cookie = self.net.next_cookie()
        return self.cookie

    # ---- struct proto_ops (sock_no_* defaults) ----
    def bind(self, addr) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "bind not supported")

    def listen(self, backlog: int) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "listen not supported")

    def connect(self, addr) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "connect not supported")

    def accept(self) -> "Socket":
        raise KernelError(Errno.EOPNOTSUPP, "accept not supported")

    def getsockname(self):
        raise KernelError(Errno.EOPNOTSUPP, "getsockname not supported")

    def socketpair(self, other: "Socket") -> None:
        raise KernelError(Errno.EOPNOTSUPP, "socketpair not supported")

    def setsockopt(self, level: int, optname: int, value) -> None:
        """sock_setsockopt() for SOL_SOCKET; other levels belong to the family."""
        if level != SOL_SOCKET:
            raise KernelError(Errno.ENOPROTOOPT, "unknown option level")
        if isinstance(value, int):
            value = (value & 0xFFFFFFFF).to_bytes(_INT, "little")
        if len(value) < _INT:
            raise KernelError(Errno.EINVAL, "option shorter than an int")
        val = int.from_bytes(value[:_INT], "little", signed=True)
        if optname == SO_REUSEADDR:
            self.reuseaddr = bool(val)
        elif optname == SO_REUSEPORT:
            self.reuseport = bool(val)
        elif optname == SO_RCVBUF:
            self.rcvbuf = max(val, 0) * 2
        elif optname == SO_MARK:                 # (needs CAP_NET_RAW/ADMIN: the tasks are root)
            self.sk_mark = val
        elif optname == SO_PRIORITY:
            self.sk_priority = val
        elif optname in (SO_TYPE, SO_PROTOCOL, SO_DOMAIN, SO_ERROR, SO_ACCEPTCONN, SO_COOKIE):
            raise KernelError(Errno.ENOPROTOOPT, "read-only option")
        else:
            raise KernelError(Errno.ENOPROTOOPT, f"SOL_SOCKET option {optname} not modelled")

    def getsockopt(self, level: int, optname: int, optlen: int) -> bytes:
        """sk_getsockopt() for SOL_SOCKET."""
        if level != SOL_SOCKET:
            raise KernelError(Errno.ENOPROTOOPT, "unknown option level")
        if optlen < 0:
            raise KernelError(Errno.EINVAL, "negative optlen")
        if optname == SO_COOKIE:
            if optlen < _U64:
                raise KernelError(Errno.EINVAL, "SO_COOKIE needs 8 bytes")
            return self.sock_gen_cookie().to_bytes(_U64, "little")
        ints = {SO_REUSEADDR: int(self.reuseaddr), SO_REUSEPORT: int(self.reuseport),
                SO_TYPE: self.type, SO_PROTOCOL: self.protocol, SO_DOMAIN: self.family,
                SO_RCVBUF: self.rcvbuf, SO_ERROR: self.err,
                SO_ACCEPTCONN: int(self.state == TcpState.LISTEN),
                SO_PRIORITY: self.sk_priority, SO_MARK: self.sk_mark}
        if optname not in ints:
            raise KernelError(Errno.ENOPROTOOPT, f"SOL_SOCKET option {optname} not modelled")
        if optname == SO_ERROR:
            self.err = 0
        return ints[optname].to_bytes(_INT, "little", signed=True)[:min(optlen, _INT)]

    # ---- teardown ----
    def release(self) -> None:
        """sock_close() → the family's release: BPF lets go of the socket, then it is gone."""
        if self.released:
            return
        self.released = True
        from fakekernel.cgroup_sock import inet_sock_release
        inet_sock_release(self)
        self.bpf_release()
        self.net.forget(self)

    def bpf_release(self) -> None:
        """What BPF hooks into a closing socket: sock_map_close (psock links),
        bpf_sk_reuseport_detach (sk_user_data slot) and bpf_sk_storage_free."""
        if self.psock is not None:
            self.psock.sock_map_close(self)
        detach = getattr(self.user_data, "bpf_sk_reuseport_detach", None)
        if detach is not None:
            detach(self)
        if self.sk_bpf_storage:
            from fakekernel.maps.bpf_local_storage import bpf_local_storage_destroy
            bpf_local_storage_destroy(self.sk_bpf_storage)

    def file_release(self, file) -> None:
        self.release()


class SocketTable:
    """The sockets of the (only) network namespace: port tables, unix names, cookies."""

    def __init__(self, kern):
        self.kern = kern
        self.socks: list[Socket] = []
        self.unix_names: dict = {}
        self._cookie = 0
        self._ids = 0
        self._dummy_storage = weakref.WeakKeyDictionary()
        self._dummy_cookie = weakref.WeakKeyDictionary()
        self._alias = weakref.WeakKeyDictionary()

    def alias(self, sk, owner: "Socket") -> None:
        """`sk` (an skb's sock built for a hook) stands for the socket(2) socket `owner`."""
        self._alias[sk] = owner

    def resolve(self, sk):
        """The socket(2) socket an skb's sock stands for, else the sock itself."""
        return self._alias.get(sk, sk)

    def dummy_storage(self, sk) -> dict:
        """sk_bpf_storage of a socket that is not a `Socket` (the sock a test run gives its
        skb, fakekernel.net.skbuff.Sock)."""
        return self._dummy_storage.setdefault(sk, {})

    def dummy_cookie(self, sk) -> int:
        """sock_gen_cookie() of a socket that is not a `Socket` (a test run's sock)."""
        cookie = self._dummy_cookie.get(sk)
        if cookie is None:
            cookie = self._dummy_cookie[sk] = self.next_cookie()
        return cookie

    def next_cookie(self) -> int:
        self._cookie += 1
        return self._cookie

    def add(self, sk: Socket) -> Socket:
        self._ids += 1
        sk.id = self._ids
        self.socks.append(sk)
        return sk

    def forget(self, sk: Socket) -> None:
        if sk in self.socks:
            self.socks.remove(sk)


def _table(kern) -> SocketTable:
    return kern.world.net.socktab


def sockfd_lookup(task, fd: int) -> Socket:
    """sockfd_lookup(): EBADF for no file, ENOTSOCK for a file that is not a socket."""
    f = task.files.fdget(fd)
    if f.kind != SOCKET_FILE_KIND:
        raise KernelError(Errno.ENOTSOCK, f"fd {fd} is not a socket")
    return f.private_data


def _sock_create(kern, family: int, type_: int, protocol: int) -> Socket:
    """__sock_create()."""
    if family < 0 or family >= AF_MAX:
        raise KernelError(Errno.EAFNOSUPPORT, "family out of range")
    if type_ < 0 or type_ >= SOCK_MAX:
        raise KernelError(Errno.EINVAL, "type out of range")
    create = _FAMILIES.get(family) or _builtin_families().get(family)
    if create is None:
        raise KernelError(Errno.EAFNOSUPPORT, f"address family {family} not supported")
    return _table(kern).add(create(_table(kern), type_, protocol))


def _install(task, sk: Socket) -> int:
    return task.files.install(File(kind=SOCKET_FILE_KIND, private_data=sk))


def _syscall(fn):
    """A socket syscall: a KernelError becomes -errno."""
    def wrapper(kern, task, *args):
        try:
            return fn(kern, task, *args)
        except KernelError as e:
            return -e.errno
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _split_type(type_: int) -> int:
    if type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise KernelError(Errno.EINVAL, "unknown socket flags")
    return type_ & SOCK_TYPE_MASK


@_syscall
def sys_socket(kern, task, family: int, type_: int, protocol: int = 0) -> int:
    """__sys_socket()."""
    sk = _sock_create(kern, family, _split_type(type_), protocol)
    try:
        from fakekernel.cgroup_sock import inet_sock_create
        inet_sock_create(kern, task, sk)
        return _install(task, sk)
    except KernelError:
        sk.release()
        raise


@_syscall
def sys_socketpair(kern, task, family: int, type_: int, protocol: int = 0):
    """__sys_socketpair(): a (fd, fd) tuple."""
    type_ = _split_type(type_)
    a = _sock_create(kern, family, type_, protocol)
    b = _sock_create(kern, family, type_, protocol)
    try:
        a.socketpair(b)
    except KernelError:
        a.release()
        b.release()
        raise
    fa = _install(task, a)
    try:
        fb = _install(task, b)
    except KernelError:
        task.files.close(fa)
        b.release()
        raise
    return fa, fb


@_syscall
def sys_bind(kern, task, fd: int, addr) -> int:
    from fakekernel.cgroup_sock_addr import inet_bind
    inet_bind(kern, sockfd_lookup(task, fd), addr)
    return 0


@_syscall
def sys_listen(kern, task, fd: int, backlog: int = SOMAXCONN) -> int:
    from fakekernel.cgroup_sock_ops import inet_listen
    inet_listen(kern, sockfd_lookup(task, fd), min(max(backlog, 0), SOMAXCONN))
    return 0


@_syscall
def sys_connect(kern, task, fd: int, addr) -> int:
    from fakekernel.cgroup_sock_addr import inet_connect
    inet_connect(kern, sockfd_lookup(task, fd), addr)
    return 0


@_syscall
def sys_accept(kern, task, fd: int) -> int:
    """accept4(): the new connection's fd (EAGAIN stands for "would block")."""
    child = sockfd_lookup(task, fd).accept()
    return _install(task, child)


@_syscall
def sys_getsockname(kern, task, fd: int):
    from fakekernel.cgroup_sock_addr import inet_getname
    return inet_getname(kern, sockfd_lookup(task, fd))


@_syscall
def sys_setsockopt(kern, task, fd: int, level: int, optname: int, value) -> int:
    from fakekernel.net.sock_reuseport import REUSEPORT_BPF_OPTS, sk_reuseport_setsockopt
    sk = sockfd_lookup(task, fd)
    if level == SOL_SOCKET and optname in REUSEPORT_BPF_OPTS:     # they take a prog fd
        sk_reuseport_setsockopt(task, sk, optname, value)
        return 0
    from fakekernel.cgroup_sockopt import do_sock_setsockopt
    do_sock_setsockopt(kern, sk, level, optname, value)
    return 0


@_syscall
def sys_getsockopt(kern, task, fd: int, level: int, optname: int, optlen: int):
    """The option's bytes (at most `optlen`), or -errno."""
    from fakekernel.cgroup_sockopt import do_sock_getsockopt
    return do_sock_getsockopt(kern, sockfd_lookup(task, fd), level, optname, optlen)


def _builtin_families() -> dict:
    """The families this package implements (imported late: they subclass `Socket`)."""
    from fakekernel.net import af_inet, af_unix, xsk
    return {AF_INET: af_inet.inet_create, AF_INET6: af_inet.inet6_create,
            AF_UNIX: af_unix.unix_create, AF_XDP: xsk.xsk_create}
