"""SO_REUSEPORT groups — net/core/sock_reuseport.c (reuseport_alloc, reuseport_add_sock,
reuseport_detach_sock, reuseport_select_sock, reuseport_attach_prog, reuseport_detach_prog),
net/core/filter.c (sk_reuseport_attach_bpf, run_bpf_filter) and net/core/sock.c
(SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF).

A group (``sk.reuseport_cb``) forms when a SO_REUSEPORT UDP socket binds or a TCP socket
listens on the address and port of an existing member (af_inet calls `reuseport_hash`), or
when a program is attached to an unhashed SO_REUSEPORT socket.  A received UDP datagram and
an incoming TCP connection go to `inet_lookup_reuseport`: the group's SK_REUSEPORT program
selects a member (sk_select_reuseport) or drops (SK_DROP: no socket, the connection is
refused); a SOCKET_FILTER program returns the member's index; otherwise (and when the program
selects nothing) the member comes from the flow hash.  The kernel keys that hash with a
boot-time secret, so any hash is as good as the kernel's; fakekernel's is a digest of the
4-tuple.  Not modelled: cBPF programs, SO_INCOMING_CPU, closed-socket migration.
"""
from __future__ import annotations

import hashlib
import itertools

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.headers import ETH_P_IP, ETH_P_IPV6, IPV4_HDR_LEN, IPV6_HDR_LEN
from fakekernel.net.skbuff import SkBuff
from fakekernel.net.socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM, TcpState
from uapi.bpf import ProgType

__all__ = ["SockReuseport", "SO_ATTACH_REUSEPORT_EBPF", "SO_DETACH_REUSEPORT_BPF", "REUSEPORT_BPF_OPTS",
           "tcp_lookup_listener", "rx_lookup_reuseport",
           "sk_reuseport_setsockopt", "reuseport_hash", "reuseport_detach_sock",
           "inet_lookup_reuseport", "reuseport_select_sock"]

# include/uapi/asm-generic/socket.h
SO_ATTACH_REUSEPORT_EBPF = 52
SO_DETACH_REUSEPORT_BPF = 68
REUSEPORT_BPF_OPTS = frozenset({SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF})
_IPPROTO_TCP, _IPPROTO_UDP = 6, 17
_UDP_HDR_LEN = 8                    # sizeof(struct udphdr)
_TCP_HDR_LEN = 20                   # sizeof(struct tcphdr)
_TCP_DOFF_OFF = 12                  # the data offset nibble's byte in struct tcphdr
_INT = 4
_U32 = 0xFFFFFFFF
_ids = itertools.count()            # reuseport_ida (ids are only ever compared)


@attrs.define(eq=False)
class SockReuseport:
    """struct sock_reuseport."""

    reuseport_id: int
    socks: list = attrs.field(factory=list)
    bind_inany: bool = False
    prog: object = None

    def __bool__(self) -> bool:
        return True


def _reuse_free(reuse: SockReuseport) -> None:
    """reuse_free_rcu() -> sk_reuseport_prog_free()."""
    prog, reuse.prog = reuse.prog, None
    if prog is not None:
        prog.put()


def reuseport_alloc(sk, bind_inany: bool) -> None:
    reuse = sk.reuseport_cb
    if reuse:
        if bind_inany:
            reuse.bind_inany = True
        return
    sk.reuseport_cb = SockReuseport(reuseport_id=next(_ids), socks=[sk], bind_inany=bind_inany)


def reuseport_add_sock(sk, sk2, bind_inany: bool) -> None:
    if not sk2.reuseport_cb:
        reuseport_alloc(sk2, bind_inany)
    reuse, old = sk2.reuseport_cb, sk.reuseport_cb
    if old and len(old.socks) != 1:
        raise KernelError(Errno.EBUSY, "socket already in a reuseport group")
    reuse.socks.append(sk)
    sk.reuseport_cb = reuse
    if old and old is not reuse:
        old.socks.remove(sk)
        _reuse_free(old)


def reuseport_detach_sock(sk) -> None:
    reuse = sk.reuseport_cb
    if not reuse:
        return
    if sk in reuse.socks:
        reuse.socks.remove(sk)
    sk.reuseport_cb = False
    if not reuse.socks:
        _reuse_free(reuse)


def _group_peer(sk):
    """udp_reuseport_add_sock() / inet_reuseport_add_sock(): a hashed member of the same family
    and protocol on the same address and port (a listener, for TCP)."""
    for s2 in sk.net.socks:
        if s2 is sk or not getattr(s2, "reuseport_cb", False) or not s2.reuseport or not s2.hashed:
            continue
        if s2.family != sk.family or s2.protocol != sk.protocol or s2.port != sk.port or s2.addr != sk.addr:
            continue
        if sk.sk_is_tcp() and s2.state != TcpState.LISTEN:
            continue
        return s2
    return None


