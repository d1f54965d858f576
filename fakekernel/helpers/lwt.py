"""Lightweight-tunnel helpers — net/core/filter.c (bpf_lwt_in/xmit_push_encap, the seg6local
helpers' prototypes) and net/core/lwt_bpf.c (bpf_lwt_push_ip_encap, handle_gso_encap).

``LWT_PROTOS`` holds the four prototypes (the in and xmit push_encap prototypes are the same
shape: the runtime tells them apart by the program type).  ``LWT_RUNTIME`` has
bpf_lwt_push_encap for BPF_LWT_ENCAP_IP on LWT_IN and LWT_XMIT.  The SEG6 encapsulations and
the three seg6local helpers need an IPv6 segment-routing model that does not exist yet: the
seg6 helpers are in UNIMPLEMENTED_AT_RUNTIME (a seg6local program cannot be test-run anyway),
and lwt_push_encap with a SEG6 mode raises HelperNotImplemented.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.net_pkt import _skb_postpush_rcsum, skb_clear_hash
from fakekernel.helpers.net_skb import skb_cow, skb_is_gso
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.net.checksum import csum_fold, csum_partial
from fakekernel.net.headers import ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HDR_LEN, IPV6_HDR_LEN
from uapi.bpf import FuncId, LwtEncapMode, ProgType
from uapi.errno import Errno
from uapi.insn import u32

__all__ = ["LWT_PROTOS", "LWT_RUNTIME", "bpf_lwt_push_ip_encap", "LWT_BPF_MAX_HEADROOM"]

LWT_BPF_MAX_HEADROOM = 256             # include/net/lwtunnel.h
IPPROTO_UDP = 17                       # include/uapi/linux/in.h
UDP_HDR_LEN = 8                        # sizeof(struct udphdr)
NEXTHDR_UDP = IPPROTO_UDP
_HH_DATA_MOD = 16                      # include/linux/netdevice.h
_SUM16 = 2
_IP_CHECK_OFF = 10                     # offsetof(struct iphdr, check)
_IPV6_NEXTHDR_OFF = 6                  # offsetof(struct ipv6hdr, nexthdr)
_IPV4_PROTO_OFF = 9                    # offsetof(struct iphdr, protocol)

_MEM_ARGS = (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
             ArgType.CONST_SIZE)
LWT_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.lwt_push_encap, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=_MEM_ARGS),                # bpf_lwt_in/xmit_push_encap_proto
    FuncProto(func=FuncId.lwt_seg6_store_bytes, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=_MEM_ARGS),                # bpf_lwt_seg6_store_bytes_proto
    FuncProto(func=FuncId.lwt_seg6_action, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=_MEM_ARGS),                # bpf_lwt_seg6_action_proto
    FuncProto(func=FuncId.lwt_seg6_adjust_srh, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),
)}


def _ll_reserved_space(dev) -> int:
    """LL_RESERVED_SPACE(): the link-layer header (every simulated device has an Ethernet-sized
    one, lo included) rounded down to HH_DATA_MOD, plus HH_DATA_MOD."""
    return (ETH_HLEN & ~(_HH_DATA_MOD - 1)) + _HH_DATA_MOD


def _ip_fast_csum(hdr: bytes) -> int:
    return csum_fold(csum_partial(hdr))


def bpf_lwt_push_ip_encap(env, skb, hdr: bytes, ingress: bool) -> int:
    """bpf_lwt_push_ip_encap(): put a complete outer IPv4/IPv6 header (and UDP header for a UDP
    tunnel) in front of the network header.  Returns 0 or -errno."""
    n = len(hdr)
    if n < IPV4_HDR_LEN or n > LWT_BPF_MAX_HEADROOM:
        return -Errno.EINVAL
    version = hdr[0] >> 4
    if version == 4:
        ipv4, ihl_len = True, (hdr[0] & 0xF) * 4
        if n < ihl_len:
            return -Errno.EINVAL
        is_udp_tunnel = hdr[_IPV4_PROTO_OFF] == IPPROTO_UDP
        if is_udp_tunnel and n < ihl_len + UDP_HDR_LEN:
            return -Errno.EINVAL
    elif version == 6:
        ipv4, ihl_len = False, IPV6_HDR_LEN
        if n < IPV6_HDR_LEN:
            return -Errno.EINVAL
        is_udp_tunnel = hdr[_IPV6_NEXTHDR_OFF] == NEXTHDR_UDP
        if is_udp_tunnel and n < IPV6_HDR_LEN + UDP_HDR_LEN:
            return -Errno.EINVAL
    else:
        return -Errno.EINVAL
    mac_len = 0     # the test-run skb never had skb_reset_mac_len()
    skb_cow(env, skb, n + (mac_len if ingress else _ll_reserved_space(skb.dev)))
    skb.encapsulation = True
    skb.push(n)
    if ingress:
        _skb_postpush_rcsum(skb, hdr, 0)
    skb.network_header = skb.data_off
    if is_udp_tunnel:
        skb.transport_header = skb.network_header + ihl_len
    skb.head[skb.data_off:skb.data_off + n] = hdr
    skb_clear_hash(skb)
    if ipv4:
        skb.protocol = ETH_P_IP
        pos = skb.network_header + _IP_CHECK_OFF
        if not int.from_bytes(skb.head[pos:pos + _SUM16], "little"):
            check = _ip_fast_csum(bytes(skb.head[skb.network_header:skb.network_header + ihl_len]))
            skb.head[pos:pos + _SUM16] = check.to_bytes(_SUM16, "little")
    else:
        skb.protocol = ETH_P_IPV6
    skb.update_ctx()
    if skb_is_gso(skb):
        # handle_gso_encap(): only TCP GSO may be encapsulated, and a test-run skb has no gso_type
        return -Errno.ENOTSUPP
    return 0


def bpf_lwt_push_encap(env, r1, r2, r3, r4, r5) -> int:
    """bpf_lwt_in_push_encap() / bpf_lwt_xmit_push_encap()."""
    from fakekernel.helpers import HelperNotImplemented
    mode, ingress = u32(r2), env.prog.type == ProgType.LWT_IN
    if mode == LwtEncapMode.IP:
        ret = bpf_lwt_push_ip_encap(env, env.ctx, env.mem.read(r3, u32(r4)), ingress)
        return neg_errno(-ret) if ret < 0 else ret
    if ingress and mode in (LwtEncapMode.SEG6, LwtEncapMode.SEG6_INLINE):
        raise HelperNotImplemented(FuncId.lwt_push_encap)
    return neg_errno(Errno.EINVAL)


LWT_RUNTIME = {FuncId.lwt_push_encap: bpf_lwt_push_encap}
