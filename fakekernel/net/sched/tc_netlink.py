"""tc over rtnetlink — net/sched/sch_api.c (tc_modify_qdisc, tc_get_qdisc, tc_dump_qdisc,
tc_fill_qdisc, qdisc_graft, qdisc_notify) and net/sched/cls_api.c (tc_new_tfilter,
tc_del_tfilter, tc_get_tfilter, tc_dump_tfilter, tcf_fill_node, __tcf_qdisc_find).

Each handler takes the request (`hdr`, the payload after the nlmsghdr) and returns the
messages the kernel sends back before the ack: notifications echoed to the sender
(NLM_F_ECHO) and the unicast reply of RTM_GETTFILTER.  Failures are
``KernelError(errno, extack message)`` — the message verbatim, or empty where the kernel
sets none.  Checks follow the kernel's order.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.net.sched import cls_bpf
from fakekernel.net.sched.cls_netlink import (tc_del_tfilter, tc_dump_tfilter, tc_get_tfilter,
                                              tc_new_tfilter)
from fakekernel.net.sched.cls_api import TCF_PROTO_OPS
from fakekernel.net.sched.sch_ingress import (QDISC_OPS, Qdisc, dev_sched, qdisc_attach_miniq,
                                              qdisc_create, qdisc_destroy, qdisc_lookup)
from uapi import netlink as nl
from uapi import pkt_sched as ps
from uapi.pkt_sched import (NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, TC_H_INGRESS,
                            TC_H_MAJ, TC_H_MAKE, TC_H_MIN, TC_H_ROOT)

__all__ = ["TC_DOIT", "TC_DUMPIT"]

TCF_PROTO_OPS.setdefault(cls_bpf.KIND, cls_bpf.CLS_BPF_OPS)
_TCMSG = nl.ffi.sizeof("struct tcmsg")
_U32_ATTRS = (ps.TCA_CHAIN, ps.TCA_INGRESS_BLOCK, ps.TCA_EGRESS_BLOCK)


class _Req:
    """One parsed request: its header, tcmsg and attributes (nlmsg_parse_deprecated with
    rtm_tca_policy)."""

    def __init__(self, nlsk, hdr, body: bytes):
        if len(body) < _TCMSG:
            raise KernelError(Errno.EINVAL, "Invalid header length")
        self.nlsk, self.hdr = nlsk, hdr
        self.t = nl.ffi.new("struct tcmsg *")
        nl.ffi.memmove(self.t, body[:_TCMSG], _TCMSG)
        tca = nl.nla_parse(body[_TCMSG:])
        if tca is None:
            raise KernelError(Errno.EINVAL)
        if any(a in tca and len(tca[a]) < 4 for a in _U32_ATTRS):    # rtm_tca_policy
            raise KernelError(Errno.ERANGE, "Attribute failed policy validation")
        self.tca = tca
        self.flags = hdr.nlmsg_flags

    def kind_is(self, kind: str) -> bool:
        """nla_strcmp(tca[TCA_KIND], kind) == 0."""
        return self.tca[ps.TCA_KIND].split(b"\0", 1)[0] == kind.encode()

    def msg(self, mtype: int, flags: int, tcm: dict, attrs_: bytes) -> bytes:
        t = nl.ffi.new("struct tcmsg *", tcm)
        return nl.nlmsg(mtype, flags, self.hdr.nlmsg_seq, self.nlsk.portid,
                        bytes(nl.ffi.buffer(t)) + attrs_)


def _dev(nlsk, ifindex: int):
    dev = nlsk.kern.world.net.dev_get_by_index(ifindex)
    if dev is None:
        raise KernelError(Errno.ENODEV)
    return dev


def _string(s: str) -> bytes:
    return s.encode() + b"\0"


def _u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


# ---------------------------------------------------------------- qdiscs
def tc_fill_qdisc(req: _Req, q: Qdisc, clid: int, flags: int, event: int) -> bytes:
    """tc_fill_qdisc(): kind, options, offload flag and the statistics (TCA_STATS2 with
    basic and queue counters, and the legacy struct tc_stats)."""
    out = nl.nla_put(ps.TCA_KIND, _string(q.ops.id))
    if q.ops.dump_options:
        out += nl.nla_put(ps.TCA_OPTIONS, b"")
    out += nl.nla_put(ps.TCA_HW_OFFLOAD, b"\0")
    basic = ps.ffi.new("struct gnet_stats_basic *", {"bytes": q.bytes, "packets": q.packets})
    queue = ps.ffi.new("struct gnet_stats_queue *", {"drops": q.drops})
    out += nl.nla_put(ps.TCA_STATS2, nl.nla_put(ps.TCA_STATS_BASIC, bytes(ps.ffi.buffer(basic)))
                      + nl.nla_put(ps.TCA_STATS_QUEUE, bytes(ps.ffi.buffer(queue))))
    st = ps.ffi.new("struct tc_stats *", {"bytes": q.bytes, "packets": q.packets,
                                          "drops": q.drops})
    out += nl.nla_put(ps.TCA_STATS, bytes(ps.ffi.buffer(st)))
    return req.msg(event, flags, {"tcm_ifindex": q.dev.ifindex, "tcm_parent": clid,
                                  "tcm_handle": q.handle, "tcm_info": q.refcnt}, out)


def _echo(req: _Req, msgs: list[bytes]) -> list[bytes]:
    """rtnetlink_send(..., NLM_F_ECHO): the notification reaches the sender only if asked."""
    return msgs if req.flags & NLM_F_ECHO else []


def _qdisc_notify(req: _Req, clid: int, old, new, old_present: bool) -> list[bytes]:
    """qdisc_notify(): RTM_DELQDISC for the old qdisc, RTM_NEWQDISC (NLM_F_REPLACE when
    something — even the builtin noop — was replaced) for the new one."""
    out = []
    if old is not None:
        out.append(tc_fill_qdisc(req, old, clid, 0, nl.RTM_DELQDISC))
    if new is not None:
        out.append(tc_fill_qdisc(req, new, clid, NLM_F_REPLACE if old_present else 0,
                                 nl.RTM_NEWQDISC))
    return _echo(req, out)


def _graft_ingress(req: _Req, ds, clid: int, new: Qdisc | None) -> list[bytes]:
    """qdisc_graft() on the ingress queue: the old qdisc (its filters) is destroyed."""
    net = req.nlsk.kern.world.net
    old = ds.ingress
    if old is not None:
        old.refcnt = 0                 # qdisc_refcount_dec_if_one() before the notification
    out = _qdisc_notify(req, clid, old, new, True)
    ds.ingress = None
    if old is not None:
        qdisc_destroy(old, net)
    ds.ingress = new
    if new is not None:
        qdisc_attach_miniq(net, new)
    return out


def tc_get_qdisc(nlsk, task, hdr, body: bytes) -> list[bytes]:
    """tc_get_qdisc(): RTM_GETQDISC (an echo-only reply) and RTM_DELQDISC."""
    req = _Req(nlsk, hdr, body)
    dev = _dev(nlsk, req.t.tcm_ifindex)
    ds = dev_sched(nlsk.kern.world.net, dev)
    clid, noop = req.t.tcm_parent, False
    if clid:
        if clid != TC_H_ROOT:
            if TC_H_MAJ(clid) != TC_H_MAJ(TC_H_INGRESS):
                p = qdisc_lookup(ds, TC_H_MAJ(clid))
                if p is None:
                    raise KernelError(Errno.ENOENT, "Failed to find qdisc with specified classid")
                q = _qdisc_leaf(p, clid)
            else:
                q = ds.ingress
                noop = ds.ingress_queue and q is None
        else:
            q = ds.root
        if q is None and not noop:
            raise KernelError(Errno.ENOENT, "Cannot find specified qdisc on specified device")
        handle = q.handle if q is not None else 0
        if req.t.tcm_handle and handle != req.t.tcm_handle:
            raise KernelError(Errno.EINVAL, "Invalid handle")
    else:
        q = qdisc_lookup(ds, req.t.tcm_handle)
        if q is None:
            raise KernelError(Errno.ENOENT, "Failed to find qdisc with specified handle")
    kind = q.ops.id if q is not None else "noop"
    if ps.TCA_KIND in req.tca and not req.kind_is(kind):
        raise KernelError(Errno.EINVAL, "Invalid qdisc name: must match existing qdisc")
    if hdr.nlmsg_type == nl.RTM_DELQDISC:
        if not clid:
            raise KernelError(Errno.EINVAL, "Classid cannot be zero")
        if q is None or q.handle == 0:
            raise KernelError(Errno.ENOENT, "Cannot delete qdisc with handle of zero")
        return _graft_ingress(req, ds, clid, None)
    if q is None:                      # qdisc_get_notify() of the builtin noop: nothing
        return []
    return _echo(req, [tc_fill_qdisc(req, q, clid, 0, nl.RTM_NEWQDISC)])


def _qdisc_leaf(p: Qdisc, clid: int):
    """qdisc_leaf(): classless parents (noqueue) cannot have children; clsact's classes
    have none."""
    if not p.ops.classful:
        raise KernelError(Errno.EOPNOTSUPP, "Parent qdisc is not classful")
    if not p.ops.find(clid):
        raise KernelError(Errno.ENOENT, "Specified class not found")
    return None


def tc_modify_qdisc(nlsk, task, hdr, body: bytes) -> list[bytes]:
    """tc_modify_qdisc(): RTM_NEWQDISC create / change / replace."""
    req = _Req(nlsk, hdr, body)
    t, flags, tca = req.t, req.flags, req.tca
    clid = t.tcm_parent
    dev = _dev(nlsk, t.tcm_ifindex)
    ds = dev_sched(nlsk.kern.world.net, dev)
    q = p = None
    create = False
    if clid:
        if clid != TC_H_ROOT:
            if clid != TC_H_INGRESS:
                p = qdisc_lookup(ds, TC_H_MAJ(clid))
                if p is None:
                    raise KernelError(Errno.ENOENT, "Failed to find specified qdisc")
                if p.ops.ingress:                  # 6.18: not in the 6.12 source
                    raise KernelError(Errno.EOPNOTSUPP,
                                      "Cannot add children to ingress/clsact qdisc")
                q = _qdisc_leaf(p, clid)
            else:
                ds.ingress_queue = True            # dev_ingress_queue_create()
                q = ds.ingress
        else:
            q = ds.root
        if q is not None and q.handle == 0:        # the default qdisc
            q = None
        if q is None or not t.tcm_handle or q.handle != t.tcm_handle:
            if t.tcm_handle:
                if q is not None and not flags & NLM_F_REPLACE:
                    raise KernelError(Errno.EEXIST, "NLM_F_REPLACE needed to override")
                if TC_H_MIN(t.tcm_handle):
                    raise KernelError(Errno.EINVAL, "Invalid minor handle")
                q = qdisc_lookup(ds, t.tcm_handle)
                if q is None:
                    create = True
                elif q.parent != t.tcm_parent:
                    raise KernelError(Errno.EINVAL,
                                      "Cannot move an existing qdisc to a different parent")
                elif flags & NLM_F_EXCL:
                    raise KernelError(Errno.EEXIST, "Exclusivity flag on, cannot override")
                elif ps.TCA_KIND in tca and not req.kind_is(q.ops.id):
                    raise KernelError(Errno.EINVAL,
                                      "Invalid qdisc name: must match existing qdisc")
                elif q.ops.ingress:
                    raise KernelError(Errno.EINVAL, "Cannot regraft ingress or clsact Qdiscs")
                elif q is p:
                    raise KernelError(Errno.ELOOP, "Qdisc parent/child loop detected")
                elif clid == TC_H_INGRESS:
                    raise KernelError(Errno.EINVAL, "Ingress cannot graft directly")
                else:                                 # regraft the root: not emulated
                    raise KernelError(Errno.EOPNOTSUPP, "fakekernel: qdisc regraft is not emulated")
            elif q is None:
                create = True
            elif ps.TCA_KIND in tca and not req.kind_is(q.ops.id):
                both = flags & NLM_F_CREATE and flags & (NLM_F_REPLACE | NLM_F_EXCL)
                if both:
                    create = True
                elif not flags & (NLM_F_CREATE | NLM_F_REPLACE | NLM_F_EXCL):
                    return _create_n_graft(req, ds, dev, clid, p)
    else:
        if not t.tcm_handle:
            raise KernelError(Errno.EINVAL, "Handle cannot be zero")
        q = qdisc_lookup(ds, t.tcm_handle)
    if create:
        if not flags & NLM_F_CREATE:
            raise KernelError(Errno.ENOENT, "Qdisc not found. To create specify NLM_F_CREATE flag")
        return _create_n_graft(req, ds, dev, clid, p)
    # change qdisc parameters
    if q is None:
        raise KernelError(Errno.ENOENT, "Specified qdisc not found")
    if flags & NLM_F_EXCL:
        raise KernelError(Errno.EEXIST, "Exclusivity flag on, cannot modify")
    if ps.TCA_KIND in tca and not req.kind_is(q.ops.id):
        raise KernelError(Errno.EINVAL, "Invalid qdisc name: must match existing qdisc")
    if ps.TCA_OPTIONS in tca:                      # qdisc_change(): no ops->change
        raise KernelError(Errno.EINVAL, "Change operation not supported by specified qdisc")
    return _qdisc_notify(req, clid, None, q, False)


def _create_n_graft(req: _Req, ds, dev, clid: int, p) -> list[bytes]:
    """create_n_graft2: qdisc_create() then qdisc_graft()."""
    t, tca = req.t, req.tca
    kind = tca.get(ps.TCA_KIND)
    ops = QDISC_OPS.get(kind.split(b"\0", 1)[0].decode(errors="replace")) if kind else None
    if clid == TC_H_INGRESS and not ds.ingress_queue:
        raise KernelError(Errno.ENOENT, "Cannot find ingress queue for specified device")
    if ops is None:                                # kinds other than ingress/clsact
        raise KernelError(Errno.ENOENT, "Specified qdisc kind is unknown")
    handle = t.tcm_parent if clid == TC_H_INGRESS else t.tcm_handle
    if handle == TC_H_INGRESS and not ops.ingress:
        raise KernelError(Errno.EINVAL,
                          "Specified parent ID is reserved for ingress and clsact Qdiscs")
    new = qdisc_create(dev, ops, t.tcm_parent, handle or TC_H_MAKE(0x80000000, 0))
    return _graft_ingress(req, ds, clid, new)


def tc_dump_qdisc(nlsk, task, hdr, body: bytes) -> list[bytes]:
    """tc_dump_qdisc(): every device's root qdisc, then its ingress-queue qdisc."""
    req = _Req(nlsk, hdr, body)
    net = nlsk.kern.world.net
    out = []
    for _, dev in sorted(net.devices.items()):
        ds = dev_sched(net, dev)
        out.append(tc_fill_qdisc(req, ds.root, ds.root.parent, nl.NLM_F_MULTI, nl.RTM_NEWQDISC))
        if ds.ingress is not None:
            out.append(tc_fill_qdisc(req, ds.ingress, ds.ingress.parent, nl.NLM_F_MULTI,
                                     nl.RTM_NEWQDISC))
    return out


