"""skb geometry helpers — net/core/filter.c (bpf_skb_change_proto/type/tail/head,
bpf_skb_adjust_room, bpf_skb_vlan_push/pop) over an `SkBuff` (include/linux/skbuff.h,
net/core/skbuff.c: skb_cow, pskb_expand_head, skb_vlan_push/pop; include/linux/if_vlan.h).

The skb is linear and never cloned.  When the head is too small the buffer is reallocated
(pskb_expand_head) and the packet region remapped, so the program's ctx pointers change —
the verifier invalidated its packet pointers at the call.  Offsets in the SkBuff are from
skb->head; mac / network / transport headers of -1 are unset.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.net.checksum import csum_partial, wsum_negate
from fakekernel.net.headers import (CHECKSUM_COMPLETE, CHECKSUM_NONE, ETH_ALEN, ETH_HLEN,
                                    ETH_P_802_2, ETH_P_802_3, ETH_P_802_3_MIN, ETH_P_IP,
                                    ETH_P_IPV6, IPV4_HDR_LEN, IPV6_HDR_LEN, NET_SKB_PAD,
                                    PACKET_OTHERHOST, PAGE_SIZE, SKB_SHARED_INFO_SIZE)
from uapi.bpf import BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_NET, AdjRoomFlags, FuncId
from uapi.errno import Errno
from uapi.insn import s32, u32

__all__ = ["NET_SKB_RUNTIME", "pskb_expand_head", "skb_cow"]

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_HLEN = 4
VLAN_ETH_HLEN = ETH_HLEN + VLAN_HLEN
_U16 = 0xFFFF
_KMALLOC_MAX_SIZE = PAGE_SIZE << 10     # the largest kmalloc (MAX_PAGE_ORDER 10)
#: SKB_MAX_ALLOC: an order-2 allocation minus the shared info (BPF_SKB_MAX_LEN)
BPF_SKB_MAX_LEN = (PAGE_SIZE << 2) - SKB_SHARED_INFO_SIZE
_ADJ_ROOM_L2_SHIFT = 56                # BPF_ADJ_ROOM_ENCAP_L2_SHIFT
_ADJ_ROOM_L2_MASK = 0xFF               # BPF_ADJ_ROOM_ENCAP_L2_MASK
_ENCAP_L3 = AdjRoomFlags.ENCAP_L3_IPV4 | AdjRoomFlags.ENCAP_L3_IPV6
_DECAP_L3 = AdjRoomFlags.DECAP_L3_IPV4 | AdjRoomFlags.DECAP_L3_IPV6
_ADJ_ROOM_MASK = int(AdjRoomFlags.FIXED_GSO | _ENCAP_L3 | AdjRoomFlags.ENCAP_L4_GRE
                     | AdjRoomFlags.ENCAP_L4_UDP | AdjRoomFlags.ENCAP_L2_ETH | _DECAP_L3
                     | (_ADJ_ROOM_L2_MASK << _ADJ_ROOM_L2_SHIFT))


def _swab16(v: int) -> int:
    return int.from_bytes((v & _U16).to_bytes(2, "little"), "big")


# ---------------------------------------------------------------- buffer management

def pskb_expand_head(env, skb, nhead: int, ntail: int) -> None:
    """Reallocate skb->head with nhead more bytes before and ntail more after; remap it."""
    new = bytearray(nhead) + skb.head + bytearray(ntail)
    old_region = skb.pkt
    skb.head = new
    skb.data_off += nhead
    skb.network_header += nhead
    if skb.mac_header >= 0:
        skb.mac_header += nhead
    # skb_headers_offset_update() moves the u16 transport_header even when unset (~0):
    # an unset one wraps around and becomes "set" (measured: it then bounds change_tail)
    raw = (_U16 if skb.transport_header < 0 else skb.transport_header) + nhead
    skb.transport_header = -1 if raw & _U16 == _U16 else raw & _U16
    if old_region is not None:
        env.mem.unmap(old_region)
        region = env.mem.map_region(skb.head, "packet", "skb->head")
        skb.mapped = [region if r is old_region else r for r in skb.mapped]
        skb.pkt = region


def skb_cow(env, skb, headroom: int) -> None:
    """skb_cow() / skb_cow_head() on an uncloned skb: grow the headroom to `headroom`."""
    delta = headroom - skb.headroom()
    if delta > 0:
        pskb_expand_head(env, skb, -(-delta // NET_SKB_PAD) * NET_SKB_PAD, 0)


def _skb_put_zero(env, skb, n: int) -> None:
    room = len(skb.head) - skb.tail
    if n > room:
        pskb_expand_head(env, skb, 0, n - room)
    skb.head[skb.tail:skb.tail + n] = bytes(n)
    skb.len += n


def skb_mac_header_len(skb) -> int:
    return skb.network_header - skb.mac_header


def skb_network_offset(skb) -> int:
    return skb.network_header - skb.data_off


def skb_is_gso(skb) -> bool:
    return skb.gso_size != 0


def _postpull_rcsum(skb, start: int, n: int) -> None:
    """skb_postpull_rcsum(): bytes at head offset `start` leave a CHECKSUM_COMPLETE sum
    (negate, add the bytes, negate: the representation of zero it ends in is observable)."""
    if skb.ip_summed == CHECKSUM_COMPLETE:
        seed = wsum_negate(skb.csum)
        skb.csum = wsum_negate(csum_partial(bytes(skb.head[start:start + n]), seed))


def _postpush_rcsum(skb, start: int, n: int) -> None:
    if skb.ip_summed == CHECKSUM_COMPLETE:
        skb.csum = csum_partial(bytes(skb.head[start:start + n]), skb.csum)


def _done(skb, ret: int) -> int:
    """bpf_compute_data_pointers() and the helper's return value."""
    skb.update_ctx()
    return neg_errno(-ret) if ret < 0 else ret


