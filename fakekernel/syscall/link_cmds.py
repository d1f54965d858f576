"""BPF_LINK_CREATE — kernel/bpf/syscall.c: link_create().

The prog fd is resolved (EBADF / EINVAL), its type checked against the attach type
(bpf_prog_attach_check_attach_type), then the prog type picks the hook: cgroup links
(kernel/bpf/cgroup.c), XDP links (net/core/dev.c), perf-event links (fakekernel/perf; a
target_fd that is not a perf event is EBADF — what libbpf's perf-link probe expects) and kprobe_multi
links (kernel/trace/bpf_trace.c), tcx links (kernel/bpf/tcx.c), iterator links
(kernel/bpf/bpf_iter.c) and the TRACING/LSM/EXT links of fakekernel/trace/trampoline.py
(tp_btf programs get raw tracepoint links).  Other link kinds answer EINVAL.
"""
from __future__ import annotations

from fakekernel import cgroup
from fakekernel.errors import Errno, KernelError
from fakekernel.net import tcx
from fakekernel.net.dev_xdp import bpf_xdp_link_attach
from fakekernel.net.net_namespace import netns_bpf_link_create
from fakekernel.net.nf_bpf_link import bpf_nf_link_attach
from fakekernel.syscall import fdget
from fakekernel.syscall.attach_cmds import bpf_prog_attach_check_attach_type
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.obj_cmds import _get_next_id
from fakekernel.trace import trampoline
from fakekernel.trace.kprobe import bpf_kprobe_multi_link_attach
from fakekernel.trace.raw_tp import RAW_TP_PROG_TYPES, bpf_raw_tp_link_attach
from uapi.bpf import AttachFlags, AttachType, BpfCmd, ProgType
from uapi.capability import Cap

__all__ = ["link_create", "link_update", "link_detach", "bpf_link_get_fd_by_id",
           "bpf_link_get_next_id", "bpf_raw_tracepoint_open"]

_CGROUP_LINK_PROG_TYPES = frozenset({
    ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR, ProgType.SOCK_OPS,
    ProgType.CGROUP_DEVICE, ProgType.CGROUP_SYSCTL, ProgType.CGROUP_SOCKOPT})


def _bpf_struct_ops_link_create(kern, task, attr) -> int:
    """bpf_struct_ops_link_create() (fakekernel/maps/struct_ops_link.py)."""
    from fakekernel.maps.struct_ops_link import bpf_struct_ops_link_create
    return bpf_struct_ops_link_create(kern, task, attr)


def _bpf_perf_link_attach(kern, task, attr, prog) -> int:
    """bpf_perf_link_attach() (fakekernel/perf/bpf_event.py)."""
    from fakekernel.perf.bpf_event import bpf_perf_link_attach
    return bpf_perf_link_attach(kern, task, attr, prog)


def _kprobe_link(kern, task, attr, prog) -> int:
    at = attr.link_create.attach_type
    if at == AttachType.PERF_EVENT:
        return _bpf_perf_link_attach(kern, task, attr, prog)
    if at in (AttachType.TRACE_KPROBE_MULTI, AttachType.TRACE_KPROBE_SESSION):
        return bpf_kprobe_multi_link_attach(kern, task, attr, prog)
    raise KernelError(Errno.EOPNOTSUPP, "uprobe_multi is not modelled")


def _sched_cls_link(kern, task, attr, prog) -> int:
    """tcx_link_attach() for BPF_TCX_INGRESS/EGRESS (netkit links are not modelled)."""
    if attr.link_create.attach_type in tcx.TCX_ATTACH_TYPES:
        return tcx.tcx_link_attach(kern, task, attr, prog)
    raise KernelError(Errno.EINVAL, "netkit is not modelled")


def _tracing_link(kern, task, attr, prog) -> int:
    """link_create() for TRACING and LSM programs: the attach type must be the load's; then
    tp_btf (a raw tracepoint link), iterators, or a trampoline link (fentry/fexit/fmod_ret,
    LSM).  LSM_CGROUP links are not modelled."""
    lc = attr.link_create
    eat = prog.expected_attach_type
    if lc.attach_type != eat:
        raise KernelError(Errno.EINVAL, "attach_type differs from expected_attach_type")
    if eat == AttachType.TRACE_RAW_TP:
        return trampoline.bpf_tracing_raw_tp_attach(kern, task, prog, 0, lc.tracing.cookie)
    if eat == AttachType.TRACE_ITER:
        from fakekernel.iter import bpf_iter_link_attach
        return bpf_iter_link_attach(kern, task, attr, prog)
    if eat == AttachType.LSM_CGROUP:
        raise KernelError(Errno.EOPNOTSUPP, "LSM_CGROUP links are not modelled")
    return trampoline.bpf_tracing_prog_attach(kern, task, prog, lc.target_fd, lc.target_btf_id,
                                              lc.tracing.cookie)


def _ext_link(kern, task, attr, prog) -> int:
    lc = attr.link_create
    return trampoline.bpf_tracing_prog_attach(kern, task, prog, lc.target_fd, lc.target_btf_id,
                                              lc.tracing.cookie)


_LINK_ATTACH = {
    **dict.fromkeys(_CGROUP_LINK_PROG_TYPES, cgroup.cgroup_bpf_link_attach),
    ProgType.XDP: bpf_xdp_link_attach,
    ProgType.PERF_EVENT: _bpf_perf_link_attach,
    ProgType.TRACEPOINT: _bpf_perf_link_attach,
    ProgType.KPROBE: _kprobe_link,
    ProgType.FLOW_DISSECTOR: netns_bpf_link_create,
    ProgType.NETFILTER: bpf_nf_link_attach,
    ProgType.SK_LOOKUP: netns_bpf_link_create,
    ProgType.SCHED_CLS: _sched_cls_link,
    ProgType.TRACING: _tracing_link,
    ProgType.LSM: _tracing_link,
    ProgType.EXT: _ext_link,
}


