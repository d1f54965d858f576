"""Maps of maps — kernel/bpf/map_in_map.c, with array_of_maps_map_ops (kernel/bpf/arraymap.c)
and htab_of_maps_map_ops (kernel/bpf/hashtab.c).

BPF_MAP_TYPE_ARRAY_OF_MAPS and BPF_MAP_TYPE_HASH_OF_MAPS hold references to other maps.
At creation ``inner_map_fd`` names a template map whose shape (type, key/value sizes,
flags, max_entries, BTF) is copied into an `InnerMapMeta`; the template itself is not
kept.  Userspace stores a map *fd* (u32 value) and reads back the map *id*; an update
takes a plain reference on the inner map (not a user reference) and only accepts maps the
template's type finds equal (`map_meta_equal`).  Replacing or deleting an element, and
freeing the outer map, drop the reference.  A program's lookup gets the inner map itself (a
map pointer, which the verifier types by the template) to pass to the map helpers.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.arraymap import ArrayMap
from fakekernel.maps.hashtab import HtabMap
from uapi.bpf import MapFlags, UpdateFlags
from uapi.ffi import ffi

__all__ = ["ArrayOfMaps", "HashOfMaps", "InnerMapMeta", "bpf_map_meta_alloc"]

U32_SIZE = ffi.sizeof("__u32")


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@attrs.define(eq=False)
class InnerMapMeta:
    """The inner-map template (the kernel's inner_map_meta, a partial struct bpf_map)."""

    ops: type                   # the template's map class: its map_meta_equal decides
    map_type: int
    key_size: int
    value_size: int
    map_flags: int
    max_entries: int
    spin_lock_off: int | None = None
    btf: object = None
    name: bytes = b""           # not copied from the template (the verifier log shows none)

    def free(self) -> None:
        btf, self.btf = self.btf, None
        if btf is not None and hasattr(btf, "put"):
            btf.put()


def _map_get(task, ufd: int):
    """__bpf_map_get(fdget(ufd)): EBADF for no file, EINVAL for a file that is not a map."""
    from fakekernel.syscall.fdget import bpf_map_get
    return bpf_map_get(task, _s32(ufd))[1]


def bpf_map_meta_alloc(task, inner_map_fd: int) -> InnerMapMeta:
    """bpf_map_meta_alloc()."""
    inner = _map_get(task, inner_map_fd)
    if getattr(inner, "inner_map_meta", None) is not None:
        raise KernelError(Errno.EINVAL, "a map of maps cannot be an inner map")
    if type(inner).map_meta_equal is None:
        raise KernelError(Errno.ENOTSUPP, "this map type cannot be an inner map")
    btf = inner.btf
    if btf is not None and hasattr(btf, "get"):
        btf.get()
    return InnerMapMeta(ops=type(inner), map_type=inner.map_type, key_size=inner.key_size,
                        value_size=inner.value_size, map_flags=inner.map_flags,
                        max_entries=inner.max_entries,
                        spin_lock_off=getattr(inner, "spin_lock_off", None), btf=btf)


class _MapOfMaps:
    """What both outer types share (bpf_map_fd_get_ptr / put_ptr / sys_lookup_elem)."""

    map_meta_equal = None       # a map of maps is never an inner map

    @classmethod
    def _alloc_with_meta(cls, base_alloc, kern, attr, task):
        meta = bpf_map_meta_alloc(task, attr.inner_map_fd)
        try:
            m = base_alloc(kern, attr, task)
        except KernelError:
            meta.free()
            raise
        m.inner_map_meta = meta
        return m

    def _fd_get_ptr(self, value: bytes):
        """bpf_map_fd_get_ptr(): the map behind the fd, referenced, if the template accepts it."""
        inner = _map_get(self.kern.current, int.from_bytes(value[:U32_SIZE], "little"))
        meta = self.inner_map_meta
        if not meta.ops.map_meta_equal(meta, inner):
            raise KernelError(Errno.EINVAL, "inner map does not match the template")
        return inner.get()

    def _inner_ptr(self, inner) -> int:
        """The value a program's lookup sees: the inner map as a map pointer (what LD_IMM64 of
        a map fd gives), so the program can pass it to the map helpers."""
        return self.kern.mem.map_object(inner) if inner is not None else 0

    def _free_meta(self) -> None:
        if self.inner_map_meta is not None:
            self.inner_map_meta.free()
            self.inner_map_meta = None


@attrs.define(eq=False)
class ArrayOfMaps(_MapOfMaps, ArrayMap):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS — array_of_maps_map_ops."""

    inner_map_meta: InnerMapMeta | None = None
    ptrs: list = attrs.field(factory=list)

    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """fd_array_map_alloc_check()."""
        if attr.value_size != U32_SIZE:
            raise KernelError(Errno.EINVAL, "maps of maps hold u32 fds")
        if attr.map_flags & (MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG):
            raise KernelError(Errno.EINVAL, "fd arrays cannot be RDONLY_PROG/WRONLY_PROG")
        super().map_alloc_check(attr, task)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "ArrayOfMaps":
        m = cls._alloc_with_meta(super().map_alloc, kern, attr, task)
        m.ptrs = [None] * m.max_entries
        return m

    def map_free(self) -> None:
        """array_of_map_free()."""
        self._free_meta()
        for i, inner in enumerate(self.ptrs):
            if inner is not None:
                self.ptrs[i] = None
                inner.put()
        super().map_free()

    def map_lookup_elem(self, key: bytes) -> int:
        """array_of_map_lookup_elem(): the inner map's pointer, NULL for an empty slot."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        inner = self.ptrs[index] if index < self.max_entries else None
        return self._inner_ptr(inner)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EINVAL, "maps of maps are updated from userspace only")

    def map_delete_elem(self, key: bytes) -> None:
        """fd_array_map_delete_elem()."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        inner, self.ptrs[index] = self.ptrs[index], None
        if inner is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        inner.put()

    map_get_hash = None
    map_direct_value_addr = None

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_fd_array_map_lookup_elem() + bpf_map_fd_sys_lookup_elem(): the inner map's id."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        inner = self.ptrs[index] if index < self.max_entries else None
        if inner is None:
            raise KernelError(Errno.ENOENT, "no map at this index")
        return inner.id.to_bytes(U32_SIZE, "little")

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_array_map_update_elem()."""
        if flags != UpdateFlags.ANY:
            raise KernelError(Errno.EINVAL, "fd array updates take BPF_ANY only")
        index = int.from_bytes(key[:U32_SIZE], "little")
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        old, self.ptrs[index] = self.ptrs[index], self._fd_get_ptr(value)
        if old is not None:
            old.put()


