"""Hash maps — kernel/bpf/hashtab.c.

`HtabMap` is BPF_MAP_TYPE_HASH.  Each element owns a bytearray value that is mapped into
the kernel address space the first time a program looks it up and unmapped when the
element is deleted; updating an existing element copies into that same buffer, so a
pointer a program holds stays valid.

Iteration (GET_NEXT_KEY) follows the kernel: bucket ``jhash(key, hashrnd) & (n_buckets-1)``
in ascending order, newest first inside a bucket (an update of an existing key moves it
to the head, as the kernel's replace-at-head does).  With BPF_F_ZERO_SEED the order is
the real kernel's; otherwise ``hashrnd`` comes from the kernel's prandom.  The buckets
live in fakekernel/maps/hashtab_walk.py (amortised O(1) per GET_NEXT_KEY step).

`PercpuHtabMap` (PERCPU_HASH) keeps one round_up(value_size, 8) slot per CPU in each
element and updates existing keys in place.  `LruHtabMap` / `LruPercpuHtabMap` take every
new element from the LRU lists of fakekernel/maps/bpf_lru_list.py, which evict exactly as
the kernel's do for the CPU the caller runs on (``Kernel.cpu``).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.bpf.map_btf import htab_map_check_btf
from fakekernel.btf_fields import (BtfFieldType, bpf_obj_free_fields, btf_record_has_field,
                                   copy_map_value_locked, copy_value_out, zero_special_fields)
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.batch import generic_map_delete_batch, generic_map_update_batch
from fakekernel.maps.bpf_lru_list import BpfLru, LruNode
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, NUMA_NO_NODE, PCPU_MIN_UNIT_SIZE, TOTALRAM,
                                    bpf_map_attr_numa_node, bpf_map_flags_access_ok,
                                    map_fields_from_attr, round_up, smp_processor_id)
from fakekernel.maps.hashtab_batch import htab_lookup_and_delete_batch
from fakekernel.maps.hashtab_walk import HtabBuckets
from fakekernel.maps.jhash import jhash, jhash2
from uapi.bpf import MapFlags, MapType, UpdateFlags
from uapi.capability import Cap
from uapi.ffi import ffi

__all__ = ["HtabMap", "PercpuHtabMap", "LruHtabMap", "LruPercpuHtabMap", "HTAB_CREATE_FLAG_MASK",
           "roundup_pow_of_two"]

HTAB_CREATE_FLAG_MASK = (MapFlags.NO_PREALLOC | MapFlags.NO_COMMON_LRU | MapFlags.NUMA_NODE
                         | BPF_F_ACCESS_MASK | MapFlags.ZERO_SEED)
KMALLOC_MAX_SIZE = 1 << 22          # x86_64: PAGE_SIZE << MAX_PAGE_ORDER
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


def roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


class _HtabElem:
    """struct htab_elem: the value buffer, its mapped region and its place in the bucket."""

    __slots__ = ("value", "region", "bucket", "hash")

    def __init__(self, value: bytearray):
        self.value = value
        self.region = None
        self.bucket = None          # set by the walk order (HtabBuckets)
        self.hash = None            # computed on first walk


@attrs.define(eq=False)
class HtabMap(BpfMap):
    n_buckets: int = 1
    hashrnd: int = 0
    elem_size: int = 0
    elems: dict = attrs.field(factory=dict)      # key bytes -> _HtabElem
    walk: HtabBuckets | None = None              # the buckets, in GET_NEXT_KEY order

    def map_check_btf(self, btf, key_type, value_type) -> None:
        htab_map_check_btf(self, btf, key_type, value_type)

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

    PERCPU = False          # htab_is_percpu()
    LRU = False             # htab_is_lru()

    @classmethod
    def _max_entries(cls, kern, attr) -> int:
        """BPF_F_NO_COMMON_LRU: every CPU's list gets the same number (>= 1) of elements."""
        n = attr.max_entries
        if attr.map_flags & MapFlags.NO_COMMON_LRU:
            up = round_up(n, kern.nr_cpus)
            n = up if up <= U32_MAX else n - n % kern.nr_cpus
        return n

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "HtabMap":
        max_entries = cls._max_entries(kern, attr)
        if max_entries > 1 << 31:
            raise KernelError(Errno.E2BIG, "max_entries > 2^31")
        n_buckets = roundup_pow_of_two(max_entries)
        elem_size = HTAB_ELEM_SIZE + round_up(attr.key_size, VALUE_ALIGN)
        elem_size += PTR_SIZE if cls.PERCPU else round_up(attr.value_size, VALUE_ALIGN)
        if n_buckets > U32_MAX // BUCKET_SIZE:
            raise KernelError(Errno.E2BIG, "too many buckets")
        m = cls(**map_fields_from_attr(kern, attr), n_buckets=n_buckets, elem_size=elem_size)
        m.max_entries = max_entries
        if n_buckets * BUCKET_SIZE > TOTALRAM or (m.prealloc and m.map_mem_usage() > TOTALRAM):
            raise KernelError(Errno.ENOMEM, "hash table does not fit in memory")
        m.hashrnd = 0 if attr.map_flags & MapFlags.ZERO_SEED else kern.prandom.getrandbits(32)
        m.walk = HtabBuckets(m.htab_map_hash, n_buckets)
        m.memlock = m.map_mem_usage()
        m._init_elems()
        return m

    def _init_elems(self) -> None:
        """prealloc_init() for the types that need more than a dict (LRU lists)."""

    @property
    def prealloc(self) -> bool:
        return not self.map_flags & MapFlags.NO_PREALLOC

    def map_mem_usage(self) -> int:
        """htab_map_mem_usage()."""
        nr_cpus = self.kern.nr_cpus
        pcpu_value = round_up(self.value_size, VALUE_ALIGN) * nr_cpus
        usage = BPF_HTAB_SIZE + BUCKET_SIZE * self.n_buckets
        usage += INT_SIZE * nr_cpus * HASHTAB_MAP_LOCK_COUNT
        if self.prealloc:
            entries = self.max_entries
            if not self.PERCPU and not self.LRU:
                entries += nr_cpus                  # the extra elems used by replacements
            usage += self.elem_size * entries
            if self.PERCPU:
                usage += pcpu_value * entries
            elif not self.LRU:
                usage += PTR_SIZE * nr_cpus
        else:
            n = len(self.elems)
            usage += (self.elem_size + LLIST_NODE_SIZE) * n
            if self.PERCPU:
                usage += (LLIST_NODE_SIZE + PTR_SIZE + pcpu_value) * n
        return usage

    def map_free(self) -> None:
        for elem in self.elems.values():
            self._unmap(elem)
        self.elems.clear()
        self.walk.clear()

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

    # ---- walk order: (bucket ascending, newest first) ----
    def htab_map_hash(self, key: bytes) -> int:
        if len(key) % U32_SIZE == 0:
            return jhash2(key, self.hashrnd)
        return jhash(key, self.hashrnd)

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        elem = self.elems.get(bytes(key))
        return 0 if elem is None else self._value_addr(elem)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """htab_map_update_elem()."""
        if flags & _NOT_F_LOCK > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        rec = self.record
        if flags & _F_LOCK and not btf_record_has_field(rec, BtfFieldType.SPIN_LOCK):
            raise KernelError(Errno.EINVAL, "BPF_F_LOCK without a bpf_spin_lock in the value")
        key = bytes(key)
        old = self.elems.get(key)
        _check_flags(old, flags & _NOT_F_LOCK)
        if old is not None and flags & _F_LOCK:         # in place, under the element's lock
            copy_map_value_locked(rec, old.value, value[:self.value_size])
            return
        if old is not None:
            if rec is not None:                         # the old element's fields are freed
                bpf_obj_free_fields(rec, old.value, kern=self.kern,
                                    addr=0 if old.region is None else old.region.base)
            old.value[:] = value[:self.value_size]
            zero_special_fields(rec, old.value)
            self.walk.link(key, old)            # the replacement goes to the bucket's head
        else:
            if len(self.elems) >= self.max_entries:
                raise KernelError(Errno.E2BIG, "hash map is full")
            elem = self.elems[key] = _HtabElem(bytearray(value[:self.value_size]))
            zero_special_fields(rec, elem.value)
            self.walk.link(key, elem)

    def map_delete_elem(self, key: bytes) -> None:
        key = bytes(key)
        elem = self.elems.pop(key, None)
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        self._release_fields(elem)
        self._unmap(elem)
        self.walk.unlink(key, elem)
        self._free_elem(elem)

    def _release_fields(self, elem) -> None:
        """check_and_free_fields(): a deleted or evicted element gives up its timer/kptrs."""
        if self.record is not None:
            stride = self.pcpu_size if self.PERCPU else 0
            for cpu in range(self.kern.nr_cpus if self.PERCPU else 1):
                bpf_obj_free_fields(self.record, elem.value, cpu * stride, kern=self.kern,
                                    addr=0 if elem.region is None else elem.region.base + cpu * stride)

    def _free_elem(self, elem) -> None:
        """free_htab_elem() / htab_lru_push_free(): the element left the table."""

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """htab_map_get_next_key(): NULL or a missing key restarts at the first element."""
        if key is not None:
            key = bytes(key)
        nxt = self.walk.next_key(key, None if key is None else self.elems.get(key))
        if nxt is None:
            raise KernelError(Errno.ENOENT, "end of map")
        return nxt

    def map_lookup_and_delete_elem(self, key: bytes | None, flags: int) -> bytes:
        """htab_map_lookup_and_delete_elem()."""
        elem = self.elems.get(bytes(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        value = self._copy_value(elem)
        self.map_delete_elem(key)
        return value

    # ---- syscall side ----
    def _copy_value(self, elem) -> bytes:
        """What the syscall side copies out of an element (every CPU's slot for per-CPU maps),
        special fields zeroed (check_and_init_map_value)."""
        if self.PERCPU:
            return copy_value_out(self.record, elem.value, self.pcpu_size, self.kern.nr_cpus)
        return copy_value_out(self.record, elem.value)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        elem = self.elems.get(bytes(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        return self._copy_value(elem)

    # ---- batch ops ----
    def map_lookup_batch(self, task, attr, ctx) -> int:
        return htab_lookup_and_delete_batch(self, task, attr, ctx, do_delete=False)

    def map_lookup_and_delete_batch(self, task, attr, ctx) -> int:
        return htab_lookup_and_delete_batch(self, task, attr, ctx, do_delete=True)

    map_update_batch = generic_map_update_batch
    map_delete_batch = generic_map_delete_batch


# ---------------------------------------------------------------- per-CPU hash

@attrs.define(eq=False)
class PercpuHtabMap(HtabMap):
    """BPF_MAP_TYPE_PERCPU_HASH — htab_percpu_map_ops.

    An element's value is one bytearray of ``nr_cpus`` slots of round_up(value_size, 8)
    bytes; programs get the address of their CPU's slot.  Updates of an existing key are
    done in place (the element keeps its place in its bucket).
    """

    PERCPU = True

    @property
    def pcpu_size(self) -> int:
        return round_up(self.value_size, VALUE_ALIGN)

    @property
    def sys_value_size(self) -> int:
        return self.pcpu_size * self.kern.nr_cpus

    def map_lookup_elem(self, key: bytes) -> int:
        """htab_percpu_map_lookup_elem(): this CPU's slot."""
        return self.map_lookup_percpu_elem(key, smp_processor_id(self.kern))

    def map_lookup_percpu_elem(self, key: bytes, cpu: int) -> int:
        if cpu >= self.kern.nr_cpus:
            return 0
        elem = self.elems.get(bytes(key))
        if elem is None:
            return 0
        self._touch(elem)
        return self._value_addr(elem) + cpu * self.pcpu_size

    def _touch(self, elem) -> None:
        """A program looked the element up (LRU maps set the ref bit)."""

    def _pcpu_copy(self, elem, value: bytes, onallcpus: bool) -> None:
        """pcpu_copy_value(): all slots as given (syscall) or value_size bytes of this CPU's."""
        if onallcpus:
            elem.value[:] = value
        else:
            off = smp_processor_id(self.kern) * self.pcpu_size
            elem.value[off:off + self.value_size] = value[:self.value_size]

    def _pcpu_init(self, elem, value: bytes, onallcpus: bool) -> None:
        """pcpu_init_value(): a program's insert zeroes the other CPUs' values."""
        if onallcpus:
            elem.value[:] = value
            return
        me, size = smp_processor_id(self.kern), self.pcpu_size
        for cpu in range(self.kern.nr_cpus):
            off = cpu * size
            elem.value[off:off + self.value_size] = (value[:self.value_size] if cpu == me
                                                     else bytes(self.value_size))

    def _new_elem(self, key: bytes, value: bytes, onallcpus: bool):
        if len(self.elems) >= self.max_entries:
            raise KernelError(Errno.E2BIG, "hash map is full")
        elem = _HtabElem(bytearray(self.sys_value_size))
        self._pcpu_init(elem, value, onallcpus)
        return elem

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> None:
        """__htab_percpu_map_update_elem()."""
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        key = bytes(key)
        old = self.elems.get(key)
        _check_flags(old, flags)
        if old is not None:
            self._pcpu_copy(old, value, onallcpus)
            return
        elem = self.elems[key] = self._new_elem(key, value, onallcpus)
        self.walk.link(key, elem)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        self._update(key, value, flags, onallcpus=False)

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_percpu_hash_update()."""
        self._update(key, value, flags, onallcpus=True)


def _check_flags(old, flags: int) -> None:
    """check_flags(): NOEXIST on an existing key, EXIST on a missing one."""
    if old is not None and flags == UpdateFlags.NOEXIST:
        raise KernelError(Errno.EEXIST, "key exists")
    if old is None and flags == UpdateFlags.EXIST:
        raise KernelError(Errno.ENOENT, "no such key")


# ---------------------------------------------------------------- LRU hashes

class _LruElem(LruNode):
    """A preallocated element of an LRU hash: its bpf_lru_node plus key and value."""

    __slots__ = ("key", "value", "region", "bucket", "hash")

    def __init__(self, value_size: int):
        super().__init__()
        self.key = None
        self.value = bytearray(value_size)
        self.region = None
        self.bucket = None
        self.hash = None


class _LruMixin:
    """What LRU hashes add: the node pool and its lists, eviction through del_from_htab."""

    LRU = True

    def _init_elems(self) -> None:
        self.lru = BpfLru(bool(self.map_flags & MapFlags.NO_COMMON_LRU), self.kern.nr_cpus,
                          self._lru_delete_node)
        size = self.sys_value_size
        self.lru.populate(self.max_entries, lambda: _LruElem(size))

    def _lru_delete_node(self, elem) -> bool:
        """htab_lru_map_delete_node(): unhash the element if it is still in the table."""
        if self.elems.get(elem.key) is not elem:
            return False
        del self.elems[elem.key]
        self._release_fields(elem)
        self._unmap(elem)
        self.walk.unlink(elem.key, elem)
        return True

    def _pop(self, key: bytes):
        """prealloc_lru_pop(): a free element for `key` (ENOMEM when nothing can be evicted)."""
        elem = self.lru.pop_free(smp_processor_id(self.kern))
        if elem is None:
            raise KernelError(Errno.ENOMEM, "no free LRU element")
        elem.key = key
        elem.hash = None
        return elem

    def _free_elem(self, elem) -> None:
        self.lru.push_free(elem)

    def _touch(self, elem) -> None:
        elem.ref = True


@attrs.define(eq=False)
class LruHtabMap(_LruMixin, HtabMap):
    """BPF_MAP_TYPE_LRU_HASH — htab_lru_map_ops.

    Every update takes a free element first (possibly evicting, even when the key
    exists or the update then fails) and replaces the old element with it.
    """

    lru: object = None

    def map_lookup_elem(self, key: bytes) -> int:
        """htab_lru_map_lookup_elem(): programs' lookups mark the element referenced."""
        elem = self.elems.get(bytes(key))
        if elem is None:
            return 0
        elem.ref = True
        return self._value_addr(elem)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """htab_lru_map_update_elem()."""
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        key = bytes(key)
        new = self._pop(key)
        new.value[:] = value[:self.value_size]
        zero_special_fields(self.record, new.value)
        old = self.elems.get(key)
        try:
            _check_flags(old, flags)
        except KernelError:
            self.lru.push_free(new)
            raise
        self.elems[key] = new
        if old is not None:
            self.walk.unlink(key, old)
        self.walk.link(key, new)
        if old is not None:
            new.ref = True
            self._release_fields(old)
            self._unmap(old)
            self.lru.push_free(old)


@attrs.define(eq=False)
class LruPercpuHtabMap(_LruMixin, PercpuHtabMap):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH — htab_lru_percpu_map_ops (updates in place)."""

    lru: object = None

    def _update(self, key: bytes, value: bytes, flags: int, onallcpus: bool) -> None:
        """__htab_lru_percpu_map_update_elem(): BPF_EXIST never takes a free element."""
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        key = bytes(key)
        new = self._pop(key) if flags != UpdateFlags.EXIST else None
        old = self.elems.get(key)
        try:
            _check_flags(old, flags)
        except KernelError:
            if new is not None:
                self.lru.push_free(new)
            raise
        if old is not None:
            old.ref = True
            self._pcpu_copy(old, value, onallcpus)
            if new is not None:
                self.lru.push_free(new)
            return
        self._pcpu_init(new, value, onallcpus)
        self.elems[key] = new
        self.walk.link(key, new)
