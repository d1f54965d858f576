"""Arrays of kernel-object references — kernel/bpf/arraymap.c (the fd_array_* functions).

`FdArrayMap` is the shared part of BPF_MAP_TYPE_PERF_EVENT_ARRAY and
BPF_MAP_TYPE_CGROUP_ARRAY: an array whose u32 values are *fds* on update; the map keeps a
reference to the object behind the fd in slot ``index``.  Subclasses say what an fd must
name (`map_fd_get_ptr`), how a reference is dropped (`map_fd_put_ptr`) and what, if
anything, a userspace lookup returns (`map_fd_sys_lookup_elem`; absent = ENOTSUPP).

Slots are kept in a dict (index -> object) so a huge, mostly empty array costs nothing.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.arraymap import ArrayMap
from uapi.bpf import MapFlags, UpdateFlags
from uapi.ffi import ffi

__all__ = ["FdArrayMap"]

U32_SIZE = ffi.sizeof("__u32")


def _index(key: bytes) -> int:
    return int.from_bytes(key[:U32_SIZE], "little")


@attrs.define(eq=False)
class FdArrayMap(ArrayMap):
    """The fd_array part of perf_event_array_map_ops / cgroup_array_map_ops."""

    ptrs: dict = attrs.field(factory=dict)

    # ---- creation: fd_array_map_alloc_check, then array_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        if attr.value_size != U32_SIZE:
            raise KernelError(Errno.EINVAL, "fd arrays hold u32 fds")
        if attr.map_flags & (MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG):
            raise KernelError(Errno.EINVAL, "fd arrays cannot be RDONLY_PROG/WRONLY_PROG")
        super().map_alloc_check(attr, task)

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    map_meta_equal = staticmethod(bpf_map_meta_equal)

    def map_free(self) -> None:
        """bpf_fd_array_map_clear() before the area goes (cgroup arrays; perf arrays that
        preserve their elements)."""
        self.bpf_fd_array_map_clear()
        super().map_free()

    def bpf_fd_array_map_clear(self) -> None:
        for index in sorted(self.ptrs):
            self.map_fd_put_ptr(self.ptrs.pop(index))

    # ---- what subclasses provide ----
    def map_fd_get_ptr(self, ufd: int):
        """The object `ufd` names, referenced for the map; KernelError if it is the wrong kind."""
        raise NotImplementedError

    def map_fd_put_ptr(self, ptr) -> None:
        """Drop the map's reference to `ptr`."""

    map_fd_sys_lookup_elem = None     # (ptr) -> u32 for userspace lookups; None: ENOTSUPP

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        """fd_array_map_lookup_elem(): never a value pointer (the verifier refuses the call)."""
        return 0

    # fd arrays have no map_update_elem of their own: the syscall side goes through
    # sys_update, programs cannot update them
    map_update_elem = BpfMap.map_update_elem

    def map_delete_elem(self, key: bytes) -> None:
        """fd_array_map_delete_elem()."""
        self._delete_index(_index(key))

    def _delete_index(self, index: int) -> None:
        """__fd_array_map_delete_elem()."""
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        old = self.ptrs.pop(index, None)
        if old is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        self.map_fd_put_ptr(old)

    map_lookup_batch = None
    map_update_batch = None
    map_get_hash = None
    map_direct_value_addr = None

    def fd_array_elem(self, index: int):
        """The object in slot `index` (None if empty or out of range), for helpers."""
        return self.ptrs.get(index)

    # ---- syscall side ----
    @property
    def sys_value_size(self) -> int:
        """bpf_map_value_size(): an fd map moves one u32."""
        return U32_SIZE

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_fd_array_map_lookup_elem()."""
        if self.map_fd_sys_lookup_elem is None:
            raise KernelError(Errno.ENOTSUPP, "this fd array cannot be read from userspace")
        ptr = self.ptrs.get(_index(key))
        if ptr is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        return self.map_fd_sys_lookup_elem(ptr).to_bytes(U32_SIZE, "little")

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_array_map_update_elem()."""
        if flags != UpdateFlags.ANY:
            raise KernelError(Errno.EINVAL, "fd array updates take BPF_ANY only")
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        new = self.map_fd_get_ptr(int.from_bytes(value[:U32_SIZE], "little"))
        old, self.ptrs[index] = self.ptrs.get(index), new
        if old is not None:
            self.map_fd_put_ptr(old)
