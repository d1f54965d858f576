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

__all__ = ["check_map_elem_map", "map_elem_step", "map_elem_rewind", "map_elem_args", "MAP_ELEM_START"]

_PLAIN = frozenset({MapType.HASH, MapType.LRU_HASH, MapType.ARRAY})
_PERCPU = frozenset({MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY})


def check_map_elem_map(m) -> None:
    """bpf_iter_attach_map()'s type check (the map reference is the caller's to drop)."""
    if m.map_type not in _PLAIN and m.map_type not in _PERCPU:
        raise KernelError(Errno.EINVAL, "map type has no element iterator")


#: a walk's position: ("after", key) finds the key following `key` (None: the first key);
#: ("at", key) shows `key` itself (a read that stopped before it)
MAP_ELEM_START = ("after", None)


def map_elem_step(kern, link, pos: tuple):
    """(the position after the next element, its key), or None at the end."""
    how, key = pos
    if how == "after":
        try:
            key = link.bpf_map.map_get_next_key(key)
        except KernelError:
            return None
    return ("after", key), key


def map_elem_rewind(key: bytes) -> tuple:
    return ("at", key)


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
