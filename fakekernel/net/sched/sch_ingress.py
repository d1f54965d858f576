"""The ingress and clsact qdiscs — net/sched/sch_ingress.c, with the device's qdisc slots
of net/sched/sch_generic.c (the noqueue root, the ingress queue) and the mini-qdisc hook
of net/core/dev.c (tc_run).

Every simulated device has the root qdisc "noqueue" (handle 0, as `ip link add`/`up` give
veth, dummy and lo) and, once an ingress-side qdisc was created, an ingress queue whose
qdisc is clsact, ingress or the builtin noop.  clsact (handle ffff:, parent ffff:fff1)
has two filter blocks, ingress (ffff:fff2) and egress (ffff:fff3); ingress has one.
The state lives in ``kern.world.net.sched[ifindex]``.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.sched.cls_api import TcfBlock, tcf_classify
from fakekernel.net.tcx import tcx_miniq_dec, tcx_miniq_inc
from uapi.bpf import AttachType
from uapi.pkt_sched import (TC_H_CLSACT, TC_H_INGRESS, TC_H_MAJ, TC_H_MAKE, TC_H_MIN,
                            TC_H_MIN_EGRESS, TC_H_MIN_INGRESS, TC_H_ROOT, TcAct)

__all__ = ["Qdisc", "QdiscOps", "DevSched", "QDISC_OPS", "NOQUEUE", "dev_sched",
           "qdisc_lookup", "qdisc_destroy", "qdisc_attach_miniq", "miniq_active", "tc_run",
           "sched_uninstall", "sched_attached_objects"]


@attrs.frozen
class QdiscOps:
    """struct Qdisc_ops (and its class ops where they matter for filters)."""

    id: str
    ingress: bool = False            # TCQ_F_INGRESS
    classful: bool = False           # cl_ops with tcf_block
    parent: int = 0                  # the only parent init() accepts (0: any)
    dump_options: bool = False       # ops->dump puts an empty TCA_OPTIONS nest
    directions: tuple = ()           # class minors that have a filter block

    def find(self, classid: int) -> int:
        """cl_ops->find(): clsact knows its two classes, ingress any class (minor + 1)."""
        if self.id == "ingress":
            return TC_H_MIN(classid) + 1
        return TC_H_MIN(classid) if TC_H_MIN(classid) in self.directions else 0


NOQUEUE = QdiscOps(id="noqueue")
INGRESS = QdiscOps(id="ingress", ingress=True, classful=True, parent=TC_H_INGRESS,
                   dump_options=True, directions=(TC_H_MIN_INGRESS,))
CLSACT = QdiscOps(id="clsact", ingress=True, classful=True, parent=TC_H_CLSACT,
                  dump_options=True, directions=(TC_H_MIN_INGRESS, TC_H_MIN_EGRESS))
QDISC_OPS = {ops.id: ops for ops in (INGRESS, CLSACT)}     # the kinds tc can create here
_TCX_TYPE = {TC_H_MIN_INGRESS: AttachType.TCX_INGRESS, TC_H_MIN_EGRESS: AttachType.TCX_EGRESS}


@attrs.define(eq=False)
class Qdisc:
    """struct Qdisc."""

    ops: QdiscOps
    dev: object
    handle: int
    parent: int
    refcnt: int = 1
    bytes: int = 0                   # bstats
    packets: int = 0
    drops: int = 0                   # qstats
    blocks: dict = attrs.field(factory=dict)     # class minor -> TcfBlock

    def tcf_block(self, cl: int) -> TcfBlock | None:
        """cl_ops->tcf_block(): clsact's block by class, ingress's only block."""
        if self.ops.id == "ingress":
            return self.blocks.get(TC_H_MIN_INGRESS)
        return self.blocks.get(cl)


@attrs.define(eq=False)
class DevSched:
    """A device's qdisc slots: dev->qdisc and dev->ingress_queue->qdisc_sleeping."""

    root: Qdisc
    ingress_queue: bool = False      # dev_ingress_queue(dev) exists (created on first use)
    ingress: Qdisc | None = None     # None: the builtin noop qdisc


