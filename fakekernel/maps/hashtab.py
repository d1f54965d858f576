"""Hash maps — kernel/bpf/hashtab.c.

`HtabMap` is BPF_MAP_TYPE_HASH.  Each element owns a bytearray value that is mapped into
the kernel address space the first time a program looks it up and unmapped when the
element is deleted; updating an existing element copies into that same buffer, so a
pointer a program holds stays valid.

Iteration (GET_NEXT_KEY) follows the kernel: bucket ``jhash(key, hashrnd) & (n_buckets-1)``
in ascending order, newest first inside a bucket (an update of an existing key moves it
to the head, as the kernel's replace-at-head does).  With BPF_F_ZERO_SEED the order is
the real kernel's; otherwise ``hashrnd`` comes from the kernel's prandom.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, NUMA_NO_NODE, TOTALRAM, bpf_map_attr_numa_node,
                                    bpf_map_flags_access_ok, map_fields_from_attr, round_up)
from fakekernel.maps.jhash import jhash, jhash2
from uapi.bpf import MapFlags, MapType, UpdateFlags
from uapi.capability import Cap
from uapi.ffi import ffi

__all__ = ["HtabMap", "HTAB_CREATE_FLAG_MASK"]

HTAB_CREATE_FLAG_MASK = (MapFlags.NO_PREALLOC | MapFlags.NO_COMMON_LRU | MapFlags.NUMA_NODE
                         | BPF_F_ACCESS_MASK | MapFlags.ZERO_SEED)
KMALLOC_MAX_SIZE = 1 << 22          # x86_64: PAGE_SIZE << MAX_PAGE_ORDER
PCPU_MIN_UNIT_SIZE = 32 << 10
U32_MAX = 2**32 - 1
U32_SIZE = ffi.sizeof("__u32")
PTR_SIZE = ffi.sizeof("void *")
VALUE_ALIGN = ffi.sizeof("__u64")
# kernel-internal sizes on x86_64 6.18 (they show in fdinfo memlock; measured there)
HTAB_ELEM_SIZE = 48                 # sizeof(struct htab_elem)
BUCKET_SIZE = 16                    # sizeof(struct bucket)
BPF_HTAB_SIZE = 832                 # sizeof(struct bpf_htab)
HASHTAB_MAP_LOCK_COUNT = 8
LLIST_NODE_SIZE = PTR_SIZE
INT_SIZE = ffi.sizeof("int")

_NOT_F_LOCK, _F_LOCK, _EXIST = ~int(UpdateFlags.F_LOCK), int(UpdateFlags.F_LOCK), int(UpdateFlags.EXIST)


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


class _HtabElem:
    """struct htab_elem: the value buffer, its mapped region and its place in the bucket."""

    __slots__ = ("value", "region", "seq", "hash")

    def __init__(self, value: bytearray, seq: int):
        self.value = value
        self.region = None
        self.seq = seq              # larger = nearer the head of its bucket
        self.hash = None            # computed on first walk


@attrs.define(eq=False)
class HtabMap(BpfMap):
    n_buckets: int = 1
    hashrnd: int = 0
    elem_size: int = 0
    elems: dict = attrs.field(factory=dict)      # key bytes -> _HtabElem
    _seq: int = 0
    _order: list | None = None                   # keys in walk order (cache)
    _pos: dict | None = None                     # key -> index in _order

    # ---- creation: htab_map_alloc_check / htab_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        percpu = attr.map_type in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
        lru = attr.map_type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        percpu_lru = bool(attr.map_flags & MapFlags.NO_COMMON_LRU)
        prealloc = not attr.map_flags & MapFlags.NO_PREALLOC
        if attr.map_flags & MapFlags.ZERO_SEED and not task.capable(Cap.SYS_ADMIN):
            raise KernelError(Errno.EPERM, "BPF_F_ZERO_SEED needs CAP_SYS_ADMIN")
        if attr.map_flags & ~int(HTAB_CREATE_FLAG_MASK) or not bpf_map_flags_access_ok(attr.map_flags):
            raise KernelError(Errno.EINVAL, "bad hash map flags")
        if not lru and percpu_lru:
            raise KernelError(Errno.EINVAL, "NO_COMMON_LRU on a non-LRU hash")
        if lru and not prealloc:
            raise KernelError(Errno.ENOTSUPP, "LRU maps are always preallocated")
        if bpf_map_attr_numa_node(attr) != NUMA_NO_NODE and (percpu or percpu_lru):
            raise KernelError(Errno.EINVAL, "numa node on a per-CPU hash")
        if attr.max_entries == 0 or attr.key_size == 0 or attr.value_size == 0:
            raise KernelError(Errno.EINVAL, "zero max_entries, key_size or value_size")
        if attr.key_size + attr.value_size >= KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE:
            raise KernelError(Errno.E2BIG, "key_size + value_size too large")
        if percpu and round_up(attr.value_size, VALUE_ALIGN) > PCPU_MIN_UNIT_SIZE:
            raise KernelError(Errno.E2BIG, "per-CPU value too large")

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "HtabMap":
        if attr.max_entries > 1 << 31:
            raise KernelError(Errno.E2BIG, "max_entries > 2^31")
        n_buckets = _roundup_pow_of_two(attr.max_entries)
        elem_size = (HTAB_ELEM_SIZE + round_up(attr.key_size, VALUE_ALIGN)
                     + round_up(attr.value_size, VALUE_ALIGN))
        if n_buckets > U32_MAX // BUCKET_SIZE:
            raise KernelError(Errno.E2BIG, "too many buckets")
        m = cls(**map_fields_from_attr(kern, attr), n_buckets=n_buckets, elem_size=elem_size)
        if n_buckets * BUCKET_SIZE > TOTALRAM or (m.prealloc and m.map_mem_usage() > TOTALRAM):
            raise KernelError(Errno.ENOMEM, "hash table does not fit in memory")
        m.hashrnd = 0 if attr.map_flags & MapFlags.ZERO_SEED else kern.prandom.getrandbits(32)
        m.memlock = m.map_mem_usage()
        return m

    @property
    def prealloc(self) -> bool:
        return not self.map_flags & MapFlags.NO_PREALLOC

    def map_mem_usage(self) -> int:
        """htab_map_mem_usage() for the plain hash."""
        nr_cpus = self.kern.nr_cpus
        usage = BPF_HTAB_SIZE + BUCKET_SIZE * self.n_buckets
        usage += INT_SIZE * nr_cpus * HASHTAB_MAP_LOCK_COUNT
        if self.prealloc:
            usage += self.elem_size * (self.max_entries + nr_cpus)   # + the extra elems
            usage += PTR_SIZE * nr_cpus
        else:
            usage += (self.elem_size + LLIST_NODE_SIZE) * len(self.elems)
        return usage

    def map_free(self) -> None:
        for elem in self.elems.values():
            self._unmap(elem)
        self.elems.clear()
        self._invalidate()

    # ---- element storage ----
    def _unmap(self, elem: _HtabElem) -> None:
        if elem.region is not None:
            self.kern.mem.unmap(elem.region)
            elem.region = None

    def _value_addr(self, elem: _HtabElem) -> int:
        if elem.region is None:
            elem.region = self.kern.mem.map_region(elem.value, "map_value",
                                                   f"htab:{self.name.decode(errors='replace')}")
        return elem.region.base

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _invalidate(self) -> None:
        self._order = None
        self._pos = None

    # ---- walk order: (bucket ascending, newest first) ----
    def htab_map_hash(self, key: bytes) -> int:
        if len(key) % U32_SIZE == 0:
            return jhash2(key, self.hashrnd)
        return jhash(key, self.hashrnd)

    def _walk_order(self) -> tuple[list, dict]:
        if self._order is None:
            mask = self.n_buckets - 1
            for k, e in self.elems.items():
                if e.hash is None:
                    e.hash = self.htab_map_hash(k)
            self._order = sorted(self.elems, key=lambda k: (self.elems[k].hash & mask,
                                                            -self.elems[k].seq))
            self._pos = {k: i for i, k in enumerate(self._order)}
        return self._order, self._pos

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        elem = self.elems.get(bytes(key))
        return 0 if elem is None else self._value_addr(elem)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """htab_map_update_elem()."""
        if flags & _NOT_F_LOCK > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        if flags & _F_LOCK:
            raise KernelError(Errno.EINVAL, "BPF_F_LOCK without a bpf_spin_lock in the value")
        key = bytes(key)
        old = self.elems.get(key)
        # check_flags()
        if old is not None and flags == UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "key exists")
        if old is None and flags == UpdateFlags.EXIST:
            raise KernelError(Errno.ENOENT, "no such key")
        if old is not None:
            old.value[:] = value[:self.value_size]
            old.seq = self._next_seq()
        else:
            if len(self.elems) >= self.max_entries:
                raise KernelError(Errno.E2BIG, "hash map is full")
            self.elems[key] = _HtabElem(bytearray(value[:self.value_size]), self._next_seq())
        self._invalidate()

    def map_delete_elem(self, key: bytes) -> None:
        elem = self.elems.pop(bytes(key), None)
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        self._unmap(elem)
        self._invalidate()

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """htab_map_get_next_key(): NULL or a missing key restarts at the first element."""
        order, pos = self._walk_order()
        i = pos.get(bytes(key)) if key is not None else None
        nxt = 0 if i is None else i + 1
        if nxt >= len(order):
            raise KernelError(Errno.ENOENT, "end of map")
        return order[nxt]

    def map_lookup_and_delete_elem(self, key: bytes | None, flags: int) -> bytes:
        """htab_map_lookup_and_delete_elem()."""
        elem = self.elems.get(bytes(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        value = bytes(elem.value)
        self.map_delete_elem(key)
        return value

    # ---- syscall side ----
    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        elem = self.elems.get(bytes(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        return bytes(elem.value)
