"""BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_QUERY — kernel/bpf/syscall.c.

The cgroup family, tcx (fakekernel/net/tcx.py, mprog semantics) and socket maps
(fakekernel/maps/sock_map_progs.py) have targets here (netkit, lirc, flow dissector and
sk_lookup are not modelled: their attach types
answer EINVAL as from a kernel without them).  The checks run in the kernel's order: attach type → flags → prog fd (EBADF,
wrong type EINVAL) → attach-type check → cgroup fd (EBADF) → replace prog → the cgroup
rules of kernel/bpf/cgroup.c.
"""
from __future__ import annotations

import functools

from fakekernel import cgroup
from fakekernel.errors import Errno, KernelError
from fakekernel.maps import sock_map_progs
from fakekernel.net import net_namespace, tcx
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BPF_F_LINK, AttachFlags, AttachType, BpfCmd, ProgType, QueryFlags

__all__ = ["bpf_prog_attach", "bpf_prog_detach", "bpf_prog_query", "attach_type_to_prog_type",
           "bpf_prog_attach_check_attach_type", "bpf_prog_get_type"]

# attach_type_to_prog_type()
_ATTACH_PROG_TYPE = {
    AttachType.CGROUP_INET_INGRESS: ProgType.CGROUP_SKB,
    AttachType.CGROUP_INET_EGRESS: ProgType.CGROUP_SKB,
    **dict.fromkeys((AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET_SOCK_RELEASE,
                     AttachType.CGROUP_INET4_POST_BIND, AttachType.CGROUP_INET6_POST_BIND),
                    ProgType.CGROUP_SOCK),
    **dict.fromkeys((AttachType.CGROUP_INET4_BIND, AttachType.CGROUP_INET6_BIND,
                     AttachType.CGROUP_INET4_CONNECT, AttachType.CGROUP_INET6_CONNECT,
                     AttachType.CGROUP_UNIX_CONNECT, AttachType.CGROUP_INET4_GETPEERNAME,
                     AttachType.CGROUP_INET6_GETPEERNAME, AttachType.CGROUP_UNIX_GETPEERNAME,
                     AttachType.CGROUP_INET4_GETSOCKNAME, AttachType.CGROUP_INET6_GETSOCKNAME,
                     AttachType.CGROUP_UNIX_GETSOCKNAME, AttachType.CGROUP_UDP4_SENDMSG,
                     AttachType.CGROUP_UDP6_SENDMSG, AttachType.CGROUP_UNIX_SENDMSG,
                     AttachType.CGROUP_UDP4_RECVMSG, AttachType.CGROUP_UDP6_RECVMSG,
                     AttachType.CGROUP_UNIX_RECVMSG), ProgType.CGROUP_SOCK_ADDR),
    AttachType.CGROUP_SOCK_OPS: ProgType.SOCK_OPS,
    AttachType.CGROUP_DEVICE: ProgType.CGROUP_DEVICE,
    AttachType.SK_MSG_VERDICT: ProgType.SK_MSG,
    AttachType.SK_SKB_STREAM_PARSER: ProgType.SK_SKB,
    AttachType.SK_SKB_STREAM_VERDICT: ProgType.SK_SKB,
    AttachType.SK_SKB_VERDICT: ProgType.SK_SKB,
    AttachType.LIRC_MODE2: ProgType.LIRC_MODE2,
    AttachType.FLOW_DISSECTOR: ProgType.FLOW_DISSECTOR,
    AttachType.CGROUP_SYSCTL: ProgType.CGROUP_SYSCTL,
    AttachType.CGROUP_GETSOCKOPT: ProgType.CGROUP_SOCKOPT,
    AttachType.CGROUP_SETSOCKOPT: ProgType.CGROUP_SOCKOPT,
    **dict.fromkeys((AttachType.TRACE_ITER, AttachType.TRACE_RAW_TP, AttachType.TRACE_FENTRY,
                     AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN), ProgType.TRACING),
    AttachType.LSM_MAC: ProgType.LSM,
    AttachType.SK_LOOKUP: ProgType.SK_LOOKUP,
    AttachType.XDP: ProgType.XDP,
    AttachType.LSM_CGROUP: ProgType.LSM,
    **dict.fromkeys((AttachType.TCX_INGRESS, AttachType.TCX_EGRESS, AttachType.NETKIT_PRIMARY,
                     AttachType.NETKIT_PEER), ProgType.SCHED_CLS),
}

_CGROUP_PROG_TYPES = frozenset({ProgType.CGROUP_DEVICE, ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK,
                                ProgType.CGROUP_SOCK_ADDR, ProgType.CGROUP_SOCKOPT,
                                ProgType.CGROUP_SYSCTL, ProgType.SOCK_OPS})
_MPROG_TYPES = frozenset({ProgType.SCHED_CLS})          # bpf_mprog_supported()
_SOCK_MAP_PROG_TYPES = frozenset({ProgType.SK_SKB, ProgType.SK_MSG})   # sock_map_get_from_fd()

