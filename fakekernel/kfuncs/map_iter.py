"""bpf_map_sum_elem_count — kernel/bpf/map_iter.c.

The kernel sums the map's per-CPU ``elem_count``, which only the hash tables keep
(bpf_map_init_elem_count in htab_map_alloc; incremented and decremented as elements come and
go, LRU evictions included): for every hash map type, hash-of-maps too, the sum is the number
of elements the table holds; every other map type has no counter and answers 0.
"""
from __future__ import annotations

from fakekernel.btf_objects import struct_layout
from fakekernel.btf_vmlinux import btf_index
from fakekernel.interp.memory import InterpreterFault
from fakekernel.maps.hashtab import HtabMap
from uapi.insn import u64

__all__ = ["MAP_ITER_KFUNCS"]


def _map_at(env, addr: int):
    """A map pointer: the map's handle (ld_imm64 of a map fd) or a bpf_map image (a map
    iterator's ctx->map), found by the id in it."""
    try:
        return env.mem.object_at(addr)
    except InterpreterFault:
        pass
    region = env.mem.region_at(addr)
    if region is None or region.name != "bpf_map" or addr != region.base:
        return None
    off, size = struct_layout(btf_index(env.kernel.btf_vmlinux), "bpf_map")[1]["id"]
    return env.kernel.map_idr.find(env.mem.load(addr + off, size))


def bpf_map_sum_elem_count(env, map_p, r2, r3, r4, r5) -> int:
    m = _map_at(env, map_p) if map_p else None
    return u64(len(m.elems)) if isinstance(m, HtabMap) else 0


MAP_ITER_KFUNCS = {"bpf_map_sum_elem_count": bpf_map_sum_elem_count}
