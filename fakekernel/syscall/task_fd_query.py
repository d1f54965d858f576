"""BPF_TASK_FD_QUERY — kernel/bpf/syscall.c: bpf_task_fd_query(), bpf_task_fd_query_copy(),
with kernel/trace/bpf_trace.c bpf_get_perf_event_info() for perf event fds.

Given another task's fd, report the program behind it and where it is attached: a raw
tracepoint link (BPF_FD_TYPE_RAW_TRACEPOINT and the tracepoint's name) or a perf event
carrying a program (tracepoint: BPF_FD_TYPE_TRACEPOINT; kprobe/uprobe PMU events: the
probe's symbol or path and offset).  Anything else is ENOTSUPP.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.pid import find_task_by_pid
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.fdget import LINK_FILE_KIND
from uapi.bpf import BpfCmd, ProgType, TaskFdType
from uapi.capability import Cap

__all__ = ["bpf_task_fd_query", "bpf_get_perf_event_info"]

_PERF_EVENT_FILE_KIND = "perf_event"


def _copy(kern, task, attr, ctx, prog_id: int, fd_type: int, name: bytes | None,
          probe_offset: int, probe_addr: int) -> int:
    """bpf_task_fd_query_copy(): buf_len = strlen(name); the name (NUL-terminated, cut with
    ENOSPC when buf_len is too small); then prog_id, fd_type, probe_offset, probe_addr."""
    q = attr.task_fd_query
    n = len(name) if name else 0
    ctx.put_attr_field("task_fd_query.buf_len", n)
    err = 0
    if q.buf_len and q.buf:
        if not n:
            task.mm.copy_to_user(q.buf, b"\0")
        elif q.buf_len >= n + 1:
            task.mm.copy_to_user(q.buf, name + b"\0")
        else:
            err = Errno.ENOSPC
            task.mm.copy_to_user(q.buf, name[:q.buf_len - 1] + b"\0")
    ctx.put_attr_field("task_fd_query.prog_id", prog_id)
    ctx.put_attr_field("task_fd_query.fd_type", fd_type)
    ctx.put_attr_field("task_fd_query.probe_offset", probe_offset)
    ctx.put_attr_field("task_fd_query.probe_addr", probe_addr)
    if err:
        raise KernelError(err, "buf too short for the name")
    return 0


def bpf_get_perf_event_info(kern, event) -> tuple[int, int, bytes | None, int, int]:
    """bpf_get_perf_event_info(): (prog_id, fd_type, name, probe_offset, probe_addr)."""
    prog = event.prog
    if prog is None:
        raise KernelError(Errno.ENOENT, "no program on this perf event")
    if prog.type == ProgType.PERF_EVENT:
        raise KernelError(Errno.EOPNOTSUPP, "perf_event programs are not reported")
    tp = event.tp_event
    if tp is not None:
        name = tp.name.encode()
        return prog.aux.id, TaskFdType.TRACEPOINT, name, 0, 0
    probe = event.probe
    if probe is None:
        raise KernelError(Errno.EOPNOTSUPP, "not a trace event")
    kind, where, offset, retprobe = probe[:4]
    if kind == "kprobe":
        # bpf_get_kprobe_info(): the symbol, its offset and (kallsyms_show_value) the address
        fd_type = TaskFdType.KRETPROBE if retprobe else TaskFdType.KPROBE
        f = kern.world.trace.kallsyms.lookup_name(where)
        return prog.aux.id, fd_type, where.encode(), offset, (f.addr + offset) if f else 0
    # bpf_get_uprobe_info(): the path and offset
    fd_type = TaskFdType.URETPROBE if retprobe else TaskFdType.UPROBE
    return prog.aux.id, fd_type, where.encode(), offset, 0


def _raw_tp_name(link) -> bytes | None:
    """The tracepoint of a bpf_raw_tp_link (RAW_TRACEPOINT programs, or tp_btf ones)."""
    btp = getattr(link, "btp", None)
    if btp is None:
        return None
    return btp.name.encode() if isinstance(btp.name, str) else btp.name


@bpf_command(BpfCmd.TASK_FD_QUERY, last_field="task_fd_query.probe_addr")
def bpf_task_fd_query(kern, task, attr, ctx) -> int:
    """bpf_task_fd_query(): CAP_SYS_ADMIN, flags 0, the task (ENOENT), its fd (EBADF)."""
    q = attr.task_fd_query
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "TASK_FD_QUERY needs CAP_SYS_ADMIN")
    if q.flags:
        raise KernelError(Errno.EINVAL, "task_fd_query.flags must be 0")
    target = find_task_by_pid(kern, q.pid) if q.pid > 0 else None
    if target is None:
        raise KernelError(Errno.ENOENT, f"no task {q.pid}")
    file = target.files.lookup(q.fd)
    if file is None:
        raise KernelError(Errno.EBADF, f"task {q.pid} has no fd {q.fd}")
    if file.kind == LINK_FILE_KIND:
        link = file.private_data
        name = _raw_tp_name(link)
        if name is None:
            raise KernelError(Errno.ENOTSUPP, "not a raw tracepoint link")
        return _copy(kern, task, attr, ctx, link.prog.aux.id, TaskFdType.RAW_TRACEPOINT, name, 0, 0)
    if file.kind == _PERF_EVENT_FILE_KIND:
        info = bpf_get_perf_event_info(kern, file.private_data)
        return _copy(kern, task, attr, ctx, *info)
    raise KernelError(Errno.ENOTSUPP, "neither a raw tracepoint link nor a perf event")