_ATTACH_MASK_BASE = (AttachFlags.ALLOW_OVERRIDE | AttachFlags.ALLOW_MULTI | AttachFlags.REPLACE
                     | AttachFlags.PREORDER)
_ATTACH_MASK_MPROG = (AttachFlags.REPLACE | AttachFlags.BEFORE | AttachFlags.AFTER
                      | AttachFlags.ID | BPF_F_LINK)

_KPROBE_LINK_TYPES = frozenset({AttachType.PERF_EVENT, AttachType.TRACE_KPROBE_MULTI,
                                AttachType.TRACE_KPROBE_SESSION, AttachType.TRACE_UPROBE_MULTI})
_EXACT_ATTACH_TYPES = frozenset({ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR,
                                 ProgType.CGROUP_SOCKOPT, ProgType.SK_LOOKUP})


def attach_type_to_prog_type(attach_type: int) -> int:
    return _ATTACH_PROG_TYPE.get(attach_type, ProgType.UNSPEC)


def _is_cgroup_prog_type(ptype: int, atype: int, check_atype: bool) -> bool:
    """is_cgroup_prog_type()."""
    if ptype in _CGROUP_PROG_TYPES:
        return True
    if ptype == ProgType.LSM:
        return atype == AttachType.LSM_CGROUP if check_atype else True
    return False


def bpf_prog_attach_check_attach_type(task, prog, attach_type: int) -> None:
    """bpf_prog_attach_check_attach_type(): EINVAL (EPERM for cgroup skb without NET_ADMIN)."""
    ptype, eat = prog.type, prog.expected_attach_type
    if ptype in _EXACT_ATTACH_TYPES:
        ok = attach_type == eat
    elif ptype == ProgType.CGROUP_SKB:
        if not task.net_admin_capable():
            raise KernelError(Errno.EPERM, "cgroup skb attach needs CAP_NET_ADMIN")
        ok = attach_type_to_prog_type(attach_type) == ptype and not (
            getattr(prog, "enforce_expected_attach_type", False) and eat != attach_type)
    elif ptype == ProgType.EXT:
        ok = True
    elif ptype == ProgType.NETFILTER:
        ok = attach_type == AttachType.NETFILTER
    elif ptype in (ProgType.PERF_EVENT, ProgType.TRACEPOINT):
        ok = attach_type == AttachType.PERF_EVENT
    elif ptype == ProgType.KPROBE:
        multi = {AttachType.TRACE_KPROBE_MULTI, AttachType.TRACE_KPROBE_SESSION,
                 AttachType.TRACE_UPROBE_MULTI}
        ok = not (eat in multi and attach_type != eat) and attach_type in _KPROBE_LINK_TYPES
    elif ptype == ProgType.SCHED_CLS:
        ok = attach_type in (AttachType.TCX_INGRESS, AttachType.TCX_EGRESS,
                             AttachType.NETKIT_PRIMARY, AttachType.NETKIT_PEER)
    else:
        want = attach_type_to_prog_type(attach_type)
        ok = want != ProgType.UNSPEC and want == ptype
    if not ok:
        raise KernelError(Errno.EINVAL, f"prog type {ptype} cannot attach as {attach_type}")


def bpf_prog_get_type(task, fd: int, ptype: int):
    """bpf_prog_get_type(): EBADF / EINVAL (not a prog, or of another type); no reference."""
    prog = fdget.bpf_prog_get(task, fd)
    if prog.type != ptype:
        raise KernelError(Errno.EINVAL, f"fd {fd} is a prog of type {prog.type}, not {ptype}")
    return prog


@bpf_command(BpfCmd.PROG_ATTACH, last_field="expected_revision")
def bpf_prog_attach(kern, task, attr, ctx) -> int:
    """bpf_prog_attach()."""
    ptype = attach_type_to_prog_type(attr.attach_type)
    if ptype == ProgType.UNSPEC:
        raise KernelError(Errno.EINVAL, f"unknown attach type {attr.attach_type}")
    flags = attr.attach_flags
    if ptype in _MPROG_TYPES:
        if flags & ~int(_ATTACH_MASK_MPROG):
            raise KernelError(Errno.EINVAL, "unknown attach flags")
    elif _is_cgroup_prog_type(ptype, 0, False):
        if flags & ~int(_ATTACH_MASK_BASE | _ATTACH_MASK_MPROG):
            raise KernelError(Errno.EINVAL, "unknown attach flags")
    else:
        if flags & ~int(_ATTACH_MASK_BASE):
            raise KernelError(Errno.EINVAL, "unknown attach flags")
        if attr.relative_fd or attr.expected_revision:
            raise KernelError(Errno.EINVAL, "relative_fd/expected_revision for a non-mprog hook")
    prog = bpf_prog_get_type(task, attr.attach_bpf_fd, ptype)
    try:
        bpf_prog_attach_check_attach_type(task, prog, attr.attach_type)
    except KernelError as e:
        raise KernelError(Errno.EINVAL, e.detail) from None
    if ptype == ProgType.SCHED_CLS and attr.attach_type in tcx.TCX_ATTACH_TYPES:
        return tcx.tcx_prog_attach(kern, task, attr, prog)
    if ptype in _SOCK_MAP_PROG_TYPES:
        return sock_map_progs.sock_map_get_from_fd(task, attr, prog)
    if ptype == ProgType.FLOW_DISSECTOR:
        return net_namespace.netns_bpf_prog_attach(kern, task, attr, prog)
    if not _is_cgroup_prog_type(ptype, prog.expected_attach_type, True):
        raise KernelError(Errno.EINVAL, f"no attach target for prog type {ptype} in this kernel")
    # cgroup_bpf_prog_attach()
    cgrp = cgroup.cgroup_get_from_fd(task, attr.target_fd)
    replace_prog = None
    if flags & AttachFlags.ALLOW_MULTI and flags & AttachFlags.REPLACE:
        replace_prog = bpf_prog_get_type(task, attr.replace_bpf_fd, ptype)
    cgroup.cgroup_bpf_attach(kern, task, cgrp, prog, replace_prog, None, attr.attach_type, flags,
                             attr.relative_fd, attr.expected_revision)
    return 0


