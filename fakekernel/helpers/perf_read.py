"""Reading perf counters from BPF — kernel/trace/bpf_trace.c (bpf_perf_event_read,
bpf_perf_event_read_value, get_map_perf_counter, bpf_get_branch_snapshot) over
kernel/events/core.c (perf_event_read_local).

The checks are the kernel's (flags, the array index, an empty slot, inherited events, an event
of another task or CPU, a pinned event not running here).  The simulated software counters
count nothing (see `fakekernel.perf.core`), so a readable counter reads 0 with 0 ns enabled
and running.  No CPU of the simulated machine records branches: bpf_get_branch_snapshot finds
no entries (-ENOENT), as on a machine without LBR (the 6.18 host measured: -ENOENT).
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from uapi.bpf import FuncId, PerfOutputFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32, u64

__all__ = ["PERF_READ_RUNTIME", "perf_event_read_local"]

_INDEX_MASK = int(PerfOutputFlags.INDEX_MASK)
_CURRENT_CPU = int(PerfOutputFlags.CURRENT_CPU)
_VALUE_SIZE = ffi.sizeof("struct bpf_perf_event_value")
_BRANCH_ENTRY = ffi.sizeof("struct perf_branch_entry")


def perf_event_read_local(env, event) -> tuple[int, int, int] | int:
    """(count, enabled, running) or -errno."""
    cpu = env.kernel.cpu
    if event.attr.inherit:
        return -Errno.EOPNOTSUPP
    if event.task is not None and event.task is not (getattr(env, "task", None) or env.kernel.current):
        return -Errno.EINVAL
    if event.task is None and event.cpu != cpu:
        return -Errno.EINVAL
    if event.attr.pinned and event.oncpu != cpu:
        return -Errno.EBUSY
    return 0, 0, 0


def _get_map_perf_counter(env, map_addr: int, flags: int):
    """get_map_perf_counter(): the event in the slot `flags` names, read locally."""
    array = env.mem.object_at(map_addr)
    if flags & ~_INDEX_MASK:
        return -Errno.EINVAL
    index = flags & _INDEX_MASK
    if index == _CURRENT_CPU:
        index = env.kernel.cpu
    if index >= array.max_entries:
        return -Errno.E2BIG
    ee = array.fd_array_elem(index)
    if ee is None:
        return -Errno.ENOENT
    return perf_event_read_local(env, ee.event)


def bpf_perf_event_read(env, r1, r2, r3, r4, r5) -> int:
    """bpf_perf_event_read(map, flags): the counter, or -errno (indistinguishable, as in Linux)."""
    res = _get_map_perf_counter(env, r1, r2)
    if isinstance(res, int):
        return neg_errno(-res)
    return u64(res[0])


def bpf_perf_event_read_value(env, r1, r2, r3, r4, r5) -> int:
    """bpf_perf_event_read_value(map, flags, buf, size): struct bpf_perf_event_value; buf
    cleared on error."""
    size = u32(r4)
    res = -Errno.EINVAL if size != _VALUE_SIZE else _get_map_perf_counter(env, r1, r2)
    if isinstance(res, int):
        env.mem.write(r3, bytes(size))
        return neg_errno(-res)
    value = ffi.new("struct bpf_perf_event_value *", dict(zip(("counter", "enabled", "running"), res)))
    env.mem.write(r3, bytes(ffi.buffer(value)))
    return 0


def bpf_get_branch_snapshot(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_branch_snapshot(buf, size, flags): no branch records (whole entries asked or
    not), then -EINVAL for flags, -ENOENT for the empty snapshot."""
    entry_cnt = u32(r2) // _BRANCH_ENTRY
    entry_cnt = min(entry_cnt, 0)                   # perf_snapshot_branch_stack(): none recorded
    if r3:
        return neg_errno(Errno.EINVAL)
    if not entry_cnt:
        return neg_errno(Errno.ENOENT)
    return entry_cnt * _BRANCH_ENTRY


PERF_READ_RUNTIME = {
    FuncId.perf_event_read: bpf_perf_event_read,
    FuncId.perf_event_read_value: bpf_perf_event_read_value,
    FuncId.get_branch_snapshot: bpf_get_branch_snapshot,
}
