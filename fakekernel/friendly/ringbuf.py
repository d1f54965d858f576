"""Ring buffer consumer — tools/lib/bpf/ringbuf.c (ring_buffer__new/poll/consume).

`RingBuffer(kern, map_fd, callback)` reads a BPF_MAP_TYPE_RINGBUF exactly as libbpf does,
through shared memory only: it maps the consumer page read-write (offset 0, one page) and
the producer page plus the data area twice over read-only (offset one page, one page +
2 * max_entries), then walks records from consumer_pos to producer_pos, stops at a record
with BPF_RINGBUF_BUSY_BIT, skips records with BPF_RINGBUF_DISCARD_BIT, hands the others to
the callback, and stores the new consumer_pos into the consumer page after each record.

It lives in the friendly layer (not in uapi/, which holds no behaviour, nor in the
simulated kernel, which never reads its own ring from the consumer side) because it is a
userspace library over the syscall API: `kern` is anything with ``bpf(cmd, attr, size)``
— a fakekernel `Kernel` (mapped with ``kern.mmap``) or `uapi.backend.HostKernel` (the
real fd mapped with Python's mmap), so one consumer reads both kernels.
"""
from __future__ import annotations

import mmap as _mmap
import select
from collections.abc import Callable

from uapi import calls
from uapi.bpf import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, MapType
from uapi.ffi import ffi

__all__ = ["RingBuffer", "PAGE_SIZE"]

PAGE_SIZE = _mmap.PAGESIZE
_POS = ffi.sizeof("unsigned long")
_LEN = ffi.sizeof("__u32")
_HDR = int(BPF_RINGBUF_HDR_SZ)
_BUSY, _DISCARD = int(BPF_RINGBUF_BUSY_BIT), int(BPF_RINGBUF_DISCARD_BIT)
_ULONG_MASK = 2**64 - 1
_INT_MAX = 2**31 - 1
_REC_ALIGN = ffi.sizeof("__u64")


def _roundup_len(length: int) -> int:
    """roundup_len(): the record's footprint, header included, 8-byte aligned."""
    length = (length & ~_DISCARD) + _HDR
    return (length + _REC_ALIGN - 1) // _REC_ALIGN * _REC_ALIGN


class _HostMapping:
    """A Python mmap of a real fd, with the VmArea interface."""

    def __init__(self, fd: int, length: int, prot: int, offset: int):
        self.mmap = _mmap.mmap(fd, length, _mmap.MAP_SHARED, prot, offset=offset)

    def munmap(self) -> None:
        if self.mmap is not None:
            self.mmap.close()
            self.mmap = None


class RingBuffer:
    """ring_buffer__new() for one map; ``callback(data: bytes) -> int | None`` per record.

    A negative callback result stops consumption and is returned, as in libbpf.
    """

    def __init__(self, kern, map_fd: int, callback: Callable[[bytes], int | None]):
        info, _ = calls.obj_get_info_by_fd(kern, map_fd, "map")
        if info.type != MapType.RINGBUF:
            raise ValueError(f"fd {map_fd} is not a BPF_MAP_TYPE_RINGBUF map")
        self.kern = kern
        self.map_fd = map_fd
        self.callback = callback
        self.mask = info.max_entries - 1
        self._cons = self._map(PAGE_SIZE, _mmap.PROT_READ | _mmap.PROT_WRITE, 0)
        try:
            self._prod = self._map(PAGE_SIZE + 2 * info.max_entries, _mmap.PROT_READ, PAGE_SIZE)
        except BaseException:
            self._cons.munmap()
            raise

    def _map(self, length: int, prot: int, offset: int):
        mapper = getattr(self.kern, "mmap", None)
        if mapper is not None:
            return mapper(self.map_fd, length, prot, offset=offset)
        return _HostMapping(self.map_fd, length, prot, offset)

    # ---- shared positions ----
    @property
    def consumer_pos(self) -> int:
        return int.from_bytes(self._cons.mmap[0:_POS], "little")

    @consumer_pos.setter
    def consumer_pos(self, pos: int) -> None:
        self._cons.mmap[0:_POS] = (pos & _ULONG_MASK).to_bytes(_POS, "little")

    @property
    def producer_pos(self) -> int:
        return int.from_bytes(self._prod.mmap[0:_POS], "little")

    def avail_data(self) -> int:
        """ring__avail_data_size()."""
        return (self.producer_pos - self.consumer_pos) & _ULONG_MASK

    # ---- consumption: ringbuf_process_ring() ----
    def consume(self, n: int = _INT_MAX) -> int:
        """ring_buffer__consume_n(): hand up to `n` ready records to the callback; returns the count."""
        data = self._prod.mmap
        cnt = 0
        cons_pos = self.consumer_pos
        while True:
            got_new_data = False
            prod_pos = self.producer_pos
            while cons_pos < prod_pos:
                off = PAGE_SIZE + (cons_pos & self.mask)
                length = int.from_bytes(data[off:off + _LEN], "little")
                if length & _BUSY:
                    return cnt
                got_new_data = True
                cons_pos += _roundup_len(length)
                if not length & _DISCARD:
                    ret = self.callback(bytes(data[off + _HDR:off + _HDR + length]))
                    if ret is not None and ret < 0:
                        self.consumer_pos = cons_pos
                        return ret
                    cnt += 1
                self.consumer_pos = cons_pos
                if cnt >= n:
                    return cnt
            if not got_new_data:
                return cnt

    def poll(self, timeout_ms: int = 0) -> int:
        """ring_buffer__poll(): wait up to `timeout_ms` for data, then consume.

        On the real kernel the wait is poll(2) on the map fd; fakekernel runs producers
        synchronously, so whatever was produced is already there and poll just consumes.
        """
        if not hasattr(self.kern, "mmap") and timeout_ms and not self.avail_data():
            p = select.poll()
            p.register(self.map_fd, select.POLLIN)
            p.poll(timeout_ms)
        return self.consume()

    def records(self) -> list[bytes]:
        """Consume everything ready and return the records (the callback still sees each)."""
        out: list[bytes] = []
        cb = self.callback

        def collect(data: bytes):
            out.append(data)
            return cb(data)
        self.callback = collect
        try:
            self.consume()
        finally:
            self.callback = cb
        return out

    def close(self) -> None:
        """ring_buffer__free(): unmap both areas."""
        for area in (self._cons, self._prod):
            area.munmap()

    def __enter__(self) -> "RingBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
