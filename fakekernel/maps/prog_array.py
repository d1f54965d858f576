"""Program arrays — kernel/bpf/arraymap.c (prog_array_map_ops, the fd_array functions) and
kernel/bpf/core.c (bpf_prog_map_compatible, bpf_check_tail_call).

BPF_MAP_TYPE_PROG_ARRAY: an array of program references, the targets of bpf_tail_call.
Userspace stores a prog *fd* (u32 value) and reads back the prog *id*; the map holds a
reference on every stored program.  The first program stored in the map, or loaded while
using it, fixes the map's *owner* (prog type, JIT state, XDP frags, expected attach type);
later programs must match it or get EINVAL.  When the last user reference (fd or pin) to
the map goes, the array empties itself (map_release_uref), dropping the programs — the
way a prog array cannot keep a cycle of programs alive.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.arraymap import ArrayMap
from uapi.bpf import MapFlags, MapType, ProgType, UpdateFlags
from uapi.ffi import ffi

__all__ = ["ProgArrayMap", "MapOwner", "bpf_prog_map_compatible", "bpf_check_tail_call"]

U32_SIZE = ffi.sizeof("__u32")


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@attrs.frozen
class MapOwner:
    """struct bpf_map_owner: what programs sharing a prog array must agree on."""

    type: int
    jited: bool
    xdp_has_frags: bool
    expected_attach_type: int


def _owner_of(prog) -> MapOwner:
    return MapOwner(type=prog.type, jited=bool(getattr(prog, "jited", False)),
                    xdp_has_frags=bool(prog.aux.xdp_has_frags),
                    expected_attach_type=prog.expected_attach_type)


def bpf_prog_map_compatible(bpf_map, prog) -> bool:
    """bpf_prog_map_compatible(): never a device-bound program; the first caller sets the
    map's owner; the expected attach type must match only in prog arrays (devmaps and
    cpumaps hold BPF_XDP_DEVMAP/CPUMAP programs used by plain XDP programs)."""
    if prog.aux.ifindex:
        return False
    want = _owner_of(prog)
    if bpf_map.owner is None:
        bpf_map.owner = want
        return True
    if bpf_map.map_type != MapType.PROG_ARRAY:
        return attrs.evolve(bpf_map.owner, expected_attach_type=want.expected_attach_type) == want
    return bpf_map.owner == want


def bpf_check_tail_call(prog) -> None:
    """bpf_check_tail_call() (from bpf_prog_select_runtime at the end of PROG_LOAD): every
    program-holding map the program uses must accept it as (or set it as) its owner."""
    for m in prog.aux.used_maps:
        if getattr(m, "holds_progs", False) and not bpf_prog_map_compatible(m, prog):
            raise KernelError(Errno.EINVAL, "program not compatible with the prog array's owner")


@attrs.define(eq=False)
class ProgArrayMap(ArrayMap):
    """BPF_MAP_TYPE_PROG_ARRAY — prog_array_map_ops."""

    holds_progs = True          # map_type_contains_progs()
    map_meta_equal = None       # a prog array's owner is a runtime binding: never an inner map
    owner: MapOwner | None = None
    ptrs: list = attrs.field(factory=list)

    # ---- creation: fd_array_map_alloc_check / prog_array_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        if attr.value_size != U32_SIZE:
            raise KernelError(Errno.EINVAL, "fd arrays hold u32 fds")
        if attr.map_flags & (MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG):
            raise KernelError(Errno.EINVAL, "fd arrays cannot be RDONLY_PROG/WRONLY_PROG")
        super().map_alloc_check(attr, task)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "ProgArrayMap":
        m = super().map_alloc(kern, attr, task)
        m.ptrs = [None] * m.max_entries
        return m

    def map_free(self) -> None:
        self._clear()
        super().map_free()

    def map_release_uref(self) -> None:
        """prog_array_map_clear(): the last user reference is gone — drop every program."""
        self._clear()

    def _clear(self) -> None:
        for i in range(len(self.ptrs)):
            prog, self.ptrs[i] = self.ptrs[i], None
            if prog is not None:
                prog.put()

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        """fd_array_map_lookup_elem(): not for programs (the verifier refuses the call)."""
        return 0

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EINVAL, "prog arrays are updated from userspace only")

    def map_delete_elem(self, key: bytes) -> None:
        """fd_array_map_delete_elem()."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        prog, self.ptrs[index] = self.ptrs[index], None
        if prog is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        prog.put()

    map_lookup_batch = None
    map_update_batch = None
    map_get_hash = None
    map_direct_value_addr = None

    def tail_call_target(self, index: int):
        """The program in slot `index` (None if empty); the caller checks the range."""
        return self.ptrs[index]

    # ---- syscall side ----
    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_fd_array_map_lookup_elem() + prog_fd_array_sys_lookup_elem(): the prog id."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        prog = self.ptrs[index] if index < self.max_entries else None
        if prog is None:
            raise KernelError(Errno.ENOENT, "no program at this index")
        return prog.aux.id.to_bytes(U32_SIZE, "little")

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_array_map_update_elem() with prog_fd_array_get_ptr()."""
        from fakekernel.syscall.fdget import bpf_prog_get
        if flags != UpdateFlags.ANY:
            raise KernelError(Errno.EINVAL, "prog array updates take BPF_ANY only")
        index = int.from_bytes(key[:U32_SIZE], "little")
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        prog = bpf_prog_get(self.kern.current, _s32(int.from_bytes(value[:U32_SIZE], "little")))
        if prog.type == ProgType.EXT or not bpf_prog_map_compatible(self, prog):
            raise KernelError(Errno.EINVAL, "program not compatible with the prog array's owner")
        old, self.ptrs[index] = self.ptrs[index], prog.get()
        if old is not None:
            old.put()
