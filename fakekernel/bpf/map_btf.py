"""BTF-described maps — kernel/bpf/syscall.c: map_check_btf(); the per-type
bpf_map_ops.map_check_btf of kernel/bpf/arraymap.c (array_map_check_btf) and
kernel/bpf/hashtab.c (htab_map_check_btf).

MAP_CREATE with a btf_value_type_id asks the map's BTF whether the key and value types
have exactly the map's key_size / value_size (EINVAL otherwise), then lets the map type
judge the types.  Map types define `map_check_btf(btf, key_type, value_type)`; a map
without it accepts only a key type id (a keyless BTF description is then EINVAL).

Then btf_parse_fields() (fakekernel/btf_fields.py) finds the value's special fields; a
value with any needs CAP_BPF (EPERM), no BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG (EACCES)
and a map type that can hold each kind of field (EOPNOTSUPP).  The record lands on
``bpf_map.record``.  A value whose fields do not parse (a second bpf_spin_lock among one
struct's members, overlapping fields, a bad kptr tag ...) is not an error here: the map is
created without special fields, as the kernel's map->record = ERR_PTR() (measured on 6.18;
BTF_LOAD's struct metas catch most of those first).
"""
from __future__ import annotations

from fakekernel.btf_fields import (MAP_VALUE_FIELDS, BtfFieldType, btf_check_and_fixup_fields,
                                   btf_parse_fields)
from fakekernel.errors import Errno, KernelError
from uapi.bpf import MapFlags, MapType
from uapi.btf import BtfKind

__all__ = ["map_check_btf", "array_map_check_btf", "htab_map_check_btf", "bloom_map_check_btf",
           "trie_check_btf", "map_check_no_btf"]

_U32_BITS = 32
F = BtfFieldType
_LOCAL_STORAGES = {MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE,
                   MapType.CGRP_STORAGE}
_TIMER_MAPS = {MapType.HASH, MapType.LRU_HASH, MapType.ARRAY}
# map_check_btf(): the map types that may hold each kind of special field
FIELD_MAP_TYPES = {
    F.SPIN_LOCK: {MapType.HASH, MapType.ARRAY, MapType.CGROUP_STORAGE} | _LOCAL_STORAGES,
    F.TIMER: _TIMER_MAPS, F.WORKQUEUE: _TIMER_MAPS, F.TASK_WORK: _TIMER_MAPS,
    F.KPTR_UNREF: {MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH,
                   MapType.ARRAY, MapType.PERCPU_ARRAY} | _LOCAL_STORAGES,
    F.UPTR: {MapType.TASK_STORAGE},
    F.LIST_HEAD: {MapType.HASH, MapType.LRU_HASH, MapType.ARRAY},
}
FIELD_MAP_TYPES[F.RES_SPIN_LOCK] = FIELD_MAP_TYPES[F.SPIN_LOCK]
for _ft in (F.KPTR_REF, F.KPTR_PERCPU, F.REFCOUNT):
    FIELD_MAP_TYPES[_ft] = FIELD_MAP_TYPES[F.KPTR_UNREF]
FIELD_MAP_TYPES[F.RB_ROOT] = FIELD_MAP_TYPES[F.LIST_HEAD]
_PROG_ACCESS = MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG


def _check_record(bpf_map, rec, task) -> None:
    """The record part of map_check_btf()."""
    if not task.bpf_capable():
        raise KernelError(Errno.EPERM, "special fields in a map value need CAP_BPF")
    if bpf_map.map_flags & _PROG_ACCESS:
        raise KernelError(Errno.EACCES, "special fields with BPF_F_RDONLY/WRONLY_PROG")
    for ft in F:                            # bit by bit, as the kernel's loop
        if rec.field_mask & ft and bpf_map.map_type not in FIELD_MAP_TYPES.get(ft, ()):
            raise KernelError(Errno.EOPNOTSUPP, f"{ft.name} not allowed in this map type")


def map_check_btf(bpf_map, btf, btf_key_id: int, btf_value_id: int, task=None) -> None:
    """map_check_btf(): sizes of the key / value types, the special fields of the value
    (`task`, the caller, default the kernel's current, needs CAP_BPF for them), then the map
    type's own check."""
    env = btf.env
    check = getattr(bpf_map, "map_check_btf", None)
    if btf_key_id:
        found = env.type_id_size(btf_key_id) if btf_key_id < env.nr_types else None
        if found is None or found[2] != bpf_map.key_size:
            raise KernelError(Errno.EINVAL, "BTF key type missing, sizeless or of another size")
        key_type = found[0]
    else:
        key_type = None                 # void
        if check is None:
            raise KernelError(Errno.EINVAL, "this map type needs a BTF key type")
    found = env.type_id_size(btf_value_id) if btf_value_id < env.nr_types else None
    if found is None or found[2] != bpf_map.value_size:
        raise KernelError(Errno.EINVAL, "BTF value type missing, sizeless or of another size")
    value_type, value_id = found[0], found[1]
    try:
        rec = btf_parse_fields(bpf_map.kern, env, value_type, value_id, MAP_VALUE_FIELDS,
                               bpf_map.value_size)
    except KernelError:         # map->record = ERR_PTR(): not an error, just no fields
        rec = None
    if rec is not None:
        _check_record(bpf_map, rec, task if task is not None else bpf_map.kern.current)
    btf_check_and_fixup_fields(env, rec)
    if check is not None:
        check(btf, key_type, value_type)
    bpf_map.record = rec


def array_map_check_btf(bpf_map, btf, key_type, value_type) -> None:
    """array_map_check_btf(): a u32 INT key, or no key for a one-entry DATASEC array."""
    if key_type is None:
        if bpf_map.map_type != MapType.ARRAY or bpf_map.max_entries != 1:
            raise KernelError(Errno.EINVAL, "keyless BTF only for one-entry global data arrays")
        if value_type.kind != BtfKind.DATASEC:
            raise KernelError(Errno.EINVAL, "keyless array BTF value must be a DATASEC")
        return
    if key_type.kind != BtfKind.INT:
        raise KernelError(Errno.EINVAL, "array key type must be an INT")
    from fakekernel.btf_env import int_data       # btf_env -> verifier -> maps: import late
    _, offset, bits = int_data(key_type)
    if bits != _U32_BITS or offset:
        raise KernelError(Errno.EINVAL, "array key type must be a 32-bit INT")


def htab_map_check_btf(bpf_map, btf, key_type, value_type) -> None:
    """htab_map_check_btf(): hash maps need a key type."""
    if key_type is None:
        raise KernelError(Errno.EINVAL, "hash maps need a BTF key type")


# For map types whose modules other owners are writing; each wires its op as a method,
# e.g. ``def map_check_btf(self, btf, key_type, value_type): bloom_map_check_btf(...)``.

def bloom_map_check_btf(bpf_map, btf, key_type, value_type) -> None:
    """bloom_map_check_btf(): bloom filters are keyless."""
    if key_type is not None:
        raise KernelError(Errno.EINVAL, "bloom filter BTF must have no key type")


def trie_check_btf(bpf_map, btf, key_type, value_type) -> None:
    """trie_check_btf(): the key embeds struct bpf_lpm_trie_key_u8, so it is a STRUCT."""
    if key_type is None or key_type.kind != BtfKind.STRUCT:
        raise KernelError(Errno.EINVAL, "LPM trie BTF key must be a struct")


def map_check_no_btf(bpf_map, btf, key_type, value_type) -> None:
    """map_check_no_btf(): fd arrays / fd maps refuse BTF descriptions (ENOTSUPP)."""
    raise KernelError(Errno.ENOTSUPP, "this map type takes no BTF")
