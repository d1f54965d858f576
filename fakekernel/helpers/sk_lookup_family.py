"""Socket lookups from programs — net/core/filter.c (bpf_sk_lookup_tcp/udp, bpf_skc_lookup_tcp and
their tc / xdp / sock_addr flavours: __bpf_skc_lookup, __bpf_sk_lookup, sk_lookup; bpf_sk_release,
bpf_sk_fullsock, bpf_tcp_sock, bpf_get_listener_sock, bpf_skc_to_*), net/ipv4/inet_hashtables.c
(__inet_lookup: established, then listeners, exact address before wildcard, SO_REUSEPORT groups),
net/ipv4/udp.c (__udp4_lib_lookup scoring) and their IPv6 twins, over the sockets of
`fakekernel.net.socket.SocketTable`.

A socket a program gets is a read-only "sock" region holding its ``struct bpf_sock`` (a
``struct bpf_tcp_sock`` region for bpf_tcp_sock); `SkRef` ties the regions to the socket.
Established TCP sockets are refcounted: the lookup takes a reference (``Socket.bpf_refs``) that
bpf_sk_release drops; listeners and UDP sockets are SOCK_RCU_FREE, so release is a no-op for
them.  Released regions are unmapped.

Reuseport groups pick their member by a CRC of the 4-tuple — a deterministic stand-in for the
kernel's boot-time hash secret, so which member a real kernel picks is not reproduced.
The namespace's sk_lookup programs see a lookup before the listeners (and the unconnected UDP
sockets) as in the kernel: SK_DROP makes the helper find nothing.  Not modelled: a program
selecting a socket (bpf_sk_assign of a socket is not written yet), request and timewait sockets
(no TIME_WAIT state here), other namespaces by id (the kernel assigns none unless asked: every
non-negative netns id finds nothing in both).
"""
from __future__ import annotations

import weakref
import zlib

import attrs

from fakekernel.net.af_inet import IPPROTO_TCP, IPPROTO_UDP
from fakekernel.net.netdev import LOOPBACK_IFINDEX
from fakekernel.net.socket import AF_INET, AF_INET6, AF_UNIX, SOCK_DGRAM, TcpState
from uapi.bpf import SK_DROP, FuncId
from uapi.ffi import ffi
from uapi.insn import s32

__all__ = ["SK_LOOKUP_FAMILY_RUNTIME", "SkRef", "bpf_sock_bytes", "sk_of_ptr", "map_sock", "fullsock"]

_TUPLE_FIELDS = dict(ffi.typeof("struct bpf_sock_tuple").fields)     # the anonymous union's members
_TUPLE4 = ffi.sizeof(_TUPLE_FIELDS["ipv4"].type)                        # 12
_TUPLE6 = ffi.sizeof(_TUPLE_FIELDS["ipv6"].type)                        # 36
_S32_MAX = 0x7FFFFFFF
_U32 = 0xFFFFFFFF
_V4MAPPED = bytes(10) + b"\xff\xff"                 # ::ffff:a.b.c.d
LOOPBACK4_IPV6 = bytes([127, 0, 0, 6])        # what inet6 sockets keep as their IPv4 addresses
TCP_INIT_CWND = 10
TCP_MSS_DEFAULT = 536
TCP_INFINITE_SSTHRESH = 0x7FFFFFFF

_REFS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()      # AddressSpace -> {base: SkRef}


@attrs.define(eq=False)
class SkRef:
    """A socket handed to a program: its regions and whether the lookup took a reference."""

    sk: object
    refcounted: bool
    regions: list = attrs.field(factory=list)
    released: bool = False


def _refs(mem) -> dict:
    return _REFS.setdefault(mem, {})