@bpf_command(BpfCmd.PROG_DETACH, last_field="expected_revision")
def bpf_prog_detach(kern, task, attr, ctx) -> int:
    """bpf_prog_detach()."""
    ptype = attach_type_to_prog_type(attr.attach_type)
    if ptype in _MPROG_TYPES:
        if attr.attach_flags & ~int(_ATTACH_MASK_MPROG):
            raise KernelError(Errno.EINVAL, "unknown attach flags")
        prog = bpf_prog_get_type(task, attr.attach_bpf_fd, ptype) if attr.attach_bpf_fd else None
        if attr.attach_type in tcx.TCX_ATTACH_TYPES:
            return tcx.tcx_prog_detach(kern, task, attr, prog)
        raise KernelError(Errno.EINVAL, "netkit is not modelled")
    if _is_cgroup_prog_type(ptype, 0, False):
        if attr.attach_flags or attr.relative_fd:
            raise KernelError(Errno.EINVAL, "attach_flags/relative_fd on a cgroup detach")
    elif attr.attach_flags or attr.relative_fd or attr.expected_revision:
        raise KernelError(Errno.EINVAL, "attach_flags/relative_fd/expected_revision given")
    if ptype == ProgType.FLOW_DISSECTOR:
        return net_namespace.netns_bpf_prog_detach(kern, task, attr, ptype)
    if ptype in _SOCK_MAP_PROG_TYPES:
        return sock_map_progs.sock_map_prog_detach(task, attr, ptype)
    if not _is_cgroup_prog_type(ptype, 0, False):
        raise KernelError(Errno.EINVAL, f"no detach target for attach type {attr.attach_type}")
    # cgroup_bpf_prog_detach(): a bad prog fd is not an error (legacy detach)
    cgrp = cgroup.cgroup_get_from_fd(task, attr.target_fd)
    try:
        prog = bpf_prog_get_type(task, attr.attach_bpf_fd, ptype)
    except KernelError:
        prog = None
    cgroup.cgroup_bpf_detach(cgrp, prog, None, attr.attach_type, attr.expected_revision)
    return 0


def _net_capable_first(handler):
    """bpf_prog_query() checks bpf_net_capable() before CHECK_ATTR."""
    @functools.wraps(handler)
    def wrapper(kern, task, attr, ctx):
        if not task.net_admin_capable():
            raise KernelError(Errno.EPERM, "PROG_QUERY needs CAP_NET_ADMIN")
        return handler(kern, task, attr, ctx)
    return wrapper


@_net_capable_first
@bpf_command(BpfCmd.PROG_QUERY, last_field="query.revision")
def bpf_prog_query(kern, task, attr, ctx) -> int:
    """bpf_prog_query()."""
    if attr.query.query_flags & ~int(QueryFlags.QUERY_EFFECTIVE):
        raise KernelError(Errno.EINVAL, "unknown query_flags")
    if attr.query.attach_type in net_namespace.NETNS_ATTACH_TYPES:
        return net_namespace.netns_bpf_prog_query(kern, task, attr, ctx)
    if attr.query.attach_type in tcx.TCX_ATTACH_TYPES:
        return tcx.tcx_prog_query(kern, task, attr, ctx)
    if attr.query.attach_type in sock_map_progs.SOCK_MAP_ATTACH_TYPES:
        return sock_map_progs.sock_map_bpf_prog_query(task, attr, ctx)
    if attr.query.attach_type not in cgroup.CGROUP_ATTACH_TYPES | {AttachType.LSM_CGROUP}:
        raise KernelError(Errno.EINVAL, f"no query target for attach type {attr.query.attach_type}")
    cgrp = cgroup.cgroup_get_from_fd(task, attr.query.target_fd)
    return cgroup.cgroup_bpf_query(cgrp, attr, ctx)