def dev_sched(net, dev) -> DevSched:
    table = net.sched
    ds = table.get(dev.ifindex)
    if ds is None:
        ds = table[dev.ifindex] = DevSched(root=Qdisc(NOQUEUE, dev, 0, TC_H_ROOT, refcnt=2))
    return ds


def qdisc_lookup(ds: DevSched, handle: int) -> Qdisc | None:
    """qdisc_lookup(): the root, then the ingress queue's qdisc (noop never matches);
    handle 0 is nothing."""
    if not handle:
        return None
    if ds.root.handle == handle:
        return ds.root
    if ds.ingress is not None and ds.ingress.handle == handle:
        return ds.ingress
    return None


def qdisc_create(dev, ops: QdiscOps, parent: int, handle: int) -> Qdisc:
    """qdisc_create() for an ingress-side kind: ingress_init()/clsact_init() refuse any
    other parent (EOPNOTSUPP), then the filter blocks are set up."""
    if handle == TC_H_INGRESS:
        handle = TC_H_MAKE(TC_H_INGRESS, 0)
    if parent != ops.parent:
        raise KernelError(Errno.EOPNOTSUPP)
    q = Qdisc(ops, dev, handle, parent)
    for minor in ops.directions:
        q.blocks[minor] = TcfBlock(q=q, classid=TC_H_MAKE(TC_H_MAJ(q.handle), minor))
    return q


def qdisc_destroy(q: Qdisc, net=None) -> None:
    """qdisc_destroy(): ingress_destroy()/clsact_destroy() put the blocks (filters go) and
    drop their hold on the device's tcx entries."""
    for block in q.blocks.values():
        block.flush()
    if net is not None:
        for minor in q.ops.directions:
            tcx_miniq_dec(net, q.dev, _TCX_TYPE[minor])


def qdisc_attach_miniq(net, q: Qdisc) -> None:
    """The tail of ingress_init()/clsact_init(): hold the device's tcx entries."""
    for minor in q.ops.directions:
        tcx_miniq_inc(net, q.dev, _TCX_TYPE[minor])


def miniq_active(net, dev, direction: int) -> bool:
    ds = net.sched.get(dev.ifindex)
    q = ds.ingress if ds is not None else None
    return q is not None and direction in q.ops.directions


def tc_run(kern, dev, direction: int, skb, run_prog) -> int:
    """tc_run(): the clsact/ingress filters of chain 0 of the direction's block; no
    filters, no run (TC_ACT_UNSPEC).  Counts the packet in the qdisc's statistics, a
    TC_ACT_SHOT as a drop, and leaves TC_H_MIN(classid) in skb->tc_index for TC_ACT_OK."""
    ds = kern.world.net.sched.get(dev.ifindex)
    q = ds.ingress if ds is not None else None
    block = q.blocks.get(direction) if q is not None else None
    chain = block.chains.get(0) if block is not None else None
    if chain is None or not chain.filter_chain:
        return TcAct.UNSPEC
    q.bytes += skb.len
    q.packets += 1
    res = {"run": run_prog, "classid": 0}
    ret = tcf_classify(skb, chain, res)
    if ret == TcAct.SHOT:
        q.drops += 1
    elif ret in (TcAct.OK, TcAct.RECLASSIFY):
        skb.tc_index = TC_H_MIN(res["classid"])
    return ret


def has_filters(net, dev, direction: int) -> bool:
    ds = net.sched.get(dev.ifindex)
    q = ds.ingress if ds is not None else None
    block = q.blocks.get(direction) if q is not None else None
    chain = block.chains.get(0) if block is not None else None
    return bool(chain is not None and chain.filter_chain)


def sched_uninstall(net, dev) -> None:
    """dev_shutdown(): the device's qdiscs go, with their filters."""
    ds = net.sched.pop(dev.ifindex, None)
    if ds is not None and ds.ingress is not None:
        qdisc_destroy(ds.ingress)            # tcx_uninstall() already took the entries


def sched_attached_objects(net) -> set:
    out = set()
    for ds in net.sched.values():
        if ds.ingress is None:
            continue
        for block in ds.ingress.blocks.values():
            for tp in block.protos():
                out.update(tp.ops.progs(tp))
    return out
