"""mmap() of map fds — kernel/bpf/syscall.c (bpf_map_mmap, bpf_map_default_vmops) + mm/mmap.c (do_mmap).

`vm_mmap` answers mmap(2) on an emulated fd as Linux does for a map file: the generic
do_mmap() checks first (length/offset, file mode vs PROT_WRITE/MAP_SHARED, the noexec
anon-inode mount, files without ->mmap), then bpf_map_mmap() (ENOTSUPP for map types
without map_mmap, EINVAL unless the mapping is shared — which a read-only fd cannot make —,
EPERM / EACCES for writable mappings of frozen / BPF_F_RDONLY_PROG maps, writecnt so
MAP_FREEZE answers EBUSY while a writable mapping exists), then the type's map_mmap op.

The result is a `VmArea` over the map's shareable memfd at the same offset a real mapping
of the map fd would have (arrays: value[0] at offset 0; ring buffers: the consumer page at
0, see fakekernel/maps/ringbuf.py).  A mapping holds a reference to the file, as
vma->vm_file does, so the map outlives its fds until `munmap()`.
"""
from __future__ import annotations

import mmap as _mmap

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import FMode
from fakekernel.maps.common import PAGE_SIZE, page_align
from fakekernel.syscall.fdget import MAP_FILE_KIND
from uapi.bpf import MapFlags, MapType

__all__ = ["VmArea", "vm_mmap", "array_map_mmap", "user_memfd", "PROT_READ", "PROT_WRITE", "PROT_EXEC",
           "MAP_SHARED", "MAP_PRIVATE"]

PROT_READ, PROT_WRITE, PROT_EXEC = _mmap.PROT_READ, _mmap.PROT_WRITE, _mmap.PROT_EXEC
MAP_SHARED, MAP_PRIVATE = _mmap.MAP_SHARED, _mmap.MAP_PRIVATE
_MAP_TYPE = 0x0f                # MAP_SHARED / MAP_PRIVATE / MAP_SHARED_VALIDATE
_MAP_SHARED_VALIDATE = 0x03


@attrs.define(eq=False)
class VmArea:
    """One mapping of a map file: ``mmap`` is a Python mmap of the backing memfd."""

    file: object
    bpf_map: object
    mmap: _mmap.mmap | None
    offset: int
    length: int
    writable: bool

    def munmap(self) -> None:
        """munmap(): bpf_map_mmap_close() drops the write count, then the file reference goes."""
        if self.mmap is None:
            return
        try:
            self.mmap.close()
        except BufferError:         # the caller still holds a view; the GC unmaps it later
            pass
        self.mmap = None
        if self.writable:
            self.bpf_map.writecnt -= 1
        self.file.put()

    def __enter__(self) -> "VmArea":
        return self

    def __exit__(self, *exc) -> None:
        self.munmap()


def array_map_mmap(bpf_map, offset: int, length: int, writable: bool) -> tuple[int, int]:
    """array_map_mmap(): BPF_F_MMAPABLE arrays only; the values' pages, from value[0].

    (Belongs on ArrayMap as its map_mmap op; kept here while arraymap.py has other owners.)
    """
    if not bpf_map.map_flags & MapFlags.MMAPABLE:
        raise KernelError(Errno.EINVAL, "array is not BPF_F_MMAPABLE")
    if offset + length > page_align(bpf_map.max_entries * bpf_map.elem_size):
        raise KernelError(Errno.EINVAL, "mapping past the array's values")
    return bpf_map.area.memfd, offset


# map types whose mmap op is not (yet) a method of their class
_MAP_MMAP_BY_TYPE = {MapType.ARRAY: array_map_mmap}


def _map_mmap_op(bpf_map):
    op = getattr(bpf_map, "map_mmap", None)
    if op is not None:
        return op
    fn = _MAP_MMAP_BY_TYPE.get(bpf_map.map_type)
    if fn is None:
        return None
    return lambda offset, length, writable: fn(bpf_map, offset, length, writable)


