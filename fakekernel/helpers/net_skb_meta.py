"""skb checksum state and metadata helpers — net/core/filter.c (bpf_csum_update,
bpf_csum_level, bpf_skb_ecn_set_ce, bpf_get_route_realm, bpf_get_cgroup_classid,
bpf_skb_cgroup_classid, bpf_get_socket_uid, bpf_skb_cgroup_id, bpf_skb_set_tstamp) over an `SkBuff`;
include/net/inet_ecn.h for the ECN rewrite.

The simulated skbs carry no route (dst) and no net_cls classid, and a test run's socket is
the dummy one, which belongs to the root cgroup and to uid 0: the values below are what the
kernel reports for that world (measured on 6.18).
"""
from __future__ import annotations

from fakekernel.cgroup import ROOT_CGROUP_ID
from fakekernel.helpers.base import neg_errno
from fakekernel.net.checksum import csum_add, csum_sub, csum16_add
from fakekernel.net.headers import (CHECKSUM_COMPLETE, CHECKSUM_NONE, CHECKSUM_UNNECESSARY, ETH_P_IP,
                                    ETH_P_IPV6, IPV4_HDR_LEN, IPV6_HDR_LEN, SKB_MAX_CSUM_LEVEL)
from uapi.bpf import BPF_SKB_CLOCK_MONOTONIC, BPF_SKB_CLOCK_REALTIME, BPF_SKB_CLOCK_TAI, FuncId
from uapi.errno import Errno
from uapi.insn import u32

__all__ = ["NET_SKB_META_RUNTIME", "skb_reset_checksum_unnecessary"]

# include/uapi/linux/bpf.h: the bpf_csum_level() levels (not in the generated uapi)
BPF_CSUM_LEVEL_QUERY, BPF_CSUM_LEVEL_INC, BPF_CSUM_LEVEL_DEC, BPF_CSUM_LEVEL_RESET = range(4)
OVERFLOW_UID = 65534                   # include/linux/highuid.h: DEFAULT_OVERFLOWUID
INET_ECN_MASK = 3
INET_ECN_CE = 3
_IPV4_TOS, _IPV4_CHECK = 1, 10
_M16 = 0xFFFF


def bpf_csum_update(env, r1, r2, r3, r4, r5) -> int:
    skb = env.ctx
    if skb.ip_summed != CHECKSUM_COMPLETE:
        return neg_errno(Errno.ENOTSUPP)
    skb.csum = csum_add(skb.csum, u32(r2))
    return skb.csum


def skb_reset_checksum_unnecessary(skb) -> None:
    if skb.ip_summed == CHECKSUM_UNNECESSARY:
        skb.ip_summed, skb.csum_level = CHECKSUM_NONE, 0


def bpf_csum_level(env, r1, r2, r3, r4, r5) -> int:
    skb, level = env.ctx, r2
    if level == BPF_CSUM_LEVEL_INC:
        if skb.ip_summed == CHECKSUM_UNNECESSARY:
            skb.csum_level = min(skb.csum_level + 1, SKB_MAX_CSUM_LEVEL)
        elif skb.ip_summed == CHECKSUM_NONE:
            skb.ip_summed, skb.csum_level = CHECKSUM_UNNECESSARY, 0
    elif level == BPF_CSUM_LEVEL_DEC:
        if skb.ip_summed == CHECKSUM_UNNECESSARY:
            if skb.csum_level == 0:
                skb.ip_summed = CHECKSUM_NONE
            else:
                skb.csum_level -= 1
    elif level == BPF_CSUM_LEVEL_RESET:
        skb_reset_checksum_unnecessary(skb)
    elif level == BPF_CSUM_LEVEL_QUERY:
        return skb.csum_level if skb.ip_summed == CHECKSUM_UNNECESSARY else neg_errno(Errno.EACCES)
    else:
        return neg_errno(Errno.EINVAL)
    return 0


