"""BPF ring buffers — kernel/bpf/ringbuf.c.

`RingbufMap` is BPF_MAP_TYPE_RINGBUF: a multi-producer (BPF programs), single-consumer
(userspace) byte ring of ``max_entries`` bytes (a power of two, page aligned).

Memory layout.  The kernel vmaps ``struct bpf_ringbuf`` as: a private page
(RINGBUF_PGOFF pages: wait queue, lock, mask, ...), the consumer page
(``consumer_pos`` at offset 0, userspace-writable), the producer page
(``producer_pos`` at 0, ``pending_pos`` at 8, read-only for userspace), then the data
pages *twice* in a row, so a record that wraps past the end of the ring is still
contiguous in virtual memory.  User mmap offsets start at the consumer page.

Here the whole user-visible part lives in ONE memfd whose file offsets are exactly the
user mmap offsets::

    0            PAGE          2*PAGE              2*PAGE+size        2*PAGE+2*size
    | consumer   | producer    | data              | data (mirror)    |

The double mapping is emulated by a mirror: every write the kernel side makes to the
data area (record headers at reserve/commit, the sample body at commit) is copied to
the other copy, so after each helper call the two copies are identical, as they are
by construction on Linux.  A program writes its reserved sample through an address in
the first-or-second copy (the region ``kern.mem`` maps covers both, so wrapping samples
are contiguous); the body is mirrored when it is submitted or discarded, and a busy
record is never read by a consumer.  A later process that maps the memfd at the same
offsets (the runner) therefore sees the kernel's layout, wrap-around included, with a
plain MAP_SHARED mapping of the file — no double-mapping trick needed.

Records: an 8-byte header ``{u32 len; u32 pg_off}``; ``len`` carries
BPF_RINGBUF_BUSY_BIT until submit/discard and BPF_RINGBUF_DISCARD_BIT for discarded
records; ``pg_off`` is the header's page offset from the start of ``struct bpf_ringbuf``;
records advance positions by ``round_up(len + BPF_RINGBUF_HDR_SZ, 8)``.
"""
from __future__ import annotations

import mmap
import os
import weakref

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import PAGE_SIZE, TOTALRAM, map_fields_from_attr, round_up
from fakekernel.wait import EPOLLIN, EPOLLRDNORM, WaitQueue
from uapi.bpf import (BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, MapFlags,
                      RingbufFlags, RingbufQuery)
from uapi.ffi import ffi

__all__ = ["RingbufMap", "ringbuf_from_sample", "RINGBUF_PGOFF", "RINGBUF_POS_PAGES", "RINGBUF_MAX_RECORD_SZ",
           "CONSUMER_POS_OFF", "PRODUCER_POS_OFF", "PENDING_POS_OFF", "DATA_OFF"]

RINGBUF_CREATE_FLAG_MASK = MapFlags.NUMA_NODE
RINGBUF_PGOFF = 1              # pages of struct bpf_ringbuf before consumer_pos (not mmap()able)
RINGBUF_POS_PAGES = 2          # consumer page + producer page
RINGBUF_NR_META_PAGES = RINGBUF_PGOFF + RINGBUF_POS_PAGES
U32_MAX = 2**32 - 1
RINGBUF_MAX_RECORD_SZ = U32_MAX // 4
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_ULONG_MASK = 2**64 - 1
_PTR_SIZE = ffi.sizeof("void *")
_BUSY, _DISCARD = int(BPF_RINGBUF_BUSY_BIT), int(BPF_RINGBUF_DISCARD_BIT)
_HDR_SZ = int(BPF_RINGBUF_HDR_SZ)
_REC_ALIGN = _U64                # records start 8-byte aligned
_WAKEUP_FLAGS = int(RingbufFlags.NO_WAKEUP | RingbufFlags.FORCE_WAKEUP)
# sizeof(struct bpf_ringbuf_map) on x86_64 6.18 (fdinfo memlock minus the pages and page array)
BPF_RINGBUF_MAP_SIZE = 304

