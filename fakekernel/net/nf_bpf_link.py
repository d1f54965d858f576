"""Netfilter hooks run by BPF programs — net/netfilter/nf_bpf_link.c (bpf_nf_link_attach,
bpf_nf_check_pf_and_hooks, bpf_nf_link_lops, nf_hook_run_bpf) over net/netfilter/core.c
(nf_register_net_hook: entries ordered by priority).

A link registers its program on (pf, hooknum) of the namespace at a priority; `nf_hook_slow`
plays one packet through a hook: the programs run in priority order on a ``struct bpf_nf_ctx``
and the first NF_DROP ends it.  Defragmentation (BPF_F_NETFILTER_IP_DEFRAG) is accepted and
reported, not performed.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from uapi.bpf import BPF_F_NETFILTER_IP_DEFRAG, LinkType
from uapi.netfilter import (NF_IP_PRI_CONNTRACK_DEFRAG, NF_IP_PRI_FIRST, NF_IP_PRI_LAST, NfInetHook, NfProto,
                            NfVerdict)

__all__ = ["BpfNfLink", "bpf_nf_link_attach", "nf_hook_slow", "MAX_HOOK_COUNT"]

MAX_HOOK_COUNT = 1024               # net/netfilter/core.c
_NF_KEY = "netfilter"               # NetNs.bpf slot of the registered links


def _hook_links(net) -> list:
    from fakekernel.net.net_namespace import NetnsBpf
    return net.bpf.setdefault(_NF_KEY, NetnsBpf()).links


@attrs.define(eq=False)
class BpfNfLink(BpfLink):
    """struct bpf_nf_link: the hook ops and whether the link is dead."""

    net: object = None
    pf: int = 0
    hooknum: int = 0
    priority: int = 0
    defrag: bool = False
    dead: bool = False

    def release(self) -> None:
        """bpf_nf_link_release(): unregister once (detach may have done it already)."""
        if self.dead:
            return
        self.dead = True
        links = _hook_links(self.net)
        if self in links:
            links.remove(self)

    def detach(self) -> None:
        self.release()

    def update_prog(self, new_prog, old_prog) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "netfilter links keep their program")

    def fill_link_info(self, info, task) -> None:
        nf = info.netfilter
        nf.pf, nf.hooknum, nf.priority = self.pf, self.hooknum, self.priority
        nf.flags = BPF_F_NETFILTER_IP_DEFRAG if self.defrag else 0


def bpf_nf_check_pf_and_hooks(nf) -> None:
    if nf.pf not in (NfProto.IPV4, NfProto.IPV6):
        raise KernelError(Errno.EAFNOSUPPORT, "pf is neither NFPROTO_IPV4 nor NFPROTO_IPV6")
    if nf.hooknum >= NfInetHook.NUMHOOKS:
        raise KernelError(Errno.EPROTO, "no such inet hook")
    if nf.flags & ~int(BPF_F_NETFILTER_IP_DEFRAG):
        raise KernelError(Errno.EOPNOTSUPP, "unknown netfilter flags")
    prio = nf.priority
    if prio in (NF_IP_PRI_FIRST, NF_IP_PRI_LAST):
        raise KernelError(Errno.ERANGE, "the first and last priorities are reserved")
    if nf.flags & BPF_F_NETFILTER_IP_DEFRAG and prio <= NF_IP_PRI_CONNTRACK_DEFRAG:
        raise KernelError(Errno.ERANGE, "defrag needs a priority after nf_defrag")


def bpf_nf_link_attach(kern, task, attr, prog) -> int:
    """bpf_nf_link_attach(): a link on the caller's namespace.  Returns the link fd."""
    lc = attr.link_create
    if lc.flags:
        raise KernelError(Errno.EINVAL, "link_create.flags must be 0")
    nf = lc.netfilter
    bpf_nf_check_pf_and_hooks(nf)
    net = kern.world.net
    link = BpfNfLink(kern=kern, type=LinkType.NETFILTER, attach_type=lc.attach_type, prog=prog, net=net,
                     pf=nf.pf, hooknum=nf.hooknum, priority=nf.priority,
                     defrag=bool(nf.flags & BPF_F_NETFILTER_IP_DEFRAG))
    primer = bpf_link_prime(link)
    links = _hook_links(net)
    same_hook = [lk for lk in links if (lk.pf, lk.hooknum) == (link.pf, link.hooknum)]
    if len(same_hook) >= MAX_HOOK_COUNT:
        link.dead = True
        primer.cleanup()
        raise KernelError(Errno.E2BIG, "too many hooks")
    links.append(link)
    return primer.settle(task)


def nf_hook_slow(kern, pf: int, hooknum: int, packet: bytes) -> int:
    """One packet through (pf, hooknum): the BPF hooks in priority order (equal priorities in
    registration order) until one drops it.  Returns NF_ACCEPT or NF_DROP."""
    from fakekernel.net.headers import NET_IP_ALIGN, NET_SKB_PAD
    from fakekernel.net.skbuff import SkBuff
    from fakekernel.test_run_net import nf_hook_state, nf_prog_run
    links = [lk for lk in _hook_links(kern.world.net) if (lk.pf, lk.hooknum) == (pf, hooknum)]
    headroom = NET_SKB_PAD + NET_IP_ALIGN
    for lk in sorted(links, key=lambda lk: lk.priority):
        skb = SkBuff(head=bytearray(headroom) + bytearray(packet), data_off=0)
        skb.reserve(headroom)
        skb.put(len(packet))
        skb.network_header = skb.data_off
        retval, _ = nf_prog_run(kern, lk.prog, nf_hook_state(kern, pf, hooknum), skb)
        if retval == NfVerdict.DROP:
            return NfVerdict.DROP
    return NfVerdict.ACCEPT