def reuseport_hash(sk) -> None:
    """What hashing a SO_REUSEPORT socket does to its group: join a peer's, or own one."""
    bind_inany = sk.addr in (None, sk._any())
    peer = _group_peer(sk)
    if peer is not None:
        reuseport_add_sock(sk, peer, bind_inany)
    else:
        reuseport_alloc(sk, bind_inany)


# ---------------------------------------------------------------- attach / detach

def _reuseport_attach_prog(sk, prog) -> None:
    if not hasattr(sk, "reuseport_cb"):
        # an AF_UNIX socket with a socket filter: only the SO_REUSEPORT-less refusal is modelled
        raise KernelError(Errno.EINVAL, "reuseport groups of non-INET sockets are not modelled")
    if not sk.sk_hashed():
        if not sk.reuseport:
            raise KernelError(Errno.EINVAL, "SO_REUSEPORT is not set")
        reuseport_alloc(sk, False)
    elif not sk.reuseport_cb:
        raise KernelError(Errno.EINVAL, "the socket was not bound with SO_REUSEPORT")
    reuse = sk.reuseport_cb
    old, reuse.prog = reuse.prog, prog
    if old is not None:
        old.put()


def sk_reuseport_attach_bpf(task, sk, ufd: int) -> None:
    """sk_reuseport_attach_bpf(): a SOCKET_FILTER or SK_REUSEPORT program for the group."""
    from fakekernel.syscall.fdget import bpf_prog_get
    prog = bpf_prog_get(task, ufd)
    if prog.type not in (ProgType.SOCKET_FILTER, ProgType.SK_REUSEPORT):
        raise KernelError(Errno.EINVAL, "not a socket filter or reuseport program")
    if prog.type == ProgType.SK_REUSEPORT and (
            sk.type not in (SOCK_STREAM, SOCK_DGRAM) or sk.protocol not in (_IPPROTO_UDP, _IPPROTO_TCP)
            or sk.family not in (AF_INET, AF_INET6)):
        raise KernelError(Errno.ENOTSUPP, "reuseport programs are for TCP and UDP sockets")
    _reuseport_attach_prog(sk, prog)
    prog.get()              # the group's reference, taken once attached


def reuseport_detach_prog(sk) -> None:
    reuse = getattr(sk, "reuseport_cb", False)
    if not reuse:
        raise KernelError(Errno.ENOENT if sk.reuseport else Errno.EINVAL, "not in a reuseport group")
    old, reuse.prog = reuse.prog, None
    if old is None:
        raise KernelError(Errno.ENOENT, "no program attached")
    old.put()


def sk_reuseport_setsockopt(task, sk, optname: int, value) -> None:
    """sk_setsockopt() for the two reuseport BPF options (optlen is checked first)."""
    if isinstance(value, int):
        value = (value & _U32).to_bytes(_INT, "little")
    if len(value) < _INT:
        raise KernelError(Errno.EINVAL, "option shorter than an int")
    if optname == SO_DETACH_REUSEPORT_BPF:
        reuseport_detach_prog(sk)
        return
    if len(value) != _INT:
        raise KernelError(Errno.EINVAL, "SO_ATTACH_REUSEPORT_EBPF takes a u32 fd")
    sk_reuseport_attach_bpf(task, sk, int.from_bytes(value, "little"))


# ---------------------------------------------------------------- selection

