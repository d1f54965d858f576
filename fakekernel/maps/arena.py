"""BPF arenas — kernel/bpf/arena.c (arena_map_ops: arena_map_alloc, arena_get_unmapped_area,
arena_map_mmap, the element ops).

BPF_MAP_TYPE_ARENA is a sparse region of up to 4 GiB (``max_entries`` pages) shared between
BPF programs and userspace.  It has no keys or values (key_size = value_size = 0) and must be
BPF_F_MMAPABLE; ``map_extra``, when non-zero, is the page-aligned user address the region must
be mapped at, and the region may not cross a 4 GiB boundary (ERANGE).  BPF_F_SEGV_ON_FAULT and
BPF_F_NO_USER_CONV are the only other flags.

Userspace mapping: the first successful mapping fixes the user range (start and length) for
the map's lifetime — later mappings must use the same address and length, which a mapping at
a kernel-chosen address (``mmap(NULL, ...)``, as every mapping made through `Kernel.mmap`)
never has, so they get EINVAL; pgoff must be 0, the length at most 4 GiB (E2BIG).  The
arena replaces the mapping's vm_ops, so the write count a writable mapping takes is never
dropped: MAP_FREEZE answers EBUSY forever after one (measured on 6.18).

Element commands: lookup EINVAL, update/delete/get_next_key EOPNOTSUPP; memlock is 0
(arena_map_mem_usage).  Pages are backed by a sparse memfd (the host backs the pages that are
touched, as the arena faults pages in on first access), so the runner can hand targets
re-opens of it like any mmap()able map (their native mmap(2) then does not fix the range).

Programs: a program may use one arena, once its user address is known (map_extra or a first
mapping; the verifier's checks live in verifier/calls.py), and LD_IMM64 of its "value" gives
that user address as a scalar.  Not modelled: the bpf_arena_alloc_pages/bpf_arena_free_pages
kfuncs, the addr_space_cast instruction and loads/stores through arena pointers, and
BPF_F_SEGV_ON_FAULT (a touched page is always backed here).
"""
from __future__ import annotations

import mmap
import os

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import PAGE_SIZE, map_fields_from_attr
from uapi.backend import buffer_address
from uapi.bpf import MapFlags

__all__ = ["ArenaMap", "ARENA_CREATE_FLAG_MASK", "SZ_4G"]

ARENA_CREATE_FLAG_MASK = MapFlags.SEGV_ON_FAULT | MapFlags.MMAPABLE | MapFlags.NO_USER_CONV
SZ_4G = 1 << 32
_U64_MASK = 2**64 - 1
_PAGE_MASK = ~(PAGE_SIZE - 1) & _U64_MASK


@attrs.define(eq=False)
class ArenaMap(BpfMap):
    """BPF_MAP_TYPE_ARENA — arena_map_ops."""

    user_vm_start: int = 0
    user_vm_end: int = 0
    memfd: int | None = None            # the pages (file offset = offset in the user range)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "ArenaMap":
        """arena_map_alloc()."""
        if (attr.key_size or attr.value_size or attr.max_entries == 0
                or not attr.map_flags & MapFlags.MMAPABLE
                or attr.map_flags & ~int(ARENA_CREATE_FLAG_MASK)):
            raise KernelError(Errno.EINVAL, "arena: no key/value, pages > 0, BPF_F_MMAPABLE")
        if attr.map_extra & ~_PAGE_MASK:
            raise KernelError(Errno.EINVAL, "arena: map_extra must be a page-aligned address")
        vm_range = attr.max_entries * PAGE_SIZE
        if vm_range > SZ_4G:
            raise KernelError(Errno.E2BIG, "arena larger than 4 GiB")
        if attr.map_extra >> 32 != ((attr.map_extra + vm_range - 1) & _U64_MASK) >> 32:
            raise KernelError(Errno.ERANGE, "arena user range crosses a 4 GiB boundary")
        m = cls(**map_fields_from_attr(kern, attr))
        m.user_vm_start = attr.map_extra
        if m.user_vm_start:
            m.user_vm_end = m.user_vm_start + vm_range
        try:
            m.memfd = os.memfd_create("bpf-arena", os.MFD_CLOEXEC)
            os.ftruncate(m.memfd, vm_range)         # sparse: pages are backed when touched
        except OSError as e:
            m.map_free()
            raise KernelError(Errno.ENOMEM, f"cannot back the arena: {e}") from None
        return m

    def map_free(self) -> None:
        if self.memfd is not None:
            os.close(self.memfd)
            self.memfd = None

    def map_mem_usage(self) -> int:
        """arena_map_mem_usage()."""
        return 0

    # ---- element ops ----
    def map_lookup_elem(self, key) -> int:
        raise KernelError(Errno.EINVAL, "an arena has no elements")

    def sys_lookup(self, key, flags: int) -> bytes:
        raise KernelError(Errno.EINVAL, "an arena has no elements")

    def map_get_next_key(self, key) -> bytes:
        raise KernelError(Errno.EOPNOTSUPP, "an arena has no keys")

    def map_direct_value_addr(self, off: int) -> int:
        """arena_map_direct_value_addr(): LD_IMM64 of the arena's "value" is its user address."""
        if off > self.user_vm_end - self.user_vm_start:
            raise KernelError(Errno.ERANGE, "offset past the arena's user range")
        return self.user_vm_start

    # ---- mmap ----
    def map_get_unmapped_area(self, addr: int, length: int, pgoff: int) -> None:
        """arena_get_unmapped_area(): `addr` is the requested address (0 = kernel's choice)."""
        if pgoff:
            raise KernelError(Errno.EINVAL, "arena mappings start at offset 0")
        if length > SZ_4G:
            raise KernelError(Errno.E2BIG, "arena mappings are at most 4 GiB")
        if self.user_vm_start:
            span = self.user_vm_end - self.user_vm_start
            if length > span:
                raise KernelError(Errno.E2BIG, "longer than the arena's user range")
            if length != span:
                raise KernelError(Errno.EINVAL, "not the arena's user range length")
            if addr != self.user_vm_start:
                raise KernelError(Errno.EINVAL, "not at the arena's user address")

    def map_mmap(self, offset: int, length: int, writable: bool) -> tuple[int, int]:
        """arena_map_mmap(): the pages' memfd; the write count is never dropped (see above)."""
        if os.fstat(self.memfd).st_size < length:     # a first mapping may exceed max_entries pages
            os.ftruncate(self.memfd, length)
        if writable:
            self.writecnt += 1          # bpf_map_mmap_close() never runs for arena mappings
        return self.memfd, offset

    def map_mmapped(self, mapping: mmap.mmap, length: int) -> None:
        """The first mapping fixes the user range (arena->user_vm_start / user_vm_end)."""
        if self.user_vm_start:
            return
        self.user_vm_start = buffer_address(mapping)
        self.user_vm_end = self.user_vm_start + length
