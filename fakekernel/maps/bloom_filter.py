"""Bloom filter maps — kernel/bpf/bloom_filter.c.

BPF_MAP_TYPE_BLOOM_FILTER: a bit array of a power of two of bits (at least 64), sized
``max_entries * nr_hash_funcs / 5 * 7`` (``nr_hash_funcs`` = map_extra's low 4 bits,
default 5; a product that overflows or exceeds 2**31 gives the full 2**32 bits).  Value
``v`` sets/tests bits ``jhash(v, hash_seed + i) & bitset_mask`` for i < nr_hash_funcs
(jhash2 when value_size is a multiple of 4).  With BPF_F_ZERO_SEED the seed is 0, so the
bits — false positives included — are the real kernel's.  There are no keys: the
syscall's UPDATE pushes (flags must be BPF_ANY) and LOOKUP peeks with the value given
(0 = maybe present, ENOENT = definitely absent).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, bpf_map_area_alloc, bpf_map_flags_access_ok,
                                    map_fields_from_attr, round_up)
from fakekernel.maps.jhash import jhash, jhash2
from uapi.bpf import MapFlags, UpdateFlags

__all__ = ["BloomFilterMap", "BLOOM_CREATE_FLAG_MASK", "bloom_bitset_mask"]

BLOOM_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | MapFlags.ZERO_SEED | BPF_F_ACCESS_MASK
KMALLOC_MAX_SIZE = 1 << 22          # x86_64: PAGE_SIZE << MAX_PAGE_ORDER
U32_MAX = 2**32 - 1
BITS_PER_LONG = 64
BYTES_PER_LONG = BITS_PER_LONG // 8
NR_HASH_FUNCS_MASK = 0xF            # map_extra bits that carry the number of hash functions
DEFAULT_NR_HASH_FUNCS = 5
# sizeof(struct bpf_bloom_filter) on x86_64 6.18 (fdinfo memlock minus the bitset)
BPF_BLOOM_FILTER_SIZE = 312


def bloom_bitset_mask(max_entries: int, nr_hash_funcs: int) -> int:
    """bloom_map_alloc()'s sizing: the mask of the bit index (number of bits - 1)."""
    nr_bits = max_entries * nr_hash_funcs
    if nr_bits > U32_MAX:
        return U32_MAX
    nr_bits = nr_bits // 5 * 7
    if nr_bits > U32_MAX or nr_bits > 1 << 31:
        return U32_MAX
    if nr_bits <= BITS_PER_LONG:
        return BITS_PER_LONG - 1
    return (1 << (nr_bits - 1).bit_length()) - 1


@attrs.define(eq=False)
class BloomFilterMap(BpfMap):
    """BPF_MAP_TYPE_BLOOM_FILTER — bloom_filter_map_ops."""

    bitset_mask: int = 0
    hash_seed: int = 0
    nr_hash_funcs: int = 0
    area: object = None

    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """bloom_map_alloc_check()."""
        if attr.value_size > KMALLOC_MAX_SIZE:
            raise KernelError(Errno.E2BIG, "value_size larger than KMALLOC_MAX_SIZE")

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "BloomFilterMap":
        """bloom_map_alloc()."""
        if (attr.key_size != 0 or attr.value_size == 0 or attr.max_entries == 0
                or attr.map_flags & ~int(BLOOM_CREATE_FLAG_MASK)
                or not bpf_map_flags_access_ok(attr.map_flags)
                or attr.map_extra & ~NR_HASH_FUNCS_MASK):
            raise KernelError(Errno.EINVAL, "bad bloom filter attributes")
        nr_hash_funcs = attr.map_extra or DEFAULT_NR_HASH_FUNCS
        mask = bloom_bitset_mask(attr.max_entries, nr_hash_funcs)
        nbits = mask + 1
        bitset_bytes = (nbits + BITS_PER_LONG - 1) // BITS_PER_LONG * BYTES_PER_LONG
        area = bpf_map_area_alloc(bitset_bytes, charge=BPF_BLOOM_FILTER_SIZE + bitset_bytes)
        seed = 0 if attr.map_flags & MapFlags.ZERO_SEED else kern.prandom.getrandbits(32)
        m = cls(**map_fields_from_attr(kern, attr), bitset_mask=mask, hash_seed=seed,
                nr_hash_funcs=nr_hash_funcs, area=area)
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """bloom_map_mem_usage()."""
        return BPF_BLOOM_FILTER_SIZE + round_up((self.bitset_mask + 1 + 7) // 8, BYTES_PER_LONG)

    def map_free(self) -> None:
        if self.area is not None:
            self.area.free()
            self.area = None

    def _hash(self, value: bytes, index: int) -> int:
        seed = (self.hash_seed + index) & U32_MAX
        if self.value_size % 4 == 0:
            h = jhash2(value, seed)
        else:
            h = jhash(value, seed)
        return h & self.bitset_mask

    # ---- bpf_map_ops ----
    def map_peek_elem(self, value: bytearray) -> None:
        """bloom_map_peek_elem(): ENOENT as soon as one bit is clear."""
        value = bytes(value[:self.value_size])
        buf = self.area.buf
        for i in range(self.nr_hash_funcs):
            h = self._hash(value, i)
            if not buf[h >> 3] >> (h & 7) & 1:
                raise KernelError(Errno.ENOENT, "value definitely not in the bloom filter")

    def map_push_elem(self, value: bytes, flags: int) -> None:
        """bloom_map_push_elem()."""
        if flags != UpdateFlags.ANY:
            raise KernelError(Errno.EINVAL, "bloom filter push takes BPF_ANY only")
        value = bytes(value[:self.value_size])
        buf = self.area.buf
        for i in range(self.nr_hash_funcs):
            h = self._hash(value, i)
            buf[h >> 3] |= 1 << (h & 7)

    def map_pop_elem(self, value: bytearray) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "bloom filters cannot pop")

    def map_lookup_elem(self, key) -> int:
        raise KernelError(Errno.EINVAL, "bloom filters have no lookup")

    def map_update_elem(self, key, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EINVAL, "bloom filters are updated by push")

    def map_delete_elem(self, key) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "bloom filters cannot delete")

    def map_get_next_key(self, key) -> bytes:
        raise KernelError(Errno.EOPNOTSUPP, "bloom filters have no keys")

    # ---- syscall side: UPDATE pushes; LOOKUP peeks with the user's value (map_cmds) ----
    def sys_update(self, key, value: bytes, flags: int) -> None:
        self.map_push_elem(value, flags)

    def sys_lookup(self, key, flags: int) -> bytes:
        raise KernelError(Errno.EINVAL, "bloom filter lookups read the value (map_lookup_elem)")
