"""tc filters over rtnetlink — net/sched/cls_api.c (tc_new_tfilter, tc_del_tfilter,
tc_get_tfilter, tc_dump_tfilter, tcf_fill_node, __tcf_qdisc_find, __tcf_block_find,
tfilter_notify).

Filters hang off a classful qdisc's block (here clsact's ingress/egress blocks, or the
ingress qdisc's one), in chains (TCA_CHAIN), by priority (the major half of tcm_info) and
protocol (its minor half, network byte order); the handle picks one filter of a proto.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.net.sched.cls_api import (TCF_PROTO_OPS, TcfProto, tcf_auto_prio,
                                          tcf_chain_tp_find, tcf_chain_tp_prev)
from fakekernel.net.sched.sch_ingress import dev_sched, qdisc_lookup
from uapi import netlink as nl
from uapi import pkt_sched as ps
from uapi.pkt_sched import NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, TC_H_MAJ, TC_H_MAKE, TC_H_MIN

__all__ = ["tc_new_tfilter", "tc_del_tfilter", "tc_get_tfilter", "tc_dump_tfilter"]

_IFNAMSIZ = 16
_PRIO_ALLOCATE = TC_H_MAKE(0x80000000, 0)
_NOT_FOUND = "Filter with specified priority/protocol not found"


def _u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def tcf_fill_node(req, tp, q, parent: int, fh, flags: int, event: int) -> bytes:
    """tcf_fill_node(): kind and chain of the proto, then the filter's own dump (handle and
    TCA_OPTIONS) — or handle 0 for the proto itself (fh None)."""
    out = nl.nla_put(ps.TCA_KIND, tp.ops.kind.encode() + b"\0")
    out += nl.nla_put(ps.TCA_CHAIN, _u32(tp.chain.index))
    handle = 0
    if fh is not None:
        handle, opts = tp.ops.dump(tp, fh)
        out += opts
    return req.msg(event, flags, {"tcm_ifindex": q.dev.ifindex, "tcm_parent": parent,
                                  "tcm_handle": handle,
                                  "tcm_info": TC_H_MAKE(tp.prio, tp.protocol)}, out)


def _notify(req, tp, q, parent, fh, event) -> list[bytes]:
    """tfilter_notify() (not unicast): to the sender only with NLM_F_ECHO; the message
    carries the request's flags."""
    if not req.flags & NLM_F_ECHO:
        return []
    return [tcf_fill_node(req, tp, q, parent, fh, req.flags, event)]


def _check_kind(req) -> None:
    """tcf_proto_check_kind()."""
    kind = req.tca.get(ps.TCA_KIND)
    if kind is not None and len(kind.split(b"\0", 1)[0]) >= _IFNAMSIZ:
        raise KernelError(Errno.EINVAL, "Specified TC filter name too long")


def _qdisc_find(req, parent: int):
    """__tcf_qdisc_find(): (the classful qdisc, the parent — the root's handle for 0)."""
    dev = req.nlsk.kern.world.net.dev_get_by_index(req.t.tcm_ifindex)
    if dev is None:
        raise KernelError(Errno.ENODEV)
    ds = dev_sched(req.nlsk.kern.world.net, dev)
    if not parent:
        q = ds.root
        parent = q.handle
    else:
        q = qdisc_lookup(ds, TC_H_MAJ(parent))
        if q is None:
            raise KernelError(Errno.EINVAL, "Parent Qdisc doesn't exists")
    if not q.ops.classful:
        raise KernelError(Errno.EINVAL, "Qdisc not classful")
    return q, parent


def _block_find(req, q, parent: int):
    """tcf_proto_check_kind() + __tcf_qdisc_cl_find() + __tcf_block_find()."""
    _check_kind(req)
    cl = 0
    if TC_H_MIN(parent):
        cl = q.ops.find(parent)
        if not cl:
            raise KernelError(Errno.ENOENT, "Specified class doesn't exist")
    block = q.tcf_block(cl)
    if block is None:
        raise KernelError(Errno.EINVAL)
    return block


def _chain_index(req) -> int:
    index = int.from_bytes(req.tca[ps.TCA_CHAIN][:4], "little") if ps.TCA_CHAIN in req.tca else 0
    if index > ps.TC_ACT_EXT_VAL_MASK:
        raise KernelError(Errno.EINVAL, "Specified chain index exceeds upper limit")
    return index


