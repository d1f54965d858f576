"""Ring buffer records as dynptrs — kernel/bpf/ringbuf.c (bpf_ringbuf_reserve_dynptr,
bpf_ringbuf_submit_dynptr, bpf_ringbuf_discard_dynptr).

The reserved sample is handed out as a BPF_DYNPTR_TYPE_RINGBUF dynptr (see
`fakekernel.helpers.dynptr`), which bpf_dynptr_read/write/data then access; on any failure
the dynptr is set to NULL.  Submitting or discarding a NULL dynptr does nothing.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.dynptr import BPF_DYNPTR_SIZE, BPF_DYNPTR_TYPE_RINGBUF, dynptr_encode
from fakekernel.interp.memory import InterpreterFault
from fakekernel.maps.ringbuf import ringbuf_from_sample
from fakekernel.maps.user_ringbuf import DYNPTR_MAX_SIZE
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32

__all__ = ["RINGBUF_DYNPTR_RUNTIME"]

_PTR = ffi.sizeof("void *")


def _set_null(env, ptr: int) -> None:
    """bpf_dynptr_set_null()."""
    env.mem.write(ptr, bytes(BPF_DYNPTR_SIZE))


def bpf_ringbuf_reserve_dynptr(env, r1, r2, r3, r4, r5) -> int:
    """bpf_ringbuf_reserve_dynptr(map, size, flags, ptr): -EINVAL for flags or no room,
    -E2BIG past DYNPTR_MAX_SIZE."""
    size = u32(r2)
    if r3:
        _set_null(env, r4)
        return neg_errno(Errno.EINVAL)
    if size > DYNPTR_MAX_SIZE:                  # bpf_dynptr_check_size()
        _set_null(env, r4)
        return neg_errno(Errno.E2BIG)
    sample = env.mem.object_at(r1).reserve(size)
    if not sample:
        _set_null(env, r4)
        return neg_errno(Errno.EINVAL)
    env.mem.write(r4, dynptr_encode(sample, size, BPF_DYNPTR_TYPE_RINGBUF))
    return 0


def _commit_dynptr(env, ptr: int, flags: int, discard: bool) -> int:
    data = int.from_bytes(env.mem.read(ptr, _PTR), "little")
    if not data:
        return 0
    rb = ringbuf_from_sample(env.mem, data)
    off = rb.sample_off(data) if rb is not None else None
    if off is None:
        raise InterpreterFault(None, f"dynptr data 0x{data:x} is not a ring buffer sample")
    rb.commit(off, flags, discard)
    _set_null(env, ptr)
    return 0


def bpf_ringbuf_submit_dynptr(env, r1, r2, r3, r4, r5) -> int:
    return _commit_dynptr(env, r1, r2, discard=False)


def bpf_ringbuf_discard_dynptr(env, r1, r2, r3, r4, r5) -> int:
    return _commit_dynptr(env, r1, r2, discard=True)


RINGBUF_DYNPTR_RUNTIME = {
    FuncId.ringbuf_reserve_dynptr: bpf_ringbuf_reserve_dynptr,
    FuncId.ringbuf_submit_dynptr: bpf_ringbuf_submit_dynptr,
    FuncId.ringbuf_discard_dynptr: bpf_ringbuf_discard_dynptr,
}
