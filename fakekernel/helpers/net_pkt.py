"""Packet helpers — net/core/filter.c: skb packet bytes (bpf_skb_load_bytes(_relative),
bpf_skb_store_bytes, bpf_skb_pull_data), checksums (bpf_csum_diff, bpf_l3/l4_csum_replace),
the skb hash (bpf_get_hash_recalc, bpf_set_hash(_invalid)) and bpf_redirect; ``NET_RUNTIME``
gathers them with the XDP (`net_xdp`) and skb geometry (`net_skb`) helpers.

Helpers reach the kernel-side packet as ``env.ctx`` (an `SkBuff` or an `XdpBuff`) and call its
``update_ctx()`` after changing what the program's ctx shows.  Test-run skbs are linear and
never cloned, and never CHECKSUM_PARTIAL, so the branches for those cases are not modelled.
"""
from __future__ import annotations

import hashlib

from fakekernel.helpers.base import neg_errno
from fakekernel.net.checksum import (CSUM_MANGLED_0, csum_block_add, csum_block_sub, csum_fold,
                                     csum_from32to16, csum_partial, csum_replace2, csum_replace4,
                                     csum_replace_by_diff, csum_sub, csum_unfold)
from fakekernel.net.headers import (CHECKSUM_COMPLETE, ETH_P_IP, ETH_P_IPV6, IPV4_HDR_LEN,
                                    IPV6_HDR_LEN, TC_ACT_REDIRECT, TC_ACT_SHOT)
from uapi.bpf import (BPF_HDR_START_MAC, BPF_HDR_START_NET, CsumFlags, FuncId, HdrFieldMask,
                      RedirectFlags, RedirectPeerFlags, StoreBytesFlags, XdpAction)
from uapi.errno import Errno
from uapi.insn import s32, u32, u64

__all__ = ["NET_RUNTIME", "bpf_try_make_writable", "skb_clear_hash", "skb_get_hash"]


# ================================================================ runtime

_INT_MAX = 0x7FFFFFFF
_U32 = 0xFFFFFFFF
_U16_MAX = 0xFFFF
_SUM16 = 2                             # sizeof(__sum16)
#: filter.c's BPF_F_REDIRECT_INTERNAL: the redirect_neigh/peer bits bpf_redirect() refuses
_REDIRECT_INTERNAL = int(RedirectPeerFlags.NEIGH | RedirectPeerFlags.PEER | RedirectPeerFlags.NEXTHOP)
_STORE_FLAGS = int(StoreBytesFlags.RECOMPUTE_CSUM | StoreBytesFlags.INVALIDATE_HASH)
_HDR_FIELD_MASK = int(HdrFieldMask.HDR_FIELD_MASK)
_L4_FLAGS = int(CsumFlags.MARK_MANGLED_0 | CsumFlags.MARK_ENFORCE | CsumFlags.PSEUDO_HDR
                | CsumFlags.IPV6) | _HDR_FIELD_MASK


def bpf_try_make_writable(skb, write_len: int) -> int:
    """bpf_try_make_writable() -> skb_ensure_writable(): the first write_len bytes must be in
    the (always linear, never cloned) head; -ENOMEM otherwise (callers map it to their errno)."""
    if write_len > skb.len:
        return -Errno.ENOMEM
    return 0


# ---------------------------------------------------------------- packet bytes (skb)

def bpf_skb_load_bytes(env, r1, r2, r3, r4, r5) -> int:
    skb, offset, length = env.ctx, u32(r2), u32(r4)
    # skb_header_pointer(): the bytes must lie inside skb->len
    if offset > _INT_MAX or offset + length > skb.len:
        env.mem.write(r3, bytes(length))
        return neg_errno(Errno.EFAULT)
    start = skb.data_off + offset
    env.mem.write(r3, bytes(skb.head[start:start + length]))
    return 0


