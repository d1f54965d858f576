"""bpf_timer — kernel/bpf/helpers.c: bpf_timer_init, bpf_timer_set_callback,
bpf_timer_start, bpf_timer_cancel, bpf_timer_cb, bpf_timer_cancel_and_free.

A timer lives in a map value's ``struct bpf_timer`` field; the simulator keys its state
(struct bpf_hrtimer) by that field's kernel address, per `Kernel`.  Nothing fires on its
own: `run_timers(kern)` runs, in expiry order, the callback of every started timer whose
expiry the kernel's clock (``Kernel.clock``; inject one to step time) has reached, the way
hrtimer softirqs would — callback_fn(map, key, value) in the program that set it, on its
own stack.  A callback may restart its timer (and so fire again on a later call) and may
not cancel it (-EDEADLK).  Deleting or overwriting the map element (or the last user
reference of the map going away) frees the timer, as bpf_obj_free_fields() does.
"""
from __future__ import annotations

import time
import weakref

import attrs

from fakekernel.helpers.base import neg_errno
from uapi.bpf import FuncId, TimerFlags
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["TIMER_RUNTIME", "run_timers", "bpf_timer_cancel_and_free", "timers_of", "BpfHrtimer"]

MAX_CLOCKS = 16                                  # include/uapi/linux/time.h
_CLOCKS = (time.CLOCK_REALTIME, time.CLOCK_MONOTONIC, time.CLOCK_BOOTTIME)
_START_FLAGS = TimerFlags.TIMER_ABS | TimerFlags.TIMER_CPU_PIN
_U32_SIZE = ffi.sizeof("__u32")
_MAX_FIRES_PER_RUN = 1 << 16                     # a callback that re-arms at 0 ns must not hang us


@attrs.define(eq=False)
class BpfHrtimer:
    """struct bpf_hrtimer: the map value it sits in, its clock, callback and expiry."""

    bpf_map: object
    value_addr: int
    clockid: int
    prog: object = None
    callback: int | None = None           # insn index of callback_fn
    expires: int | None = None            # ns on its clock while armed


@attrs.define(eq=False)
class _Timers:
    by_addr: dict = attrs.field(factory=dict)      # bpf_timer field address -> BpfHrtimer
    running: BpfHrtimer | None = None              # this CPU's hrtimer_running


_PER_KERNEL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def timers_of(kern) -> _Timers:
    t = _PER_KERNEL.get(kern)
    if t is None:
        t = _PER_KERNEL[kern] = _Timers()
    return t


def _now(kern, clockid: int) -> int:
    if clockid == time.CLOCK_BOOTTIME:
        return kern.ktime_get_boottime_ns()
    return kern.ktime_get_ns()


def _value_addr(bpf_map, timer_addr: int) -> int:
    """cb->value: the start of the map value holding the timer."""
    return timer_addr - bpf_map.record.timer_off


def bpf_timer_init(env, r1, r2, r3, r4, r5) -> int:
    """bpf_timer_init(timer, map, flags): flags is the clock id."""
    flags = r3
    clockid = flags & (MAX_CLOCKS - 1)
    if flags >= MAX_CLOCKS or clockid not in _CLOCKS:
        return neg_errno(Errno.EINVAL)
    timers = timers_of(env.kernel)
    if r1 in timers.by_addr:
        return neg_errno(Errno.EBUSY)
    bpf_map = env.mem.object_at(r2)
    if not bpf_map.usercnt:                 # maps with timers must be held by user space
        return neg_errno(Errno.EPERM)
    timers.by_addr[r1] = BpfHrtimer(bpf_map, _value_addr(bpf_map, r1), clockid)
    return 0


def bpf_timer_set_callback(env, r1, r2, r3, r4, r5) -> int:
    t = timers_of(env.kernel).by_addr.get(r1)
    if t is None:
        return neg_errno(Errno.EINVAL)
    if not t.bpf_map.usercnt:
        return neg_errno(Errno.EPERM)
    t.prog, t.callback = env.prog, r2
    return 0


