"""perf_event_open(2) and perf ioctl(2) under the runner — kernel/events/core.c seen from a target.

The supervisor traps every perf_event_open and the ioctls whose request has the perf type
byte ('$', see filter.py).  An event is emulated when the simulated kernel owns it
(`perf_event_owned`: BPF output software events, the catalog's tracepoints, the kprobe and
uprobe PMUs — everything BPF programs attach to or write into); other events (cpu-clock,
hardware counters, tracepoints outside the catalog) go to the real kernel.  An emulated
event becomes a target fd like any bpf object (remote_files.py), and ioctls on such fds are
answered here; ioctls on other fds continue to the real kernel.

A BPF output event's fd is a re-open of the event's own memfd (PerfEvent.user_memfd), so the
target mmaps the ring natively; the buffer's size is learnt from the opener's mapping
(/proc/<tgid>/maps) the first time a program writes to the event.  epoll on the fd goes
through the epoll bridge (epoll.py: PerfEvent has map_poll and a waitq).

Tracepoints fire for what the supervisor sees anyway: each trapped openat(2) fires
syscalls:sys_enter_openat with the target's arguments before it is answered.
"""
from __future__ import annotations

import functools
import os

from fakekernel.errors import KernelError
from fakekernel.perf.core import PERF_EVENT_FILE_KIND, perf_event_owned, sys_perf_event_open
from fakekernel.perf.ioctl import sys_ioctl
from fakekernel.runner.trace import format_ret
from uapi.ffi import ffi
from uapi.seccomp import NR_X86_64

__all__ = ["sys_perf_event_open_trap", "sys_ioctl_trap", "fire_sys_enter"]

SYSCALL_NRS = {"sys_enter_openat": NR_X86_64.openat}

_ATTR = "struct perf_event_attr"
_HEAD = ffi.offsetof(_ATTR, "config") + ffi.sizeof("__u64")       # type, size, config


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def sys_perf_event_open_trap(sup, task, n, cont):
    """SYSCALL_DEFINE5(perf_event_open): emulated events get a target fd, others `cont`."""
    uattr, pid, cpu = n.data.args[0], _s32(n.data.args[1]), _s32(n.data.args[2])
    group_fd, flags = _s32(n.data.args[3]), n.data.args[4]
    try:
        head = task.mm.copy_from_user(uattr, _HEAD)
    except KernelError:
        return cont                                  # the real kernel's EFAULT
    ptype = int.from_bytes(head[0:4], "little")
    config = int.from_bytes(head[8:16], "little")
    if not perf_event_owned(sup.kern, ptype, config):
        return cont
    try:
        ret = sys_perf_event_open(sup.kern, task, uattr, pid, cpu, group_fd, flags)
    except KernelError as e:
        ret = -e.errno
    if ret >= 0:
        f = task.files.lookup(ret)
        event = f.private_data if f is not None and f.kind == PERF_EVENT_FILE_KIND else None
        if event is not None and event.memfd is not None:
            st = os.fstat(event.memfd)
            event.find_user_mapping = functools.partial(_user_mapping, task.tgid,
                                                        (st.st_dev, st.st_ino))
    sup._trace(task.pid, f"perf_event_open({{type={ptype}, config={config:#x}}}, {pid}, {cpu}, "
                         f"{group_fd}, {flags:#x}) = {format_ret(ret)}")
    return ret


def _user_mapping(tgid: int, key: tuple[int, int]):
    """(length, writable) of process `tgid`'s mapping of inode `key` at offset 0, or None."""
    dev, ino = key
    want_dev = f"{os.major(dev):02x}:{os.minor(dev):02x}".encode()
    try:
        with open(f"/proc/{tgid}/maps", "rb") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 5 or parts[4] != str(ino).encode() or parts[3] != want_dev:
                    continue
                if int(parts[2], 16):
                    continue
                start, end = (int(x, 16) for x in parts[0].split(b"-"))
                return end - start, parts[1][1:2] == b"w"
    except OSError:
        pass
    return None


def fire_sys_enter(kern, task, event: str, args) -> int:
    """The syscalls:<event> tracepoint for a syscall the supervisor traps anyway (openat):
    programs attached to it run with the target's arguments (perf_syscall_enter())."""
    events = kern.world.trace.events
    ev = events.lookup("syscalls", event)
    if ev is None or ev.id not in events.prog_array:
        return 0
    nr = SYSCALL_NRS[event]
    values = {"__syscall_nr": nr}
    for field, arg in zip(ev.fields[1:], args):
        values[field.name] = arg
    return events.fire("syscalls", event, task=task, **values)


def sys_ioctl_trap(sup, task, n, cont):
    """SYSCALL_DEFINE3(ioctl) with a perf request: answered for emulated perf fds."""
    fd = _s32(n.data.args[0])
    f = task.files.lookup(fd)
    if f is None or f.kind != PERF_EVENT_FILE_KIND:
        return cont
    request, arg = n.data.args[1] & 0xFFFFFFFF, n.data.args[2]
    try:
        ret = sys_ioctl(sup.kern, task, fd, request, arg)
    except KernelError as e:
        ret = -e.errno
    sup._trace(task.pid, f"ioctl({fd}, {request:#x}, {arg:#x}) = {format_ret(ret)}")
    return ret
