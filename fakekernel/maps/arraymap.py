"""Array maps — kernel/bpf/arraymap.c.

`ArrayMap` is BPF_MAP_TYPE_ARRAY: ``max_entries`` preallocated, zero-filled values of
``elem_size = round_up(value_size, 8)`` bytes in one storage area.  Programs get pointers
into that area (it is mapped once into the kernel address space, on first use), the
syscall side copies.  Variants (per-CPU, prog/perf-event arrays, array of maps) subclass
it and override single ops, as the kernel's *_map_ops reuse the array functions.

`PercpuArrayMap` is BPF_MAP_TYPE_PERCPU_ARRAY: one ``elem_size`` slot per possible CPU
for every index (slot of CPU c of index i at ``(i * nr_cpus + c) * elem_size``).  The
syscall side moves all slots at once (``elem_size * nr_cpus`` bytes, padding included);
programs see the slot of the CPU they run on.
"""
from __future__ import annotations

import hashlib

import attrs

from fakekernel import kernel_layout as kl
from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import array_map_check_btf
from fakekernel.btf_fields import (BtfFieldType, bpf_obj_free_fields, btf_record_has_field,
                                   copy_map_value, copy_map_value_locked, copy_value_out)
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.batch import generic_map_lookup_batch, generic_map_update_batch
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, NUMA_NO_NODE, PCPU_MIN_UNIT_SIZE, MapArea,
                                    bpf_map_area_alloc, bpf_map_attr_numa_node,
                                    bpf_map_flags_access_ok, map_fields_from_attr, page_align,
                                    round_up, smp_processor_id)
from uapi.bpf import MapFlags, MapType, UpdateFlags
from uapi.ffi import ffi

__all__ = ["ArrayMap", "PercpuArrayMap", "ARRAY_CREATE_FLAG_MASK"]

ARRAY_CREATE_FLAG_MASK = (MapFlags.NUMA_NODE | MapFlags.MMAPABLE | BPF_F_ACCESS_MASK
                          | MapFlags.PRESERVE_ELEMS | MapFlags.INNER_MAP)
INT_MAX = 2**31 - 1
U32_SIZE = ffi.sizeof("__u32")
U32_MAX = 2**32 - 1
PTR_SIZE = ffi.sizeof("void *")
VALUE_ALIGN = ffi.sizeof("__u64")
# sizeof(struct bpf_array) up to its value[] member on x86_64 6.18 (fdinfo memlock minus values)
BPF_ARRAY_HDR_SIZE = 312

_NOT_F_LOCK, _F_LOCK, _EXIST = ~int(UpdateFlags.F_LOCK), int(UpdateFlags.F_LOCK), int(UpdateFlags.EXIST)


def _index(key: bytes) -> int:
    return int.from_bytes(key[:U32_SIZE], "little")