@bpf_command(BpfCmd.LINK_CREATE, last_field="link_create.uprobe_multi.pid")
def link_create(kern, task, attr, ctx) -> int:
    """link_create().  Returns the new link fd."""
    lc = attr.link_create
    if lc.attach_type == AttachType.STRUCT_OPS:
        return _bpf_struct_ops_link_create(kern, task, attr)
    prog = fdget.bpf_prog_get(task, lc.prog_fd)
    bpf_prog_attach_check_attach_type(task, prog, lc.attach_type)
    attach = _LINK_ATTACH.get(prog.type)
    if attach is None:
        raise KernelError(Errno.EINVAL, f"no link kind for prog type {prog.type} here")
    return attach(kern, task, attr, prog)


# ---------------------------------------------------------------- existing links

@bpf_command(BpfCmd.LINK_UPDATE, last_field="link_update.old_prog_fd")
def link_update(kern, task, attr, ctx) -> int:
    """link_update(): swap the link's program (BPF_F_REPLACE: only if it is old_prog_fd's).

    Order: unknown flags (EINVAL), the link fd (EBADF / EINVAL), new_prog_fd, then with
    BPF_F_REPLACE old_prog_fd, else a non-zero old_prog_fd is EINVAL; the link kind's
    update_prog then decides (EPERM for a different old prog, EINVAL for another type,
    ENOLINK once detached).  Link kinds without update_prog answer EINVAL.
    (struct_ops links have no update_map here: a new map fd is read as new_prog_fd.)
    """
    lu = attr.link_update
    if lu.flags & ~int(AttachFlags.REPLACE):
        raise KernelError(Errno.EINVAL, "unknown link_update.flags")
    link = fdget.bpf_link_get(task, lu.link_fd)
    new_prog = fdget.bpf_prog_get(task, lu.new_prog_fd)
    old_prog = None
    if lu.flags & AttachFlags.REPLACE:
        old_prog = fdget.bpf_prog_get(task, lu.old_prog_fd)
    elif lu.old_prog_fd:
        raise KernelError(Errno.EINVAL, "old_prog_fd without BPF_F_REPLACE")
    update = getattr(link, "update_prog", None)
    if update is None:
        raise KernelError(Errno.EINVAL, "this link kind cannot change its program")
    update(new_prog, old_prog)
    return 0


@bpf_command(BpfCmd.LINK_DETACH, last_field="link_detach.link_fd")
def link_detach(kern, task, attr, ctx) -> int:
    """link_detach(): detach from the hook now; the link (and its fd, id, prog) stay."""
    link = fdget.bpf_link_get(task, attr.link_detach.link_fd)
    detach = getattr(link, "detach", None)
    if detach is None:
        raise KernelError(Errno.EOPNOTSUPP, "this link kind cannot be detached")
    detach()
    return 0


@bpf_command(BpfCmd.LINK_GET_FD_BY_ID, last_field="link_id")
def bpf_link_get_fd_by_id(kern, task, attr, ctx) -> int:
    """bpf_link_get_fd_by_id() -> bpf_link_by_id(): a new fd holding a link reference."""
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "LINK_GET_FD_BY_ID needs CAP_SYS_ADMIN")
    link = kern.link_idr.find(attr.link_id) if attr.link_id else None
    if link is None or link.refcnt == 0:
        raise KernelError(Errno.ENOENT, f"no link with id {attr.link_id}")
    return fdget.bpf_link_new_fd(kern, task, link.get())


@bpf_command(BpfCmd.LINK_GET_NEXT_ID, last_field="next_id")
def bpf_link_get_next_id(kern, task, attr, ctx) -> int:
    """bpf_obj_get_next_id() over link_idr."""
    return _get_next_id(task, attr, ctx, kern.link_idr)


# ---------------------------------------------------------------- raw tracepoints

# prog type -> attach function of bpf_raw_tp_link_attach().  The kernel accepts TRACING,
# EXT, LSM (attach point from the load-time btf id) and RAW_TRACEPOINT(_WRITABLE) (attach
# point by name, trace/raw_tp.py); any other type is EINVAL.
_RAW_TP_ATTACH: dict = {**dict.fromkeys(RAW_TP_PROG_TYPES, bpf_raw_tp_link_attach),
                        **dict.fromkeys((ProgType.TRACING, ProgType.EXT, ProgType.LSM),
                                        trampoline.bpf_tracing_raw_tp_attach)}


@bpf_command(BpfCmd.RAW_TRACEPOINT_OPEN, last_field="raw_tracepoint.cookie")
def bpf_raw_tracepoint_open(kern, task, attr, ctx) -> int:
    """bpf_raw_tracepoint_open() -> bpf_raw_tp_link_attach(): returns a link fd."""
    prog = fdget.bpf_prog_get(task, attr.raw_tracepoint.prog_fd)
    attach = _RAW_TP_ATTACH.get(prog.type)
    if attach is None:
        raise KernelError(Errno.EINVAL, f"prog type {prog.type} has no raw tracepoint attach")
    return attach(kern, task, prog, attr.raw_tracepoint.name, attr.raw_tracepoint.cookie)
