"""User ring buffer producer — tools/lib/bpf/ringbuf.c (user_ring_buffer__new/reserve/submit/discard).

`UserRingBuffer(kern, map_fd)` produces into a BPF_MAP_TYPE_USER_RINGBUF exactly as libbpf
does, through shared memory only: the consumer page is mapped read-only (offset 0, one page:
the kernel owns ``consumer_pos``), the producer page plus the data area twice over
read-write (offset one page, one page + 2 * max_entries).  `reserve(size)` writes a busy
record header ``{len | BPF_RINGBUF_BUSY_BIT, pad 0}`` at ``producer_pos`` and publishes the
new producer position (records take ``round_up(size + BPF_RINGBUF_HDR_SZ, 8)`` bytes);
`submit` / `discard` clear the busy bit (discard sets BPF_RINGBUF_DISCARD_BIT).  A program's
``bpf_user_ringbuf_drain()`` then consumes the submitted records.

As `RingBuffer`, `kern` is a fakekernel `Kernel` (mapped with ``kern.mmap``) or
`uapi.backend.HostKernel` (the real fd mapped with Python's mmap).  Samples are written
linearly from their start, also when they wrap past the end of the ring (libbpf relies on
the kernel's double mapping of the data pages for that; fakekernel reads them the same way).
"""
from __future__ import annotations

import mmap as _mmap

import attrs

from fakekernel.friendly.ringbuf import PAGE_SIZE, _HostMapping
from uapi import calls
from uapi.bpf import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, MapType
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["UserRingBuffer", "UserSample"]

_POS = ffi.sizeof("unsigned long")
_LEN = ffi.sizeof("__u32")
_HDR = int(BPF_RINGBUF_HDR_SZ)
_BUSY, _DISCARD = int(BPF_RINGBUF_BUSY_BIT), int(BPF_RINGBUF_DISCARD_BIT)
_REC_ALIGN = ffi.sizeof("__u64")
_ULONG_MASK = 2**64 - 1


@attrs.define(eq=False)
class UserSample:
    """A reserved record: ``data`` is the writable sample (a view into the shared mapping)."""

    offset: int             # of the sample in the data area (producer mapping offset - one page)
    size: int
    data: memoryview


class UserRingBuffer:
    """user_ring_buffer__new() for one map."""

    def __init__(self, kern, map_fd: int):
        info, _ = calls.obj_get_info_by_fd(kern, map_fd, "map")
        if info.type != MapType.USER_RINGBUF:
            raise ValueError(f"fd {map_fd} is not a BPF_MAP_TYPE_USER_RINGBUF map")
        self.kern = kern
        self.map_fd = map_fd
        self.mask = info.max_entries - 1
        self._cons = self._map(PAGE_SIZE, _mmap.PROT_READ, 0)
        try:
            self._prod = self._map(PAGE_SIZE + 2 * info.max_entries,
                                   _mmap.PROT_READ | _mmap.PROT_WRITE, PAGE_SIZE)
        except BaseException:
            self._cons.munmap()
            raise
        self._data = memoryview(self._prod.mmap)[PAGE_SIZE:]

    def _map(self, length: int, prot: int, offset: int):
        mapper = getattr(self.kern, "mmap", None)
        if mapper is not None:
            return mapper(self.map_fd, length, prot, offset=offset)
        return _HostMapping(self.map_fd, length, prot, offset)

    # ---- shared positions ----
    @property
    def consumer_pos(self) -> int:
        return int.from_bytes(self._cons.mmap[0:_POS], "little")

    @property
    def producer_pos(self) -> int:
        return int.from_bytes(self._prod.mmap[0:_POS], "little")

    @producer_pos.setter
    def producer_pos(self, pos: int) -> None:
        self._prod.mmap[0:_POS] = (pos & _ULONG_MASK).to_bytes(_POS, "little")

    # ---- production ----
    def reserve(self, size: int) -> UserSample:
        """user_ring_buffer__reserve(): a busy record of `size` bytes; OSError(E2BIG) for a
        size with a flag bit or larger than the ring, OSError(ENOSPC) when it does not fit now."""
        if size & (_BUSY | _DISCARD):
            raise OSError(Errno.E2BIG, "sample size uses the header flag bits")
        cons_pos, prod_pos = self.consumer_pos, self.producer_pos
        max_size = self.mask + 1
        avail = max_size - (prod_pos - cons_pos)
        total = (size + _HDR + _REC_ALIGN - 1) // _REC_ALIGN * _REC_ALIGN
        if total > max_size:
            raise OSError(Errno.E2BIG, "sample larger than the ring")
        if avail < total:
            raise OSError(Errno.ENOSPC, "no room in the ring")
        hdr = prod_pos & self.mask
        self._data[hdr:hdr + _LEN] = (size | _BUSY).to_bytes(_LEN, "little")
        self._data[hdr + _LEN:hdr + _HDR] = bytes(_HDR - _LEN)
        self.producer_pos = prod_pos + total
        off = (prod_pos + _HDR) & self.mask
        return UserSample(off, size, self._data[off:off + size])

    def _commit(self, sample: UserSample, discard: bool) -> None:
        """user_ringbuf_commit(): clear the busy bit (and set the discard bit)."""
        hdr = (self.mask + 1 + sample.offset - _HDR) & self.mask
        length = int.from_bytes(self._data[hdr:hdr + _LEN], "little") & ~_BUSY
        if discard:
            length |= _DISCARD
        size = self.mask + 1
        end = sample.offset + sample.size
        if end > size:
            # the tail went past the ring's end into the second mapping of the data pages;
            # on Linux those are the same pages (this copy rewrites bytes onto themselves),
            # on fakekernel's memfd layout it fills the first copy as the kernel's would be
            self._data[0:end - size] = bytes(self._data[size:end])
        self._data[hdr:hdr + _LEN] = length.to_bytes(_LEN, "little")

    def submit(self, sample: UserSample) -> None:
        """user_ring_buffer__submit()."""
        self._commit(sample, discard=False)

    def discard(self, sample: UserSample) -> None:
        """user_ring_buffer__discard()."""
        self._commit(sample, discard=True)

    def write(self, data: bytes) -> None:
        """reserve + copy + submit in one go."""
        sample = self.reserve(len(data))
        sample.data[:] = data
        self.submit(sample)

    def close(self) -> None:
        """user_ring_buffer__free(): unmap both areas."""
        self._data.release()
        for area in (self._cons, self._prod):
            try:
                area.munmap()
            except BufferError:         # a UserSample view is still alive; the GC unmaps it
                pass

    def __enter__(self) -> "UserRingBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