def bpf_skb_load_bytes_relative(env, r1, r2, r3, r4, r5) -> int:
    skb, offset, length, start_header = env.ctx, u32(r2), u32(r4), u32(r5)
    start = None
    if offset <= _U16_MAX:
        if start_header == BPF_HDR_START_MAC:
            start = skb.mac_header if skb.mac_header >= 0 else None
        elif start_header == BPF_HDR_START_NET:
            start = skb.network_header
    if start is None or start + offset + length > skb.tail:
        env.mem.write(r3, bytes(length))
        return neg_errno(Errno.EFAULT)
    env.mem.write(r3, bytes(skb.head[start + offset:start + offset + length]))
    return 0


def _skb_postpull_rcsum(skb, data: bytes, offset: int) -> None:
    """__skb_postpull_rcsum(): take bytes at skb->data + offset out of a CHECKSUM_COMPLETE sum."""
    if skb.ip_summed == CHECKSUM_COMPLETE:
        skb.csum = csum_block_sub(skb.csum, csum_partial(data), offset)


def _skb_postpush_rcsum(skb, data: bytes, offset: int) -> None:
    if skb.ip_summed == CHECKSUM_COMPLETE:
        skb.csum = csum_block_add(skb.csum, csum_partial(data), offset)


def skb_clear_hash(skb) -> None:
    skb.hash, skb.sw_hash, skb.l4_hash = 0, False, False


def bpf_skb_store_bytes(env, r1, r2, r3, r4, r5) -> int:
    skb, offset, length, flags = env.ctx, u32(r2), u32(r4), r5
    if flags & ~_STORE_FLAGS:
        return neg_errno(Errno.EINVAL)
    if offset > _INT_MAX or bpf_try_make_writable(skb, offset + length):
        return neg_errno(Errno.EFAULT)
    start = skb.data_off + offset
    new = env.mem.read(r3, length)
    if flags & StoreBytesFlags.RECOMPUTE_CSUM:
        _skb_postpull_rcsum(skb, bytes(skb.head[start:start + length]), offset)
    skb.head[start:start + length] = new
    if flags & StoreBytesFlags.RECOMPUTE_CSUM:
        _skb_postpush_rcsum(skb, new, offset)
    if flags & StoreBytesFlags.INVALIDATE_HASH:
        skb_clear_hash(skb)
    skb.update_ctx()
    return 0


def bpf_skb_pull_data(env, r1, r2, r3, r4, r5) -> int:
    """Linear skbs hold everything already: only a length beyond the packet fails."""
    skb, length = env.ctx, u32(r2)
    err = bpf_try_make_writable(skb, length or skb.len)
    skb.update_ctx()
    return u64(err)


# ---------------------------------------------------------------- checksums

def bpf_csum_diff(env, r1, r2, r3, r4, r5) -> int:
    """The checksum difference of replacing `from` by `to`, onto seed, folded to 16 bits (6.18
    computes it the same way on every architecture: csum_partial of each side, subtracted).
    Measured on 6.18: any sizes are taken (no multiple-of-4 rule, no 512-byte scratch limit)."""
    from_size, to_size, seed = u32(r2), u32(r4), u32(r5)
    frm = env.mem.read(r1, from_size) if from_size else b""
    to = env.mem.read(r3, to_size) if to_size else b""
    if not to_size:
        return csum_from32to16(~csum_partial(frm, ~seed & _U32) & _U32)
    if not from_size:
        return csum_from32to16(csum_partial(to, seed))
    return csum_from32to16(csum_sub(csum_partial(to, seed), csum_partial(frm)))


def _sum16_at(skb, offset: int) -> tuple[int, int]:
    pos = skb.data_off + offset
    return pos, int.from_bytes(skb.head[pos:pos + _SUM16], "little")


def _put_sum16(skb, pos: int, value: int) -> None:
    skb.head[pos:pos + _SUM16] = value.to_bytes(_SUM16, "little")


