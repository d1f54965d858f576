"""The map element iterator — kernel/bpf/map_iter.c (bpf_iter_attach_map) with the seq
operations of kernel/bpf/hashtab.c (bpf_hash_map_seq_*) and arraymap.c (bpf_array_map_seq_*).

An ``iter/bpf_map_elem`` program sees (meta, map, key, value) for every element of one hash,
LRU hash or array map (or their per-CPU kinds), then once more with key and value NULL.  The key
is read-only; the value of a plain map is the element itself (writes land in the map), the
value of a per-CPU map is a copy of every CPU's slot (round_up(value_size, 8) bytes each), as the
kernel hands out its percpu_value_buf.  Elements come in the order MAP_GET_NEXT_KEY walks them
(the kernel's bucket order for hashes, index order for arrays).
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from uapi.bpf import MapType

__all__ = ["check_map_elem_map", "map_elem_next", "map_elem_args"]

_PLAIN = frozenset({MapType.HASH, MapType.LRU_HASH, MapType.ARRAY})
_PERCPU = frozenset({MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY})


def check_map_elem_map(m) -> None:
    """bpf_iter_attach_map()'s type check (the map reference is the caller's to drop)."""
    if m.map_type not in _PLAIN and m.map_type not in _PERCPU:
        raise KernelError(Errno.EINVAL, "map type has no element iterator")


def map_elem_next(m, after: bytes | None) -> bytes | None:
    """The key following `after` (the first key for None); None at the end."""
    try:
        return m.map_get_next_key(after)
    except KernelError:
        return None


def map_elem_args(images, m, key: bytes | None) -> list[int]:
    """The ctx arguments after meta: map, key, value (NULLs on the final call)."""
    map_addr = images.object_image("bpf_map", m)
    if key is None:
        return [map_addr, 0, 0]
    key_addr = images.buffer(bytearray(key), "map_iter_key", writable=False)
    if m.map_type in _PERCPU:
        try:
            value = m.sys_lookup(key, 0)
        except KernelError:                  # gone since the walk found it: a zeroed copy
            value = bytes(m.sys_value_size)
        return [map_addr, key_addr, images.buffer(bytearray(value), "map_iter_percpu_value")]
    return [map_addr, key_addr, m.map_lookup_elem(key)]
