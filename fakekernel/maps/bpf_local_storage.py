"""Local storage maps — kernel/bpf/bpf_local_storage.c (the common part of task, inode, cgroup
and socket storage: bpf_local_storage_map_alloc_check, bpf_local_storage_map_check_btf,
bpf_local_storage_lookup/update, bpf_selem_unlink, bpf_local_storage_destroy,
bpf_local_storage_map_free).

A local storage map keeps no values of its own: every *owner* object (a task, an inode, a
cgroup, a socket) carries its storages, one per map, and the map only knows which owners hold
one of its elements (its buckets).  When the owner dies its storages go
(`bpf_local_storage_destroy`); when the map is freed its elements leave every owner.

Owner protocol (what a subclass provides; SK_STORAGE subclasses this for sockets):

* ``owner_from_fd(task, fd) -> owner`` — the syscall key is an ``int`` fd of the calling task
  (the kernel reads ``*(int *)key``); resolve it to the owner or raise the kernel's
  KernelError (EBADF for a wrong fd, ENOENT for an owner that is gone, ...).
* ``owner_storage(owner) -> dict | None`` — the owner's storage slot
  (``map_owner_storage_ptr``): a dict ``{map: LocalStorageElem}`` kept on the owner
  (by default its ``bpf_storage`` attribute), or None when this owner cannot carry storage
  (an inode without a bpf LSM blob).  Owners must be hashable by identity.
* the owner calls ``bpf_local_storage_destroy(storage)`` when it dies.

Syscall side: lookup/update/delete resolve the fd through ``owner_from_fd(kern.current, fd)``;
get_next_key and lookup_and_delete are ENOTSUPP.  Program side: `storage_get(owner, init,
flags)` returns the address of the value in ``kern.mem`` (0 = NULL) and creates the element
with BPF_LOCAL_STORAGE_GET_F_CREATE; `storage_delete(owner)` is 0 / -ENOENT.

Values are bytearrays mapped into the kernel address space the first time a program asks
for them and unmapped when the element goes.  An update without BPF_F_LOCK gives the value
fresh special fields (the kernel allocates a new element; no program can hold the old
pointer across the syscall, so reusing the buffer is not observable); BPF_F_LOCK copies
into the existing value around its bpf_spin_lock.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.btf_fields import copy_map_value, copy_map_value_locked, copy_value_out
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import map_fields_from_attr
from uapi.bpf import BPF_LOCAL_STORAGE_GET_F_CREATE, MapFlags, UpdateFlags
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["LocalStorageMap", "LocalStorageElem", "bpf_local_storage_destroy",
           "BPF_LOCAL_STORAGE_CREATE_FLAG_MASK", "BPF_LOCAL_STORAGE_MAX_VALUE_SIZE",
           "key_to_fd"]

BPF_LOCAL_STORAGE_CREATE_FLAG_MASK = MapFlags.NO_PREALLOC | MapFlags.CLONE
U16_MAX = 0xFFFF
# sizeof(struct bpf_local_storage_elem) on x86_64 6.18: measured as U16_MAX minus the largest
# value_size MAP_CREATE accepts (65407); the KMALLOC_MAX_SIZE bound is far larger.
SELEM_SIZE = 128
BPF_LOCAL_STORAGE_MAX_VALUE_SIZE = U16_MAX - SELEM_SIZE
# bpf_local_storage_map_mem_usage() = sizeof(struct bpf_local_storage_map) + the buckets;
# x86_64 6.18 sizes, measured through fdinfo memlock (480 with 2 CPUs)
SMAP_SIZE = 448
SMAP_BUCKET_SIZE = 16
MIN_BUCKETS = 2                 # select_bucket() needs at least two
_INT_SIZE = ffi.sizeof("int")
_U32_BITS = 32
_F_LOCK = int(UpdateFlags.F_LOCK)
_NOT_F_LOCK = ~_F_LOCK
_EXIST = int(UpdateFlags.EXIST)
_NOEXIST = int(UpdateFlags.NOEXIST)


def key_to_fd(key: bytes) -> int:
    """``*(int *)key``: the fd the syscall key names."""
    return int.from_bytes(bytes(key[:_INT_SIZE]), "little", signed=True)


class LocalStorageElem:
    """struct bpf_local_storage_elem: one owner's value in one map."""

    __slots__ = ("owner", "data", "region")

    def __init__(self, owner, data: bytearray):
        self.owner = owner
        self.data = data
        self.region = None