def bpf_l3_csum_replace(env, r1, r2, r3, r4, r5) -> int:
    skb, offset, frm, to, flags = env.ctx, u32(r2), r3, r4, r5
    if flags & ~_HDR_FIELD_MASK:
        return neg_errno(Errno.EINVAL)
    if offset > _U16_MAX or offset & 1 or bpf_try_make_writable(skb, offset + _SUM16):
        return neg_errno(Errno.EFAULT)
    pos, old = _sum16_at(skb, offset)
    size = flags & _HDR_FIELD_MASK
    if size == 0:
        if frm != 0:
            return neg_errno(Errno.EINVAL)
        new = csum_replace_by_diff(old, u32(to))
    elif size == 2:
        new = csum_replace2(old, frm & _U16_MAX, to & _U16_MAX)
    elif size == 4:
        new = csum_replace4(old, u32(frm), u32(to))
    else:
        return neg_errno(Errno.EINVAL)
    _put_sum16(skb, pos, new)
    return 0


def _inet_proto_csum_replace4(skb, old: int, frm: int, to: int, pseudohdr: bool) -> int:
    """inet_proto_csum_replace4() for an skb that is not CHECKSUM_PARTIAL (test runs never are)."""
    diff = ((~frm & 0xFFFFFFFF) | (to << 32)).to_bytes(8, "little")
    new = csum_fold(csum_partial(diff, ~csum_unfold(old) & 0xFFFFFFFF))
    if skb.ip_summed == CHECKSUM_COMPLETE and pseudohdr:
        skb.csum = ~csum_partial(diff, ~skb.csum & 0xFFFFFFFF) & 0xFFFFFFFF
    return new


def bpf_l4_csum_replace(env, r1, r2, r3, r4, r5) -> int:
    skb, offset, frm, to, flags = env.ctx, u32(r2), r3, r4, r5
    is_pseudo = bool(flags & CsumFlags.PSEUDO_HDR)
    is_mmzero = bool(flags & CsumFlags.MARK_MANGLED_0)
    do_mforce = bool(flags & CsumFlags.MARK_ENFORCE)
    is_ipv6 = bool(flags & CsumFlags.IPV6)
    if flags & ~_L4_FLAGS:
        return neg_errno(Errno.EINVAL)
    if offset > _U16_MAX or offset & 1 or bpf_try_make_writable(skb, offset + _SUM16):
        return neg_errno(Errno.EFAULT)
    pos, old = _sum16_at(skb, offset)
    if is_mmzero and not do_mforce and not old:
        return 0
    size = flags & _HDR_FIELD_MASK
    if size == 0:
        if frm != 0:
            return neg_errno(Errno.EINVAL)
        diff = u32(to)
        new = csum_replace_by_diff(old, diff)
        if skb.ip_summed == CHECKSUM_COMPLETE and is_pseudo and not is_ipv6:
            skb.csum = ~csum_sub(diff, skb.csum) & 0xFFFFFFFF
    elif size == 2:
        new = _inet_proto_csum_replace4(skb, old, frm & _U16_MAX, to & _U16_MAX, is_pseudo)
    elif size == 4:
        new = _inet_proto_csum_replace4(skb, old, u32(frm), u32(to), is_pseudo)
    else:
        return neg_errno(Errno.EINVAL)
    if is_mmzero and not new:
        new = CSUM_MANGLED_0
    _put_sum16(skb, pos, new)
    return 0


# ---------------------------------------------------------------- the skb hash

#: net_get_random_once(&hashrnd): one fixed value stands in for the boot-time random seed
_HASHRND = b"fakekernel-flow-hashrnd"
_IPPROTO_TCP, _IPPROTO_UDP = 6, 17
_PORTS = 4