def tc_new_tfilter(req, task) -> list[bytes]:
    """tc_new_tfilter(): RTM_NEWTFILTER."""
    t, flags = req.t, req.flags
    protocol, prio = TC_H_MIN(t.tcm_info), TC_H_MAJ(t.tcm_info)
    prio_allocate = False
    if prio == 0:
        if not flags & NLM_F_CREATE:
            raise KernelError(Errno.ENOENT, "Invalid filter command with priority of zero")
        prio, prio_allocate = _PRIO_ALLOCATE, True
    q, parent = _qdisc_find(req, t.tcm_parent)
    block = _block_find(req, q, parent)
    block.classid = parent
    chain = block.chain_get(_chain_index(req), create=True)
    try:
        return _new_in_chain(req, task, q, parent, chain, protocol, prio, prio_allocate)
    finally:
        block.chain_put_if_empty(chain)


def _new_in_chain(req, task, q, parent, chain, protocol, prio, prio_allocate) -> list[bytes]:
    tp, pos = tcf_chain_tp_find(chain, protocol, prio, prio_allocate)
    if tp is not None:
        return _change(req, task, q, parent, chain, tp, False)
    return _new_proto(req, task, q, parent, chain, pos, protocol, prio, prio_allocate)


def _new_proto(req, task, q, parent, chain, pos, protocol, prio, prio_allocate) -> list[bytes]:
    """No proto at this priority: create one (tcf_proto_create) in its place."""
    flags, tca = req.flags, req.tca
    if ps.TCA_KIND not in tca or not protocol:
        raise KernelError(Errno.EINVAL, "Filter kind and protocol must be specified")
    if not flags & NLM_F_CREATE:
        raise KernelError(Errno.ENOENT, "Need both RTM_NEWTFILTER and NLM_F_CREATE to "
                                        "create a new filter")
    if prio_allocate:
        prio = tcf_auto_prio(tcf_chain_tp_prev(chain, pos))
    ops = TCF_PROTO_OPS.get(tca[ps.TCA_KIND].split(b"\0", 1)[0].decode(errors="replace"))
    if ops is None:
        raise KernelError(Errno.ENOENT, "TC classifier not found")
    tp = TcfProto(ops=ops, prio=prio, protocol=protocol, chain=chain)
    ops.init(tp)
    chain.filter_chain.insert(pos, tp)
    return _change(req, task, q, parent, chain, tp, True)


def _change(req, task, q, parent, chain, tp, created: bool) -> list[bytes]:
    t, flags, tca = req.t, req.flags, req.tca
    try:
        if ps.TCA_KIND in tca and not req.kind_is(tp.ops.kind):
            raise KernelError(Errno.EINVAL, "Specified filter kind does not match existing one")
        fh = tp.ops.get(tp, t.tcm_handle)
        if fh is None:
            if not flags & NLM_F_CREATE:
                raise KernelError(Errno.ENOENT, "Need both RTM_NEWTFILTER and NLM_F_CREATE to "
                                                "create a new filter")
        elif flags & NLM_F_EXCL:
            raise KernelError(Errno.EEXIST, "Filter already exists")
        fh = tp.ops.change(task, tp, t.tcm_handle, tca, fh)
    except KernelError:
        if created:                                           # tcf_chain_tp_delete_empty()
            chain.filter_chain.remove(tp)
        raise
    return _notify(req, tp, q, parent, fh, nl.RTM_NEWTFILTER)


def _lookup_tp(req, chain, protocol, prio):
    tp, _pos = tcf_chain_tp_find(chain, protocol, prio, False)
    if tp is None:
        raise KernelError(Errno.ENOENT, _NOT_FOUND)
    if ps.TCA_KIND in req.tca and not req.kind_is(tp.ops.kind):
        raise KernelError(Errno.EINVAL, "Specified filter kind does not match existing one")
    return tp