def _unmap(kern, elem: LocalStorageElem) -> None:
    if elem.region is not None:
        kern.mem.unmap(elem.region)
        elem.region = None


def bpf_local_storage_destroy(storage: dict | None) -> None:
    """bpf_local_storage_destroy(): the owner is going away; every map forgets its element."""
    if not storage:
        return
    for smap, elem in list(storage.items()):
        smap.selems.pop(elem.owner, None)
        _unmap(smap.kern, elem)
    storage.clear()


@attrs.define(eq=False)
class LocalStorageMap(BpfMap):
    """struct bpf_local_storage_map; subclasses implement the owner protocol."""

    selems: dict = attrs.field(factory=dict)        # owner -> LocalStorageElem (the buckets)

    # ---- creation ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """bpf_local_storage_map_alloc_check(): BTF is required (for sk storage dumping)."""
        if (attr.map_flags & ~int(BPF_LOCAL_STORAGE_CREATE_FLAG_MASK)
                or not attr.map_flags & MapFlags.NO_PREALLOC
                or attr.max_entries
                or attr.key_size != _INT_SIZE or not attr.value_size
                or not attr.btf_key_type_id or not attr.btf_value_type_id):
            raise KernelError(Errno.EINVAL, "bad local storage map attributes")
        if attr.value_size > BPF_LOCAL_STORAGE_MAX_VALUE_SIZE:
            raise KernelError(Errno.E2BIG, "local storage value too large")

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "LocalStorageMap":
        """bpf_local_storage_map_alloc(): buckets for the possible CPUs (at least two)."""
        m = cls(**map_fields_from_attr(kern, attr))
        nbuckets = max(MIN_BUCKETS, 1 << (kern.nr_cpus - 1).bit_length())
        m.memlock = SMAP_SIZE + SMAP_BUCKET_SIZE * nbuckets
        return m

    def map_check_btf(self, btf, key_type, value_type) -> None:
        """bpf_local_storage_map_check_btf(): the key is a 32-bit INT (an fd)."""
        if key_type is None or key_type.kind != BtfKind.INT:
            raise KernelError(Errno.EINVAL, "local storage BTF key must be an INT")
        from fakekernel.btf_env import int_data       # btf_env -> verifier -> maps: import late
        _, offset, bits = int_data(key_type)
        if bits != _U32_BITS or offset:
            raise KernelError(Errno.EINVAL, "local storage BTF key must be a 32-bit INT")

    def map_free(self) -> None:
        """bpf_local_storage_map_free(): every owner loses its element of this map."""
        for owner, elem in list(self.selems.items()):
            storage = self.owner_storage(owner)
            if storage is not None:
                storage.pop(self, None)
            _unmap(self.kern, elem)
        self.selems.clear()

    # ---- the owner protocol (subclasses) ----
    def owner_from_fd(self, task, fd: int):
        raise NotImplementedError

    def owner_storage(self, owner) -> dict | None:
        """map_owner_storage_ptr()."""
        return owner.bpf_storage

    # ---- bpf_local_storage.c core ----
    def local_storage_lookup(self, owner) -> LocalStorageElem | None:
        """bpf_local_storage_lookup()."""
        storage = self.owner_storage(owner)
        return None if storage is None else storage.get(self)

    def local_storage_update(self, owner, value: bytes | None, flags: int) -> LocalStorageElem:
        """bpf_local_storage_update(): flag checks, then create or overwrite the element."""
        storage = self.owner_storage(owner)
        if storage is None:         # (inode storage checks inode_storage_ptr() first)
            raise KernelError(Errno.EBADF, "owner cannot carry local storage")
        if flags & _NOT_F_LOCK > _EXIST or (flags & _F_LOCK and not self._has_spin_lock()):
            raise KernelError(Errno.EINVAL, "bad local storage update flags")
        old = storage.get(self)
        # check_flags()
        if old is not None and flags & _NOT_F_LOCK == _NOEXIST:
            raise KernelError(Errno.EEXIST, "element exists")
        if old is None and flags & _NOT_F_LOCK == _EXIST:
            raise KernelError(Errno.ENOENT, "no element to update")
        data = bytes(value[:self.value_size]) if value is not None else bytes(self.value_size)
        if old is not None and flags & _F_LOCK:
            copy_map_value_locked(self.record, old.data, data)
            return old
        fresh = bytearray(self.value_size)          # bpf_selem_alloc(): special fields zeroed
        copy_map_value(self.record, fresh, data)
        if old is not None:                         # the new selem replaces the old one
            old.data[:] = fresh
            return old
        elem = LocalStorageElem(owner, fresh)
        storage[self] = elem
        self.selems[owner] = elem
        return elem

    def selem_unlink(self, elem: LocalStorageElem) -> None:
        """bpf_selem_unlink()."""
        storage = self.owner_storage(elem.owner)
        if storage is not None:
            storage.pop(self, None)
        self.selems.pop(elem.owner, None)
        _unmap(self.kern, elem)

    def _has_spin_lock(self) -> bool:
        return self.spin_lock_off is not None

    def _value_addr(self, elem: LocalStorageElem) -> int:
        if elem.region is None:
            elem.region = self.kern.mem.map_region(elem.data, "map_value",
                                                   f"local_storage:{self.name.decode(errors='replace')}")
        return elem.region.base

    # ---- bpf_map_ops: the syscall side (key = an fd) ----
    def _owner(self, key: bytes):
        return self.owner_from_fd(self.kern.current, key_to_fd(key))

    def map_lookup_elem(self, key: bytes) -> int:
        elem = self.local_storage_lookup(self._owner(key))
        return 0 if elem is None else self._value_addr(elem)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        elem = self.local_storage_lookup(self._owner(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "owner has no element in this map")
        return copy_value_out(self.record, elem.data)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        self.local_storage_update(self._owner(key), value, flags)

    def map_delete_elem(self, key: bytes) -> None:
        self.storage_delete_or_raise(self._owner(key))

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """notsupp_get_next_key()."""
        raise KernelError(Errno.ENOTSUPP, "local storage cannot be iterated by key")

    def storage_delete_or_raise(self, owner) -> None:
        elem = self.local_storage_lookup(owner)
        if elem is None:
            raise KernelError(Errno.ENOENT, "owner has no element in this map")
        self.selem_unlink(elem)

    # ---- the program side (bpf_*_storage_get / _delete helpers) ----
    def storage_get(self, owner, init: bytes | None, flags: int) -> int:
        """The common body of bpf_{task,inode,cgrp,sk}_storage_get(): the value's address, or 0.

        `init` is the value to create with (None: zeroed); callers have checked `flags`
        and the owner pointer as their helper does."""
        elem = self.local_storage_lookup(owner)
        if elem is None and flags & BPF_LOCAL_STORAGE_GET_F_CREATE:
            try:
                elem = self.local_storage_update(owner, init, _NOEXIST)
            except KernelError:
                return 0
        return 0 if elem is None else self._value_addr(elem)

    def storage_delete(self, owner) -> int:
        """The common body of bpf_*_storage_delete(): 0 or -ENOENT."""
        try:
            self.storage_delete_or_raise(owner)
        except KernelError as e:
            return -e.errno
        return 0
