"""perf events — kernel/events/core.c (perf_event_open(2), perf_copy_attr, perf_event_alloc,
perf_release, perf_mmap dispatch).

A perf event is a `PerfEvent` behind a file of kind "perf_event" (anon inode
"[perf_event]").  What exists: software events (PERF_COUNT_SW_BPF_OUTPUT — the target of
bpf_perf_event_output — and the other software counters, which count nothing here),
tracepoint events (ids from `fakekernel.trace.events`), and kprobe/uprobe PMU events.
`perf_event_open` checks in the syscall's order: flags, the attr copy (size rules, reserved
bits, sample/read formats), privileges, period, cgroup mode, the fd, group_fd, pid, then
perf_event_alloc (cpu) and the PMU's event_init.  Counting (read(2) of the fd), groups
beyond the group_fd check, inherit, cgroup events, PERF_FLAG_FD_OUTPUT and the AUX area are
not modelled.  Under the runner a BPF output event's buffer lives in the event's own memfd
(`user_memfd`), mapped by the target natively and adopted on first output.
"""
from __future__ import annotations

import os

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDWR, File
from fakekernel.perf.pmu import PMUS
from fakekernel.wait import EPOLLIN, EPOLLRDNORM, WaitQueue
from uapi.capability import Cap
from uapi.ffi import ffi
from uapi.perf_event import (PERF_ATTR_SIZE, PERF_ATTR_SIZE_VER0, PERF_FORMAT_MAX,
                             PERF_SAMPLE_BRANCH_HV, PERF_SAMPLE_BRANCH_KERNEL,
                             PERF_SAMPLE_BRANCH_MAX, PERF_SAMPLE_BRANCH_PLM_ALL,
                             PERF_SAMPLE_BRANCH_USER, PERF_SAMPLE_MAX, PerfFlag, PerfSample,
                             PerfSwId, PerfType)

PAGE_SIZE = 4096                        # x86_64
MAX_USER_DATA_PAGES = 2048              # the largest buffer a user_memfd() mapping can have
EPOLLHUP = 0x010                        # include/uapi/linux/eventpoll.h

__all__ = ["PerfEvent", "PerfState", "PERF_EVENT_FILE_KIND", "perf_copy_attr", "perf_event_owned",
           "sys_perf_event_open", "perf_event_get", "perf_fget"]

PERF_EVENT_FILE_KIND = "perf_event"      # File.kind (anon_inode:[perf_event])
_ATTR = "struct perf_event_attr"
_OFF_SIZE = ffi.offsetof(_ATTR, "size")
_U32 = ffi.sizeof("__u32")
_BIT63 = 1 << 63
_DEFAULT_SAMPLE_RATE = 100000          # kernel.perf_event_max_sample_rate
_DEFAULT_MAX_STACK = 127               # kernel.perf_event_max_stack


@attrs.define(eq=False)
class PerfState:
    """The kernel's perf globals: the event id counter (perf_event_id)."""

    next_id: int = 1


def perf_state(kern) -> PerfState:
    if kern.perf is None:
        kern.perf = PerfState()
    return kern.perf


