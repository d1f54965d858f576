"""Programs attached to a network namespace — kernel/bpf/net_namespace.c (netns_bpf_prog_attach,
netns_bpf_prog_detach, netns_bpf_prog_query, netns_bpf_link_create, bpf_netns_link_ops) with
net/core/flow_dissector.c flow_dissector_bpf_prog_attach_check().

Two attach points per namespace: the flow dissector (one program, attached directly with
PROG_ATTACH or through a link) and sk_lookup (up to 64 links, run in attach order).  The state
lives in ``NetNs.bpf`` (type -> `NetnsBpf`); the emulated kernel has one namespace, the initial
one, reachable as a file by opening ``/proc/self/ns/net``.

Firing from Python: `skb_flow_dissect_bpf` (what __skb_flow_dissect() asks the attached
dissector) and `run_sk_lookup` (BPF_PROG_SK_LOOKUP_RUN_ARRAY over the attached programs, as
inet lookups do).
"""
from __future__ import annotations

import enum

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import File
from uapi.bpf import AttachType, LinkType
from uapi.ffi import ffi

__all__ = ["NetnsType", "NetnsBpf", "BpfNetnsLink", "NETNS_FILE_KIND", "NETNS_PATHS", "INIT_NET_INO",
           "netns_bpf_prog_attach", "netns_bpf_prog_detach", "netns_bpf_prog_query",
           "netns_bpf_link_create", "get_net_ns_by_fd", "open_netns", "netns_attached_objects",
           "skb_flow_dissect_bpf", "run_sk_lookup", "NETNS_ATTACH_TYPES"]

NETNS_FILE_KIND = "netns"                       # nsfs
NETNS_PATHS = ("/proc/self/ns/net", "/proc/thread-self/ns/net")
INIT_NET_INO = 0xF0000000                       # PROC_NET_INIT_INO (include/linux/proc_ns.h)
_U32 = ffi.sizeof("__u32")


class NetnsType(enum.IntEnum):
    """enum netns_bpf_attach_type."""

    FLOW_DISSECTOR = 0
    SK_LOOKUP = 1


NETNS_ATTACH_TYPES = {AttachType.FLOW_DISSECTOR: NetnsType.FLOW_DISSECTOR,
                      AttachType.SK_LOOKUP: NetnsType.SK_LOOKUP}
_MAX_PROGS = {NetnsType.FLOW_DISSECTOR: 1, NetnsType.SK_LOOKUP: 64}     # netns_bpf_max_progs()


@attrs.define(eq=False)
class NetnsBpf:
    """net->bpf for one attach type: a directly attached prog, or links (never both)."""

    prog: object = None
    links: list = attrs.field(factory=list)

    def run_array(self) -> list:
        if self.prog is not None:
            return [self.prog]
        return [lk.prog for lk in self.links]


def _netns_bpf(net, ntype: NetnsType) -> NetnsBpf:
    return net.bpf.setdefault(ntype, NetnsBpf())


def _to_netns_type(attach_type: int) -> NetnsType:
    ntype = NETNS_ATTACH_TYPES.get(attach_type)
    if ntype is None:
        raise KernelError(Errno.EINVAL, f"attach type {attach_type} is not a netns hook")
    return ntype


def flow_dissector_bpf_prog_attach_check(net, prog) -> None:
    """The root namespace's dissector overrides the others: only one of them may have one (this
    kernel has the root namespace only, so nothing can conflict)."""


# ---------------------------------------------------------------- PROG_ATTACH / DETACH / QUERY

def netns_bpf_prog_attach(kern, task, attr, prog) -> int:
    """netns_bpf_prog_attach(): the flow dissector of the caller's namespace; the netns keeps
    the prog reference the caller took (the previous program's is dropped)."""
    if attr.target_fd or attr.attach_flags or attr.replace_bpf_fd:
        raise KernelError(Errno.EINVAL, "target_fd, attach_flags and replace_bpf_fd must be 0")
    ntype = _to_netns_type(attr.attach_type)
    net = kern.world.net
    state = _netns_bpf(net, ntype)
    if state.links:
        raise KernelError(Errno.EEXIST, "a link holds this hook")
    if ntype != NetnsType.FLOW_DISSECTOR:
        raise KernelError(Errno.EINVAL, "only the flow dissector attaches without a link")
    flow_dissector_bpf_prog_attach_check(net, prog)
    if state.prog is prog:
        raise KernelError(Errno.EINVAL, "this program is attached already")
    old, state.prog = state.prog, prog.get()
    if old is not None:
        old.put()
    return 0