def tc_dump_tclass(nlsk, task, hdr, body: bytes) -> list[bytes]:
    """tc_dump_tclass(): the classes of the device's qdiscs — none: noqueue is classless
    and clsact/ingress walk no classes (what `bpftool net` asks before the filters)."""
    return []


# ---------------------------------------------------------------- the rtnetlink table
def _filter_doit(fn):
    def doit(nlsk, task, hdr, body: bytes) -> list[bytes]:
        return fn(_Req(nlsk, hdr, body), task)
    doit.__doc__ = fn.__doc__
    return doit


def _filter_dumpit(nlsk, task, hdr, body: bytes) -> list[bytes]:
    if len(body) < _TCMSG:                 # tc_dump_tfilter(): a short request dumps nothing
        return []
    return tc_dump_tfilter(_Req(nlsk, hdr, body), task)


# rtnl_register(PF_UNSPEC, RTM_*QDISC / RTM_*TFILTER, doit, dumpit)
TC_DOIT = {nl.RTM_NEWQDISC: tc_modify_qdisc, nl.RTM_DELQDISC: tc_get_qdisc,
           nl.RTM_GETQDISC: tc_get_qdisc,
           nl.RTM_NEWTFILTER: _filter_doit(tc_new_tfilter),
           nl.RTM_DELTFILTER: _filter_doit(tc_del_tfilter),
           nl.RTM_GETTFILTER: _filter_doit(tc_get_tfilter)}
TC_DUMPIT = {nl.RTM_GETQDISC: tc_dump_qdisc, nl.RTM_GETTFILTER: _filter_dumpit,
             ps.RTM_GETTCLASS: tc_dump_tclass}