def _flow_keys(skb) -> tuple[bytes, bool]:
    """The flow dissector's keys, addresses and ports in a direction-independent order
    (__flow_hash_consistentify): protocol, addresses and, for TCP/UDP, ports; and whether
    the keys reach layer 4 (flow_keys_have_l4)."""
    net = bytes(skb.head[skb.network_header:skb.tail]) if skb.network_header >= 0 else b""
    proto = skb.protocol.to_bytes(2, "big")
    if skb.protocol == ETH_P_IP and len(net) >= IPV4_HDR_LEN:
        l4_off, ip_proto, addrs = (net[0] & 0xF) * 4, net[9], (net[12:16], net[16:20])
    elif skb.protocol == ETH_P_IPV6 and len(net) >= IPV6_HDR_LEN:
        l4_off, ip_proto, addrs = IPV6_HDR_LEN, net[6], (net[8:24], net[24:40])
    else:
        return proto, False
    l4 = net[l4_off:l4_off + _PORTS] if ip_proto in (_IPPROTO_TCP, _IPPROTO_UDP) else b""
    ports = (l4[:2], l4[2:]) if len(l4) == _PORTS else (b"", b"")
    if addrs[1] < addrs[0] or (addrs[1] == addrs[0] and ports[1] < ports[0]):
        addrs, ports = addrs[::-1], ports[::-1]
    keys = proto + bytes([ip_proto]) + b"".join(addrs) + b"".join(ports)
    return keys, len(l4) == _PORTS and l4 != bytes(_PORTS)


def skb_get_hash(skb) -> int:
    """skb_get_hash(): the cached hash, or a new software hash of the flow keys (never 0).

    The kernel seeds its flow hash with a boot-time random value, so the value itself is not
    comparable with any real kernel's; what programs can rely on (stable per flow, symmetric,
    non-zero, cached until cleared or set) holds.
    """
    if not skb.l4_hash and not skb.sw_hash:
        keys, has_l4 = _flow_keys(skb)
        h = int.from_bytes(hashlib.blake2b(keys, digest_size=4, key=_HASHRND).digest(), "little")
        skb.hash, skb.sw_hash, skb.l4_hash = h or 1, True, has_l4
    return skb.hash


def bpf_get_hash_recalc(env, r1, r2, r3, r4, r5) -> int:
    h = skb_get_hash(env.ctx)
    env.ctx.update_ctx()
    return h


def bpf_set_hash_invalid(env, r1, r2, r3, r4, r5) -> int:
    skb_clear_hash(env.ctx)
    env.ctx.update_ctx()
    return 0


def bpf_set_hash(env, r1, r2, r3, r4, r5) -> int:
    """__skb_set_sw_hash(skb, hash, true): a program-set hash counts as an L4 hash."""
    skb = env.ctx
    skb.hash, skb.sw_hash, skb.l4_hash = u32(r2), True, True
    skb.update_ctx()
    return 0


# ---------------------------------------------------------------- redirect

def bpf_redirect(env, r1, r2, r3, r4, r5) -> int:
    """bpf_redirect() for tc (TC_ACT_REDIRECT / TC_ACT_SHOT) and bpf_xdp_redirect() for XDP
    (XDP_REDIRECT / XDP_ABORTED): record the target in the buffer's redirect info."""
    from fakekernel.net.xdp import XdpBuff
    ctx, ifindex, flags = env.ctx, u32(r1), r2
    if isinstance(ctx, XdpBuff):
        if flags:
            return XdpAction.ABORTED
        ctx.redirect_ifindex, ctx.redirect_flags = ifindex, 0
        ctx.redirect_map = None     # the last redirect helper called wins
        return XdpAction.REDIRECT
    if flags & (~int(RedirectFlags.INGRESS) | _REDIRECT_INTERNAL):
        return TC_ACT_SHOT
    if ctx is not None:
        ctx.redirect_ifindex, ctx.redirect_flags = ifindex, flags
    return TC_ACT_REDIRECT


#: sizeof(struct bpf_redir_neigh): nh_family and a 16-byte address
_REDIR_NEIGH_SIZE = 4 + 16