def _ip_ecn_set_ce(skb, nh: int) -> int:
    tos = skb.head[nh + _IPV4_TOS]
    ecn = (tos + 1) & INET_ECN_MASK
    if not ecn & 2:
        return int(not ecn)
    check = int.from_bytes(skb.head[nh + _IPV4_CHECK:nh + _IPV4_CHECK + 2], "little")
    # htons(0xFFFB) + htons(ecn) as the u16 the kernel adds to the little-endian check
    add = (int.from_bytes((0xFFFB).to_bytes(2, "big"), "little") + int.from_bytes(ecn.to_bytes(2, "big"), "little")) & _M16
    skb.head[nh + _IPV4_CHECK:nh + _IPV4_CHECK + 2] = csum16_add(check, add).to_bytes(2, "little")
    skb.head[nh + _IPV4_TOS] = tos | INET_ECN_CE
    return 1


def _ip6_ecn_set_ce(skb, nh: int) -> int:
    frm = int.from_bytes(skb.head[nh:nh + 4], "little")
    dsfield = (int.from_bytes(skb.head[nh:nh + 2], "big") >> 4) & 0xFF
    if dsfield & INET_ECN_MASK == 0:
        return 0
    to = frm | int.from_bytes((INET_ECN_CE << 20).to_bytes(4, "big"), "little")
    skb.head[nh:nh + 4] = to.to_bytes(4, "little")
    if skb.ip_summed == CHECKSUM_COMPLETE:
        skb.csum = csum_add(csum_sub(skb.csum, frm), to)
    return 1


def bpf_skb_ecn_set_ce(env, r1, r2, r3, r4, r5) -> int:
    """INET_ECN_set_ce(): mark an ECN-capable IPv4/IPv6 packet Congestion Experienced."""
    skb = env.ctx
    nh = skb.network_header
    if skb.protocol == ETH_P_IP and nh + IPV4_HDR_LEN <= skb.tail:
        return _ip_ecn_set_ce(skb, nh)
    if skb.protocol == ETH_P_IPV6 and nh + IPV6_HDR_LEN <= skb.tail:
        return _ip6_ecn_set_ce(skb, nh)
    return 0


def bpf_skb_set_tstamp(env, r1, r2, r3, r4, r5) -> int:
    """Set skb->tstamp and its clock; only IPv4/IPv6 skbs, and only REALTIME may be 0."""
    skb, tstamp, tstamp_type = env.ctx, r2, u32(r3)
    if skb.protocol not in (ETH_P_IP, ETH_P_IPV6):
        return neg_errno(Errno.EOPNOTSUPP)
    if tstamp_type not in (BPF_SKB_CLOCK_REALTIME, BPF_SKB_CLOCK_MONOTONIC, BPF_SKB_CLOCK_TAI):
        return neg_errno(Errno.EINVAL)
    if tstamp_type != BPF_SKB_CLOCK_REALTIME and not tstamp:
        return neg_errno(Errno.EINVAL)
    skb.sync_back()                     # keep what the program wrote before the call
    skb.tstamp, skb.tstamp_type = tstamp, tstamp_type
    skb.write_ctx()
    return 0


def bpf_get_route_realm(env, r1, r2, r3, r4, r5) -> int:
    return 0                                        # no dst, so no tclassid


def bpf_get_cgroup_classid(env, r1, r2, r3, r4, r5) -> int:
    return 0                                        # net_cls is not configured


def bpf_get_socket_uid(env, r1, r2, r3, r4, r5) -> int:
    return 0 if env.ctx.sk is not None else OVERFLOW_UID


def bpf_skb_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    return ROOT_CGROUP_ID if env.ctx.sk is not None else 0


NET_SKB_META_RUNTIME: dict = {
    FuncId.csum_update: bpf_csum_update,
    FuncId.csum_level: bpf_csum_level,
    FuncId.skb_ecn_set_ce: bpf_skb_ecn_set_ce,
    FuncId.skb_set_tstamp: bpf_skb_set_tstamp,
    FuncId.get_route_realm: bpf_get_route_realm,
    FuncId.get_cgroup_classid: bpf_get_cgroup_classid,
    FuncId.skb_cgroup_classid: bpf_get_cgroup_classid,
    FuncId.get_socket_uid: bpf_get_socket_uid,
    FuncId.skb_cgroup_id: bpf_skb_cgroup_id,
}
