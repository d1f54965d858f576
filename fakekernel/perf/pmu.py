"""PMUs the simulated kernel registers — kernel/events/core.c (perf_swevent, perf_cpu_clock,
perf_task_clock, perf_tracepoint, perf_kprobe, perf_uprobe: their event_init), kernel/trace/
trace_event_perf.c (perf_trace_init, perf_kprobe_init, perf_uprobe_init).

`PMUS` maps perf_event_attr.type to the PMU; an unknown type is ENOENT (perf_init_event).
The dynamic kprobe/uprobe PMU types are the numbers a 6.18 x86_64 machine gives them (the
oracle machine has uprobe = 8 and no kprobe PMU; kprobe registers just before uprobe).
Each ``event_init(event, task)`` raises KernelError with the kernel's errno or fills in
what the event needs (its trace event, its probe).
"""
from __future__ import annotations

import os
import stat

from fakekernel.errors import Errno, KernelError
from uapi.perf_event import PERF_PROBE_CONFIG_IS_RETPROBE, PerfSample, PerfSwId, PerfType

__all__ = ["PMUS", "PMU_TYPE_KPROBE", "PMU_TYPE_UPROBE", "PMU_NAMES", "perf_event_is_tracing",
           "PATH_MAX", "PMU_TYPE_CPU_CLOCK", "PMU_TYPE_TASK_CLOCK", "perf_event_pmu_type"]

PMU_TYPE_KPROBE = 7
PMU_TYPE_UPROBE = 8
#: the cpu_clock / task_clock PMUs' dynamic types on the oracle (6.18 moves a SOFTWARE cpu-clock or
#: task-clock event onto them, and event->attr.type then reads so, e.g. in perf link info)
PMU_TYPE_CPU_CLOCK = 6
PMU_TYPE_TASK_CLOCK = 7


def perf_event_pmu_type(event) -> int:
    """event->attr.type after perf_init_event(): the clock PMU's type for the software clocks."""
    if event.attr.type == PerfType.SOFTWARE:
        if event.attr.config == PerfSwId.CPU_CLOCK:
            return PMU_TYPE_CPU_CLOCK
        if event.attr.config == PerfSwId.TASK_CLOCK:
            return PMU_TYPE_TASK_CLOCK
    return event.attr.type
PATH_MAX = 4096
KSYM_NAME_LEN = 512                # include/linux/kallsyms.h
_UPROBE_REF_CTR_OFFSET_SHIFT = 32
_PATH_ERRNOS = {FileNotFoundError: Errno.ENOENT, NotADirectoryError: Errno.ENOTDIR,
                PermissionError: Errno.EACCES}


def _has_branch_stack(event) -> bool:
    return bool(event.attr.sample_type & PerfSample.BRANCH_STACK)


def _perfmon_or_eacces(task) -> None:
    if not task.perfmon_capable():
        raise KernelError(Errno.EACCES, "probe PMUs need CAP_PERFMON")


def perf_swevent_init(event, task) -> None:
    """perf_swevent_init() and, for the clocks, cpu_clock/task_clock_event_init()."""
    if _has_branch_stack(event):
        raise KernelError(Errno.EOPNOTSUPP, "no branch sampling for software events")
    if event.attr.config >= PerfSwId.MAX:
        raise KernelError(Errno.ENOENT, "unknown software event")


def perf_tp_event_init(event, task) -> None:
    """perf_tp_event_init() -> perf_trace_init() -> perf_trace_event_perm()."""
    if _has_branch_stack(event):
        raise KernelError(Errno.EOPNOTSUPP, "no branch sampling for tracepoints")
    tp = event.kern.world.trace.events.by_id.get(event.attr.config)
    if tp is None:
        raise KernelError(Errno.EINVAL, f"no trace event with id {event.attr.config}")
    if event.attr.sample_type & PerfSample.RAW and \
            event.kern.sysctls.get("kernel.perf_event_paranoid", 2) > -1 and \
            not task.perfmon_capable():
        raise KernelError(Errno.EPERM, "raw tracepoint samples need CAP_PERFMON")
    event.tp_event = tp


