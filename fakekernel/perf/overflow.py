"""Sample overflows of software/hardware events — kernel/events/core.c (__perf_event_overflow,
bpf_overflow_handler) with kernel/trace/bpf_trace.c's struct bpf_perf_event_data_kern.

The simulated PMUs have no timer or counter of their own: `perf_event_overflow` is the world's
trigger for "one sample period elapsed" on an event.  The count grows by the period; a
PERF_EVENT program attached to the event (PERF_EVENT_IOC_SET_BPF or a perf link) runs on a
``struct bpf_perf_event_data`` holding the given registers, the period and the sample address,
and returns whether the sample would be kept.  Not modelled: writing the sample record to the
event's ring buffer, frequency mode (the period is attr.sample_period), throttling,
``perf_event_read_local``'s enabled/running times (reported as 0).
"""
from __future__ import annotations

import attrs

from uapi.bpf import ProgType
from uapi.ffi import ffi

__all__ = ["BpfPerfEventDataKern", "perf_event_overflow"]

_DATA = "struct bpf_perf_event_data"
_REGS_SIZE = ffi.sizeof(ffi.typeof(ffi.new(_DATA + " *").regs))   # bpf_user_pt_regs_t
_U32 = 0xFFFFFFFF


@attrs.define(eq=False)
class BpfPerfEventDataKern:
    """struct bpf_perf_event_data_kern: what the helpers of a PERF_EVENT run reach."""

    event: object
    sample_period: int
    addr: int

    @property
    def cookie(self) -> int:
        """bpf_get_attach_cookie_pe(): the cookie the program was attached with."""
        return self.event.bpf_cookie


def perf_event_overflow(kern, event, *, regs: bytes = b"", addr: int = 0) -> int | None:
    """One sample period of `event` elapsed on the current CPU.  Returns the PERF_EVENT
    program's verdict (0: drop the sample), or None when the event is off or has none."""
    if not event.enabled or event.dead:
        return None
    period = event.attr.sample_period
    event.count += period
    prog = event.prog
    if prog is None or prog.type != ProgType.PERF_EVENT:
        return None
    from fakekernel.bpf.core import bpf_prog_run
    data = ffi.new(_DATA + " *")
    ffi.memmove(ffi.addressof(data, "regs"), regs[:_REGS_SIZE], min(len(regs), _REGS_SIZE))
    data.sample_period = period
    data.addr = addr
    region = kern.mem.map_region(bytearray(ffi.buffer(data)), "ctx", "struct bpf_perf_event_data_kern",
                                 writable=False)
    try:
        return bpf_prog_run(kern, prog, region.base, ctx=BpfPerfEventDataKern(event, period, addr)) & _U32
    finally:
        kern.mem.unmap(region)
