"""Helpers that call back into the program — kernel/bpf/bpf_iter.c (bpf_loop),
kernel/bpf/helpers.c / task_iter.c (bpf_for_each_map_elem through the map's
map_for_each_callback: bpf_for_each_array_map_elem in arraymap.c, bpf_for_each_hash_elem
in hashtab.c).

The callback argument is a BPF_PSEUDO_FUNC pointer; at run time the register holds the
callback's instruction index and ``env.call_subprog(index, *args)`` runs it in a new frame
(every tier implements it).  A callback returns 0 to continue and 1 to stop (the verifier
bounds it to [0, 1]); the helpers return how many times they called it.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.maps.arraymap import ArrayMap, PercpuArrayMap
from fakekernel.maps.common import smp_processor_id
from fakekernel.maps.hashtab import HtabMap
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["CALLBACKS_RUNTIME", "bpf_loop", "bpf_for_each_map_elem", "BPF_MAX_LOOPS"]

BPF_MAX_LOOPS = 8 * 1024 * 1024             # include/linux/bpf.h
_U32_MASK = 0xFFFFFFFF
_U32_SIZE = ffi.sizeof("__u32")


def bpf_loop(env, r1, r2, r3, r4, r5) -> int:
    """bpf_loop(nr_loops, callback_fn, callback_ctx, flags): callback_fn(i, ctx)."""
    nr_loops = r1 & _U32_MASK
    if r4:
        return neg_errno(Errno.EINVAL)
    if nr_loops > BPF_MAX_LOOPS:
        return neg_errno(Errno.E2BIG)
    for i in range(nr_loops):
        if env.call_subprog(r2, i, r3):
            return i + 1
    return nr_loops


class _KeySlot:
    """The kernel-stack key a map walk hands to the callback (read-only to the program)."""

    def __init__(self, env, size: int):
        self.env = env
        self.buf = bytearray(size)
        self.region = env.mem.map_region(self.buf, "stack", "for_each_key", writable=False)

    def put(self, key: bytes) -> int:
        self.buf[:] = key
        return self.region.base

    def close(self) -> None:
        self.env.mem.unmap(self.region)


def _array_for_each(env, bpf_map, cb: int, ctx: int) -> int:
    """bpf_for_each_array_map_elem(): every index, this CPU's slot of a per-CPU array."""
    slot = _KeySlot(env, _U32_SIZE)
    cpu = smp_processor_id(env.kernel) if env.kernel is not None else env.cpu
    n = 0
    try:
        for i in range(bpf_map.max_entries):
            key = i.to_bytes(_U32_SIZE, "little")
            if isinstance(bpf_map, PercpuArrayMap):
                val = bpf_map.map_lookup_percpu_elem(key, cpu)
            else:
                val = bpf_map.map_lookup_elem(key)
            n += 1
            if env.call_subprog(cb, env.mem.map_object(bpf_map), slot.put(key), val, ctx):
                break
    finally:
        slot.close()
    return n


def _hash_for_each(env, htab, cb: int, ctx: int) -> int:
    """bpf_for_each_hash_elem(): bucket by bucket, head first; the callback may delete the
    element it is given (the walk goes on from the bucket's next element)."""
    slot = _KeySlot(env, htab.key_size)
    cpu = smp_processor_id(env.kernel) if env.kernel is not None else env.cpu
    handle = env.mem.map_object(htab)
    walk, n, b = htab.walk, 0, 0
    try:
        while True:
            walk.sync()
            b = walk.next_bucket(b)
            if b is None:
                break
            for key in walk.bucket_keys(b):
                elem = htab.elems.get(key)
                if elem is None:                # deleted by an earlier callback
                    continue
                val = htab._value_addr(elem)
                if htab.PERCPU:
                    val += cpu * htab.pcpu_size
                n += 1
                if env.call_subprog(cb, handle, slot.put(key), val, ctx):
                    return n
            b += 1
    finally:
        slot.close()
    return n


def bpf_for_each_map_elem(env, r1, r2, r3, r4, r5) -> int:
    """bpf_for_each_map_elem(map, callback_fn, callback_ctx, flags):
    callback_fn(map, key, value, ctx)."""
    bpf_map = env.mem.object_at(r1)
    if r4:
        return neg_errno(Errno.EINVAL)
    if isinstance(bpf_map, HtabMap):
        return _hash_for_each(env, bpf_map, r2, r3)
    if isinstance(bpf_map, ArrayMap):
        return _array_for_each(env, bpf_map, r2, r3)
    return neg_errno(Errno.ENOTSUPP)         # the verifier only lets the map types above in


CALLBACKS_RUNTIME = {
    FuncId.loop: bpf_loop,
    FuncId.for_each_map_elem: bpf_for_each_map_elem,
}
