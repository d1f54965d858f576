"""FIB lookups and MTU checks for programs — net/core/filter.c (bpf_xdp_fib_lookup,
bpf_skb_fib_lookup, bpf_ipv4_fib_lookup, bpf_ipv6_fib_lookup, bpf_fib_set_fwd_params,
bpf_skb_check_mtu, bpf_xdp_check_mtu) over the namespace's `fakekernel.net.fib.Fib`.

The program's ``struct bpf_fib_lookup`` is read, updated field by field in the kernel's order
(so a failure leaves the fields the kernel had already written, e.g. ifindex and the gateway
on NO_NEIGH) and written back whole.
"""
from __future__ import annotations

import ipaddress

from fakekernel.helpers.base import neg_errno
from fakekernel.net.fib import NUD_VALID, RT_TABLE_MAIN, Rtn
from fakekernel.net.headers import ETH_HLEN
from fakekernel.net.netdev import LOOPBACK_IFINDEX
from fakekernel.net.socket import AF_INET, AF_INET6
from uapi.bpf import (BPF_MTU_CHK_RET_FRAG_NEEDED, BPF_MTU_CHK_RET_SEGS_TOOBIG, BPF_MTU_CHK_RET_SUCCESS,
                      BPF_MTU_CHK_SEGS, FibLookupFlags, FibLookupRet, FuncId)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import s32, u32

__all__ = ["FIB_RUNTIME", "bpf_fib_lookup", "bpf_check_mtu"]

_PARAMS = "struct bpf_fib_lookup"
_PARAMS_SIZE = ffi.sizeof(_PARAMS)
_U32 = ffi.sizeof("__u32")
_FIB_LOOKUP_MASK = int(FibLookupFlags.DIRECT | FibLookupFlags.OUTPUT | FibLookupFlags.SKIP_NEIGH
                       | FibLookupFlags.TBID | FibLookupFlags.SRC | FibLookupFlags.MARK)
_U64_MASK = (1 << 64) - 1
VLAN_HLEN = 4
_HARD_HEADER_LEN = ETH_HLEN            # lo, veth and dummy all use ether_setup's header length


def _ctx_dev(env):
    """skb->dev, or the XDP rx queue's device (and whether the ctx is XDP)."""
    from fakekernel.net.xdp import XdpBuff
    net = env.kernel.world.net
    ctx = env.ctx
    if isinstance(ctx, XdpBuff):
        return net.dev_get_by_index(ctx.ingress_ifindex or LOOPBACK_IFINDEX), True
    return net.dev_get_by_index(ctx.dev.ifindex) or ctx.dev, False


def _ip6(words) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(bytes(ffi.buffer(words, 16)))


def _set_ip6(words, addr) -> None:
    ffi.memmove(words, addr.packed, 16)


def _ipv4_fib_lookup(fib, p, flags: int, check_mtu: bool):
    """bpf_ipv4_fib_lookup(): (rc, mtu); rc < 0 is -errno."""
    if fib.net.dev_get_by_index(p.ifindex) is None:
        return -Errno.ENODEV, 0
    if not fib.forwarding(AF_INET, p.ifindex):
        return FibLookupRet.FWD_DISABLED, 0
    oif, iif = (p.ifindex, LOOPBACK_IFINDEX) if flags & FibLookupFlags.OUTPUT else (0, p.ifindex)
    daddr = ipaddress.IPv4Address(p.ipv4_dst.to_bytes(_U32, "little"))
    if flags & FibLookupFlags.DIRECT:
        tbid = RT_TABLE_MAIN
        if flags & FibLookupFlags.TBID:
            tbid, p.tbid = p.tbid, 0
        if not fib.table_exists(AF_INET, tbid):
            return FibLookupRet.NOT_FWDED, 0
        err, rt = fib.fib4_table_lookup(tbid, daddr, oif)
    else:
        mark = p.mark if flags & FibLookupFlags.MARK else 0
        err, rt = fib.fib4_lookup(daddr, oif, iif=iif, mark=mark,
                                  saddr=ipaddress.IPv4Address(p.ipv4_src.to_bytes(_U32, "little")))
    if err:
        return {-Errno.EINVAL: FibLookupRet.BLACKHOLE, -Errno.EHOSTUNREACH: FibLookupRet.UNREACHABLE,
                -Errno.EACCES: FibLookupRet.PROHIBIT}.get(err, FibLookupRet.NOT_FWDED), 0
    if rt.type != Rtn.UNICAST:
        return FibLookupRet.NOT_FWDED, 0
    mtu = 0
    if check_mtu:
        mtu = fib.mtu(rt)
        if p.tot_len > mtu:
            p.mtu_result = mtu
            return FibLookupRet.FRAG_NEEDED, 0
    p.rt_metric = rt.metric
    p.ifindex = rt.oif
    if flags & FibLookupFlags.SRC:
        src = fib.fib_result_prefsrc(rt)
        p.ipv4_src = int.from_bytes(src.packed if src is not None else bytes(_U32), "little")
    if rt.gateway is not None:
        if rt.gateway.version == 4:
            p.ipv4_dst = int.from_bytes(rt.gateway.packed, "little")
        else:
            p.family = AF_INET6
            _set_ip6(p.ipv6_dst, rt.gateway)
    if flags & FibLookupFlags.SKIP_NEIGH:
        return FibLookupRet.SUCCESS, mtu
    nexthop = rt.gateway if rt.gateway is not None else daddr
    return _fill_neigh(fib, p, rt.oif, nexthop), mtu


