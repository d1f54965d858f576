"""struct bpf_map and the default bpf_map_ops — include/linux/bpf.h, kernel/bpf/syscall.c.

A map type is a subclass of `BpfMap` implementing the `bpf_map_ops` members under their
kernel names.  Syscall-side special cases are methods (`sys_lookup`, `sys_update`, ...)
with defaults here, so `syscall/map_cmds.py` never branches on the map type.

Storage is bytes: ``map_lookup_elem`` (the program-side op) returns the *address* of the
value inside the kernel's `AddressSpace`, so program writes land in the map; the syscall
side copies.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError

__all__ = ["BpfMap", "BPF_OBJ_NAME_LEN", "bpf_map_meta_equal"]

BPF_OBJ_NAME_LEN = 16


def bpf_map_meta_equal(meta0, meta1) -> bool:
    """bpf_map_meta_equal(): same type, key/value sizes, flags and special fields."""
    return (meta0.map_type == meta1.map_type and meta0.key_size == meta1.key_size
            and meta0.value_size == meta1.value_size and meta0.map_flags == meta1.map_flags
            and getattr(meta0, "spin_lock_off", None) == getattr(meta1, "spin_lock_off", None))


@attrs.define(eq=False)
class BpfMap:
    kern: object
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    map_extra: int = 0
    numa_node: int = -1
    name: bytes = b""
    ifindex: int = 0
    btf: object = None
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0
    btf_vmlinux_value_type_id: int = 0
    id: int = 0
    refcnt: int = 1            # all references (fds' files, progs, pins, inner/outer maps)
    usercnt: int = 1           # user-held references (fds and pins)
    frozen: bool = False
    writecnt: int = 0          # writable mmaps
    freed: bool = False
    memlock: int = 0           # bytes charged (fdinfo memlock)
    excl_prog_sha: bytes | None = None   # BPF_MAP_CREATE excl_prog_hash: only this prog may use it
    record: object = None      # struct btf_record of the value (fakekernel/btf_fields.py) or None

    @property
    def spin_lock_off(self) -> int | None:
        """btf_record's spin_lock_off (None: no bpf_spin_lock in the value)."""
        return None if self.record is None else self.record.spin_lock_off

    # ---- bpf_map_ops: creation ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """Type-specific attr checks before allocation (EINVAL/E2BIG/...); `task` is current."""

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "BpfMap":
        raise NotImplementedError

    def map_free(self) -> None:
        """Release storage (unmap its regions from the kernel address space)."""

    # ---- bpf_map_ops: element ops (program and syscall side share them) ----
    def map_lookup_elem(self, key: bytes) -> int:
        """Program-side lookup: the address of the value, or 0 (NULL)."""
        raise NotImplementedError

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "update not supported")

    def map_delete_elem(self, key: bytes) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "delete not supported")

    def map_get_next_key(self, key: bytes | None) -> bytes:
        raise KernelError(Errno.EOPNOTSUPP, "get_next_key not supported")

    def map_lookup_and_delete_elem(self, key: bytes | None, flags: int) -> bytes:
        raise KernelError(Errno.ENOTSUPP, "lookup_and_delete not supported")

    # queue/stack/bloom filter ops (map_push_elem / map_pop_elem / map_peek_elem); `value`
    # is filled in place by pop and peek (bloom filters read it), KernelError on failure
    def map_push_elem(self, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "push not supported")

    def map_pop_elem(self, value: bytearray) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "pop not supported")

    def map_peek_elem(self, value: bytearray) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "peek not supported")

    # ---- map-in-map (kernel/bpf/map_in_map.c): whether `meta1` may sit where `meta0` (an
    # outer map's inner-map template) describes; a class setting it to None cannot be an
    # inner map (ENOTSUPP), as a kernel type without .map_meta_equal ----
    @staticmethod
    def map_meta_equal(meta0, meta1) -> bool:
        return bpf_map_meta_equal(meta0, meta1)

    # ---- batch ops (kernel/bpf/syscall.c bpf_map_do_batch): None = ENOTSUPP ----
    # (map, task, attr, ctx) -> int; see fakekernel/maps/batch.py for the generic ones
    map_lookup_batch = None
    map_lookup_and_delete_batch = None
    map_update_batch = None
    map_delete_batch = None

    # ---- syscall-side element ops (defaults: copy through the program-side ops) ----
    @property
    def sys_value_size(self) -> int:
        """bpf_map_value_size(): what the syscall copies (per-CPU maps override)."""
        return self.value_size

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        raise NotImplementedError

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        self.map_update_elem(key, value, flags)

    def sys_delete(self, key: bytes) -> None:
        self.map_delete_elem(key)

    # ---- refcounts: bpf_map_inc / bpf_map_put / bpf_map_put_with_uref ----
    def get(self, uref: bool = False) -> "BpfMap":
        self.refcnt += 1
        if uref:
            self.usercnt += 1
        return self

    def put(self, uref: bool = False) -> None:
        if uref:
            self.usercnt -= 1
            if self.usercnt == 0:
                self.map_release_uref()
        self.refcnt -= 1
        if self.refcnt == 0:
            self._free()

    def map_release_uref(self) -> None:
        """Last user reference gone (prog arrays clear themselves here)."""

    def _free(self) -> None:
        if self.freed:
            return
        self.freed = True
        self.kern.map_idr.remove(self.id)
        btf, self.btf = self.btf, None
        if btf is not None and hasattr(btf, "put"):
            btf.put()
        self.map_free()

    def file_release(self, file) -> None:
        """The last fd of a map file closed: drop its (user) reference."""
        self.put(uref=True)
