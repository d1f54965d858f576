"""BPF_LINK_CREATE — kernel/bpf/syscall.c: link_create().

The prog fd is resolved (EBADF / EINVAL), its type checked against the attach type
(bpf_prog_attach_check_attach_type), then the prog type picks the hook: cgroup links
(kernel/bpf/cgroup.c), XDP links (net/core/dev.c), perf-event links (no perf events exist
here, so any target_fd is EBADF — what libbpf's perf-link probe expects) and kprobe_multi
links (kernel/trace/bpf_trace.c).  Other link kinds answer EINVAL.
"""
from __future__ import annotations

from fakekernel import cgroup
from fakekernel.errors import Errno, KernelError
from fakekernel.net.dev_xdp import bpf_xdp_link_attach
from fakekernel.syscall import fdget
from fakekernel.syscall.attach_cmds import bpf_prog_attach_check_attach_type
from fakekernel.syscall.command import bpf_command
from fakekernel.trace.kprobe import bpf_kprobe_multi_link_attach
from uapi.bpf import AttachType, BpfCmd, ProgType

__all__ = ["link_create"]

_CGROUP_LINK_PROG_TYPES = frozenset({
    ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR, ProgType.SOCK_OPS,
    ProgType.CGROUP_DEVICE, ProgType.CGROUP_SYSCTL, ProgType.CGROUP_SOCKOPT})


def _bpf_struct_ops_link_create(kern, task, attr) -> int:
    """bpf_struct_ops_link_create(): the map fd must be a struct_ops map with BPF_F_LINK."""
    fdget.bpf_map_get(task, attr.link_create.map_fd)          # EBADF / EINVAL
    raise KernelError(Errno.EINVAL, "no struct_ops maps in this kernel")


def _bpf_perf_link_attach(kern, task, attr, prog) -> int:
    """bpf_perf_link_attach(): flags must be 0; target_fd must be a perf event (EBADF)."""
    if attr.link_create.flags:
        raise KernelError(Errno.EINVAL, "link_create.flags must be 0")
    f = task.files.fdget(attr.link_create.target_fd)
    if f.kind != "perf_event":
        raise KernelError(Errno.EBADF, "target_fd is not a perf event")
    raise KernelError(Errno.EOPNOTSUPP, "perf events are not modelled")


def _kprobe_link(kern, task, attr, prog) -> int:
    at = attr.link_create.attach_type
    if at == AttachType.PERF_EVENT:
        return _bpf_perf_link_attach(kern, task, attr, prog)
    if at in (AttachType.TRACE_KPROBE_MULTI, AttachType.TRACE_KPROBE_SESSION):
        return bpf_kprobe_multi_link_attach(kern, task, attr, prog)
    raise KernelError(Errno.EOPNOTSUPP, "uprobe_multi is not modelled")


_LINK_ATTACH = {
    **dict.fromkeys(_CGROUP_LINK_PROG_TYPES, cgroup.cgroup_bpf_link_attach),
    ProgType.XDP: bpf_xdp_link_attach,
    ProgType.PERF_EVENT: _bpf_perf_link_attach,
    ProgType.TRACEPOINT: _bpf_perf_link_attach,
    ProgType.KPROBE: _kprobe_link,
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