def netns_bpf_prog_detach(kern, task, attr, ptype: int) -> int:
    """netns_bpf_prog_detach(): only the attached program itself, and never a link's."""
    from fakekernel.syscall.attach_cmds import bpf_prog_get_type
    ntype = _to_netns_type(attr.attach_type)
    prog = bpf_prog_get_type(task, attr.attach_bpf_fd, ptype)
    state = _netns_bpf(kern.world.net, ntype)
    if state.links:
        raise KernelError(Errno.EINVAL, "programs attached by links cannot be detached")
    if state.prog is None or state.prog is not prog:
        raise KernelError(Errno.ENOENT, "that program is not attached")
    state.prog = None
    prog.put()
    return 0


def get_net_ns_by_fd(task, fd: int):
    """get_net_ns_by_fd(): EBADF, or EINVAL for a file that is not a network namespace."""
    f = task.files.fdget(fd)
    if f.kind != NETNS_FILE_KIND:
        raise KernelError(Errno.EINVAL, f"fd {fd} is not a network namespace")
    return f.private_data


def netns_bpf_prog_query(kern, task, attr, ctx) -> int:
    """netns_bpf_prog_query(): attach_flags (0) and prog_cnt, then the ids (the whole prog_cnt
    slots the caller gave are written; ENOSPC when they were too few)."""
    q = attr.query
    if q.query_flags:
        raise KernelError(Errno.EINVAL, "no query flags for netns hooks")
    ntype = _to_netns_type(q.attach_type)
    net = get_net_ns_by_fd(task, q.target_fd)
    progs = _netns_bpf(net, ntype).run_array()
    ctx.put_attr_field("query.attach_flags", 0)
    ctx.put_attr_field("query.prog_cnt", len(progs))
    if not q.prog_cnt or not q.prog_ids or not progs:
        return 0
    ids = [p.aux.id for p in progs[:q.prog_cnt]]
    ids += [0] * (q.prog_cnt - len(ids))
    task.mm.copy_to_user(q.prog_ids, b"".join(i.to_bytes(_U32, "little") for i in ids))
    if len(progs) > q.prog_cnt:
        raise KernelError(Errno.ENOSPC, "prog_ids too short")
    return 0


# ---------------------------------------------------------------- links

@attrs.define(eq=False)
class BpfNetnsLink(BpfLink):
    """struct bpf_netns_link."""

    net: object = None                  # None once the namespace let go of the link
    netns_type: int = 0

    def _state(self) -> NetnsBpf:
        return _netns_bpf(self.net, self.netns_type)

    def release(self) -> None:
        """bpf_netns_link_release(): leave the run array (the namespace may be gone already)."""
        if self.net is None:
            return
        state = self._state()
        if self in state.links:
            state.links.remove(self)
        self.net = None

    def detach(self) -> None:
        """bpf_netns_link_detach()."""
        self.release()

    def update_prog(self, new_prog, old_prog) -> None:
        """bpf_netns_link_update_prog(): same type; with old_prog only if it is ours; ENOLINK
        once detached."""
        if new_prog.type != self.prog.type:
            raise KernelError(Errno.EINVAL, "a link keeps its program type")
        if old_prog is not None and old_prog is not self.prog:
            raise KernelError(Errno.EPERM, "old_prog_fd is not the link's program")
        if self.net is None:
            raise KernelError(Errno.ENOLINK, "the link is detached")
        old, self.prog = self.prog, new_prog.get()
        old.put()

    def fill_link_info(self, info, task) -> None:
        """bpf_netns_link_fill_info(): the namespace's inode (0 once detached) and attach type."""
        info.netns.netns_ino = INIT_NET_INO if self.net is not None else 0
        info.netns.attach_type = self.attach_type