# ---------------------------------------------------------------- push / pop at an offset

def _generic_push(skb, off: int, n: int) -> None:
    skb.data_off -= n
    skb.len += n
    d = skb.data_off
    skb.head[d:d + off] = skb.head[d + n:d + n + off]
    skb.head[d + off:d + off + n] = bytes(n)


def _net_hdr_push(skb, off: int, n: int) -> None:
    trans_same = skb.transport_header == skb.network_header
    _generic_push(skb, off, n)
    skb.mac_header -= n
    skb.network_header -= n
    if trans_same:
        skb.transport_header = skb.network_header


def _net_hdr_pop(skb, off: int, n: int) -> int:
    if off + n > skb.len:                          # pskb_may_pull()
        return -Errno.ENOMEM
    trans_same = skb.transport_header == skb.network_header
    old = skb.data_off
    skb.data_off += n
    skb.len -= n
    _postpull_rcsum(skb, old + off, n)
    skb.head[skb.data_off:skb.data_off + off] = skb.head[old:old + off]
    skb.mac_header += n
    skb.network_header += n
    if trans_same:
        skb.transport_header = skb.network_header
    return 0


# ---------------------------------------------------------------- change_proto / change_type

_V6_V4_DIFF = IPV6_HDR_LEN - IPV4_HDR_LEN


def _proto_xlat(env, skb, to_proto: int) -> int:
    off = skb_mac_header_len(skb)
    if skb.protocol == ETH_P_IP and to_proto == ETH_P_IPV6:
        skb_cow(env, skb, _V6_V4_DIFF)
        _net_hdr_push(skb, off, _V6_V4_DIFF)
    elif skb.protocol == ETH_P_IPV6 and to_proto == ETH_P_IP:
        ret = _net_hdr_pop(skb, off, _V6_V4_DIFF)
        if ret:
            return ret
    else:
        return -Errno.ENOTSUPP
    skb.protocol = to_proto
    skb.hash, skb.sw_hash, skb.l4_hash = 0, False, False
    return 0


def bpf_skb_change_proto(env, r1, r2, r3, r4, r5) -> int:
    skb = env.ctx
    if r3:
        return neg_errno(Errno.EINVAL)
    return _done(skb, _proto_xlat(env, skb, _swab16(r2)))


