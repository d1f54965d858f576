"""Queue and stack maps — kernel/bpf/queue_stack_maps.c.

`QueueMap` (BPF_MAP_TYPE_QUEUE) and `StackMap` (BPF_MAP_TYPE_STACK) keep values in a
ring of ``max_entries + 1`` slots of ``value_size`` bytes with ``head`` (next write) and
``tail`` (oldest) indices; the ring is full when advancing ``head`` would reach ``tail``.
They have no keys: the syscall's UPDATE pushes, LOOKUP peeks and LOOKUP_AND_DELETE pops;
programs use bpf_map_push_elem / bpf_map_pop_elem / bpf_map_peek_elem.  A queue reads at
``tail`` (FIFO), a stack at ``head - 1`` (LIFO).  Pushing with BPF_EXIST onto a full map
drops the oldest element first (for a stack too: the element at ``tail``).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, bpf_map_area_alloc, bpf_map_flags_access_ok,
                                    map_fields_from_attr)
from uapi.bpf import MapFlags, UpdateFlags

__all__ = ["QueueMap", "StackMap", "QUEUE_STACK_CREATE_FLAG_MASK", "KMALLOC_MAX_SIZE"]

QUEUE_STACK_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | BPF_F_ACCESS_MASK
KMALLOC_MAX_SIZE = 1 << 22          # x86_64: PAGE_SIZE << MAX_PAGE_ORDER
# sizeof(struct bpf_queue_stack) on x86_64 6.18 (fdinfo memlock minus the slots)
BPF_QUEUE_STACK_SIZE = 312


@attrs.define(eq=False)
class QueueMap(BpfMap):
    """BPF_MAP_TYPE_QUEUE — queue_map_ops."""

    size: int = 0               # max_entries + 1 slots
    head: int = 0
    tail: int = 0
    area: object = None

    # ---- creation: queue_stack_map_alloc_check / queue_stack_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        if (attr.max_entries == 0 or attr.key_size != 0 or attr.value_size == 0
                or attr.map_flags & ~int(QUEUE_STACK_CREATE_FLAG_MASK)
                or not bpf_map_flags_access_ok(attr.map_flags)):
            raise KernelError(Errno.EINVAL, "bad queue/stack map attributes")
        if attr.value_size > KMALLOC_MAX_SIZE:
            raise KernelError(Errno.E2BIG, "value_size larger than KMALLOC_MAX_SIZE")
        # (6.12's "max_entries >= U32_MAX / value_size" E2BIG is gone in 6.18: sizes are u64)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "QueueMap":
        size = attr.max_entries + 1
        data = size * attr.value_size
        area = bpf_map_area_alloc(data, charge=BPF_QUEUE_STACK_SIZE + data)
        m = cls(**map_fields_from_attr(kern, attr), size=size, area=area)
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """queue_stack_map_mem_usage()."""
        return BPF_QUEUE_STACK_SIZE + (self.max_entries + 1) * self.value_size

    def map_free(self) -> None:
        if self.area is not None:
            self.area.free()
            self.area = None

    # ---- ring helpers ----
    def _is_empty(self) -> bool:
        return self.head == self.tail

    def _is_full(self) -> bool:
        head = self.head + 1
        if head >= self.size:
            head = 0
        return head == self.tail

    def _slot(self, index: int) -> bytes:
        off = index * self.value_size
        return bytes(self.area.buf[off:off + self.value_size])

    def _read_index(self) -> int:
        """Where peek/pop read: the oldest slot for a queue."""
        return self.tail

    def _consume(self, index: int) -> None:
        """pop: a queue advances its tail."""
        self.tail = index + 1 if index + 1 < self.size else 0

    def _get(self, value: bytearray, delete: bool) -> None:
        """__queue_map_get() / __stack_map_get(): `value` is zeroed when the map is empty."""
        if self._is_empty():
            value[:self.value_size] = bytes(self.value_size)
            raise KernelError(Errno.ENOENT, "queue/stack is empty")
        index = self._read_index()
        value[:self.value_size] = self._slot(index)
        if delete:
            self._consume(index)

    # ---- bpf_map_ops ----
    def map_peek_elem(self, value: bytearray) -> None:
        self._get(value, delete=False)

    def map_pop_elem(self, value: bytearray) -> None:
        self._get(value, delete=True)

    def map_push_elem(self, value: bytes, flags: int) -> None:
        """queue_stack_map_push_elem(): BPF_EXIST on a full map overwrites the oldest element."""
        if flags & UpdateFlags.NOEXIST or flags > UpdateFlags.EXIST:
            raise KernelError(Errno.EINVAL, "queue/stack push takes BPF_ANY or BPF_EXIST")
        if self._is_full():
            if not flags & UpdateFlags.EXIST:
                raise KernelError(Errno.E2BIG, "queue/stack is full")
            self.tail = self.tail + 1 if self.tail + 1 < self.size else 0
        off = self.head * self.value_size
        self.area.buf[off:off + self.value_size] = value[:self.value_size]
        self.head = self.head + 1 if self.head + 1 < self.size else 0

    def map_lookup_elem(self, key) -> int:
        """queue_stack_map_lookup_elem(): always NULL."""
        return 0

    def map_update_elem(self, key, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EINVAL, "queue/stack maps are updated by push")

    def map_delete_elem(self, key) -> None:
        raise KernelError(Errno.EINVAL, "queue/stack maps have no keys to delete")

    def map_get_next_key(self, key) -> bytes:
        raise KernelError(Errno.EINVAL, "queue/stack maps have no keys")

    # ---- syscall side (bpf_map_copy_value / bpf_map_update_value / map_lookup_and_delete_elem) ----
    def sys_lookup(self, key, flags: int) -> bytes:
        value = bytearray(self.value_size)
        self.map_peek_elem(value)
        return bytes(value)

    def sys_update(self, key, value: bytes, flags: int) -> None:
        self.map_push_elem(value, flags)

    def map_lookup_and_delete_elem(self, key, flags: int) -> bytes:
        value = bytearray(self.value_size)
        self.map_pop_elem(value)
        return bytes(value)


@attrs.define(eq=False)
class StackMap(QueueMap):
    """BPF_MAP_TYPE_STACK — stack_map_ops: reads the newest element (head - 1)."""

    def _read_index(self) -> int:
        return self.head - 1 if self.head > 0 else self.size - 1

    def _consume(self, index: int) -> None:
        self.head = index