def bpf_timer_start(env, r1, r2, r3, r4, r5) -> int:
    """bpf_timer_start(timer, nsecs, flags): relative to now unless BPF_F_TIMER_ABS."""
    if r3 & ~int(_START_FLAGS):
        return neg_errno(Errno.EINVAL)
    t = timers_of(env.kernel).by_addr.get(r1)
    if t is None or t.prog is None:
        return neg_errno(Errno.EINVAL)
    t.expires = r2 if r3 & TimerFlags.TIMER_ABS else _now(env.kernel, t.clockid) + r2
    return 0


def bpf_timer_cancel(env, r1, r2, r3, r4, r5) -> int:
    """bpf_timer_cancel(timer): 1 if it was armed, 0 if not; the callback is forgotten."""
    timers = timers_of(env.kernel)
    t = timers.by_addr.get(r1)
    if t is None:
        return neg_errno(Errno.EINVAL)
    if timers.running is t:
        return neg_errno(Errno.EDEADLK)
    t.prog, t.callback = None, None         # drop_prog_refcnt()
    was_armed, t.expires = t.expires is not None, None
    return int(was_armed)


def bpf_timer_cancel_and_free(kern, timer_addr: int) -> None:
    """The map value holding the timer is being freed or overwritten."""
    timers = _PER_KERNEL.get(kern)
    if timers is not None:
        timers.by_addr.pop(timer_addr, None)


def _key_for(kern, t: BpfHrtimer) -> tuple[bytes, object]:
    """bpf_timer_cb()'s key: the array index, or the hash element's key."""
    m = t.bpf_map
    base = getattr(m, "region", None)
    if base is not None and hasattr(m, "elem_size"):             # arrays: index from the offset
        idx = (t.value_addr - m.region.base) // m.elem_size
        return idx.to_bytes(_U32_SIZE, "little"), None
    for key, elem in m.elems.items():                             # hashes: the element's key
        region = elem.region
        if region is not None and region.base == t.value_addr:
            return key, elem
    return b"", None


def _fire(kern, t: BpfHrtimer) -> None:
    from fakekernel.bpf.core import _engine, prog_helpers     # bpf.core imports the helpers
    from fakekernel.interp.run import RunEnv
    key, _ = _key_for(kern, t)
    if not key:
        return
    key_buf = bytearray(key)
    region = kern.mem.map_region(key_buf, "stack", "timer_key", writable=False)
    timers = timers_of(kern)
    env = RunEnv(mem=kern.mem, prog=t.prog, kernel=kern)
    timers.running = t
    try:
        _engine(t.prog).run(kern.mem, kern.mem.map_object(t.bpf_map), helpers=prog_helpers(t.prog),
                            env=env, extra_args=(region.base, t.value_addr, 0, 0), entry=t.callback)
    finally:
        timers.running = None
        kern.mem.unmap(region)


def run_timers(kern) -> int:
    """Fire every armed timer whose expiry has passed (in expiry order); returns how many
    callbacks ran.  Timers of maps no user holds any more are dropped unfired."""
    timers = _PER_KERNEL.get(kern)
    fired = 0
    while timers is not None and fired < _MAX_FIRES_PER_RUN:
        due = [t for t in timers.by_addr.values()
               if t.expires is not None and t.expires <= _now(kern, t.clockid)]
        if not due:
            break
        t = min(due, key=lambda x: x.expires)
        t.expires = None
        if not t.bpf_map.usercnt or t.bpf_map.freed or t.prog is None:
            continue
        _fire(kern, t)
        fired += 1
    return fired


TIMER_RUNTIME = {
    FuncId.timer_init: bpf_timer_init,
    FuncId.timer_set_callback: bpf_timer_set_callback,
    FuncId.timer_start: bpf_timer_start,
    FuncId.timer_cancel: bpf_timer_cancel,
}