def bpf_skb_change_type(env, r1, r2, r3, r4, r5) -> int:
    skb, pkt_type = env.ctx, u32(r2)
    if skb.pkt_type > PACKET_OTHERHOST or pkt_type > PACKET_OTHERHOST:
        return neg_errno(Errno.EINVAL)
    skb.pkt_type = pkt_type
    skb.update_ctx()
    return 0


# ---------------------------------------------------------------- change_tail / change_head

def _skb_min_len(skb) -> int:
    offset = skb_network_offset(skb)
    min_len = offset if offset > 0 else 0
    if skb.transport_header >= 0:
        offset = skb.transport_header - skb.data_off
        if offset > 0:
            min_len = offset
    return min_len


def bpf_skb_change_tail(env, r1, r2, r3, r4, r5) -> int:
    skb, new_len, flags = env.ctx, u32(r2), r3
    if flags or new_len > BPF_SKB_MAX_LEN or new_len < _skb_min_len(skb):
        return neg_errno(Errno.EINVAL)
    if skb.encapsulation:
        return neg_errno(Errno.ENOTSUPP)
    if new_len != skb.len:
        # __skb_grow_rcsum / __skb_trim_rcsum give up on a CHECKSUM_COMPLETE sum
        if skb.ip_summed == CHECKSUM_COMPLETE:
            skb.ip_summed = CHECKSUM_NONE
        if new_len > skb.len:
            _skb_put_zero(env, skb, new_len - skb.len)
        else:
            skb.len = new_len
    if skb_is_gso(skb):
        skb.gso_size = skb.gso_segs = 0             # skb_gso_reset()
    return _done(skb, 0)


def bpf_skb_change_head(env, r1, r2, r3, r4, r5) -> int:
    skb, head_room, flags = env.ctx, u32(r2), r3
    new_len = (skb.len + head_room) & 0xFFFFFFFF
    if flags or (not skb_is_gso(skb) and new_len > BPF_SKB_MAX_LEN) or new_len < skb.len:
        return neg_errno(Errno.EINVAL)
    if head_room > _KMALLOC_MAX_SIZE:               # pskb_expand_head() cannot allocate it
        return neg_errno(Errno.ENOMEM)
    skb_cow(env, skb, head_room)
    skb.push(head_room)
    skb.head[skb.data_off:skb.data_off + head_room] = bytes(head_room)
    skb.mac_header = skb.data_off
    return _done(skb, 0)


# ---------------------------------------------------------------- adjust_room

def _net_base_len(skb) -> int:
    return {ETH_P_IP: IPV4_HDR_LEN, ETH_P_IPV6: IPV6_HDR_LEN}.get(skb.protocol, 0xFFFFFFFF)


def _net_grow(env, skb, off: int, n: int, flags: int) -> int:
    inner_mac_len = (flags >> _ADJ_ROOM_L2_SHIFT) & _ADJ_ROOM_L2_MASK
    encap = bool(flags & _ENCAP_L3)
    if skb_is_gso(skb):
        return -Errno.ENOTSUPP                      # gso_type is never SKB_GSO_TCP* / UDP_L4 here
    skb_cow(env, skb, n)
    mac_len = 0
    if encap:
        if flags & AdjRoomFlags.ENCAP_L3_IPV4 and flags & AdjRoomFlags.ENCAP_L3_IPV6:
            return -Errno.EINVAL
        if flags & AdjRoomFlags.ENCAP_L4_GRE and flags & AdjRoomFlags.ENCAP_L4_UDP:
            return -Errno.EINVAL
        if flags & AdjRoomFlags.ENCAP_L2_ETH and inner_mac_len < ETH_HLEN:
            return -Errno.EINVAL
        if skb.encapsulation:
            return -Errno.EALREADY
        mac_len = skb.network_header - skb.mac_header
        if inner_mac_len > n:
            return -Errno.EINVAL
    _net_hdr_push(skb, off, n)
    if encap:
        skb.encapsulation = True
        skb.network_header = skb.data_off + mac_len
        if flags & (AdjRoomFlags.ENCAP_L4_GRE | AdjRoomFlags.ENCAP_L4_UDP):
            nh_len = IPV6_HDR_LEN if flags & AdjRoomFlags.ENCAP_L3_IPV6 else IPV4_HDR_LEN
            skb.transport_header = skb.data_off + mac_len + nh_len
        if skb.protocol == ETH_P_IP and flags & AdjRoomFlags.ENCAP_L3_IPV6:
            skb.protocol = ETH_P_IPV6
        elif skb.protocol == ETH_P_IPV6 and flags & AdjRoomFlags.ENCAP_L3_IPV4:
            skb.protocol = ETH_P_IP
    return 0


