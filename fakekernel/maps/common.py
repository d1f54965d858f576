"""Helpers every map type shares — kernel/bpf/syscall.c (bpf_map_area_alloc, bpf_map_init_from_attr), include/linux/bpf.h.

Map storage is allocated here: small areas are plain bytearrays, large ones anonymous
memory that the host only backs when touched (as vmalloc'ed map memory is only charged
when used), and BPF_F_MMAPABLE areas live in a memfd so another process can map them.
An area larger than the simulated machine's memory is ENOMEM, as the real allocator
answers on this class of machine.
"""
from __future__ import annotations

import mmap
import os

from fakekernel.errors import Errno, KernelError
from uapi.bpf import MapFlags

__all__ = ["NUMA_NO_NODE", "NR_NODE_IDS", "TOTALRAM", "BPF_F_ACCESS_MASK", "bpf_map_attr_numa_node",
           "array_get_next_key", "bpf_map_flags_access_ok", "bpf_map_flags_retain_permanent", "map_fields_from_attr",
           "bpf_map_area_alloc", "round_up", "page_align", "PAGE_SIZE", "MapArea",
           "PCPU_MIN_UNIT_SIZE", "smp_processor_id"]

NUMA_NO_NODE = -1
NR_NODE_IDS = 1                 # one NUMA node (node 0), as on the reference machine
TOTALRAM = 20 << 30             # what a single map allocation may take before ENOMEM
PAGE_SIZE = 4096
PCPU_MIN_UNIT_SIZE = 32 << 10   # the largest per-CPU value (mm/percpu.c)
_LAZY_THRESHOLD = 1 << 20       # areas from this size on are anonymous mmaps
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # asm-generic/mman.h; not in Python 3.11's mmap

_U32_SIZE = 4
_U32_MAX = 0xFFFFFFFF
BPF_F_ACCESS_MASK = MapFlags.RDONLY | MapFlags.RDONLY_PROG | MapFlags.WRONLY | MapFlags.WRONLY_PROG


def array_get_next_key(key: bytes | None, max_entries: int) -> bytes:
    """The get_next_key of every array-indexed map (array_map_get_next_key and the devmap,
    cpumap and xskmap copies of it): NULL or an out-of-range key restarts at index 0, the
    last index is ENOENT."""
    index = int.from_bytes(key[:_U32_SIZE], "little") if key is not None else _U32_MAX
    if index >= max_entries:
        return bytes(_U32_SIZE)
    if index == max_entries - 1:
        raise KernelError(Errno.ENOENT, "last index")
    return (index + 1).to_bytes(_U32_SIZE, "little")


def round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def page_align(x: int) -> int:
    return round_up(x, PAGE_SIZE)


def smp_processor_id(kern) -> int:
    """The CPU the current code runs on: the program's CPU during a run, else the syscall's (0)."""
    return kern.cpu


def bpf_map_attr_numa_node(attr) -> int:
    """bpf_map_attr_numa_node(): attr->numa_node only when BPF_F_NUMA_NODE is set."""
    if attr.map_flags & MapFlags.NUMA_NODE:
        node = attr.numa_node
        return node - (1 << 32) if node >= 1 << 31 else node
    return NUMA_NO_NODE


def bpf_map_flags_access_ok(flags: int) -> bool:
    """bpf_map_flags_access_ok(): not both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG."""
    both = MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG
    return flags & both != both


def bpf_map_flags_retain_permanent(flags: int) -> int:
    """The fd-only access flags are not part of the map object."""
    return flags & ~int(MapFlags.RDONLY | MapFlags.WRONLY)


def map_fields_from_attr(kern, attr) -> dict:
    """bpf_map_init_from_attr(): the BpfMap constructor arguments taken from attr."""
    return dict(kern=kern, map_type=attr.map_type, key_size=attr.key_size,
                value_size=attr.value_size, max_entries=attr.max_entries,
                map_flags=bpf_map_flags_retain_permanent(attr.map_flags),
                numa_node=bpf_map_attr_numa_node(attr), map_extra=attr.map_extra)


class MapArea:
    """A zero-filled storage area; ``buf`` is the writable buffer, ``memfd`` set for mmapable areas."""

    __slots__ = ("buf", "memfd", "_mmap")

    def __init__(self, size: int, mmapable: bool):
        self.memfd = None
        self._mmap = None
        if mmapable:
            self.memfd = os.memfd_create("bpf-map", os.MFD_CLOEXEC)
            os.ftruncate(self.memfd, max(size, PAGE_SIZE))
            self._mmap = mmap.mmap(self.memfd, max(size, PAGE_SIZE), mmap.MAP_SHARED)
            self.buf = memoryview(self._mmap)[:size]
        elif size >= _LAZY_THRESHOLD:
            self._mmap = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
            self.buf = memoryview(self._mmap)
        else:
            self.buf = bytearray(size)

    def free(self) -> None:
        if self._mmap is not None:
            self.buf = None             # drop our view so the mapping can close
            try:
                self._mmap.close()
            except BufferError:     # a region view still exports it; the GC closes it later
                pass
            self._mmap = None
        if self.memfd is not None:
            os.close(self.memfd)
            self.memfd = None


def bpf_map_area_alloc(size: int, mmapable: bool = False, charge: int | None = None) -> MapArea:
    """bpf_map_area_alloc() / bpf_map_area_mmapable_alloc(): zeroed memory or ENOMEM.

    `charge` is what the kernel would allocate (headers included) when that is more
    than the `size` bytes we back.
    """
    if max(size, charge or 0) > TOTALRAM:
        raise KernelError(Errno.ENOMEM, f"cannot allocate {size} bytes of map memory")
    try:
        return MapArea(size, mmapable)
    except (OSError, MemoryError, OverflowError) as e:
        raise KernelError(Errno.ENOMEM, f"cannot allocate {size} bytes of map memory: {e}") from None
