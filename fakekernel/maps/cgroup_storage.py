"""Cgroup storage — kernel/bpf/local_storage.c (CGROUP_STORAGE, PERCPU_CGROUP_STORAGE), with the
storage parts of kernel/bpf/cgroup.c (bpf_cgroup_storages_alloc/link, cgroup_bpf_release) and
net/bpf/test_run.c (bpf_test_run's temporary storages).

A storage is created when a program that uses the map is attached to a cgroup: its key is
``struct bpf_cgroup_storage_key {cgroup_inode_id, attach_type}`` (key_size 16) or the cgroup id
alone (key_size 8, one storage per cgroup shared by every attach type).  Detaching keeps the
storage; it goes when the cgroup is removed or the map is freed.  Userspace can look storages
up, overwrite them (BPF_ANY / BPF_EXIST only) and walk them newest first; it cannot create or
delete them (EINVAL).  A PERCPU storage holds round_up(value_size, 8) bytes per possible CPU.

LINK_UPDATE keeps the link's storages whatever maps the new program uses (6.18 has no
storage compatibility check there — measured: the new program's get_local_storage() then
reaches the old map's storage of the same kind, as the run context is indexed by kind only).

Programs reach the storage of the cgroup they run for with bpf_get_local_storage(map, 0):
the running item's storages are in ``current.bpf_ctx`` (struct bpf_cg_run_ctx), set with
`bpf_cgroup_run_ctx` by the cgroup hooks and by PROG_TEST_RUN (which allocates zeroed
storages for the duration of one test run, repeats included).
"""
from __future__ import annotations

import contextlib
import enum

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.btf_fields import copy_map_value, copy_map_value_locked, copy_value_out
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.bpf_local_storage import BPF_LOCAL_STORAGE_MAX_VALUE_SIZE
from fakekernel.maps.common import (BPF_F_ACCESS_MASK, PCPU_MIN_UNIT_SIZE, bpf_map_flags_access_ok,
                                    map_fields_from_attr, round_up)
from uapi.bpf import MapFlags, UpdateFlags
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["CgroupStorageMap", "PercpuCgroupStorageMap", "BpfCgroupStorage", "CgroupStorageType",
           "BpfCgRunCtx", "bpf_cgroup_run_ctx", "prog_cgroup_storage_maps",
           "bpf_cgroup_storages_link", "bpf_cgroup_storages_temp", "bpf_cgroup_storages_release"]

LOCAL_STORAGE_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | BPF_F_ACCESS_MASK
KEY_SIZE = ffi.sizeof("struct bpf_cgroup_storage_key")
ID_SIZE = ffi.sizeof("__u64")
_ID_END = ffi.offsetof("struct bpf_cgroup_storage_key", "attach_type")
_TYPE_SIZE = ffi.sizeof("__u32")
_VALUE_ALIGN = ffi.sizeof("__u64")
_BITS_PER_BYTE = 8
_BITFIELD_SIZE_SHIFT = 24           # BTF_MEMBER_BITFIELD_SIZE() / BTF_MEMBER_BIT_OFFSET()
_BIT_OFFSET_MASK = (1 << _BITFIELD_SIZE_SHIFT) - 1
_F_LOCK, _EXIST = int(UpdateFlags.F_LOCK), int(UpdateFlags.EXIST)
# cgroup_storage_map_usage(): sizeof(struct bpf_cgroup_storage_map) only (x86_64 6.18, measured
# through fdinfo memlock); the storages themselves are not counted
CGROUP_STORAGE_MAP_SIZE = 328


class CgroupStorageType(enum.IntEnum):
    """enum bpf_cgroup_storage_type."""

    SHARED = 0
    PERCPU = 1