def _net_shrink(skb, off: int, n: int, flags: int) -> int:
    if flags & ~int(AdjRoomFlags.FIXED_GSO | _DECAP_L3 | AdjRoomFlags.NO_CSUM_RESET):
        return -Errno.EINVAL
    if skb_is_gso(skb):
        return -Errno.ENOTSUPP
    ret = _net_hdr_pop(skb, off, n)
    if ret:
        return ret
    if skb.protocol == ETH_P_IP and flags & AdjRoomFlags.DECAP_L3_IPV6:
        skb.protocol = ETH_P_IPV6
    elif skb.protocol == ETH_P_IPV6 and flags & AdjRoomFlags.DECAP_L3_IPV4:
        skb.protocol = ETH_P_IP
    return 0


def bpf_skb_adjust_room(env, r1, r2, r3, r4, r5) -> int:
    skb, len_diff, mode, flags = env.ctx, s32(r2), u32(r3), r4
    n = abs(len_diff)
    shrink = len_diff < 0
    len_min = _net_base_len(skb)
    if flags & ~(_ADJ_ROOM_MASK | int(AdjRoomFlags.NO_CSUM_RESET)):
        return neg_errno(Errno.EINVAL)
    if n > 0xFFF:
        return neg_errno(Errno.EFAULT)
    if skb.protocol not in (ETH_P_IP, ETH_P_IPV6):
        return neg_errno(Errno.ENOTSUPP)
    off = skb_mac_header_len(skb)
    if mode == BPF_ADJ_ROOM_NET:
        off += _net_base_len(skb)
    elif mode != BPF_ADJ_ROOM_MAC:
        return neg_errno(Errno.ENOTSUPP)
    if flags & _DECAP_L3:
        if not shrink:
            return neg_errno(Errno.EINVAL)
        decap = flags & _DECAP_L3
        if decap == AdjRoomFlags.DECAP_L3_IPV4:
            len_min = IPV4_HDR_LEN
        elif decap == AdjRoomFlags.DECAP_L3_IPV6:
            len_min = IPV6_HDR_LEN
        else:
            return neg_errno(Errno.EINVAL)
    len_cur = skb.len - skb_network_offset(skb)
    if (shrink and (n >= len_cur or len_cur - n < len_min)) or \
            (not shrink and skb.len + n > BPF_SKB_MAX_LEN and not skb_is_gso(skb)):
        return neg_errno(Errno.ENOTSUPP)
    ret = _net_shrink(skb, off, n, flags) if shrink else _net_grow(env, skb, off, n, flags)
    if not ret and not flags & AdjRoomFlags.NO_CSUM_RESET:
        from fakekernel.helpers.net_skb_meta import skb_reset_checksum_unnecessary
        skb_reset_checksum_unnecessary(skb)
    return _done(skb, ret)


# ---------------------------------------------------------------- VLAN

def _vlan_tag_present(skb) -> bool:
    return bool(skb.vlan_proto or skb.vlan_tci)


def _vlan_put_tag(skb, proto: int, tci: int) -> None:
    skb.vlan_proto, skb.vlan_tci, skb.vlan_present = proto, tci, 1


def _vlan_clear_tag(skb) -> None:
    skb.vlan_proto = skb.vlan_tci = skb.vlan_present = 0


def _eth_type_vlan(proto: int) -> bool:
    return proto in (ETH_P_8021Q, ETH_P_8021AD)