@attrs.define(eq=False)
class PerfEvent:
    """struct perf_event."""

    kern: object
    attr: object                          # cdata struct perf_event_attr (the kernel's copy)
    cpu: int
    task: object = None                   # the task it follows, or None (per-CPU event)
    id: int = 0
    enabled: bool = False
    count: int = 0                        # local64 count: the periods perf_event_overflow() sampled
    prog: object = None                   # event->prog (SET_BPF / perf link)
    bpf_cookie: int = 0
    rb: object = None                     # PerfBuffer while mapped
    output: "PerfEvent | None" = None     # PERF_EVENT_IOC_SET_OUTPUT target
    tp_event: object = None               # TraceEvent of a tracepoint event
    probe: tuple | None = None            # kprobe/uprobe description
    filter: bytes | None = None           # PERF_EVENT_IOC_SET_FILTER text (not applied)
    dead: bool = False
    waitq: WaitQueue = attrs.field(factory=WaitQueue)     # event->waitq: poll(2)ers
    poll_events: int = 0                  # rb->poll: set by a wakeup, taken by poll
    memfd: int | None = None              # user_memfd(): pages userspace maps directly
    # runner hook: () -> (length, writable) of the user's mapping of `memfd`, or None
    find_user_mapping: object = None

    @property
    def oncpu(self) -> int:
        """event->oncpu: the CPU it counts on now, -1 while off (disabled / task not running)."""
        if not self.enabled or self.dead:
            return -1
        if self.task is not None and self.task is not self.kern.current:
            return -1
        return self.kern.cpu if self.cpu == -1 else self.cpu

    @property
    def cookie(self) -> int:
        """bpf_get_attach_cookie() of a program run through this event (bpf_trace_run_ctx)."""
        return self.bpf_cookie

    @property
    def is_sampling(self) -> bool:
        return self.attr.sample_period != 0

    def ring_buffer(self):
        ev = self
        while ev.output is not None:
            ev = ev.output
        if ev.rb is None and ev.find_user_mapping is not None and ev.memfd is not None:
            ev._adopt_user_mapping()
        return ev.rb

    @property
    def wakeup_watermark(self) -> int:
        return self.attr.wakeup_watermark if self.attr.watermark else 0

    def user_memfd(self) -> int | None:
        """The memfd userspace maps a BPF output event's buffer from, when the event's fd is
        handed to another process (the runner): the control page at offset 0, then room
        for up to MAX_USER_DATA_PAGES data pages (sparse)."""
        if self.attr.type != PerfType.SOFTWARE or self.attr.config != PerfSwId.BPF_OUTPUT:
            return None
        if self.memfd is None:
            self.memfd = os.memfd_create("perf_event", os.MFD_CLOEXEC)
            os.ftruncate(self.memfd, (1 + MAX_USER_DATA_PAGES) * PAGE_SIZE)
        return self.memfd

    def _adopt_user_mapping(self) -> None:
        """perf_mmap() happened in another process (natively, on `memfd`): size the buffer
        from that mapping."""
        from fakekernel.perf.ring_buffer import PerfBuffer
        found = self.find_user_mapping()
        if found is None:
            return
        length, writable = found
        nr_pages = length // PAGE_SIZE - 1
        if nr_pages <= 0 or nr_pages & (nr_pages - 1) or nr_pages > MAX_USER_DATA_PAGES:
            return
        self.rb = PerfBuffer.alloc(nr_pages, overwrite=not writable, memfd=self.memfd,
                                   wakeup_watermark=self.wakeup_watermark)
        self.rb.mmap_count = 1              # the user's mapping; it never goes from here

    def perf_output_wakeup(self) -> None:
        """perf_output_wakeup(): poll readers see EPOLLIN."""
        self.poll_events = EPOLLIN | EPOLLRDNORM
        self.waitq.wake_up()

    def map_poll(self) -> int:
        """perf_poll(): the pending wakeup's events (taken), EPOLLHUP once the event is gone."""
        events, self.poll_events = self.poll_events, 0
        return events | (EPOLLHUP if self.dead else 0)

    def file_release(self, file) -> None:
        """perf_release() -> perf_event_release_kernel(): detach the program, stop."""
        from fakekernel.perf.bpf_event import perf_event_free_bpf_prog
        perf_event_free_bpf_prog(self)
        self.dead = True
        self.enabled = False
        if self.rb is not None:             # only an adopted user mapping outlives the file
            self.rb.free()
            self.rb = None
        if self.memfd is not None:
            os.close(self.memfd)
            self.memfd = None


