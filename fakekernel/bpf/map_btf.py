"""BTF-described maps — kernel/bpf/syscall.c: map_check_btf(); the per-type
bpf_map_ops.map_check_btf of kernel/bpf/arraymap.c (array_map_check_btf) and
kernel/bpf/hashtab.c (htab_map_check_btf).

MAP_CREATE with a btf_value_type_id asks the map's BTF whether the key and value types
have exactly the map's key_size / value_size (EINVAL otherwise), then lets the map type
judge the types.  Map types define `map_check_btf(btf, key_type, value_type)`; a map
without it accepts only a key type id (a keyless BTF description is then EINVAL).

Not modelled yet: btf_parse_fields() (bpf_spin_lock, bpf_timer, kptrs, graph roots in
the value): value types are checked for size only.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from uapi.bpf import MapType
from uapi.btf import BtfKind

__all__ = ["map_check_btf", "array_map_check_btf", "htab_map_check_btf", "bloom_map_check_btf",
           "trie_check_btf", "map_check_no_btf"]

_U32_BITS = 32


def map_check_btf(bpf_map, btf, btf_key_id: int, btf_value_id: int) -> None:
    """map_check_btf(): sizes of the key / value types, then the map type's own check."""
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
    if check is not None:
        check(btf, key_type, found[0])


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
