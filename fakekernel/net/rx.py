"""The receive path the hooks sit on — net/core/dev.c (do_xdp_generic, bpf_prog_run_generic_xdp,
netif_receive_skb), net/ipv4 + net/ipv6 local delivery reduced to a socket lookup, and
kernel/bpf/cgroup.c: __cgroup_bpf_run_filter_skb() (BPF_CGROUP_RUN_PROG_INET_INGRESS/EGRESS).

`netif_receive(kern, ifindex, frame)` runs the device's XDP program on an Ethernet frame,
acts on the verdict as the kernel does (an unknown action is warned about and dropped like
XDP_ABORTED), and for XDP_PASS hands the packet up: if a bound socket matches its IP
protocol and destination port, the socket's cgroup ingress programs decide whether it is
delivered.  `cgroup_run_filter_skb` runs a cgroup's effective skb programs on an IP packet.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.maps.cgroup_storage import bpf_cgroup_run_ctx
from fakekernel.errors import Errno, KernelError
from fakekernel.net import tcx
from fakekernel.net.dev_xdp import XdpMode, dev_xdp_prog
from fakekernel.net.headers import (AF_INET, AF_INET6, ETH_HLEN, ETH_P_IP, ETH_P_IPV6,
                                    IPV4_HDR_LEN, IPV6_HDR_LEN)
from fakekernel.net.skbuff import (SkBuff, Sock, build_skb_ctx, eth_type_trans, unmap_skb_ctx)
from fakekernel.net.xdp import XdpBuff, build_xdp_ctx, unmap_xdp_ctx
from uapi.bpf import AttachType, XdpAction

__all__ = ["Socket", "RxResult", "netif_receive", "netif_receive_skb", "bpf_prog_run_xdp",
           "bpf_warn_invalid_xdp_action", "cgroup_run_filter_skb",
           "IPPROTO_TCP", "IPPROTO_UDP", "NET_XMIT_SUCCESS", "NET_XMIT_DROP", "NET_XMIT_CN"]

IPPROTO_TCP = 6                 # include/uapi/linux/in.h
IPPROTO_UDP = 17
NET_XMIT_SUCCESS = 0            # include/linux/netdevice.h
NET_XMIT_DROP = 1
NET_XMIT_CN = 2
BPF_RET_SET_CN = 1              # include/linux/bpf.h: (1 << 0), after the >> 1 of the verdict
_SKB_HEADROOM = 64              # NET_SKB_PAD
_U32_MASK = 0xFFFFFFFF
_PORTS_LEN = 4                  # source and destination port of a TCP/UDP header
_IPV4_PROTO_OFF = 9
_IPV4_SADDR_OFF, _IPV4_DADDR_OFF = 12, 16
_IPV6_NEXTHDR_OFF = 6
_IPV6_SADDR_OFF, _IPV6_DADDR_OFF = 8, 24
_IPV4_ADDR, _IPV6_ADDR = 4, 16
_XDP_ACTIONS = frozenset(int(a) for a in XdpAction)


@attrs.define(eq=False)
class Socket:
    """A bound INET socket: what local delivery looks up, and whose cgroup filters it."""

    family: int
    protocol: int
    port: int
    cgroup: object                  # sk->sk_cgrp_data: the creating task's cgroup
    addr: bytes | None = None       # bound address (None: INADDR_ANY)
    queue: list = attrs.field(factory=list)
    owner: object = None            # the socket(2) socket it stands for (fakekernel.net.socket)

    def sock(self, local_addr: bytes) -> Sock:
        s = Sock(family=self.family, num=self.port)
        if self.family == AF_INET:
            s.rcv_saddr = self.addr or local_addr
        else:
            s.v6_rcv_saddr = self.addr or local_addr
        if self.owner is not None:      # helpers reach the owner's storage and cookie
            self.owner.net.alias(s, self.owner)
        return s


@attrs.frozen
class RxResult:
    """What happened to one received frame."""

    xdp_ret: int | None             # r0 of the XDP program (None: no program)
    action: int | None              # the XdpAction the kernel acted on
    delivered: bool = False         # queued on a local socket
    socket: Socket | None = None
    cgroup_allowed: bool | None = None   # the ingress cgroup verdict (None: not run)
    tcx_verdict: int | None = None       # the tcx ingress verdict (None: no tcx programs)

    @property
    def verdict(self) -> int | None:
        return self.action


def bpf_prog_run_xdp(kern, prog, xdp: XdpBuff, *, cpu: int = 0) -> int:
    """bpf_prog_run_xdp(): run on the frame, leave the moved pointers in `xdp`."""
    kctx, _ = build_xdp_ctx(kern, xdp)
    try:
        ret = bpf_prog_run(kern, prog, kctx.base, ctx=xdp, cpu=cpu)
        xdp.sync_back()
    finally:
        unmap_xdp_ctx(kern, xdp)
    return ret & _U32_MASK


def _parse_ip(packet: bytes):
    """(family, protocol, saddr, daddr, dport) of an IP packet, None if it is not TCP/UDP."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= IPV4_HDR_LEN:
        ihl = (packet[0] & 0xF) * 4
        proto = packet[_IPV4_PROTO_OFF]
        saddr = packet[_IPV4_SADDR_OFF:_IPV4_SADDR_OFF + _IPV4_ADDR]
        daddr = packet[_IPV4_DADDR_OFF:_IPV4_DADDR_OFF + _IPV4_ADDR]
        l4 = ihl
        family = AF_INET
    elif version == 6 and len(packet) >= IPV6_HDR_LEN:
        proto = packet[_IPV6_NEXTHDR_OFF]
        saddr = packet[_IPV6_SADDR_OFF:_IPV6_SADDR_OFF + _IPV6_ADDR]
        daddr = packet[_IPV6_DADDR_OFF:_IPV6_DADDR_OFF + _IPV6_ADDR]
        l4 = IPV6_HDR_LEN
        family = AF_INET6
    else:
        return None
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or len(packet) < l4 + _PORTS_LEN:
        return None
    dport = int.from_bytes(packet[l4 + 2:l4 + 4], "big")
    return family, proto, bytes(saddr), bytes(daddr), dport