def perf_event_owned(kern, attr_type: int, config: int) -> bool:
    """Is this an event the simulated kernel provides itself (rather than a counter of the
    machine it runs on)?  BPF output events, the catalog's tracepoints, kprobes, uprobes."""
    from fakekernel.perf.pmu import PMU_TYPE_KPROBE, PMU_TYPE_UPROBE
    if attr_type == PerfType.SOFTWARE:
        return config == PerfSwId.BPF_OUTPUT
    if attr_type == PerfType.TRACEPOINT:
        return config in kern.world.trace.events.by_id
    return attr_type in (PMU_TYPE_KPROBE, PMU_TYPE_UPROBE)


def perf_copy_attr(kern, task, uattr: int):
    """perf_copy_attr(): a zero-filled kernel copy, or KernelError (E2BIG writes the size)."""
    size = int.from_bytes(task.mm.copy_from_user(uattr + _OFF_SIZE, _U32), "little")
    if not size:
        size = PERF_ATTR_SIZE_VER0
    if size < PERF_ATTR_SIZE_VER0 or size > PAGE_SIZE:
        return _err_size(task, uattr)
    if size > PERF_ATTR_SIZE and not task.mm.check_zeroed_user(uattr + PERF_ATTR_SIZE,
                                                              size - PERF_ATTR_SIZE):
        return _err_size(task, uattr)
    n = min(size, PERF_ATTR_SIZE)
    raw = task.mm.copy_from_user(uattr, n) + bytes(PERF_ATTR_SIZE - n)
    attr = ffi.new(f"{_ATTR} *")
    ffi.memmove(attr, raw, PERF_ATTR_SIZE)
    attr.size = size
    if attr.__reserved_1 or attr.__reserved_2 or attr.__reserved_3:
        raise KernelError(Errno.EINVAL, "reserved bits set")
    if attr.sample_type & ~(PERF_SAMPLE_MAX - 1):
        raise KernelError(Errno.EINVAL, "unknown sample_type bits")
    if attr.read_format & ~(PERF_FORMAT_MAX - 1):
        raise KernelError(Errno.EINVAL, "unknown read_format bits")
    if attr.sample_type & PerfSample.BRANCH_STACK:
        mask = attr.branch_sample_type
        if mask & ~(PERF_SAMPLE_BRANCH_MAX - 1):
            raise KernelError(Errno.EINVAL, "unknown branch_sample_type bits")
        if not mask & ~PERF_SAMPLE_BRANCH_PLM_ALL:
            raise KernelError(Errno.EINVAL, "no branch type selected")
        if not mask & PERF_SAMPLE_BRANCH_PLM_ALL:       # propagate the privilege levels
            if not attr.exclude_kernel:
                mask |= PERF_SAMPLE_BRANCH_KERNEL
            if not attr.exclude_user:
                mask |= PERF_SAMPLE_BRANCH_USER
            if not attr.exclude_hv:
                mask |= PERF_SAMPLE_BRANCH_HV
            attr.branch_sample_type = mask
        if mask & (PERF_SAMPLE_BRANCH_KERNEL | PERF_SAMPLE_BRANCH_HV) and \
                kern.sysctls.get("kernel.perf_event_paranoid", 2) > 1 and \
                not task.perfmon_capable():
            raise KernelError(Errno.EACCES, "kernel branch sampling needs CAP_PERFMON")
    if attr.sample_type & PerfSample.STACK_USER:
        if attr.sample_stack_user >= 0xFFFF or attr.sample_stack_user % 8:
            raise KernelError(Errno.EINVAL, "bad sample_stack_user")
    if not attr.sample_max_stack:
        attr.sample_max_stack = kern.sysctls.get("kernel.perf_event_max_stack", _DEFAULT_MAX_STACK)
    if attr.sample_type & PerfSample.WEIGHT and attr.sample_type & PerfSample.WEIGHT_STRUCT:
        raise KernelError(Errno.EINVAL, "WEIGHT and WEIGHT_STRUCT together")
    if not attr.inherit and attr.inherit_thread:
        raise KernelError(Errno.EINVAL, "inherit_thread without inherit")
    if attr.remove_on_exec and attr.enable_on_exec:
        raise KernelError(Errno.EINVAL, "remove_on_exec with enable_on_exec")
    if attr.sigtrap and not attr.remove_on_exec:
        raise KernelError(Errno.EINVAL, "sigtrap without remove_on_exec")
    return attr