class BpfCgroupStorage:
    """struct bpf_cgroup_storage: one cgroup's (and attach type's) value(s) in one map."""

    __slots__ = ("map", "cgroup", "key", "bufs", "regions")

    def __init__(self, smap, nbufs: int, size: int):
        self.map = smap
        self.cgroup = None
        self.key = None                 # (cgroup id, attach type) once linked
        self.bufs = [bytearray(size) for _ in range(nbufs)]
        self.regions = [None] * nbufs

    def addr(self, i: int) -> int:
        if self.regions[i] is None:
            view = memoryview(self.bufs[i])[:self.map.value_size]
            self.regions[i] = self.map.kern.mem.map_region(view, "map_value", "cgroup_storage")
        return self.regions[i].base

    def free(self) -> None:
        for i, r in enumerate(self.regions):
            if r is not None:
                self.map.kern.mem.unmap(r)
                self.regions[i] = None


def _btf_member_is_reg_int(btf, s, idx: int, offset: int, size: int) -> bool:
    """btf_member_is_reg_int()."""
    from fakekernel.btf_env import int_data
    _, mtype, moff = s.records(3)[idx]            # struct btf_member {name_off, type, offset}
    found = btf.env.type_id_size(mtype)
    if found is None or found[0].kind != BtfKind.INT:
        return False
    _, ioff, bits = int_data(found[0])
    nbytes = -(-bits // _BITS_PER_BYTE)
    if s.kflag:
        bitfield_size, bit_off = moff >> _BITFIELD_SIZE_SHIFT, moff & _BIT_OFFSET_MASK
        return not bitfield_size and -(-bit_off // _BITS_PER_BYTE) == offset and nbytes == size
    return not (ioff or moff % _BITS_PER_BYTE or moff // _BITS_PER_BYTE != offset
                or bits % _BITS_PER_BYTE or nbytes != size)


@attrs.define(eq=False)
class CgroupStorageMap(BpfMap):
    """struct bpf_cgroup_storage_map: storages by key, and newest-first for get_next_key."""

    STYPE = CgroupStorageType.SHARED
    storages: dict = attrs.field(factory=dict)      # compare key -> BpfCgroupStorage (newest last)
    map_meta_equal = None           # no .map_meta_equal: cannot be an inner map (ENOTSUPP)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "CgroupStorageMap":
        """cgroup_storage_map_alloc() (no map_alloc_check: these checks come after the
        privilege checks of map_create)."""
        max_value_size = BPF_LOCAL_STORAGE_MAX_VALUE_SIZE
        if cls.STYPE == CgroupStorageType.PERCPU:
            max_value_size = min(max_value_size, PCPU_MIN_UNIT_SIZE)
        if attr.key_size not in (KEY_SIZE, ID_SIZE):
            raise KernelError(Errno.EINVAL, "key is a bpf_cgroup_storage_key or a u64")
        if attr.value_size == 0:
            raise KernelError(Errno.EINVAL, "zero value_size")
        if attr.value_size > max_value_size:
            raise KernelError(Errno.E2BIG, "value too large")
        if attr.map_flags & ~int(LOCAL_STORAGE_CREATE_FLAG_MASK) or \
                not bpf_map_flags_access_ok(attr.map_flags):
            raise KernelError(Errno.EINVAL, "bad cgroup storage flags")
        if attr.max_entries:
            raise KernelError(Errno.EINVAL, "max_entries must be 0")
        m = cls(**map_fields_from_attr(kern, attr))
        m.memlock = CGROUP_STORAGE_MAP_SIZE
        return m

    @property
    def attach_type_isolated(self) -> bool:
        return self.key_size == KEY_SIZE

    def map_check_btf(self, btf, key_type, value_type) -> None:
        """cgroup_storage_check_btf()."""
        if self.attach_type_isolated:
            if key_type is None or key_type.kind != BtfKind.STRUCT or key_type.vlen != 2 \
                    or not _btf_member_is_reg_int(btf, key_type, 0, 0, ID_SIZE) \
                    or not _btf_member_is_reg_int(btf, key_type, 1, _ID_END, _TYPE_SIZE):
                raise KernelError(Errno.EINVAL, "key must be struct bpf_cgroup_storage_key")
            return
        from fakekernel.btf_env import int_data
        if key_type is None or key_type.kind != BtfKind.INT:
            raise KernelError(Errno.EINVAL, "key must be a u64")
        _, offset, bits = int_data(key_type)
        if bits != ID_SIZE * _BITS_PER_BYTE or offset:
            raise KernelError(Errno.EINVAL, "key must be a 64-bit INT")

    def map_free(self) -> None:
        for st in list(self.storages.values()):
            bpf_cgroup_storage_unlink(st)
            st.free()

    # ---- keys ----
    def _cmp_key(self, cgroup_id: int, attach_type: int) -> tuple:
        return (cgroup_id, attach_type) if self.attach_type_isolated else (cgroup_id,)

    def _key_from_bytes(self, key: bytes) -> tuple:
        cid = int.from_bytes(bytes(key[:ID_SIZE]), "little")
        at = int.from_bytes(bytes(key[_ID_END:_ID_END + _TYPE_SIZE]), "little")
        return self._cmp_key(cid, at)

    def _key_to_bytes(self, st: BpfCgroupStorage) -> bytes:
        cid, at = st.key
        if not self.attach_type_isolated:
            return cid.to_bytes(ID_SIZE, "little")
        out = bytearray(KEY_SIZE)
        out[:ID_SIZE] = cid.to_bytes(ID_SIZE, "little")
        out[_ID_END:_ID_END + _TYPE_SIZE] = at.to_bytes(_TYPE_SIZE, "little")
        return bytes(out)

    def cgroup_storage_lookup(self, key: bytes) -> BpfCgroupStorage | None:
        return self.storages.get(self._key_from_bytes(key))

    # ---- storage objects ----
    def storage_alloc(self) -> BpfCgroupStorage:
        """bpf_cgroup_storage_alloc()."""
        return BpfCgroupStorage(self, 1, self.value_size)

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        st = self.cgroup_storage_lookup(key)
        return 0 if st is None else st.addr(0)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        st = self.cgroup_storage_lookup(key)
        if st is None:
            raise KernelError(Errno.ENOENT, "no storage for this key")
        return copy_value_out(self.record, st.bufs[0])

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """cgroup_storage_update_elem(): only existing storages, BPF_ANY / BPF_EXIST [| F_LOCK]."""
        if flags & ~(_F_LOCK | _EXIST):
            raise KernelError(Errno.EINVAL, "bad update flags")
        if flags & _F_LOCK and self.spin_lock_off is None:
            raise KernelError(Errno.EINVAL, "BPF_F_LOCK without a bpf_spin_lock")
        st = self.cgroup_storage_lookup(key)
        if st is None:
            raise KernelError(Errno.ENOENT, "no storage for this key")
        if flags & _F_LOCK:
            copy_map_value_locked(self.record, st.bufs[0], value[:self.value_size])
            return
        fresh = bytearray(self.value_size)      # a new buffer: special fields zeroed
        copy_map_value(self.record, fresh, value[:self.value_size])
        st.bufs[0][:] = fresh

    def map_delete_elem(self, key: bytes) -> None:
        """cgroup_storage_delete_elem()."""
        raise KernelError(Errno.EINVAL, "cgroup storages cannot be deleted")

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """cgroup_storage_get_next_key(): newest storage first."""
        order = list(reversed(self.storages.values()))
        if not order:
            raise KernelError(Errno.ENOENT, "no storages")
        if key is None:
            return self._key_to_bytes(order[0])
        st = self.cgroup_storage_lookup(key)
        if st is None:
            raise KernelError(Errno.ENOENT, "no such key")
        i = order.index(st) + 1
        if i >= len(order):
            raise KernelError(Errno.ENOENT, "last key")
        return self._key_to_bytes(order[i])


@attrs.define(eq=False)
class PercpuCgroupStorageMap(CgroupStorageMap):
    """PERCPU_CGROUP_STORAGE: round_up(value_size, 8) bytes per CPU."""

    STYPE = CgroupStorageType.PERCPU

    @property
    def _slot(self) -> int:
        return round_up(self.value_size, _VALUE_ALIGN)

    @property
    def sys_value_size(self) -> int:
        return self._slot * self.kern.nr_cpus

    def storage_alloc(self) -> BpfCgroupStorage:
        return BpfCgroupStorage(self, self.kern.nr_cpus, self._slot)

    def map_lookup_elem(self, key: bytes) -> int:
        st = self.cgroup_storage_lookup(key)
        return 0 if st is None else st.addr(self.kern.cpu)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_percpu_cgroup_storage_copy()."""
        st = self.cgroup_storage_lookup(key)
        if st is None:
            raise KernelError(Errno.ENOENT, "no storage for this key")
        return b"".join(bytes(b) for b in st.bufs)

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_percpu_cgroup_storage_update()."""
        if flags not in (UpdateFlags.ANY, UpdateFlags.EXIST):
            raise KernelError(Errno.EINVAL, "bad update flags")
        st = self.cgroup_storage_lookup(key)
        if st is None:
            raise KernelError(Errno.ENOENT, "no storage for this key")
        n = self._slot
        for cpu, buf in enumerate(st.bufs):
            buf[:] = value[cpu * n:(cpu + 1) * n]

    map_update_elem = sys_update


# ------------------------------------------------------------------ attach side (cgroup.c)

def prog_cgroup_storage_maps(prog) -> dict:
    """prog->aux->cgroup_storage[]: stype -> the cgroup storage map the program uses."""
    out = {}
    for m in getattr(prog.aux, "used_maps", None) or ():
        if isinstance(m, CgroupStorageMap):
            out.setdefault(m.STYPE, m)
    return out


def bpf_cgroup_storages_link(cgrp, attach_type: int, prog) -> dict:
    """bpf_cgroup_storages_alloc() + bpf_cgroup_storages_link() after a successful attach:
    the storages `prog` runs with on `cgrp` (existing ones are shared)."""
    out = {}
    for stype, smap in prog_cgroup_storage_maps(prog).items():
        k = smap._cmp_key(cgrp.id, attach_type)
        st = smap.storages.get(k)
        if st is None:
            st = smap.storage_alloc()
            st.key = (cgrp.id, int(attach_type))
            st.cgroup = cgrp
            smap.storages[k] = st
            cgrp.bpf.storages.append(st)
        out[stype] = st
    return out


def bpf_cgroup_storage_unlink(st: BpfCgroupStorage) -> None:
    """bpf_cgroup_storage_unlink(): out of its map and its cgroup."""
    smap = st.map
    if st.key is not None:
        smap.storages.pop(smap._cmp_key(*st.key), None)
    if st.cgroup is not None:
        st.cgroup.bpf.storages[:] = [s for s in st.cgroup.bpf.storages if s is not st]
        st.cgroup = None


def bpf_cgroup_storages_release(cgrp) -> None:
    """The storage part of cgroup_bpf_release(): a removed cgroup's storages go."""
    for st in list(cgrp.bpf.storages):
        bpf_cgroup_storage_unlink(st)
        st.free()


def bpf_cgroup_storages_temp(prog) -> dict:
    """bpf_test_run(): zeroed, unlinked storages for one test run."""
    return {stype: smap.storage_alloc() for stype, smap in prog_cgroup_storage_maps(prog).items()}


@attrs.define(eq=False)
class BpfCgRunCtx:
    """struct bpf_cg_run_ctx: the running prog item's storages (stype -> BpfCgroupStorage)."""

    cgroup_storage: dict = attrs.field(factory=dict)
    retval: int = 0


@contextlib.contextmanager
def bpf_cgroup_run_ctx(kern, storages: dict | None, *, free: bool = False):
    """bpf_set_run_ctx() / bpf_reset_run_ctx() around a run of a cgroup program."""
    task = kern.current
    old, task.bpf_ctx = task.bpf_ctx, BpfCgRunCtx(dict(storages or {}))
    try:
        yield task.bpf_ctx
    finally:
        task.bpf_ctx = old
        if free:
            for st in (storages or {}).values():
                st.free()