def netns_bpf_link_create(kern, task, attr, prog) -> int:
    """netns_bpf_link_create(): a link on the namespace target_fd names."""
    lc = attr.link_create
    if lc.flags:
        raise KernelError(Errno.EINVAL, "link_create.flags must be 0")
    ntype = _to_netns_type(lc.attach_type)
    net = get_net_ns_by_fd(task, lc.target_fd)
    link = BpfNetnsLink(kern=kern, type=LinkType.NETNS, attach_type=lc.attach_type, prog=prog, net=net,
                        netns_type=ntype)
    primer = bpf_link_prime(link)
    try:
        _netns_bpf_link_attach(net, link, ntype)
    except KernelError:
        primer.cleanup()
        raise
    return primer.settle(task)


def _netns_bpf_link_attach(net, link: BpfNetnsLink, ntype: NetnsType) -> None:
    state = _netns_bpf(net, ntype)
    if len(state.links) >= _MAX_PROGS[ntype]:
        raise KernelError(Errno.E2BIG, "no room for another link")
    if state.prog is not None:
        raise KernelError(Errno.EEXIST, "a program is attached directly")
    if ntype == NetnsType.FLOW_DISSECTOR:
        flow_dissector_bpf_prog_attach_check(net, link.prog)
    state.links.append(link)


# ---------------------------------------------------------------- files, leak check

def open_netns(kern, task, flags: int) -> int:
    """open("/proc/self/ns/net"): an nsfs file for the (only) namespace."""
    return task.files.install(File(kind=NETNS_FILE_KIND, private_data=kern.world.net, f_flags=flags))


def netns_attached_objects(net) -> set:
    out = set()
    for state in getattr(net, "bpf", {}).values():
        if state.prog is not None:
            out.add(state.prog)
        for lk in state.links:
            out.add(lk)
            if lk.prog is not None:
                out.add(lk.prog)
    return out


# ---------------------------------------------------------------- firing

def skb_flow_dissect_bpf(kern, frame: bytes, *, flags: int = 0):
    """What __skb_flow_dissect() gets from the namespace's BPF dissector for an Ethernet frame:
    ``(retval, struct bpf_flow_keys bytes)``, or None when no dissector is attached."""
    from fakekernel.net.headers import ETH_HLEN
    from fakekernel.test_run_net import bpf_flow_dissect
    progs = _netns_bpf(kern.world.net, NetnsType.FLOW_DISSECTOR).run_array()
    if not progs or len(frame) < ETH_HLEN:
        return None
    return bpf_flow_dissect(kern, progs[0], bytearray(frame), bytes(frame[ETH_HLEN - 2:ETH_HLEN]),
                            ETH_HLEN, len(frame), flags)


def run_sk_lookup(kern, lookup_ctx: bytes, family: int, protocol: int):
    """BPF_PROG_SK_LOOKUP_RUN_ARRAY over the namespace's sk_lookup programs for one lookup
    (`lookup_ctx` is the ``struct bpf_sk_lookup`` they read): ``(SK_PASS | SK_DROP, selected
    socket or None)``, or None when no program is attached."""
    from fakekernel.bpf.core import bpf_prog_run
    from fakekernel.helpers.sk_lookup import SkLookupKern
    from uapi.bpf import SK_DROP, SK_PASS
    progs = _netns_bpf(kern.world.net, NetnsType.SK_LOOKUP).run_array()
    if not progs:
        return None
    selected, no_reuseport, all_pass = None, False, True
    mem = kern.mem
    for prog in progs:
        run = SkLookupKern(family=family, protocol=protocol, selected_sk=selected, no_reuseport=no_reuseport)
        region = mem.map_region(bytearray(lookup_ctx), "ctx", "bpf_sk_lookup", writable=False)
        try:
            ret = bpf_prog_run(kern, prog, region.base, ctx=run)
        finally:
            mem.unmap(region)
        if ret == SK_PASS and run.selected_sk is not None:
            selected, no_reuseport = run.selected_sk, run.no_reuseport
        elif ret == SK_DROP:
            all_pass = False
    return (SK_PASS if all_pass or selected is not None else SK_DROP), selected

