"""The "bpf" classifier — net/sched/cls_bpf.c (cls_bpf_change, cls_bpf_classify,
cls_bpf_dump, cls_bpf_delete, cls_bpf_destroy).

A proto's filters are `ClsBpfProg`s, newest first (list_add_rcu): each holds a
BPF_PROG_TYPE_SCHED_CLS program reference (TCA_BPF_FD), an optional name (TCA_BPF_NAME),
a classid (TCA_BPF_CLASSID) and whether it runs in direct-action mode
(TCA_BPF_FLAG_ACT_DIRECT: the program's return value is the TC_ACT_* verdict).  Classic
BPF filters (TCA_BPF_OPS) and tc actions (TCA_BPF_ACT/POLICE) are not emulated and are
refused with EOPNOTSUPP; without offload-capable devices skip_sw cannot be honoured
(EOPNOTSUPP, as tc_setup_cb_add() answers for a device without ndo_setup_tc).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.fdget import bpf_prog_get
from uapi import netlink as nl
from uapi import pkt_sched as ps
from uapi.bpf import ProgType
from uapi.pkt_sched import TC_H_MAJ, TcAct

__all__ = ["ClsBpfProg", "ClsBpfHead", "CLS_BPF_OPS"]

KIND = "bpf"
CLS_BPF_NAME_LEN = 256
_SUPPORTED_GEN_FLAGS = ps.TCA_CLS_FLAGS_SKIP_HW | ps.TCA_CLS_FLAGS_SKIP_SW
_INT_MAX = (1 << 31) - 1
_EXEC_OPCODES = (TcAct.OK, TcAct.SHOT, TcAct.STOLEN, TcAct.TRAP, TcAct.REDIRECT, TcAct.UNSPEC)
# bpf_policy: the minimum payload of the fixed-size attributes
_POLICY_MIN = {ps.TCA_BPF_CLASSID: 4, ps.TCA_BPF_FLAGS: 4, ps.TCA_BPF_FLAGS_GEN: 4,
               ps.TCA_BPF_FD: 4, ps.TCA_BPF_OPS_LEN: 2}


def _u32(b: bytes) -> int:
    return int.from_bytes(b[:4], "little")


@attrs.define(eq=False)
class ClsBpfProg:
    """struct cls_bpf_prog."""

    handle: int
    filter: object = None            # BpfProg (holds a reference)
    name: bytes | None = None        # TCA_BPF_NAME as sent (NUL included)
    classid: int = 0                 # res.classid
    exts_integrated: bool = False    # direct action
    gen_flags: int = 0


@attrs.define(eq=False)
class ClsBpfHead:
    """struct cls_bpf_head: the filters, newest first."""

    plist: list = attrs.field(factory=list)


def init(tp) -> None:
    tp.root = ClsBpfHead()


def get(tp, handle: int) -> ClsBpfProg | None:
    """cls_bpf_get()."""
    return next((p for p in tp.root.plist if p.handle == handle), None)


def _parse_options(data: bytes) -> dict:
    """nla_parse_nested_deprecated(bpf_policy), no extack."""
    tb = nl.nla_parse(data)
    if tb is None:
        raise KernelError(Errno.EINVAL)
    for atype, minlen in _POLICY_MIN.items():
        if atype in tb and len(tb[atype]) < minlen:
            raise KernelError(Errno.ERANGE)          # validate_nla(): shorter than the type
    name = tb.get(ps.TCA_BPF_NAME)
    if name is not None and b"\0" not in name[:CLS_BPF_NAME_LEN + 1]:
        raise KernelError(Errno.EINVAL)
    return tb


def _prog_from_efd(task, tb: dict, gen_flags: int, dev):
    """cls_bpf_prog_from_efd(): bpf_prog_get_type_dev(fd, SCHED_CLS, skip_sw)."""
    fd = _u32(tb[ps.TCA_BPF_FD])
    fd = fd - (1 << 32) if fd & 0x80000000 else fd
    try:
        prog = bpf_prog_get(task, fd)
    except KernelError as e:
        raise KernelError(e.errno) from None
    skip_sw = bool(gen_flags & ps.TCA_CLS_FLAGS_SKIP_SW)
    if prog.type != ProgType.SCHED_CLS or (not skip_sw and prog.aux.ifindex):
        raise KernelError(Errno.EINVAL)
    if prog.aux.ifindex and prog.aux.ifindex != dev.ifindex:
        raise KernelError(Errno.EINVAL, "Program is bound to a different device")
    return prog


def change(task, tp, handle: int, tca: dict, oldprog: ClsBpfProg | None) -> ClsBpfProg:
    """cls_bpf_change(): a new filter, or one replacing `oldprog` in place."""
    if ps.TCA_OPTIONS not in tca:
        raise KernelError(Errno.EINVAL)
    tb = _parse_options(tca[ps.TCA_OPTIONS])
    head = tp.root
    if oldprog is not None and handle and oldprog.handle != handle:
        raise KernelError(Errno.EINVAL)
    if handle == 0:
        used = {p.handle for p in head.plist}
        handle = next(h for h in range(1, _INT_MAX + 1) if h not in used)
    elif oldprog is None and any(p.handle == handle for p in head.plist):
        raise KernelError(Errno.ENOSPC)
    is_bpf = ps.TCA_BPF_OPS_LEN in tb and ps.TCA_BPF_OPS in tb
    is_ebpf = ps.TCA_BPF_FD in tb
    if is_bpf == is_ebpf:
        raise KernelError(Errno.EINVAL)
    if ps.TCA_BPF_ACT in tb or ps.TCA_BPF_POLICE in tb:     # tcf_exts_validate()
        raise KernelError(Errno.EOPNOTSUPP, "fakekernel: tc actions are not emulated")
    have_exts = False
    if ps.TCA_BPF_FLAGS in tb:
        bpf_flags = _u32(tb[ps.TCA_BPF_FLAGS])
        if bpf_flags & ~ps.TCA_BPF_FLAG_ACT_DIRECT:
            raise KernelError(Errno.EINVAL)
        have_exts = bool(bpf_flags & ps.TCA_BPF_FLAG_ACT_DIRECT)
    gen_flags = 0
    if ps.TCA_BPF_FLAGS_GEN in tb:
        gen_flags = _u32(tb[ps.TCA_BPF_FLAGS_GEN])
        if gen_flags & ~_SUPPORTED_GEN_FLAGS or gen_flags == _SUPPORTED_GEN_FLAGS:
            raise KernelError(Errno.EINVAL)                # tc_flags_valid()
    if is_bpf:
        raise KernelError(Errno.EOPNOTSUPP,
                          "fakekernel: classic BPF cls_bpf filters are not emulated")
    prog = ClsBpfProg(handle=handle, exts_integrated=have_exts, gen_flags=gen_flags)
    fp = _prog_from_efd(task, tb, gen_flags, tp.chain.block.q.dev)
    if ps.TCA_BPF_NAME in tb:
        prog.name = tb[ps.TCA_BPF_NAME]
    if ps.TCA_BPF_CLASSID in tb:
        prog.classid = _u32(tb[ps.TCA_BPF_CLASSID])
    # cls_bpf_offload(): no device here offloads, so skip_sw filters cannot be placed
    if oldprog is not None and (oldprog.gen_flags ^ gen_flags) & _SUPPORTED_GEN_FLAGS:
        raise KernelError(Errno.EINVAL)
    if gen_flags & ps.TCA_CLS_FLAGS_SKIP_SW:
        raise KernelError(Errno.EOPNOTSUPP)
    prog.filter = fp.get()
    prog.gen_flags |= ps.TCA_CLS_FLAGS_NOT_IN_HW
    if oldprog is not None:
        head.plist[head.plist.index(oldprog)] = prog
        _free(oldprog)
    else:
        head.plist.insert(0, prog)
    return prog


def _free(prog: ClsBpfProg) -> None:
    """cls_bpf_free_parms(): the program reference goes."""
    if prog.filter is not None:
        prog.filter.put()
        prog.filter = None


def delete(tp, prog: ClsBpfProg) -> bool:
    """cls_bpf_delete(): True when the proto is left empty."""
    tp.root.plist.remove(prog)
    _free(prog)
    return not tp.root.plist


def destroy(tp) -> None:
    """cls_bpf_destroy()."""
    for prog in list(tp.root.plist):
        delete(tp, prog)


def walk(tp) -> list[ClsBpfProg]:
    return list(tp.root.plist)


def dump(tp, prog: ClsBpfProg) -> tuple[int, bytes]:
    """cls_bpf_dump(): (tcm_handle, the TCA_OPTIONS nest)."""
    out = b""
    if prog.classid:
        out += nl.nla_put(ps.TCA_BPF_CLASSID, prog.classid.to_bytes(4, "little"))
    if prog.name is not None:
        out += nl.nla_put(ps.TCA_BPF_NAME, prog.name.split(b"\0", 1)[0] + b"\0")
    out += nl.nla_put(ps.TCA_BPF_ID, prog.filter.aux.id.to_bytes(4, "little"))
    out += nl.nla_put(ps.TCA_BPF_TAG, bytes(prog.filter.tag))
    if prog.exts_integrated:
        out += nl.nla_put(ps.TCA_BPF_FLAGS, ps.TCA_BPF_FLAG_ACT_DIRECT.to_bytes(4, "little"))
    if prog.gen_flags:
        out += nl.nla_put(ps.TCA_BPF_FLAGS_GEN, prog.gen_flags.to_bytes(4, "little"))
    return prog.handle, nl.nla_put(ps.TCA_OPTIONS, out)


def classify(skb, tp, res: dict) -> int:
    """cls_bpf_classify(): the filters newest first.  Direct action: the program's return
    is the verdict (unknown codes are TC_ACT_UNSPEC: go on); otherwise 0 is "no match",
    -1 the filter's classid and anything else the classid itself, and the (empty) action
    list answers TC_ACT_OK."""
    ret = TcAct.UNSPEC
    for prog in list(tp.root.plist):
        skb.tc_classid = prog.classid & 0xFFFF
        filter_res = res["run"](prog.filter) & 0xFFFFFFFF
        filter_res = filter_res - (1 << 32) if filter_res & 0x80000000 else filter_res
        if prog.exts_integrated:
            res["classid"] = TC_H_MAJ(prog.classid) | skb.tc_classid
            ret = filter_res if filter_res in _EXEC_OPCODES else TcAct.UNSPEC
            if ret == TcAct.UNSPEC:
                continue
            return ret
        if filter_res == 0:
            continue
        res["classid"] = prog.classid if filter_res == -1 else filter_res & 0xFFFFFFFF
        return TcAct.OK
    return ret


def has_progs(tp) -> list:
    return [p.filter for p in tp.root.plist if p.filter is not None]


class _Ops:
    """struct tcf_proto_ops for "bpf"."""

    kind = KIND
    init = staticmethod(init)
    get = staticmethod(get)
    change = staticmethod(change)
    delete = staticmethod(delete)
    destroy = staticmethod(destroy)
    walk = staticmethod(walk)
    dump = staticmethod(dump)
    classify = staticmethod(classify)
    progs = staticmethod(has_progs)


CLS_BPF_OPS = _Ops()