def _sk_lookup(net, family: int, proto: int, daddr: bytes, dport: int) -> Socket | None:
    for s in net.sockets:
        if s.family == family and s.protocol == proto and s.port == dport and \
                (s.addr is None or s.addr == daddr):
            return s
    return None


def make_skb(dev, packet: bytes, *, protocol: int) -> SkBuff:
    """An skb whose data starts at the network header of `packet`."""
    head = bytearray(_SKB_HEADROOM) + bytearray(packet)
    skb = SkBuff(head=head, data_off=_SKB_HEADROOM, len=len(packet), dev=dev,
                 protocol=protocol, skb_iif=dev.ifindex)
    skb.network_header = skb.data_off
    skb.pkt_len = len(packet)
    return skb


def cgroup_run_filter_skb(kern, cgrp, atype: int, skb: SkBuff) -> int:
    """__cgroup_bpf_run_filter_skb(): 0 to let the packet through, -EPERM to drop it; for
    egress the NET_XMIT_* code (NET_XMIT_CN / NET_XMIT_DROP when a program asked for
    congestion notification)."""
    entries = cgrp.bpf.effective.get(atype) or []
    egress = atype == AttachType.CGROUP_INET_EGRESS
    retval, cn_flags = 0, 0
    if entries:
        kctx, _ = build_skb_ctx(kern, skb)
        try:
            for pl in entries:
                with bpf_cgroup_run_ctx(kern, pl.storage):
                    func_ret = bpf_prog_run(kern, pl.effective_prog, kctx.base, ctx=skb,
                                            skb_data=skb.ld_abs_view()) & _U32_MASK
                skb.sync_back()
                if egress:
                    cn_flags |= func_ret >> 1
                    func_ret &= 1
                if not func_ret and retval == 0:
                    retval = -Errno.EPERM
        finally:
            unmap_skb_ctx(kern, skb)
    if retval:
        retval = -Errno.EPERM           # a non-error retval cannot come back from skb programs
    if egress:
        cn = bool(cn_flags & BPF_RET_SET_CN)
        if retval == 0:
            return NET_XMIT_CN if cn else NET_XMIT_SUCCESS
        return NET_XMIT_DROP if cn else retval
    return retval