def skb_vlan_push(env, skb, proto: int, tci: int) -> int:
    if _vlan_tag_present(skb):
        if skb.data_off != skb.mac_header:
            return -Errno.EINVAL
        if skb.len < ETH_HLEN:                      # pskb_may_pull(skb, mac_len)
            return -Errno.EINVAL
        # __vlan_insert_tag(): the MAC addresses move up, the tag goes in before the type
        skb_cow(env, skb, VLAN_HLEN)
        skb.push(VLAN_HLEN)
        d = skb.data_off
        skb.head[d:d + 2 * ETH_ALEN] = skb.head[d + VLAN_HLEN:d + VLAN_HLEN + 2 * ETH_ALEN]
        skb.mac_header -= VLAN_HLEN
        skb.head[d + 2 * ETH_ALEN:d + ETH_HLEN] = skb.vlan_proto.to_bytes(2, "big")
        skb.head[d + ETH_HLEN:d + ETH_HLEN + 2] = skb.vlan_tci.to_bytes(2, "big")
        skb.protocol = skb.vlan_proto
        skb.network_header -= VLAN_HLEN             # measured: the tag joins the network part
        _postpush_rcsum(skb, d + 2 * ETH_ALEN, VLAN_HLEN)
    _vlan_put_tag(skb, proto, tci)
    return 0


def _skb_vlan_pop_payload(skb) -> tuple[int, int]:
    """__skb_vlan_pop(): (0, tci) after taking the tag out of the packet, or (-errno, 0)."""
    if skb.data_off != skb.mac_header:
        return -Errno.EINVAL, 0
    if skb.len < VLAN_ETH_HLEN:                     # skb_ensure_writable()
        return -Errno.ENOMEM, 0
    d = skb.data_off
    _postpull_rcsum(skb, d + 2 * ETH_ALEN, VLAN_HLEN)
    tci = int.from_bytes(skb.head[d + ETH_HLEN:d + ETH_HLEN + 2], "big")
    encap = int.from_bytes(skb.head[d + ETH_HLEN + 2:d + VLAN_ETH_HLEN], "big")
    skb.head[d + VLAN_HLEN:d + VLAN_HLEN + 2 * ETH_ALEN] = skb.head[d:d + 2 * ETH_ALEN]
    if encap >= ETH_P_802_3_MIN:                    # vlan_set_encap_proto()
        skb.protocol = encap
    elif skb.head[d:d + 2] == b"\xff\xff":
        skb.protocol = ETH_P_802_3
    else:
        skb.protocol = ETH_P_802_2
    skb.pull(VLAN_HLEN)
    skb.mac_header += VLAN_HLEN
    if skb_network_offset(skb) < ETH_HLEN:
        skb.network_header = skb.data_off + ETH_HLEN
    return 0, tci


def skb_vlan_pop(skb) -> int:
    if _vlan_tag_present(skb):
        _vlan_clear_tag(skb)
    else:
        if not _eth_type_vlan(skb.protocol):
            return 0
        err, _ = _skb_vlan_pop_payload(skb)
        if err:
            return err
    if not _eth_type_vlan(skb.protocol):
        return 0
    proto = skb.protocol
    err, tci = _skb_vlan_pop_payload(skb)
    if err:
        return err
    _vlan_put_tag(skb, proto, tci)
    return 0


def bpf_skb_vlan_push(env, r1, r2, r3, r4, r5) -> int:
    skb, proto, tci = env.ctx, _swab16(r2), r3 & _U16
    if proto not in (ETH_P_8021Q, ETH_P_8021AD):
        proto = ETH_P_8021Q
    return _done(skb, skb_vlan_push(env, skb, proto, tci))


def bpf_skb_vlan_pop(env, r1, r2, r3, r4, r5) -> int:
    skb = env.ctx
    return _done(skb, skb_vlan_pop(skb))


NET_SKB_RUNTIME: dict = {
    FuncId.skb_change_proto: bpf_skb_change_proto,
    FuncId.skb_change_type: bpf_skb_change_type,
    FuncId.skb_change_tail: bpf_skb_change_tail,
    FuncId.skb_change_head: bpf_skb_change_head,
    FuncId.skb_adjust_room: bpf_skb_adjust_room,
    FuncId.skb_vlan_push: bpf_skb_vlan_push,
    FuncId.skb_vlan_pop: bpf_skb_vlan_pop,
}