def tc_del_tfilter(req, task) -> list[bytes]:
    """tc_del_tfilter(): one filter (handle), a whole proto (handle 0) or, with priority 0,
    the whole chain (flush)."""
    t = req.t
    protocol, prio = TC_H_MIN(t.tcm_info), TC_H_MAJ(t.tcm_info)
    if prio == 0 and (protocol or t.tcm_handle or ps.TCA_KIND in req.tca):
        raise KernelError(Errno.ENOENT, "Cannot flush filters with protocol, handle or kind set")
    q, parent = _qdisc_find(req, t.tcm_parent)
    block = _block_find(req, q, parent)
    chain = block.chain_get(_chain_index(req), create=False)
    if chain is None:
        if prio == 0:
            return []
        raise KernelError(Errno.ENOENT, "Cannot find specified filter chain")
    try:
        if prio == 0:
            out = [m for tp in chain.filter_chain
                   for m in _notify(req, tp, q, parent, None, nl.RTM_DELTFILTER)]
            for tp in list(chain.filter_chain):
                tp.ops.destroy(tp)
            chain.filter_chain.clear()
            return out
        tp = _lookup_tp(req, chain, protocol, prio)
        if t.tcm_handle == 0:
            chain.filter_chain.remove(tp)
            tp.ops.destroy(tp)
            return _notify(req, tp, q, parent, None, nl.RTM_DELTFILTER)
        fh = tp.ops.get(tp, t.tcm_handle)
        if fh is None:
            raise KernelError(Errno.ENOENT, "Specified filter handle not found")
        out = _notify(req, tp, q, parent, fh, nl.RTM_DELTFILTER)
        if tp.ops.delete(tp, fh):
            chain.filter_chain.remove(tp)
        return out
    finally:
        block.chain_put_if_empty(chain)


def tc_get_tfilter(req, task) -> list[bytes]:
    """tc_get_tfilter(): the filter, unicast to the sender (as RTM_NEWTFILTER)."""
    t = req.t
    protocol, prio = TC_H_MIN(t.tcm_info), TC_H_MAJ(t.tcm_info)
    if prio == 0:
        raise KernelError(Errno.ENOENT, "Invalid filter command with priority of zero")
    q, parent = _qdisc_find(req, t.tcm_parent)
    block = _block_find(req, q, parent)
    chain = block.chain_get(_chain_index(req), create=False)
    if chain is None:
        raise KernelError(Errno.EINVAL, "Cannot find specified filter chain")
    tp = _lookup_tp(req, chain, protocol, prio)
    fh = tp.ops.get(tp, t.tcm_handle)
    if fh is None:
        raise KernelError(Errno.ENOENT, "Specified filter handle not found")
    return [tcf_fill_node(req, tp, q, parent, fh, req.flags, nl.RTM_NEWTFILTER)]


def tc_dump_tfilter(req, task) -> list[bytes]:
    """tc_dump_tfilter(): the block's chains (all, or TCA_CHAIN's), each proto matching
    tcm_info's priority/protocol (when set) as a header message and then its filters."""
    t, tca = req.t, req.tca
    net = req.nlsk.kern.world.net
    dev = net.dev_get_by_index(t.tcm_ifindex)
    if dev is None:
        return []
    ds = dev_sched(net, dev)
    q = ds.root if not t.tcm_parent else qdisc_lookup(ds, TC_H_MAJ(t.tcm_parent))
    if q is None or not q.ops.classful:
        return []
    cl = 0
    if TC_H_MIN(t.tcm_parent):
        cl = q.ops.find(t.tcm_parent)
        if not cl:
            return []
    block = q.tcf_block(cl)
    if block is None:
        return []
    parent = block.classid
    want = int.from_bytes(tca[ps.TCA_CHAIN][:4], "little") if ps.TCA_CHAIN in tca else None
    out = []
    for chain in list(block.chains.values()):
        if want is not None and chain.index != want:
            continue
        for tp in chain.filter_chain:
            if TC_H_MAJ(t.tcm_info) and TC_H_MAJ(t.tcm_info) != tp.prio:
                continue
            if TC_H_MIN(t.tcm_info) and TC_H_MIN(t.tcm_info) != tp.protocol:
                continue
            out.append(tcf_fill_node(req, tp, q, parent, None, nl.NLM_F_MULTI,
                                     nl.RTM_NEWTFILTER))
            out.extend(tcf_fill_node(req, tp, q, parent, fh, nl.NLM_F_MULTI, nl.RTM_NEWTFILTER)
                       for fh in tp.ops.walk(tp))
    return out