def _be16_as_loaded(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _words(dst, addr: bytes) -> None:
    for i in range(4):
        dst[i] = int.from_bytes(addr[4 * i:4 * i + 4], "little")


def bpf_sock_bytes(sk) -> bytes:
    """The ``struct bpf_sock`` of an `InetSocket` (bpf_sock_convert_ctx_access's sources)."""
    s = ffi.new("struct bpf_sock *")
    s.bound_dev_if = getattr(sk, "sk_bound_dev_if", 0)
    s.family, s.type, s.protocol, s.state = sk.family, sk.type, sk.protocol, sk.state
    s.mark, s.priority = getattr(sk, "sk_mark", 0), getattr(sk, "sk_priority", 0)
    addr = getattr(sk, "addr", None)
    peer = getattr(sk, "peer", None)
    if sk.family == AF_INET:
        s.src_ip4 = int.from_bytes(addr or bytes(4), "little")
        s.dst_ip4 = int.from_bytes(peer[0] if peer else bytes(4), "little")
        if peer and sk.sk_is_tcp():         # sk_rcv_saddr_set() / sk_daddr_set(): also v4-mapped
            _words(s.src_ip6, _V4MAPPED + (addr or bytes(4)))
            _words(s.dst_ip6, _V4MAPPED + peer[0])
    elif sk.family == AF_INET6:
        _words(s.src_ip6, addr or bytes(16))
        _words(s.dst_ip6, peer[0] if peer else bytes(16))
        if addr not in (None, bytes(16)):
            s.src_ip4 = int.from_bytes(LOOPBACK4_IPV6, "little")
        if peer:
            s.dst_ip4 = int.from_bytes(LOOPBACK4_IPV6, "little")
    s.src_port = getattr(sk, "port", 0)
    s.dst_port = _be16_as_loaded(peer[1]) if peer else 0
    s.rx_queue_mapping = -1
    return bytes(ffi.buffer(s))


def _bpf_tcp_sock_bytes(sk) -> bytes:
    """``struct bpf_tcp_sock`` as tcp_init_sock() leaves it (exactly a listener's; a connection's
    handshake counters, RTT and sequence numbers are not simulated)."""
    t = ffi.new("struct bpf_tcp_sock *")
    t.snd_cwnd = TCP_INIT_CWND
    t.snd_ssthresh = TCP_INFINITE_SSTHRESH
    t.mss_cache = TCP_MSS_DEFAULT
    t.rtt_min = _U32                         # minmax_reset(..., ~0U)
    return bytes(ffi.buffer(t))


def map_sock(mem, sk, refcounted: bool) -> int:
    """A program's pointer to `sk` (taking a reference when `refcounted`)."""
    region = mem.map_region(bytearray(bpf_sock_bytes(sk)), "sock", f"sk#{getattr(sk, 'id', 0)}", writable=False)
    ref = SkRef(sk, refcounted, [region])
    _refs(mem)[region.base] = ref
    if refcounted:
        sk.bpf_refs += 1
    return region.base


def sk_of_ptr(env, addr: int):
    """(SkRef or None, sock) for a socket pointer a program passes; the test-run skb's own sock
    has no SkRef."""
    ref = _refs(env.mem).get(addr)
    if ref is not None:
        return ref, ref.sk
    region = env.mem.region_at(addr)
    ctx_sk = getattr(env.ctx, "sk", None)
    if region is not None and region.name.startswith("skb->sk") and ctx_sk is not None:
        return None, env.kernel.world.net.socktab.resolve(ctx_sk)
    from fakekernel.helpers import HelperNotImplemented
    raise HelperNotImplemented(FuncId.sk_release)


# ---------------------------------------------------------------- the hash tables

def _inet_socks(kern, proto: int) -> list:
    from fakekernel.net.af_inet import InetSocket
    socks = [s for s in kern.world.net.socktab.socks if isinstance(s, InetSocket) and not s.released
             and s.protocol == proto and s.hashed]
    return list(reversed(socks))            # hash chains: the newest socket first


def _family_ok(sk, family: int) -> bool:
    """An IPv4 lookup also sees dual-stack IPv6 sockets bound to the wildcard."""
    if sk.family == family:
        return True
    return family == AF_INET and sk.family == AF_INET6 and sk.addr in (None, bytes(16))


def _wild(sk) -> bool:
    return sk.addr in (None, bytes(4), bytes(16))


def _exact(sk, family: int, daddr: bytes) -> bool:
    return sk.family == family and sk.addr == daddr


def _reuseport_select(sk, socks, tup: bytes):
    """reuseport_select_sock() without a program: a member chosen by the 4-tuple's hash."""
    if not sk.reuseport_cb:
        return sk
    group = [s for s in socks if s.reuseport_cb and s.port == sk.port and s.family == sk.family
             and s.addr == sk.addr and s.state == sk.state and s.peer is None]
    group.reverse()                          # the order the sockets joined
    return group[zlib.crc32(tup) % len(group)] if group else sk


def _score(sk, family: int, saddr: bytes, sport: int, udp: bool) -> int:
    """compute_score() of inet listeners / UDP sockets, as a ranking: an IPv4 socket beats a
    dual-stack one, a connected UDP socket (whose peer must match) beats an unconnected one;
    -1 when the socket does not match."""
    score = 1 + (family == AF_INET and sk.family == AF_INET)
    if udp and sk.peer is not None:
        if sk.peer[0] != saddr or sk.peer[1] != sport:
            return -1
        score += 8
    return score


def _lookup_bucket(socks, family, saddr, sport, daddr, dport, udp, tup):
    best, hi = None, 0
    for sk in socks:
        sc = _score(sk, family, saddr, sport, udp)
        if sc > hi:
            best, hi = sk, sc
            if not udp or sk.peer is None:
                sel = _reuseport_select(sk, socks, tup)
                if sel is not sk:
                    return sel
    return best


def _sk_lookup_progs_drop(kern, family, proto, saddr, sport, daddr, dport, ifindex) -> bool:
    """inet_lookup_run_sk_lookup(): the namespace's sk_lookup programs see the lookup first;
    True when they refused it (the helper then finds nothing)."""
    from fakekernel.net.net_namespace import run_sk_lookup
    from fakekernel.progs.sk_lookup import SK_LOOKUP_CTX, SK_LOOKUP_CTX_SIZE
    buf = bytearray(SK_LOOKUP_CTX_SIZE)
    c = ffi.from_buffer(SK_LOOKUP_CTX + " *", buf)
    c.family, c.protocol, c.local_port, c.ingress_ifindex = family, proto, dport, ifindex
    c.remote_port = _be16_as_loaded(sport)
    if family == AF_INET:
        c.remote_ip4, c.local_ip4 = int.from_bytes(saddr, "little"), int.from_bytes(daddr, "little")
    else:
        _words(c.remote_ip6, saddr)
        _words(c.local_ip6, daddr)
    res = run_sk_lookup(kern, bytes(buf), family, proto)
    if res is None:
        return False
    verdict, selected = res
    if selected is not None:                 # bpf_sk_assign() of a socket is not modelled yet
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(FuncId.sk_assign)
    return verdict == SK_DROP


def _tcp_lookup(kern, family, saddr, sport, daddr, dport, tup, ifindex):
    """__inet_lookup(): established, then the sk_lookup programs, then listeners: (sock,
    refcounted) or (None, False)."""
    socks = _inet_socks(kern, IPPROTO_TCP)
    for sk in socks:                                   # __inet_lookup_established
        if sk.family == family and sk.state not in (TcpState.LISTEN, TcpState.CLOSE) and sk.peer is not None \
                and sk.port == dport and sk.addr == daddr and sk.peer == (saddr, sport):
            return sk, True
    if _sk_lookup_progs_drop(kern, family, IPPROTO_TCP, saddr, sport, daddr, dport, ifindex):
        return None, False
    lst = [s for s in socks if s.state == TcpState.LISTEN and s.port == dport and _family_ok(s, family)]
    for bucket in ([s for s in lst if _exact(s, family, daddr)], [s for s in lst if _wild(s)]):
        sk = _lookup_bucket(bucket, family, saddr, sport, daddr, dport, False, tup)
        if sk is not None:
            return sk, False
    return None, False


def _udp_lookup(kern, family, saddr, sport, daddr, dport, tup, ifindex):
    """__udp4_lib_lookup() / __udp6_lib_lookup(): exact local address (a connected socket there
    wins outright), the sk_lookup programs, then the wildcard."""
    socks = [s for s in _inet_socks(kern, IPPROTO_UDP) if s.type == SOCK_DGRAM and s.port == dport
             and _family_ok(s, family)]
    exact = _lookup_bucket([s for s in socks if _exact(s, family, daddr)], family, saddr, sport, daddr, dport,
                           True, tup)
    if exact is not None and exact.state == TcpState.ESTABLISHED:
        return exact, False
    if _sk_lookup_progs_drop(kern, family, IPPROTO_UDP, saddr, sport, daddr, dport, ifindex):
        return None, False
    if exact is not None:
        return exact, False
    return _lookup_bucket([s for s in socks if _wild(s)], family, saddr, sport, daddr, dport, True, tup), False


# ---------------------------------------------------------------- the helpers

def _skc_lookup(env, r2, r3, r4, r5, proto: int):
    """__bpf_skc_lookup(): (sock, refcounted) or (None, False)."""
    from fakekernel.net.xdp import XdpBuff
    length = r3 & _U32
    if length == _TUPLE4:
        family, alen = AF_INET, 4
    elif length == _TUPLE6:
        family, alen = AF_INET6, 16
    else:
        return None, False
    netns_id = r4 & _U32 if isinstance(env.ctx, XdpBuff) else r4       # the xdp flavours take a u32
    if r5 or not (s32(netns_id) < 0 or netns_id <= _S32_MAX):
        return None, False
    if s32(netns_id) >= 0:
        return None, False                  # get_net_ns_by_id(): no namespace has an id here
    raw = env.mem.read(r2, length)
    saddr, daddr = raw[:alen], raw[alen:2 * alen]
    sport = int.from_bytes(raw[2 * alen:2 * alen + 2], "big")
    dport = int.from_bytes(raw[2 * alen + 2:2 * alen + 4], "big")
    lookup = _tcp_lookup if proto == IPPROTO_TCP else _udp_lookup
    ctx = env.ctx
    if isinstance(ctx, XdpBuff):
        ifindex = ctx.ingress_ifindex or LOOPBACK_IFINDEX
    else:
        dev = getattr(ctx, "dev", None)
        ifindex = dev.ifindex if dev is not None else 0
    return lookup(env.kernel, family, saddr, sport, daddr, dport, raw, ifindex)


def _ret(env, sk, refcounted: bool) -> int:
    return map_sock(env.mem, sk, refcounted) if sk is not None else 0


def bpf_skc_lookup_tcp(env, r1, r2, r3, r4, r5) -> int:
    return _ret(env, *_skc_lookup(env, r2, r3, r4, r5, IPPROTO_TCP))


def bpf_sk_lookup_tcp(env, r1, r2, r3, r4, r5) -> int:
    """__bpf_sk_lookup(): only full sockets (every socket found here is one)."""
    return _ret(env, *_skc_lookup(env, r2, r3, r4, r5, IPPROTO_TCP))


def bpf_sk_lookup_udp(env, r1, r2, r3, r4, r5) -> int:
    return _ret(env, *_skc_lookup(env, r2, r3, r4, r5, IPPROTO_UDP))


def bpf_sk_release(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sk_release(): drop the lookup's reference (sock_gen_put) if it took one."""
    ref, sk = sk_of_ptr(env, r1)
    if ref is None or ref.released:
        return 0
    ref.released = True
    if ref.refcounted:
        sk.bpf_refs -= 1
    refs = _refs(env.mem)
    for region in ref.regions:
        refs.pop(region.base, None)
        env.mem.unmap(region)
    return 0


def fullsock(sk) -> bool:
    fn = getattr(sk, "sk_fullsock", None)
    return fn() if fn is not None else True


def _same(env, r1, cond) -> int:
    _, sk = sk_of_ptr(env, r1)
    return r1 if cond(sk) else 0


def bpf_sk_fullsock(env, r1, r2, r3, r4, r5) -> int:
    return _same(env, r1, fullsock)


def bpf_get_listener_sock(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_listener_sock(): the socket itself when it is a (SOCK_RCU_FREE) listener."""
    return _same(env, r1, lambda sk: fullsock(sk) and getattr(sk, "state", 0) == TcpState.LISTEN)


def bpf_tcp_sock(env, r1, r2, r3, r4, r5) -> int:
    """bpf_tcp_sock(): a ``struct bpf_tcp_sock`` view of a full TCP socket (sharing its reference)."""
    ref, sk = sk_of_ptr(env, r1)
    if not (fullsock(sk) and getattr(sk, "protocol", 0) == IPPROTO_TCP):
        return 0
    region = env.mem.map_region(bytearray(_bpf_tcp_sock_bytes(sk)), "sock", "tcp_sock", writable=False)
    if ref is None:
        ref = SkRef(sk, False)
    ref.regions.append(region)
    _refs(env.mem)[region.base] = ref
    return region.base


def _skc_to(cond):
    """bpf_skc_to_*(): the same pointer when the socket is of that kind, else NULL."""
    def helper(env, r1, r2, r3, r4, r5) -> int:
        if not r1:
            return 0
        return _same(env, r1, cond)
    return helper


def _proto(sk) -> int:
    return getattr(sk, "protocol", 0)


SK_LOOKUP_FAMILY_RUNTIME = {
    FuncId.sk_lookup_tcp: bpf_sk_lookup_tcp,
    FuncId.sk_lookup_udp: bpf_sk_lookup_udp,
    FuncId.skc_lookup_tcp: bpf_skc_lookup_tcp,
    FuncId.sk_release: bpf_sk_release,
    FuncId.sk_fullsock: bpf_sk_fullsock,
    FuncId.tcp_sock: bpf_tcp_sock,
    FuncId.get_listener_sock: bpf_get_listener_sock,
    FuncId.skc_to_tcp_sock: _skc_to(lambda sk: fullsock(sk) and _proto(sk) == IPPROTO_TCP),
    FuncId.skc_to_tcp6_sock: _skc_to(lambda sk: fullsock(sk) and _proto(sk) == IPPROTO_TCP
                                     and sk.family == AF_INET6),
    FuncId.skc_to_udp6_sock: _skc_to(lambda sk: fullsock(sk) and _proto(sk) == IPPROTO_UDP
                                     and getattr(sk, "type", 0) == SOCK_DGRAM and sk.family == AF_INET6),
    FuncId.skc_to_unix_sock: _skc_to(lambda sk: fullsock(sk) and sk.family == AF_UNIX),
    FuncId.skc_to_tcp_timewait_sock: _skc_to(lambda sk: _proto(sk) == IPPROTO_TCP
                                             and getattr(sk, "state", 0) == TcpState.TIME_WAIT),
    FuncId.skc_to_tcp_request_sock: _skc_to(lambda sk: _proto(sk) == IPPROTO_TCP
                                            and getattr(sk, "state", 0) == TcpState.NEW_SYN_RECV),
    FuncId.skc_to_mptcp_sock: _skc_to(lambda sk: False),      # no MPTCP subflows
}