@attrs.define(eq=False)
class HashOfMaps(_MapOfMaps, HtabMap):
    """BPF_MAP_TYPE_HASH_OF_MAPS — htab_of_maps_map_ops.  The element value is the inner
    map's id (what the syscall reads back); `inner` holds the referenced maps."""

    inner_map_meta: InnerMapMeta | None = None
    inner: dict = attrs.field(factory=dict)

    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """fd_htab_map_alloc_check()."""
        if attr.value_size != U32_SIZE:
            raise KernelError(Errno.EINVAL, "maps of maps hold u32 fds")
        super().map_alloc_check(attr, task)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "HashOfMaps":
        return cls._alloc_with_meta(super().map_alloc, kern, attr, task)

    def map_free(self) -> None:
        """htab_of_map_free()."""
        self._free_meta()
        inner, self.inner = self.inner, {}
        for m in inner.values():
            m.put()
        super().map_free()

    def map_mem_usage(self) -> int:
        """htab_map_mem_usage(): fd hashes have no per-CPU extra elements on 6.18
        (htab_has_extra_elems() excludes them; the update replaces the value in place)."""
        usage = super().map_mem_usage()
        if self.prealloc:
            usage -= self.elem_size * self.kern.nr_cpus      # (the extra_elems pointers stay)
        return usage

    def map_lookup_elem(self, key: bytes) -> int:
        """htab_of_map_lookup_elem(): the inner map's pointer, NULL for a missing key."""
        return self._inner_ptr(self.inner.get(bytes(key[:self.key_size])))

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EINVAL, "maps of maps are updated from userspace only")

    def map_delete_elem(self, key: bytes) -> None:
        """htab_map_delete_elem(); freeing the element drops the inner map."""
        super().map_delete_elem(key)
        inner = self.inner.pop(bytes(key), None)
        if inner is not None:
            inner.put()

    def map_lookup_and_delete_elem(self, key, flags: int) -> bytes:
        raise KernelError(Errno.ENOTSUPP, "lookup_and_delete is for plain hash maps")

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_htab_map_update_elem(): the fd is resolved before the hash's flag checks."""
        new = self._fd_get_ptr(value)
        try:
            HtabMap.map_update_elem(self, key, new.id.to_bytes(U32_SIZE, "little"), flags)
        except KernelError:
            new.put()
            raise
        old = self.inner.get(bytes(key))
        self.inner[bytes(key)] = new
        if old is not None:
            old.put()