def _fill_neigh(fib, p, ifindex: int, nexthop) -> int:
    neigh = fib.neigh_lookup(ifindex, nexthop)
    if neigh is None or not neigh.state & NUD_VALID:
        return FibLookupRet.NO_NEIGH
    ffi.memmove(p.dmac, neigh.lladdr, len(neigh.lladdr))
    dev_addr = fib.net.dev_get_by_index(ifindex).dev_addr
    ffi.memmove(p.smac, dev_addr, len(dev_addr))
    return FibLookupRet.SUCCESS


def _rt6_need_strict(addr) -> bool:
    """rt6_need_strict(): multicast, link-local and loopback addresses are never forwarded."""
    return addr.is_multicast or addr.is_link_local or addr.is_loopback


def _ipv6_fib_lookup(fib, p, flags: int, check_mtu: bool):
    """bpf_ipv6_fib_lookup(): (rc, mtu)."""
    dst, src = _ip6(p.ipv6_dst), _ip6(p.ipv6_src)
    if _rt6_need_strict(dst) or _rt6_need_strict(src):
        return FibLookupRet.NOT_FWDED, 0
    if fib.net.dev_get_by_index(p.ifindex) is None:
        return -Errno.ENODEV, 0
    if not fib.forwarding(AF_INET6, p.ifindex):
        return FibLookupRet.FWD_DISABLED, 0
    if flags & FibLookupFlags.DIRECT:
        tbid = RT_TABLE_MAIN
        if flags & FibLookupFlags.TBID:
            tbid, p.tbid = p.tbid, 0
        if not fib.table_exists(AF_INET6, tbid):
            return FibLookupRet.NOT_FWDED, 0
        rt = fib.fib6_table_lookup(tbid, dst)
    else:
        oif, iif = (p.ifindex, LOOPBACK_IFINDEX) if flags & FibLookupFlags.OUTPUT else (0, p.ifindex)
        rt = fib.fib6_lookup(dst, iif=iif, oif=oif, mark=p.mark if flags & FibLookupFlags.MARK else 0, saddr=src)
    if rt is None:
        return FibLookupRet.NOT_FWDED, 0
    rejects = {Rtn.BLACKHOLE: FibLookupRet.BLACKHOLE, Rtn.UNREACHABLE: FibLookupRet.UNREACHABLE,
               Rtn.PROHIBIT: FibLookupRet.PROHIBIT}
    if rt.type != Rtn.UNICAST:
        return rejects.get(rt.type, FibLookupRet.NOT_FWDED), 0
    mtu = 0
    if check_mtu:
        mtu = fib.mtu(rt)
        if p.tot_len > mtu:
            p.mtu_result = mtu
            return FibLookupRet.FRAG_NEEDED, 0
    if rt.gateway is not None:
        dst = rt.gateway
        _set_ip6(p.ipv6_dst, dst)
    p.rt_metric = rt.metric
    p.ifindex = rt.oif
    if flags & FibLookupFlags.SRC:
        saddr = rt.prefsrc if rt.prefsrc is not None else fib.ipv6_dev_get_saddr(rt.oif, dst)
        if saddr is None:
            return FibLookupRet.NO_SRC_ADDR, 0
        _set_ip6(p.ipv6_src, saddr)
    if flags & FibLookupFlags.SKIP_NEIGH:
        return FibLookupRet.SUCCESS, mtu
    return _fill_neigh(fib, p, rt.oif, dst), mtu