def bpf_redirect_peer(env, r1, r2, r3, r4, r5) -> int:
    """Redirect into the peer of a veth/netkit device at ingress: any flag is refused."""
    ctx = env.ctx
    if r2:
        return TC_ACT_SHOT
    if ctx is not None:
        ctx.redirect_ifindex, ctx.redirect_flags = u32(r1), int(RedirectPeerFlags.PEER)
    return TC_ACT_REDIRECT


def bpf_redirect_neigh(env, r1, r2, r3, r4, r5) -> int:
    """Redirect with a neighbour lookup (optionally via the given next hop): a params length
    shorter than struct bpf_redir_neigh, or any flag, is refused."""
    ctx, plen = env.ctx, s32(r3)
    if (plen and plen < _REDIR_NEIGH_SIZE) or r4:
        return TC_ACT_SHOT
    if ctx is not None:
        ctx.redirect_ifindex = u32(r1)
        ctx.redirect_flags = int(RedirectPeerFlags.NEIGH) | (int(RedirectPeerFlags.NEXTHOP) if plen else 0)
    return TC_ACT_REDIRECT


def bpf_clone_redirect(env, r1, r2, r3, r4, r5) -> int:
    """Send a copy of the packet out of (or, with BPF_F_INGRESS, into) device `ifindex` now.

    An egress copy is queued on the device's transmit list (``world.net.tx``); an ingress copy
    is not delivered to the receive path yet.  The return value is the kernel's: 0 once the
    copy went, -EINVAL for bad flags or an unknown device, -EBADMSG for a GSO skb without a
    GSO type (what a test run's gso_size makes)."""
    from fakekernel.net.netdev import dev_get_by_index
    skb, ifindex, flags = env.ctx, u32(r2), r3
    if flags & (~int(RedirectFlags.INGRESS) | _REDIRECT_INTERNAL):
        return neg_errno(Errno.EINVAL)
    if skb.gso_size:
        return neg_errno(Errno.EBADMSG)
    dev = dev_get_by_index(env.kernel, ifindex)
    if dev is None:
        return neg_errno(Errno.EINVAL)
    if not flags & RedirectFlags.INGRESS:
        start = skb.mac_header if 0 <= skb.mac_header <= skb.data_off else skb.data_off
        net = getattr(getattr(env.kernel, "world", None), "net", None)
        if net is not None and ifindex in net.tx:
            net.tx[ifindex].append(bytes(skb.head[start:skb.tail]))
    return 0


def _build_runtime() -> dict:
    from fakekernel.helpers.net_skb import NET_SKB_RUNTIME
    from fakekernel.helpers.net_skb_meta import NET_SKB_META_RUNTIME
    from fakekernel.helpers.net_xdp import NET_XDP_RUNTIME
    return {
        FuncId.skb_load_bytes: bpf_skb_load_bytes,
        FuncId.skb_load_bytes_relative: bpf_skb_load_bytes_relative,
        FuncId.skb_store_bytes: bpf_skb_store_bytes,
        FuncId.skb_pull_data: bpf_skb_pull_data,
        FuncId.csum_diff: bpf_csum_diff,
        FuncId.l3_csum_replace: bpf_l3_csum_replace,
        FuncId.l4_csum_replace: bpf_l4_csum_replace,
        FuncId.get_hash_recalc: bpf_get_hash_recalc,
        FuncId.set_hash_invalid: bpf_set_hash_invalid,
        FuncId.set_hash: bpf_set_hash,
        FuncId.redirect: bpf_redirect,
        FuncId.clone_redirect: bpf_clone_redirect,
        FuncId.redirect_peer: bpf_redirect_peer,
        FuncId.redirect_neigh: bpf_redirect_neigh,
        **NET_SKB_RUNTIME,
        **NET_SKB_META_RUNTIME,
        **NET_XDP_RUNTIME,
    }


NET_RUNTIME: dict = _build_runtime()