def _deliver(kern, net, dev, packet: bytes, xdp_ret, action) -> RxResult:
    """ip_rcv → tcp/udp rcv → sk_filter (cgroup ingress) → socket queue."""
    parsed = _parse_ip(packet)
    if parsed is None:
        return RxResult(xdp_ret, action)
    family, proto, saddr, daddr, dport = parsed
    sock = _sk_lookup(net, family, proto, daddr, dport)
    if sock is not None and getattr(sock.owner, "reuseport_cb", False):
        from fakekernel.net.sock_reuseport import rx_lookup_reuseport
        sock = rx_lookup_reuseport(kern, sock, packet)      # the SO_REUSEPORT group's pick
    if sock is None:
        return RxResult(xdp_ret, action)
    skb = make_skb(dev, packet, protocol=ETH_P_IP if family == AF_INET else ETH_P_IPV6)
    skb.sk = sock.sock(daddr)
    ret = cgroup_run_filter_skb(kern, sock.cgroup, AttachType.CGROUP_INET_INGRESS, skb)
    if ret:
        return RxResult(xdp_ret, action, socket=sock, cgroup_allowed=False)
    sock.queue.append(packet)
    return RxResult(xdp_ret, action, delivered=True, socket=sock, cgroup_allowed=True)


def bpf_warn_invalid_xdp_action(kern, dev, prog, act: int) -> None:
    """bpf_warn_invalid_xdp_action(): a pr_warn_once() to the kernel log."""
    what = "Illegal" if act > XdpAction.REDIRECT else "Driver unsupported"
    name = prog.aux.name.decode(errors="replace")
    dev_name = dev.name if dev is not None else "N/A"
    kern.world.dmesg_once(f"{what} XDP return value {act} on prog {name} (id {prog.aux.id}) "
                          f"dev {dev_name}, expect packet loss!")


def netif_receive(kern, ifindex: int, frame: bytes, *, rx_queue: int = 0) -> RxResult:
    """A frame arrives on device `ifindex`: XDP (native or generic), then the stack."""
    net = kern.world.net
    dev = net.dev_get_by_index(ifindex)
    if dev is None:
        raise KernelError(Errno.ENODEV, f"no device with ifindex {ifindex}")
    native = dev_xdp_prog(net, dev, XdpMode.DRV)
    prog = native or dev_xdp_prog(net, dev, XdpMode.SKB)
    xdp_ret = action = None
    if prog is not None:
        xdp = XdpBuff.from_frame(frame, ifindex=ifindex, rx_queue=rx_queue)
        xdp_ret = bpf_prog_run_xdp(kern, prog, xdp)
        frame = xdp.frame()
        action = xdp_ret
        if xdp_ret not in _XDP_ACTIONS:
            bpf_warn_invalid_xdp_action(kern, dev, prog, xdp_ret)
            action = XdpAction.ABORTED
        action = XdpAction(action)
        if action == XdpAction.TX:
            net.tx[ifindex].append(frame)
            return RxResult(xdp_ret, action)
        if action == XdpAction.REDIRECT:
            # xdp_do_redirect() / xdp_do_generic_redirect() on the buffer's redirect info;
            # when it fails the frame is dropped
            from fakekernel.helpers.redirect import xdp_do_redirect
            if xdp_do_redirect(kern, dev, xdp, prog, generic=native is None):
                return RxResult(xdp_ret, XdpAction.DROP)
            return RxResult(xdp_ret, action)
        if action != XdpAction.PASS:
            if action == XdpAction.ABORTED:
                kern.world.trace_xdp_exception(dev, prog, xdp_ret)
            return RxResult(xdp_ret, action)
    return netif_receive_skb(kern, dev, frame, xdp_ret=xdp_ret, action=action)


def netif_receive_skb(kern, dev, frame: bytes, *, xdp_ret=None, action=None) -> RxResult:
    """The stack after XDP (also where cpumap kthreads hand their frames): eth_type_trans,
    then local delivery."""
    if len(frame) < ETH_HLEN:
        return RxResult(xdp_ret, action)
    skb = SkBuff(head=bytearray(frame), data_off=0, len=len(frame))
    proto = eth_type_trans(skb, dev)
    skb.protocol = proto
    tcx_ret = None
    if tcx.ingress_hooked(kern.world.net, dev):
        tcx_ret = tcx.sch_handle_ingress(kern, dev, skb)      # __netif_receive_skb_core()
        if tcx_ret in tcx.INGRESS_CONSUMED:
            return RxResult(xdp_ret, action, tcx_verdict=tcx_ret)
    if proto not in (ETH_P_IP, ETH_P_IPV6):
        return RxResult(xdp_ret, action, tcx_verdict=tcx_ret)
    return attrs.evolve(_deliver(kern, kern.world.net, dev, skb.data(), xdp_ret, action),
                        tcx_verdict=tcx_ret)
