"""Ring buffer helpers — kernel/bpf/ringbuf.c (bpf_ringbuf_reserve/submit/discard/output/query).

The prototypes live in `fakekernel.helpers.base` with the other kernel/bpf/ helpers; these
are the runtime functions.  The ring buffer logic itself is `fakekernel.maps.ringbuf`.
A sample pointer that is not one a reserve returned is a verifier hole, so it faults.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.interp.memory import InterpreterFault
from fakekernel.maps.ringbuf import ringbuf_from_sample
from uapi.bpf import FuncId
from uapi.insn import u64

__all__ = ["RINGBUF_RUNTIME"]


def bpf_ringbuf_reserve(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_reserve(map, size, flags): the sample's address, NULL for flags or no room."""
    if r3:
        return 0
    return env.mem.object_at(r1).reserve(r2)


def _commit(env, sample: int, flags: int, discard: bool) -> int:
    rb = ringbuf_from_sample(env.mem, sample)
    off = rb.sample_off(sample) if rb is not None else None
    if off is None:
        raise InterpreterFault(None, f"0x{sample:x} is not a ring buffer sample")
    rb.commit(off, flags, discard)
    return 0


def bpf_ringbuf_submit(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_submit(sample, flags)."""
    return _commit(env, r1, r2, discard=False)


def bpf_ringbuf_discard(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_discard(sample, flags)."""
    return _commit(env, r1, r2, discard=True)


def bpf_ringbuf_output(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_output(map, data, size, flags): 0, -EINVAL (flags) or -EAGAIN (full)."""
    rb = env.mem.object_at(r1)
    ret = rb.output(env.mem.read(r2, r3), r4)
    return neg_errno(-ret) if ret < 0 else 0


def bpf_ringbuf_query(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_query(map, flags)."""
    return u64(env.mem.object_at(r1).query(r2))


RINGBUF_RUNTIME = {
    FuncId.ringbuf_reserve: bpf_ringbuf_reserve,
    FuncId.ringbuf_submit: bpf_ringbuf_submit,
    FuncId.ringbuf_discard: bpf_ringbuf_discard,
    FuncId.ringbuf_output: bpf_ringbuf_output,
    FuncId.ringbuf_query: bpf_ringbuf_query,
}
