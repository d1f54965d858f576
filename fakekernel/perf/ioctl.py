"""ioctl(2) on perf event fds — kernel/events/core.c (perf_ioctl, _perf_ioctl and the functions
it calls).

`sys_ioctl` answers ioctl() on an emulated fd the way fs/ioctl.c does: EBADF for a closed fd,
ENOTTY for files without an ioctl op (bpf objects), and perf events dispatch on the request:
ENABLE/DISABLE/RESET/REFRESH (PERF_IOC_FLAG_GROUP accepted), PERIOD, ID, SET_OUTPUT,
SET_FILTER (kept, not applied), SET_BPF, PAUSE_OUTPUT, QUERY_BPF, MODIFY_ATTRIBUTES
(breakpoints only: EOPNOTSUPP elsewhere); anything else is ENOTTY.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.perf.bpf_event import perf_event_query_prog_array, perf_event_set_bpf_prog
from fakekernel.perf.core import PERF_EVENT_FILE_KIND, perf_copy_attr, perf_fget
from fakekernel.perf.pmu import PATH_MAX, perf_event_is_tracing
from uapi.ffi import ffi
from uapi.perf_event import PerfEventIoc, PerfType

__all__ = ["sys_ioctl", "perf_ioctl"]

_U64 = ffi.sizeof("__u64")
_BIT63 = 1 << 63
_DEFAULT_SAMPLE_RATE = 100000


def sys_ioctl(kern, task, fd: int, request: int, arg: int) -> int:
    """SYSCALL_DEFINE3(ioctl) on an emulated fd: 0/value or KernelError."""
    f = task.files.fdget(fd)
    if f.kind != PERF_EVENT_FILE_KIND:
        raise KernelError(Errno.ENOTTY, "file has no ioctl")
    return perf_ioctl(kern, task, f.private_data, request & 0xFFFFFFFF, arg)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _period(kern, event, value: int) -> int:
    """_perf_event_period()."""
    if not event.is_sampling:
        raise KernelError(Errno.EINVAL, "not a sampling event")
    if not value:
        raise KernelError(Errno.EINVAL, "period 0")
    if event.attr.freq:
        if value > kern.sysctls.get("kernel.perf_event_max_sample_rate", _DEFAULT_SAMPLE_RATE):
            raise KernelError(Errno.EINVAL, "frequency above the max sample rate")
    elif value & _BIT63:
        raise KernelError(Errno.EINVAL, "period bit 63 set")
    event.attr.sample_period = value
    return 0


def _set_output(task, event, arg: int) -> int:
    """perf_event_set_output()."""
    if _s32(arg) == -1:
        if event.rb is not None:
            raise KernelError(Errno.EINVAL, "event has its own mapping")
        event.output = None
        return 0
    out = perf_fget(task, _s32(arg)).private_data
    if out is event:
        raise KernelError(Errno.EINVAL, "output to itself")
    if out.cpu != event.cpu:
        raise KernelError(Errno.EINVAL, "cross-cpu output")
    if out.cpu == -1 and out.task is not event.task:
        raise KernelError(Errno.EINVAL, "output to another task's event")
    if event.rb is not None:
        raise KernelError(Errno.EINVAL, "event has its own mapping")
    event.output = out
    return 0


def perf_ioctl(kern, task, event, cmd: int, arg: int) -> int:
    """_perf_ioctl()."""
    if cmd in (PerfEventIoc.ENABLE, PerfEventIoc.DISABLE, PerfEventIoc.RESET):
        if cmd != PerfEventIoc.RESET:
            event.enabled = cmd == PerfEventIoc.ENABLE
        else:
            event.count = 0
        return 0
    if cmd == PerfEventIoc.REFRESH:
        if event.attr.inherit or not event.is_sampling:
            raise KernelError(Errno.EINVAL, "REFRESH needs a non-inherited sampling event")
        event.enabled = True
        return 0
    if cmd == PerfEventIoc.PERIOD:
        value = int.from_bytes(task.mm.copy_from_user(arg, _U64), "little")
        return _period(kern, event, value)
    if cmd == PerfEventIoc.ID:
        task.mm.copy_to_user(arg, event.id.to_bytes(_U64, "little"))
        return 0
    if cmd == PerfEventIoc.SET_OUTPUT:
        return _set_output(task, event, arg)
    if cmd == PerfEventIoc.SET_FILTER:
        if not perf_event_is_tracing(event):
            raise KernelError(Errno.EINVAL, "filters are for tracing events")
        event.filter = task.mm.strncpy_from_user(arg, PATH_MAX)
        return 0
    if cmd == PerfEventIoc.SET_BPF:
        from fakekernel.syscall.fdget import bpf_prog_get
        prog = bpf_prog_get(task, _s32(arg))
        perf_event_set_bpf_prog(event, prog, 0)
        prog.get()                       # bpf_prog_get()'s reference now belongs to the event
        return 0
    if cmd == PerfEventIoc.PAUSE_OUTPUT:
        rb = event.rb
        if rb is None or not rb.nr_pages:
            raise KernelError(Errno.EINVAL, "no ring buffer")
        rb.paused = bool(arg)
        return 0
    if cmd == PerfEventIoc.QUERY_BPF:
        perf_event_query_prog_array(event, task, arg)
        return 0
    if cmd == PerfEventIoc.MODIFY_ATTRIBUTES:
        new = perf_copy_attr(kern, task, arg)
        if event.attr.type != new.type:
            raise KernelError(Errno.EINVAL, "MODIFY_ATTRIBUTES cannot change the type")
        if new.type != PerfType.BREAKPOINT:
            # 6.12 source answers EOPNOTSUPP here; 6.18 answers EINVAL (measured)
            raise KernelError(Errno.EINVAL, "only breakpoints can be modified")
        return 0
    raise KernelError(Errno.ENOTTY, f"unknown perf ioctl {cmd:#x}")