def _flow_hash(saddr: bytes, sport: int, daddr: bytes, dport: int) -> int:
    digest = hashlib.blake2s(saddr + sport.to_bytes(2, "big") + daddr + dport.to_bytes(2, "big"),
                             digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _select_by_hash(reuse: SockReuseport, hash_: int):
    """reuseport_select_sock_by_hash(): from reciprocal_scale(hash, n) on, the first member that
    is not a connected socket."""
    n = len(reuse.socks)
    i = (hash_ * n) >> 32
    for k in range(n):
        sk = reuse.socks[(i + k) % n]
        if sk.state != TcpState.ESTABLISHED:
            return sk
    return None


def _run_bpf_filter(kern, reuse, prog, skb, hdr_len: int):
    """run_bpf_filter(): a socket filter's return value indexes the group (data past the
    transport header during the run)."""
    from fakekernel.bpf.core import bpf_prog_run
    from fakekernel.net.skbuff import build_skb_ctx, unmap_skb_ctx
    if hdr_len > skb.len:
        return None
    skb.pull(hdr_len)
    kctx, _ = build_skb_ctx(kern, skb)
    try:
        index = bpf_prog_run(kern, prog, kctx.base, ctx=skb) & _U32
    finally:
        unmap_skb_ctx(kern, skb)
        skb.push(hdr_len)
    return reuse.socks[index] if index < len(reuse.socks) else None


def reuseport_select_sock(kern, sk, hash_: int, skb, hdr_len: int, local_addr: bytes):
    """reuseport_select_sock(): a member, None, or ECONNREFUSED_SK (the program dropped)."""
    from fakekernel.helpers.reuseport import bpf_run_sk_reuseport
    reuse = sk.reuseport_cb
    if not reuse or not reuse.socks:
        return None
    sk2 = None
    prog = reuse.prog
    if prog is not None and skb is not None:
        if prog.type == ProgType.SK_REUSEPORT:
            sk2 = bpf_run_sk_reuseport(kern, reuse, sk, prog, skb, hash_, local_addr)
        else:
            sk2 = _run_bpf_filter(kern, reuse, prog, skb, hdr_len)
    return sk2 if sk2 is not None else _select_by_hash(reuse, hash_)


def inet_lookup_reuseport(kern, sk, packet: bytes, l4_off: int, hdr_len: int):
    """inet_lookup_reuseport() for a packet whose IP header starts `packet` and transport
    header sits at `l4_off`: the member to deliver to, `sk` itself outside a group, or None
    when the group's program dropped it."""
    from fakekernel.helpers.reuseport import ECONNREFUSED_SK
    if not sk.reuseport or not getattr(sk, "reuseport_cb", False):
        return sk
    v4 = sk.family == AF_INET
    saddr, daddr = (packet[12:16], packet[16:20]) if v4 else (packet[8:24], packet[24:IPV6_HDR_LEN])
    sport = int.from_bytes(packet[l4_off:l4_off + 2], "big")
    dport = int.from_bytes(packet[l4_off + 2:l4_off + 4], "big")
    skb = SkBuff(head=bytearray(packet), data_off=l4_off, len=len(packet) - l4_off,
                 protocol=ETH_P_IP if v4 else ETH_P_IPV6)
    skb.network_header, skb.transport_header = 0, l4_off
    ret = reuseport_select_sock(kern, sk, _flow_hash(bytes(saddr), sport, bytes(daddr), dport), skb,
                                hdr_len, bytes(daddr))
    if ret is ECONNREFUSED_SK:
        return None
    return ret if ret is not None else sk


# tcp_connect()'s SYN on loopback: MSS 65495, SACK permitted, timestamps, window scale 7
_SYN_OPTIONS = bytes([2, 4, 0xFF, 0xD7, 4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7])
_TCP_SYN = 0x02
_LO_SYN_WINDOW = 65495
_IPV4_TTL = 64


def _syn_packet(family: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> tuple[bytes, int, int]:
    """(IP packet, transport offset, TCP header length) of the SYN a connect() sends."""
    doff = _TCP_HDR_LEN + len(_SYN_OPTIONS)
    # ports, seq and ack (0: the real ones are random), data offset, SYN, window, check, urg_ptr
    tcp = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8)
           + bytes([(doff // 4) << 4, _TCP_SYN]) + _LO_SYN_WINDOW.to_bytes(2, "big") + bytes(4)
           + _SYN_OPTIONS)
    if family == AF_INET:
        # version 4 / ihl 5, tos, tot_len, id, DF, ttl, protocol, check (not computed), addresses
        ip = (bytes([0x45, 0]) + (IPV4_HDR_LEN + doff).to_bytes(2, "big") + bytes([0, 0, 0x40, 0, _IPV4_TTL,
              _IPPROTO_TCP, 0, 0]) + saddr + daddr)
    else:
        # version 6, payload_len, nexthdr, hop_limit, addresses
        ip = bytes([0x60, 0, 0, 0]) + doff.to_bytes(2, "big") + bytes([_IPPROTO_TCP, _IPV4_TTL]) + saddr + daddr
    return ip + tcp, len(ip), doff


def tcp_lookup_listener(kern, lst, saddr: bytes, sport: int, daddr: bytes, dport: int):
    """__inet_lookup_listener()'s reuseport step for a connect() to `lst`'s port: the listener
    that gets the connection, or None (refused by the group's program)."""
    packet, l4_off, doff = _syn_packet(lst.family, saddr, sport, daddr, dport)
    return inet_lookup_reuseport(kern, lst, packet, l4_off, doff)


def rx_lookup_reuseport(kern, rx_sock, packet: bytes):
    """The receive path's lookup found `rx_sock` (fakekernel.net.rx.Socket) for an IP packet:
    the member's entry that gets it, or None when the group's program dropped it."""
    owner = rx_sock.owner
    l4_off = (packet[0] & 0xF) * 4 if owner.family == AF_INET else IPV6_HDR_LEN
    if len(packet) < l4_off + (_UDP_HDR_LEN if owner.sk_is_udp() else _TCP_HDR_LEN):
        return rx_sock          # a truncated transport header: no group lookup for it
    hdr_len = _UDP_HDR_LEN if owner.sk_is_udp() else (packet[l4_off + _TCP_DOFF_OFF] >> 4) * 4
    sk = inet_lookup_reuseport(kern, owner, packet, l4_off, hdr_len)
    return None if sk is None else sk.rx_entry