def bpf_fib_lookup(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_fib_lookup() / bpf_xdp_fib_lookup(ctx, params, plen, flags)."""
    dev, is_xdp = _ctx_dev(env)
    if s32(r3) & _U64_MASK < _PARAMS_SIZE:
        return neg_errno(Errno.EINVAL)
    flags = u32(r4)
    if flags & ~_FIB_LOOKUP_MASK:
        return neg_errno(Errno.EINVAL)
    fib = env.kernel.world.net.fib
    p = ffi.new(_PARAMS + " *")
    ffi.memmove(p, env.mem.read(r2, _PARAMS_SIZE), _PARAMS_SIZE)
    check_mtu = is_xdp or bool(p.tot_len)
    lookup = {AF_INET: _ipv4_fib_lookup, AF_INET6: _ipv6_fib_lookup}.get(p.family)
    rc, mtu = lookup(fib, p, flags, check_mtu) if lookup is not None else (-Errno.EAFNOSUPPORT, 0)
    if rc == FibLookupRet.SUCCESS:                 # bpf_fib_set_fwd_params()
        p.h_vlan_TCI = p.h_vlan_proto = 0
        if mtu:
            p.mtu_result = mtu
        if not is_xdp and not check_mtu:
            out = fib.net.dev_get_by_index(p.ifindex)
            if not _is_skb_forwardable(fib, out, env.ctx):
                rc = FibLookupRet.FRAG_NEEDED
            p.mtu_result = out.mtu
    env.mem.write(r2, bytes(ffi.buffer(p)))
    return neg_errno(-rc) if rc < 0 else int(rc)


def _is_skb_forwardable(fib, dev, skb) -> bool:
    """is_skb_forwardable(): the device is up and the frame fits (or is GSO)."""
    if dev.ifindex not in fib.up:
        return False
    return skb.len <= dev.mtu + _HARD_HEADER_LEN + VLAN_HLEN or bool(skb.gso_size)


def bpf_check_mtu(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_check_mtu() / bpf_xdp_check_mtu(ctx, ifindex, *mtu_len, len_diff, flags)."""
    dev, is_xdp = _ctx_dev(env)
    ctx = env.ctx
    flags, len_diff = r5, s32(r4)
    mtu_len = int.from_bytes(env.mem.read(r3, _U32), "little")
    if is_xdp:
        if flags:
            return neg_errno(Errno.EINVAL)
    else:
        if flags & ~BPF_MTU_CHK_SEGS:
            return neg_errno(Errno.EINVAL)
        if flags & BPF_MTU_CHK_SEGS and (len_diff or mtu_len):
            return neg_errno(Errno.EINVAL)
    if u32(r2):
        dev = env.kernel.world.net.dev_get_by_index(u32(r2))
        if dev is None:
            return neg_errno(Errno.ENODEV)
    mtu = dev.mtu
    dev_len = mtu + _HARD_HEADER_LEN
    length = mtu_len + _HARD_HEADER_LEN if mtu_len else (ctx.data_end - ctx.data if is_xdp else ctx.len)
    length = s32(length + len_diff)
    ret = BPF_MTU_CHK_RET_SUCCESS if length <= dev_len else BPF_MTU_CHK_RET_FRAG_NEEDED
    if not is_xdp and ret != BPF_MTU_CHK_RET_SUCCESS and ctx.gso_size:
        ret = BPF_MTU_CHK_RET_SUCCESS
        if flags & BPF_MTU_CHK_SEGS:
            if ctx.transport_header < 0:
                return neg_errno(Errno.EINVAL)
            if ctx.gso_size > mtu:
                ret = BPF_MTU_CHK_RET_SEGS_TOOBIG
    env.mem.write(r3, mtu.to_bytes(_U32, "little"))
    return int(ret)


FIB_RUNTIME = {FuncId.fib_lookup: bpf_fib_lookup, FuncId.check_mtu: bpf_check_mtu}