@attrs.define(eq=False)
class ArrayMap(BpfMap):
    elem_size: int = 0
    bypass_spec_v1: bool = True       # map->bypass_spec_v1: created by a perfmon-capable task
    index_mask: int = 0
    area: MapArea | None = None
    region: object = None               # the area's Region in kern.mem, mapped on first use

    # ---- creation: array_map_alloc_check / array_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        percpu = attr.map_type == MapType.PERCPU_ARRAY
        if (attr.max_entries == 0 or attr.key_size != U32_SIZE or attr.value_size == 0
                or attr.map_flags & ~int(ARRAY_CREATE_FLAG_MASK)
                or not bpf_map_flags_access_ok(attr.map_flags)
                or (percpu and bpf_map_attr_numa_node(attr) != NUMA_NO_NODE)):
            raise KernelError(Errno.EINVAL, "bad array map attributes")
        if attr.map_type != MapType.ARRAY and attr.map_flags & (MapFlags.MMAPABLE | MapFlags.INNER_MAP):
            raise KernelError(Errno.EINVAL, "MMAPABLE/INNER_MAP only for plain arrays")
        if attr.map_type != MapType.PERF_EVENT_ARRAY and attr.map_flags & MapFlags.PRESERVE_ELEMS:
            raise KernelError(Errno.EINVAL, "PRESERVE_ELEMS only for perf event arrays")
        if attr.value_size > INT_MAX:
            raise KernelError(Errno.E2BIG, "value_size > INT_MAX")
        if percpu and round_up(attr.value_size, VALUE_ALIGN) > PCPU_MIN_UNIT_SIZE:
            raise KernelError(Errno.E2BIG, "per-CPU value larger than a percpu unit")

    def map_check_btf(self, btf, key_type, value_type) -> None:
        array_map_check_btf(self, btf, key_type, value_type)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "ArrayMap":
        elem_size = round_up(attr.value_size, VALUE_ALIGN)
        max_entries = attr.max_entries
        index_mask = (1 << (max_entries - 1).bit_length()) - 1
        if not task.perfmon_capable():
            # without bpf_bypass_spec_v1 the area is rounded up to a power of two of entries
            max_entries = index_mask + 1
            if max_entries > U32_MAX:
                raise KernelError(Errno.E2BIG, "max_entries overflows when rounded up")
        mmapable = bool(attr.map_flags & MapFlags.MMAPABLE)
        size = max_entries * elem_size * cls._copies(kern)
        total = (page_align(BPF_ARRAY_HDR_SIZE) + page_align(size) if mmapable
                 else BPF_ARRAY_HDR_SIZE + size)
        area = bpf_map_area_alloc(size, mmapable, charge=total)
        m = cls(**map_fields_from_attr(kern, attr), elem_size=elem_size, index_mask=index_mask,
                area=area, bypass_spec_v1=task.perfmon_capable())
        m.memlock = m.map_mem_usage()
        return m

    @classmethod
    def _copies(cls, kern) -> int:
        """How many copies of each value the area holds (one per CPU for per-CPU arrays)."""
        return 1

    def map_mem_usage(self) -> int:
        """array_map_mem_usage()."""
        values = self.max_entries * self.elem_size
        if self.map_flags & MapFlags.MMAPABLE:
            return page_align(BPF_ARRAY_HDR_SIZE) + page_align(values)
        return BPF_ARRAY_HDR_SIZE + values

    def map_free(self) -> None:
        if self.region is not None:
            self.kern.mem.unmap(self.region)
            self.region = None
        if self.area is not None:
            self.area.free()
            self.area = None

    # ---- the value area in the kernel address space ----
    def _value_base(self) -> int:
        """Address of value[0]; the area is mapped into kern.mem the first time it is needed."""
        if self.region is None:
            self.region = self.kern.mem.map_region(self.area.buf, "map_value",
                                                   f"array:{self.name.decode(errors='replace')}")
        return self.region.base

    def kernel_object_address(self, mem) -> int | None:
        """The map's address (AddressSpace.map_object): struct bpf_array, whose value[] is the
        mapped value area — the inlined lookup (array_map_gen_lookup) indexes from it."""
        if self.area is None or mem is not self.kern.mem:
            return None
        return self._value_base() - kl.offsetof("bpf_array.value")

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        """array_map_lookup_elem(): address of the element, 0 past the end."""
        index = _index(key)
        if index >= self.max_entries:
            return 0
        return self._value_base() + self.elem_size * index

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """array_map_update_elem()."""
        if flags & _NOT_F_LOCK > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        if flags & UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "array elements always exist")
        if flags & _F_LOCK and not btf_record_has_field(self.record, BtfFieldType.SPIN_LOCK):
            raise KernelError(Errno.EINVAL, "BPF_F_LOCK without a bpf_spin_lock in the value")
        off = self.elem_size * index
        if self.record is None:
            self.area.buf[off:off + self.value_size] = value[:self.value_size]
            return
        dst = memoryview(self.area.buf)[off:off + self.value_size]
        if flags & _F_LOCK:
            copy_map_value_locked(self.record, dst, value)
        else:           # the special fields are the kernel's: kept, and what they own freed
            copy_map_value(self.record, dst, value)
            addr = self._value_base() + off if self.region is not None else 0
            bpf_obj_free_fields(self.record, dst, kern=self.kern, addr=addr)

    def map_delete_elem(self, key: bytes) -> None:
        raise KernelError(Errno.EINVAL, "array elements cannot be deleted")

    @staticmethod
    def map_meta_equal(meta0, meta1) -> bool:
        """array_map_meta_equal(): max_entries must match too, unless BPF_F_INNER_MAP."""
        if not bpf_map_meta_equal(meta0, meta1):
            return False
        return bool(meta0.map_flags & MapFlags.INNER_MAP) or meta0.max_entries == meta1.max_entries

    map_lookup_batch = generic_map_lookup_batch
    map_update_batch = generic_map_update_batch

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """array_map_get_next_key(): NULL or out-of-range keys restart at index 0."""
        index = U32_MAX if key is None else _index(key)
        if index >= self.max_entries:
            return (0).to_bytes(U32_SIZE, "little")
        if index == self.max_entries - 1:
            raise KernelError(Errno.ENOENT, "last index")
        return (index + 1).to_bytes(U32_SIZE, "little")

    def map_direct_value_addr(self, off: int) -> int:
        """array_map_direct_value_addr(): the address of value[0]; the caller adds `off`.

        Only single-element arrays (global data sections) allow it (ENOTSUPP otherwise);
        an offset at or past value_size is EINVAL.
        """
        if self.max_entries != 1:
            raise KernelError(Errno.ENOTSUPP, "direct value access needs max_entries == 1")
        if off >= self.value_size:
            raise KernelError(Errno.EINVAL, "offset past value_size")
        return self._value_base()

    def map_direct_value_meta(self, addr: int) -> int | None:
        """array_map_direct_value_meta(): the offset of `addr` in value[0] (None: not in it)."""
        if self.max_entries != 1 or self.region is None:
            return None
        off = addr - self.region.base
        return off if 0 <= off < self.elem_size else None

    def map_get_hash(self) -> bytes:
        """array_map_get_hash(): SHA-256 over every element (padding included)."""
        return hashlib.sha256(self.area.buf[:self.elem_size * self.max_entries]).digest()

    # ---- syscall side ----
    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.ENOENT, "index past max_entries")
        off = self.elem_size * index
        return copy_value_out(self.record, self.area.buf[off:off + self.value_size])


