"""tcx: BPF programs on a device's ingress/egress without a qdisc — kernel/bpf/tcx.c
(tcx_prog_attach, tcx_prog_detach, tcx_prog_query, tcx_link_attach and the tcx link ops) and
include/net/tcx.h / net/core/dev.c (tcx_run, sch_handle_ingress/egress: the verdicts).

Each device has at most one mprog entry per direction (``net.tcx[ifindex][attach_type]``);
it exists while programs are attached (there is no clsact qdisc here to keep it alive), so
its revision starts again at 1 once the last program leaves.  Programs run in entry order:
TCX_NEXT goes on to the next program, any other verdict ends the run; the device's result
is that verdict (TCX_NEXT after the last program = TCX_PASS).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.bpf.mprog import MprogEntry, bpf_mprog_attach, bpf_mprog_detach, bpf_mprog_query
from fakekernel.errors import Errno, KernelError
from fakekernel.net.headers import ETH_ALEN, ETH_HLEN as _ETH_HLEN
from uapi.bpf import TCX_DROP, TCX_NEXT, TCX_PASS, TCX_REDIRECT, AttachFlags, AttachType, LinkType
from uapi.pkt_sched import TC_H_MIN_EGRESS, TC_H_MIN_INGRESS, TcAct

__all__ = ["TcxLink", "tcx_prog_attach", "tcx_prog_detach", "tcx_prog_query", "tcx_link_attach",
           "tcx_uninstall", "tcx_run", "TCX_NEXT", "TCX_PASS", "TCX_DROP", "TCX_REDIRECT",
           "TCX_ATTACH_TYPES", "tcx_attached_objects", "sch_handle_ingress", "sch_handle_egress",
           "ingress_hooked", "INGRESS_CONSUMED"]

TCX_ATTACH_TYPES = (AttachType.TCX_INGRESS, AttachType.TCX_EGRESS)
_DIRECTION = {AttachType.TCX_INGRESS: TC_H_MIN_INGRESS, AttachType.TCX_EGRESS: TC_H_MIN_EGRESS}
# sch_handle_ingress() verdicts after which the packet does not go up the stack
INGRESS_CONSUMED = (TcAct.SHOT, TcAct.REDIRECT, TcAct.STOLEN, TcAct.QUEUED, TcAct.TRAP)
_ETH_PROTO_OFF = 2 * ETH_ALEN


def _entries(net) -> dict:
    """ifindex -> {attach type: MprogEntry} (devices' dev->tcx_ingress / tcx_egress)."""
    return net.tcx


def tcx_entry_fetch(net, dev, attach_type: int) -> MprogEntry | None:
    return _entries(net).get(dev.ifindex, {}).get(attach_type)


def _entry_fetch_or_create(net, dev, attach_type: int) -> tuple[MprogEntry, bool]:
    slots = _entries(net).setdefault(dev.ifindex, {})
    entry = slots.get(attach_type)
    if entry is not None:
        return entry, False
    entry = slots[attach_type] = MprogEntry()
    return entry, True


def _entry_free(net, dev, attach_type: int) -> None:
    slots = _entries(net).get(dev.ifindex, {})
    slots.pop(attach_type, None)


def _dev(net, ifindex: int):
    dev = net.dev_get_by_index(ifindex)
    if dev is None:
        raise KernelError(Errno.ENODEV, f"no device with ifindex {ifindex}")
    return dev


def _attach(kern, task, net, dev, attach_type, prog, link, replace_prog, flags, id_or_fd,
            revision) -> None:
    entry, created = _entry_fetch_or_create(net, dev, attach_type)
    try:
        bpf_mprog_attach(kern, task, entry, prog, link, replace_prog, flags, id_or_fd, revision)
    except KernelError:
        if created:
            _entry_free(net, dev, attach_type)
        raise
    entry.commit()


def _detach(kern, task, net, dev, attach_type, prog, link, flags, id_or_fd, revision):
    entry = tcx_entry_fetch(net, dev, attach_type)
    if entry is None:
        raise KernelError(Errno.ENOENT, "nothing attached")
    removed = bpf_mprog_detach(kern, task, entry, prog, link, flags, id_or_fd, revision)
    entry.commit()
    if not entry.total and not _miniq_active(net, dev, attach_type):
        _entry_free(net, dev, attach_type)
    return removed


def _miniq_active(net, dev, attach_type: int) -> bool:
    """tcx_entry_is_active()'s miniq half: a clsact/ingress qdisc holds the entry too."""
    from fakekernel.net.sched.sch_ingress import miniq_active
    return miniq_active(net, dev, _DIRECTION[attach_type])


def tcx_miniq_inc(net, dev, attach_type: int) -> None:
    """ingress_init()/clsact_init(): the qdisc shares (or creates) the device's entry, so
    the revision goes on across programs coming and going while the qdisc exists."""
    _entry_fetch_or_create(net, dev, attach_type)


def tcx_miniq_dec(net, dev, attach_type: int) -> None:
    """ingress_destroy()/clsact_destroy(): an entry without programs goes with the qdisc."""
    entry = tcx_entry_fetch(net, dev, attach_type)
    if entry is not None and not entry.total:
        _entry_free(net, dev, attach_type)


def tcx_prog_attach(kern, task, attr, prog) -> int:
    """tcx_prog_attach() (BPF_PROG_ATTACH): the entry takes the caller's prog reference."""
    from fakekernel.syscall.attach_cmds import bpf_prog_get_type
    net = kern.world.net
    dev = _dev(net, attr.target_ifindex)
    replace_prog = None
    if attr.attach_flags & AttachFlags.REPLACE:
        replace_prog = bpf_prog_get_type(task, attr.replace_bpf_fd, prog.type)
    old = tcx_entry_fetch(net, dev, attr.attach_type)
    old_items = list(old.items) if old is not None else []
    prog.get()
    try:
        _attach(kern, task, net, dev, attr.attach_type, prog, None, replace_prog,
                attr.attach_flags, attr.relative_fd, attr.expected_revision)
    except KernelError:
        prog.put()
        raise
    if replace_prog is not None and any(p is replace_prog and l is None for p, l in old_items):
        replace_prog.put()                        # bpf_mprog_replace(): the old prog goes
    return 0


def tcx_prog_detach(kern, task, attr, prog) -> int:
    """tcx_prog_detach() (BPF_PROG_DETACH): drops the entry's prog reference."""
    net = kern.world.net
    dev = _dev(net, attr.target_ifindex)
    p, _l = _detach(kern, task, net, dev, attr.attach_type, prog, None, attr.attach_flags,
                    attr.relative_fd, attr.expected_revision)
    p.put()
    return 0


def tcx_prog_query(kern, task, attr, ctx) -> int:
    """tcx_prog_query()."""
    net = kern.world.net
    dev = _dev(net, attr.query.target_ifindex)
    return bpf_mprog_query(attr, ctx, tcx_entry_fetch(net, dev, attr.query.attach_type))


@attrs.define(eq=False)
class TcxLink(BpfLink):
    """struct tcx_link: the device (None once detached or the device is gone), the direction."""

    dev: object = None

    def release(self) -> None:
        """tcx_link_release()."""
        if self.dev is None:
            return
        net = self.kern.world.net
        _detach(self.kern, None, net, self.dev, self.attach_type, self.prog, self, 0, 0, 0)
        self.dev = None

    def detach(self) -> None:
        self.release()

    def update_prog(self, new_prog, old_prog) -> None:
        """tcx_link_update(): replace in place (EPERM: old prog differs; ENOLINK: detached)."""
        if self.dev is None:
            raise KernelError(Errno.ENOLINK, "link is detached")
        if old_prog is not None and self.prog is not old_prog:
            raise KernelError(Errno.EPERM, "old_prog does not match")
        if new_prog is self.prog:
            return
        net = self.kern.world.net
        entry = tcx_entry_fetch(net, self.dev, self.attach_type)
        if entry is None:
            raise KernelError(Errno.ENOENT, "nothing attached")
        bpf_mprog_attach(self.kern, None, entry, new_prog, self, self.prog,
                         AttachFlags.REPLACE | AttachFlags.ID, self.prog.aux.id, 0)
        old, self.prog = self.prog, new_prog.get()
        old.put()
        entry.commit()

    def fill_link_info(self, info, task) -> None:
        info.tcx.ifindex = self.dev.ifindex if self.dev is not None else 0
        info.tcx.attach_type = self.attach_type


def tcx_link_attach(kern, task, attr, prog) -> int:
    """tcx_link_attach() (BPF_LINK_CREATE): ENODEV for a missing device; the link fd."""
    lc = attr.link_create
    net = kern.world.net
    dev = _dev(net, lc.target_ifindex)
    link = TcxLink(kern=kern, type=LinkType.TCX, attach_type=lc.attach_type, prog=prog, dev=dev)
    primer = bpf_link_prime(link)
    try:
        _attach(kern, task, net, dev, lc.attach_type, prog, link, None, lc.flags,
                lc.tcx.relative_fd, lc.tcx.expected_revision)
    except KernelError:
        link.dev = None
        primer.cleanup()
        raise
    return primer.settle(task)


def tcx_uninstall(net, dev) -> None:
    """tcx_uninstall(): the device goes; links stay but are detached, progs are put."""
    for entry in _entries(net).pop(dev.ifindex, {}).values():
        for p, l in entry.items:
            if l is not None:
                l.dev = None
            else:
                p.put()


def tcx_attached_objects(net) -> set:
    out = set()
    for slots in _entries(net).values():
        for entry in slots.values():
            for p, l in entry.items:
                out.add(p)
                if l is not None:
                    out.add(l)
    return out


def tcx_run(kern, dev, attach_type: int, run_prog) -> int:
    """tcx_run() + tcx_action_code(): the programs in order, ``run_prog(prog) -> int`` runs
    one on the packet; the first verdict other than TCX_NEXT ends the run.  TCX_PASS,
    TCX_DROP and TCX_REDIRECT are returned as they are; anything else (and TCX_NEXT after the
    last program) is TCX_NEXT, which with no qdisc behind it lets the packet pass."""
    entry = tcx_entry_fetch(kern.world.net, dev, attach_type)
    if entry is None:
        return TCX_NEXT
    ret = TCX_NEXT
    for prog in entry.progs():
        ret = run_prog(prog) & 0xFFFFFFFF
        ret = ret - (1 << 32) if ret & 0x80000000 else ret
        if ret != TCX_NEXT:
            break
    return ret if ret in (TCX_PASS, TCX_DROP, TCX_REDIRECT) else TCX_NEXT


def _run_skb_prog(kern, skb):
    """One program on `skb`: bpf_compute_data_pointers() + bpf_prog_run()."""
    from fakekernel.bpf.core import bpf_prog_run
    from fakekernel.net.skbuff import build_skb_ctx, unmap_skb_ctx

    def run(prog) -> int:
        kctx, _ = build_skb_ctx(kern, skb)
        try:
            ret = bpf_prog_run(kern, prog, kctx.base, ctx=skb, skb_data=skb.ld_abs_view())
            skb.sync_back()
        finally:
            unmap_skb_ctx(kern, skb)
        return ret
    return run


def ingress_hooked(net, dev) -> bool:
    """dev->tcx_ingress is set: tcx programs, or clsact/ingress filters (the mini-qdisc)."""
    from fakekernel.net.sched.sch_ingress import has_filters
    return tcx_entry_fetch(net, dev, AttachType.TCX_INGRESS) is not None or \
        has_filters(net, dev, TC_H_MIN_INGRESS)


def sch_handle_ingress(kern, dev, skb) -> int:
    """sch_handle_ingress(): the device's tcx ingress programs, then — when they leave the
    verdict open (TCX_NEXT = TC_ACT_UNSPEC) — the clsact/ingress qdisc's filters (tc_run),
    all run with the MAC header pushed back in front of skb->data (as after
    eth_type_trans).  Returns the verdict (TCX_* / TC_ACT_*)."""
    from fakekernel.net.sched.sch_ingress import tc_run
    mac_len = skb.data_off - skb.mac_header if skb.mac_header >= 0 else 0
    if not ingress_hooked(kern.world.net, dev):
        return TCX_NEXT
    skb.push(mac_len)
    try:
        ret = tcx_run(kern, dev, AttachType.TCX_INGRESS, _run_skb_prog(kern, skb))
        if ret == TCX_NEXT:
            ret = tc_run(kern, dev, TC_H_MIN_INGRESS, skb, _run_skb_prog(kern, skb))
        return ret
    finally:
        skb.pull(mac_len)


def sch_handle_egress(kern, dev, frame: bytes) -> tuple[int, bytes]:
    """sch_handle_egress(): the tcx egress programs on an Ethernet frame leaving `dev`.
    Returns (tcx verdict, the frame as the programs left it)."""
    from fakekernel.net.skbuff import SkBuff
    skb = SkBuff(head=bytearray(frame), data_off=0, len=len(frame), dev=dev)
    skb.mac_header = 0
    if len(frame) >= _ETH_HLEN:
        skb.protocol = int.from_bytes(frame[_ETH_PROTO_OFF:_ETH_HLEN], "big")
        skb.network_header = _ETH_HLEN
    ret = tcx_run(kern, dev, AttachType.TCX_EGRESS, _run_skb_prog(kern, skb))
    if ret == TCX_NEXT:                           # then the clsact egress filters
        from fakekernel.net.sched.sch_ingress import tc_run
        ret = tc_run(kern, dev, TC_H_MIN_EGRESS, skb, _run_skb_prog(kern, skb))
    return ret, bytes(skb.data())