# file (= user mmap) offsets of the shared memfd
CONSUMER_POS_OFF = 0
PRODUCER_POS_OFF = PAGE_SIZE
PENDING_POS_OFF = PAGE_SIZE + ffi.sizeof("unsigned long")
DATA_OFF = RINGBUF_POS_PAGES * PAGE_SIZE


# data regions -> their ring buffer (bpf_ringbuf_restore_from_rec() uses the header's pg_off)
_SAMPLE_OWNER: "weakref.WeakValueDictionary[int, RingbufMap]" = weakref.WeakValueDictionary()


def ringbuf_from_sample(mem, addr: int) -> "RingbufMap | None":
    """bpf_ringbuf_restore_from_rec(): the ring buffer a sample pointer belongs to."""
    region = mem.region_at(addr)
    rb = _SAMPLE_OWNER.get(id(region)) if region is not None else None
    return rb if rb is not None and rb.region is region else None


def _is_power_of_2(n: int) -> bool:
    return n != 0 and n & (n - 1) == 0


@attrs.define(eq=False)
class RingbufMap(BpfMap):
    memfd: int | None = None
    _mmap: object = None
    shm: memoryview | None = None       # the whole memfd: consumer, producer, data, mirror
    data: memoryview | None = None      # 2 * ring size bytes: data + mirror
    region: object = None               # `data` in kern.mem, mapped on first reserve
    mask: int = 0
    wakeups: int = 0                    # irq_work_queue() calls (consumer notifications)
    waitq: WaitQueue = attrs.field(factory=WaitQueue)   # rb->waitq: pollers of the consumer side

    # ---- creation: ringbuf_map_alloc (no map_alloc_check: the checks come after the
    # privilege checks of map_create) ----
    @classmethod
    def map_alloc(cls, kern, attr, task) -> "RingbufMap":
        """ringbuf_map_alloc()."""
        if attr.map_flags & ~int(RINGBUF_CREATE_FLAG_MASK):
            raise KernelError(Errno.EINVAL, "ringbuf: only BPF_F_NUMA_NODE")
        if (attr.key_size or attr.value_size or not _is_power_of_2(attr.max_entries)
                or attr.max_entries % PAGE_SIZE):
            raise KernelError(Errno.EINVAL, "ringbuf: key/value size must be 0, size a power-of-2 "
                                            "multiple of the page size")
        size = attr.max_entries
        m = cls(**map_fields_from_attr(kern, attr), mask=size - 1)
        if (RINGBUF_NR_META_PAGES * PAGE_SIZE + size) > TOTALRAM:
            raise KernelError(Errno.ENOMEM, "ring buffer larger than memory")
        file_size = DATA_OFF + 2 * size
        try:
            m.memfd = os.memfd_create("bpf-map", os.MFD_CLOEXEC)   # readlink: bpf-map
            os.ftruncate(m.memfd, file_size)
            m._mmap = mmap.mmap(m.memfd, file_size, mmap.MAP_SHARED)
        except (OSError, OverflowError) as e:
            m.map_free()
            raise KernelError(Errno.ENOMEM, f"cannot allocate ring buffer: {e}") from None
        m.shm = memoryview(m._mmap)
        m.data = m.shm[DATA_OFF:]
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """ringbuf_map_mem_usage(): the map struct, every page, the page-pointer array."""
        nr_data_pages = self.max_entries // PAGE_SIZE
        nr_pages = RINGBUF_NR_META_PAGES + nr_data_pages
        return (BPF_RINGBUF_MAP_SIZE + nr_pages * PAGE_SIZE
                + (RINGBUF_NR_META_PAGES + 2 * nr_data_pages) * _PTR_SIZE)

    def map_free(self) -> None:
        if self.region is not None:
            self.kern.mem.unmap(self.region)
            self.region = None
        self.data = self.shm = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:         # a view is still exported; the GC closes it
                pass
            self._mmap = None
        if self.memfd is not None:
            os.close(self.memfd)
            self.memfd = None

    # ---- element ops: none (ENOTSUPP) ----
    def map_lookup_elem(self, key: bytes) -> int:
        raise KernelError(Errno.ENOTSUPP, "ring buffers have no elements")

    def sys_lookup(self, key, flags: int) -> bytes:
        raise KernelError(Errno.ENOTSUPP, "ring buffers have no elements")

    def map_update_elem(self, key, value, flags: int) -> None:
        raise KernelError(Errno.ENOTSUPP, "ring buffers have no elements")

    def map_delete_elem(self, key) -> None:
        raise KernelError(Errno.ENOTSUPP, "ring buffers have no elements")

    def map_get_next_key(self, key) -> bytes:
        raise KernelError(Errno.ENOTSUPP, "ring buffers have no elements")

    # ---- mmap: ringbuf_map_mmap_kern ----
    def map_mmap(self, offset: int, length: int, writable: bool) -> tuple[int, int]:
        """ringbuf_map_mmap_kern(): only the consumer page may be writable.

        Returns the (memfd, file offset) to map; remap_vmalloc_range()'s bounds are EINVAL.
        """
        if writable and (offset != 0 or length != PAGE_SIZE):
            raise KernelError(Errno.EPERM, "only the consumer page can be mapped writable")
        if offset + length > DATA_OFF + 2 * self.max_entries:
            raise KernelError(Errno.EINVAL, "mapping past the end of the ring buffer")
        return self.memfd, offset

    # ---- shared positions ----
    def _ulong(self, off: int) -> int:
        return int.from_bytes(self.shm[off:off + _U64], "little")

    def _set_ulong(self, off: int, v: int) -> None:
        self.shm[off:off + _U64] = (v & _ULONG_MASK).to_bytes(_U64, "little")

    @property
    def consumer_pos(self) -> int:
        return self._ulong(CONSUMER_POS_OFF)

    @property
    def producer_pos(self) -> int:
        return self._ulong(PRODUCER_POS_OFF)

    @property
    def pending_pos(self) -> int:
        return self._ulong(PENDING_POS_OFF)

    def avail_data_sz(self) -> int:
        """ringbuf_avail_data_sz()."""
        return (self.producer_pos - self.consumer_pos) & _ULONG_MASK

    def total_data_sz(self) -> int:
        """ringbuf_total_data_sz()."""
        return self.mask + 1

    # ---- data area (mirrored: see the module docstring) ----
    def _mirror(self, start: int, end: int) -> None:
        """Copy data-area bytes [start, end) (offsets into data+mirror) to their other copy."""
        size = self.mask + 1
        if start < size:
            e = min(end, size)
            self.data[start + size:e + size] = self.data[start:e]
        if end > size:
            s = max(start, size)
            self.data[s - size:end - size] = self.data[s:end]

    def _hdr_off(self, pos: int) -> int:
        return pos & self.mask

    def _hdr_len(self, off: int) -> int:
        return int.from_bytes(self.data[off:off + _U32], "little")

    def _write_hdr(self, off: int, length: int, pg_off: int | None = None) -> None:
        size = self.mask + 1
        raw = length.to_bytes(_U32, "little")
        if pg_off is not None:
            raw += pg_off.to_bytes(_U32, "little")
        for o in (off, off + size):
            self.data[o:o + len(raw)] = raw

    def data_base(self) -> int:
        """Kernel address of the data area (data + its mirror), mapped on first use."""
        if self.region is None:
            self.region = self.kern.mem.map_region(self.data, "ringbuf",
                                                   f"ringbuf:{self.name.decode(errors='replace')}")
            _SAMPLE_OWNER[id(self.region)] = self
        return self.region.base

    # ---- program side: __bpf_ringbuf_reserve / bpf_ringbuf_commit ----
    def reserve(self, size: int) -> int:
        """__bpf_ringbuf_reserve(): kernel address of the sample, or 0 when it does not fit."""
        if size > RINGBUF_MAX_RECORD_SZ:
            return 0
        length = round_up(size + _HDR_SZ, _REC_ALIGN)
        if length > self.total_data_sz():
            return 0
        cons_pos = self.consumer_pos
        pend_pos = self.pending_pos
        prod_pos = self.producer_pos
        new_prod_pos = (prod_pos + length) & _ULONG_MASK
        # skip committed records at the pending position
        while (prod_pos - pend_pos) & _ULONG_MASK:
            hdr_len = self._hdr_len(self._hdr_off(pend_pos))
            if hdr_len & _BUSY:
                break
            pend_pos = (pend_pos + round_up((hdr_len & ~_DISCARD) + _HDR_SZ, _REC_ALIGN)) & _ULONG_MASK
        self._set_ulong(PENDING_POS_OFF, pend_pos)
        if ((new_prod_pos - cons_pos) & _ULONG_MASK > self.mask
                or (new_prod_pos - pend_pos) & _ULONG_MASK > self.mask):
            return 0
        off = self._hdr_off(prod_pos)
        self._write_hdr(off, size | _BUSY, (RINGBUF_NR_META_PAGES * PAGE_SIZE + off) // PAGE_SIZE)
        self._set_ulong(PRODUCER_POS_OFF, new_prod_pos)
        return self.data_base() + off + _HDR_SZ

    def sample_off(self, addr: int) -> int | None:
        """The data-area offset of the header of the sample at kernel address `addr`."""
        if self.region is None or not self.region.base + _HDR_SZ <= addr < self.region.end:
            return None
        return addr - _HDR_SZ - self.region.base

    def commit(self, hdr_off: int, flags: int, discard: bool) -> None:
        """bpf_ringbuf_commit(): clear BUSY (set DISCARD), mirror the sample, maybe wake up."""
        size = self.mask + 1
        if hdr_off >= size:             # the program wrote through the mirror's address
            hdr_off -= size
        length = self._hdr_len(hdr_off) & ~_BUSY
        self._mirror(hdr_off + _HDR_SZ, hdr_off + _HDR_SZ + length)   # the sample as written
        new_len = (self._hdr_len(hdr_off) ^ _BUSY) | (_DISCARD if discard else 0)
        self._write_hdr(hdr_off, new_len)
        cons_off = self.consumer_pos & self.mask
        if flags & RingbufFlags.FORCE_WAKEUP or (
                cons_off == hdr_off and not flags & RingbufFlags.NO_WAKEUP):
            self.wakeups += 1
            self.waitq.wake_up()

    def map_poll(self) -> int:
        """ringbuf_map_poll_kern(): readable while the consumer is behind the producer."""
        return EPOLLIN | EPOLLRDNORM if self.consumer_pos != self.producer_pos else 0

    def output(self, data: bytes, flags: int) -> int:
        """bpf_ringbuf_output(): 0, -EINVAL for unknown flags, -EAGAIN when full."""
        if flags & ~_WAKEUP_FLAGS:
            return -Errno.EINVAL
        addr = self.reserve(len(data))
        if not addr:
            return -Errno.EAGAIN
        off = addr - self.region.base
        self.data[off:off + len(data)] = data
        self.commit(off - _HDR_SZ, flags, discard=False)
        return 0

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query()."""
        if flags == RingbufQuery.AVAIL_DATA:
            return self.avail_data_sz()
        if flags == RingbufQuery.RING_SIZE:
            return self.total_data_sz()
        if flags == RingbufQuery.CONS_POS:
            return self.consumer_pos
        if flags == RingbufQuery.PROD_POS:
            return self.producer_pos
        return 0