@attrs.define(eq=False)
class PercpuArrayMap(ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY — percpu_array_map_ops."""

    @classmethod
    def _copies(cls, kern) -> int:
        return kern.nr_cpus

    def map_mem_usage(self) -> int:
        """array_map_mem_usage(), per-CPU branch: a pointer per entry plus the percpu slots."""
        return (BPF_ARRAY_HDR_SIZE + self.max_entries * PTR_SIZE
                + self.max_entries * self.elem_size * self.kern.nr_cpus)

    def _slot(self, index: int, cpu: int) -> int:
        return (index * self.kern.nr_cpus + cpu) * self.elem_size

    def map_lookup_elem(self, key: bytes) -> int:
        """percpu_array_map_lookup_elem(): this CPU's slot."""
        return self.map_lookup_percpu_elem(key, smp_processor_id(self.kern))

    def map_lookup_percpu_elem(self, key: bytes, cpu: int) -> int:
        """percpu_array_map_lookup_percpu_elem(): NULL for a CPU or index out of range."""
        index = _index(key)
        if cpu >= self.kern.nr_cpus or index >= self.max_entries:
            return 0
        return self._value_base() + self._slot(index, cpu)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """array_map_update_elem() for programs: value_size bytes into this CPU's slot."""
        if flags & _NOT_F_LOCK > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        if flags & UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "array elements always exist")
        if flags & _F_LOCK:
            raise KernelError(Errno.EINVAL, "BPF_F_LOCK without a bpf_spin_lock in the value")
        off = self._slot(index, smp_processor_id(self.kern))
        self.area.buf[off:off + self.value_size] = value[:self.value_size]

    # percpu_array_map_ops has neither (callers treat None as the op being absent)
    map_get_hash = None
    map_direct_value_addr = None

    # ---- syscall side: every CPU's slot, elem_size bytes each ----
    @property
    def sys_value_size(self) -> int:
        return self.elem_size * self.kern.nr_cpus

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_percpu_array_copy()."""
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.ENOENT, "index past max_entries")
        off = self._slot(index, 0)
        return copy_value_out(self.record, self.area.buf[off:off + self.sys_value_size],
                              self.elem_size, self.kern.nr_cpus)

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_percpu_array_update(): the rounded slots as given, padding included."""
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        if flags == UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "array elements always exist")
        off = self._slot(index, 0)
        if self.record is None:
            self.area.buf[off:off + self.sys_value_size] = value
            return
        for cpu in range(self.kern.nr_cpus):
            lo = off + cpu * self.elem_size
            dst = memoryview(self.area.buf)[lo:lo + self.elem_size]
            copy_map_value(self.record, dst, value[cpu * self.elem_size:(cpu + 1) * self.elem_size])
            bpf_obj_free_fields(self.record, dst)