def perf_kprobe_event_init(event, task) -> None:
    """perf_kprobe_event_init() -> perf_kprobe_init() -> create_local_trace_kprobe()."""
    _perfmon_or_eacces(task)
    if _has_branch_stack(event):
        raise KernelError(Errno.EOPNOTSUPP, "no branch sampling for kprobes")
    attr = event.attr
    if not attr.kprobe_func and not attr.kprobe_addr:
        raise KernelError(Errno.EINVAL, "neither a function name nor an address")
    func = None
    if attr.kprobe_func:
        name = task.mm.strncpy_from_user(attr.kprobe_func, KSYM_NAME_LEN)
        if len(name) == KSYM_NAME_LEN:
            raise KernelError(Errno.E2BIG, "function name too long")
        func = name.decode(errors="replace") or None
    kallsyms = event.kern.world.trace.kallsyms
    if func is not None:
        f = kallsyms.lookup_name(func)
        offset = attr.probe_offset
        if f is None:
            raise KernelError(Errno.ENOENT, "no such kernel symbol")   # kprobe_lookup_name()
    else:
        # _kprobe_addr(): neither a name nor an address; an address that is not a function
        f, offset = kallsyms.by_addr.get(attr.kprobe_addr), 0
        if f is None:
            raise KernelError(Errno.EINVAL, "not a probeable kernel address")
    if not f.traceable:
        raise KernelError(Errno.EINVAL, "function is on the notrace list")
    event.probe = ("kprobe", f.name, offset, bool(attr.config & PERF_PROBE_CONFIG_IS_RETPROBE))


def perf_uprobe_event_init(event, task) -> None:
    """perf_uprobe_event_init() -> perf_uprobe_init() -> create_local_trace_uprobe()."""
    _perfmon_or_eacces(task)
    if _has_branch_stack(event):
        raise KernelError(Errno.EOPNOTSUPP, "no branch sampling for uprobes")
    attr = event.attr
    if not attr.uprobe_path:
        raise KernelError(Errno.EINVAL, "no uprobe path")
    raw = task.mm.strncpy_from_user(attr.uprobe_path, PATH_MAX)
    if len(raw) == PATH_MAX:
        raise KernelError(Errno.EINVAL, "uprobe path too long")
    if not raw:
        raise KernelError(Errno.EINVAL, "empty uprobe path")
    path = raw.decode(errors="surrogateescape")
    try:
        st = os.stat(path)                      # kern_path(LOOKUP_FOLLOW) on the host's tree
    except OSError as e:
        errno = _PATH_ERRNOS.get(type(e), Errno.EINVAL)
        raise KernelError(errno, "uprobe path lookup failed") from None
    if not stat.S_ISREG(st.st_mode):
        raise KernelError(Errno.EINVAL, "uprobe path is not a regular file")
    if attr.probe_offset > st.st_size:
        raise KernelError(Errno.EINVAL, "uprobe offset past the end of the file")
    event.probe = ("uprobe", path, attr.probe_offset,
                   bool(attr.config & PERF_PROBE_CONFIG_IS_RETPROBE),
                   attr.config >> _UPROBE_REF_CTR_OFFSET_SHIFT)


PMUS = {
    PerfType.SOFTWARE: perf_swevent_init,
    PerfType.TRACEPOINT: perf_tp_event_init,
    PMU_TYPE_KPROBE: perf_kprobe_event_init,
    PMU_TYPE_UPROBE: perf_uprobe_event_init,
}

#: /sys/bus/event_source/devices/<name>/type
PMU_NAMES = {"software": PerfType.SOFTWARE, "tracepoint": PerfType.TRACEPOINT,
             "kprobe": PMU_TYPE_KPROBE, "uprobe": PMU_TYPE_UPROBE}

_TRACING_PMUS = frozenset({PerfType.TRACEPOINT, PMU_TYPE_KPROBE, PMU_TYPE_UPROBE})


def perf_event_is_tracing(event) -> bool:
    """perf_event_is_tracing(): tracepoint, kprobe and uprobe events."""
    return event.attr.type in _TRACING_PMUS