def user_memfd(obj) -> int | None:
    """The memfd whose file offsets are `obj`'s user mmap offsets, for objects userspace may
    map (a BPF_F_MMAPABLE array's values, a ring buffer's pages); None for everything else.
    The runner hands targets re-opens of it, so their mmap(2) needs no emulation."""
    own = getattr(obj, "user_memfd", None)       # non-map objects that say so (perf events)
    if own is not None and not isinstance(obj, BpfMap):
        return own()
    if not isinstance(obj, BpfMap) or obj.freed or _map_mmap_op(obj) is None:
        return None
    memfd = getattr(obj, "memfd", None)
    if memfd is None:
        memfd = getattr(getattr(obj, "area", None), "memfd", None)
    return memfd


def vm_mmap(kern, task, fd: int, length: int, prot: int, flags: int | None = None,
            offset: int = 0) -> VmArea:
    """mmap(NULL, length, prot, flags, fd, offset) on an emulated fd; KernelError on failure."""
    flags = MAP_SHARED if flags is None else flags
    if length <= 0 or offset < 0 or offset % PAGE_SIZE:
        raise KernelError(Errno.EINVAL, "bad length or unaligned offset")
    length = page_align(length)
    map_type = flags & _MAP_TYPE
    if map_type not in (MAP_SHARED, MAP_PRIVATE, _MAP_SHARED_VALIDATE):
        raise KernelError(Errno.EINVAL, "neither MAP_SHARED nor MAP_PRIVATE")
    f = task.files.fdget(fd)
    # get_unmapped_area(): bpf_get_unmapped_area() asks the map type first (arenas)
    area_op = getattr(f.private_data, "map_get_unmapped_area", None) if f.kind == MAP_FILE_KIND else None
    if area_op is not None:
        area_op(0, length, offset // PAGE_SIZE)
    mode = int(f.f_mode)
    shared = map_type != MAP_PRIVATE
    writable = bool(prot & PROT_WRITE)
    # do_mmap(): file mode, noexec (anon inodes live on a noexec mount), ->mmap
    if shared:
        if writable and not mode & FMode.WRITE:
            raise KernelError(Errno.EACCES, "shared writable mapping of a file not open for writing")
        if not mode & FMode.WRITE:
            shared = False          # VM_SHARED dropped for read-only files
    if not mode & FMode.READ:
        raise KernelError(Errno.EACCES, "mapping of a file not open for reading")
    if prot & PROT_EXEC:
        raise KernelError(Errno.EPERM, "executable mapping on a noexec mount")
    if f.kind != MAP_FILE_KIND:
        raise KernelError(Errno.ENODEV, "file has no mmap")
    m = f.private_data
    # bpf_map_mmap()
    op = _map_mmap_op(m)
    if op is None or getattr(m, "record", None):
        raise KernelError(Errno.ENOTSUPP, "map type cannot be mmap()ed")
    if not shared:
        raise KernelError(Errno.EINVAL, "map mappings must be MAP_SHARED")
    if writable:
        if m.frozen:
            raise KernelError(Errno.EPERM, "writable mapping of a frozen map")
        if m.map_flags & MapFlags.RDONLY_PROG:
            raise KernelError(Errno.EACCES, "writable mapping of a BPF_F_RDONLY_PROG map")
        m.writecnt += 1
    try:
        memfd, file_off = op(offset, length, writable)
        mapping = _mmap.mmap(memfd, length, _mmap.MAP_SHARED,
                             PROT_READ | (PROT_WRITE if writable else 0), offset=file_off)
    except BaseException:
        if writable:
            m.writecnt -= 1
        raise
    mmapped = getattr(m, "map_mmapped", None)
    if mmapped is not None:         # arenas remember where their first mapping went
        mmapped(mapping, length)
    return VmArea(file=f.get(), bpf_map=m, mmap=mapping, offset=offset, length=length,
                  writable=writable)