def _err_size(task, uattr: int):
    task.mm.copy_to_user(uattr + _OFF_SIZE, PERF_ATTR_SIZE.to_bytes(_U32, "little"))
    raise KernelError(Errno.E2BIG, "perf_event_attr size out of range")


def perf_fget(task, fd: int) -> File:
    """perf_fget_light(): EBADF unless `fd` is a perf event."""
    f = task.files.fdget(fd)
    if f.kind != PERF_EVENT_FILE_KIND:
        raise KernelError(Errno.EBADF, f"fd {fd} is not a perf event")
    return f


perf_event_get = perf_fget          # perf_event_get(): the same check, keeping the file


def _find_task(kern, task, pid: int):
    """find_lively_task_by_vpid()."""
    if pid == 0 or pid in (task.pid, task.tgid):
        return task
    for t in kern.tasks:
        if t.pid == pid:
            return t
    raise KernelError(Errno.ESRCH, f"no task {pid}")


def sys_perf_event_open(kern, task, uattr: int, pid: int, cpu: int, group_fd: int,
                        flags: int) -> int:
    """SYSCALL_DEFINE5(perf_event_open): the new fd."""
    if flags & ~int(PerfFlag.ALL):
        raise KernelError(Errno.EINVAL, "unknown perf_event_open flags")
    attr = perf_copy_attr(kern, task, uattr)
    paranoid = kern.sysctls.get("kernel.perf_event_paranoid", 2)
    if paranoid > 2 and not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EACCES, "perf_event_paranoid > 2")
    if not attr.exclude_kernel and paranoid > 1 and not task.perfmon_capable():
        raise KernelError(Errno.EACCES, "kernel events need CAP_PERFMON")
    if attr.namespaces and not task.perfmon_capable():
        raise KernelError(Errno.EACCES, "namespace events need CAP_PERFMON")
    if attr.freq:
        if attr.sample_freq > kern.sysctls.get("kernel.perf_event_max_sample_rate",
                                               _DEFAULT_SAMPLE_RATE):
            raise KernelError(Errno.EINVAL, "sample_freq above the max sample rate")
    elif attr.sample_period & _BIT63:
        raise KernelError(Errno.EINVAL, "sample_period bit 63 set")
    if flags & PerfFlag.PID_CGROUP:
        # cgroup events (pid = a cgroup fd) are not modelled past this check
        if pid == -1 or cpu == -1:
            raise KernelError(Errno.EINVAL, "cgroup mode needs a pid (cgroup fd) and a cpu")
        raise KernelError(Errno.EOPNOTSUPP, "cgroup perf events are not modelled")
    f_flags = O_RDWR | (O_CLOEXEC if flags & PerfFlag.FD_CLOEXEC else 0)
    if group_fd != -1:
        group = perf_fget(task, group_fd).private_data
        if group.dead:
            raise KernelError(Errno.ENODEV, "group leader has exited")
    target = _find_task(kern, task, pid) if pid != -1 else None
    # perf_event_alloc()
    if not 0 <= cpu < kern.nr_cpus and (target is None or cpu != -1):
        raise KernelError(Errno.EINVAL, f"cpu {cpu} is not a possible CPU")
    event = PerfEvent(kern=kern, attr=attr, cpu=cpu, task=target)
    init = PMUS.get(attr.type)
    if init is None:
        raise KernelError(Errno.ENOENT, f"no PMU of type {attr.type}")
    init(event, task)
    state = perf_state(kern)
    event.id, state.next_id = state.next_id, state.next_id + 1
    event.enabled = not attr.disabled
    return task.files.install(File(kind=PERF_EVENT_FILE_KIND, private_data=event,
                                   f_flags=f_flags))
