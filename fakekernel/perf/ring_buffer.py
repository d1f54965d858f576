"""The perf ring buffer — kernel/events/ring_buffer.c (perf_output_begin/end, the LOST record),
kernel/events/core.c (perf_mmap, perf_event_update_userpage, perf_output_sample).

What userspace mmaps on a perf event fd: one control page (`struct perf_event_mmap_page`:
data_head written by the kernel, data_tail by the reader) followed by 2^n data pages,
mapped once per event (a second mapping must have the same size).  The pages live in a
memfd; `PerfVmArea.mmap` is the caller's view of it, the kernel side writes through its
own mapping of the same memfd.

Records are written as the kernel writes them: `struct perf_event_header`, then the sample
fields the event's sample_type asks for, PERF_SAMPLE_RAW last as ``u32 size`` + data, padded
so the whole record is 8-byte aligned (the padding bytes are skipped, not written, as
perf_output_skip() does).  When the reader has not freed enough space the sample is lost:
the program sees -ENOSPC and the next record that fits is preceded by PERF_RECORD_LOST
{id, lost}.  A read-only first mapping makes an overwrite ring (data_tail is ignored).
"""
from __future__ import annotations

import mmap as _mmap
import os

import attrs

from fakekernel.errors import Errno, KernelError
from uapi.ffi import ffi
from uapi.perf_event import PerfMisc, PerfRecord, PerfSample

PAGE_SIZE = 4096                        # x86_64

__all__ = ["PerfBuffer", "PerfVmArea", "perf_mmap", "sys_perf_mmap", "perf_output_sample"]

_HDR = ffi.sizeof("struct perf_event_header")
_U32, _U64 = ffi.sizeof("__u32"), ffi.sizeof("__u64")
_PG = "struct perf_event_mmap_page"
_OFF_LOCK = ffi.offsetof(_PG, "lock")
_OFF_CAPS = ffi.offsetof(_PG, "capabilities")
_OFF_SIZE = ffi.offsetof(_PG, "size")
_OFF_HEAD = ffi.offsetof(_PG, "data_head")
_OFF_TAIL = ffi.offsetof(_PG, "data_tail")
_OFF_DATA_OFFSET = ffi.offsetof(_PG, "data_offset")
_OFF_DATA_SIZE = ffi.offsetof(_PG, "data_size")
_USERPG_SIZE = ffi.offsetof(_PG, "__reserved")      # userpg->size: the part before __reserved
_CAP_BIT0_IS_DEPRECATED = 1 << 1
_LOST_SIZE = _HDR + 2 * _U64                         # struct { header; u64 id; u64 lost; }
_U64_MASK = (1 << 64) - 1


def _u64(v: int) -> bytes:
    return (v & _U64_MASK).to_bytes(_U64, "little")


@attrs.define(eq=False)
class PerfBuffer:
    """struct perf_buffer: the pages behind an event's mappings."""

    nr_pages: int
    overwrite: bool
    memfd: int = -1
    buf: _mmap.mmap | None = None
    head: int = 0
    lost: int = 0
    paused: bool = False
    mmap_count: int = 0
    owns_memfd: bool = True
    watermark: int = 0                  # rb->watermark: wake readers every this many bytes
    wakeup_head: int = 0                # rb->wakeup as a position
    events: int = 0                     # samples since the last wakeup_events wakeup

    @classmethod
    def alloc(cls, nr_pages: int, overwrite: bool, *, memfd: int | None = None,
              wakeup_watermark: int = 0) -> "PerfBuffer":
        """rb_alloc() + the first perf_event_update_userpage().  `memfd`: pages shared with
        userspace already (the event's own memfd, see PerfEvent.user_memfd)."""
        rb = cls(nr_pages=nr_pages, overwrite=overwrite)
        size = (1 + nr_pages) * PAGE_SIZE
        if memfd is None:
            rb.memfd = os.memfd_create("perf_event", os.MFD_CLOEXEC)
            os.ftruncate(rb.memfd, size)
        else:
            rb.memfd, rb.owns_memfd = memfd, False
        rb.buf = _mmap.mmap(rb.memfd, size, _mmap.MAP_SHARED)
        if memfd is not None:
            rb.buf[:] = bytes(size)             # fresh pages, as rb_alloc() gives
        data_size = nr_pages * PAGE_SIZE
        rb.watermark = min(data_size, wakeup_watermark) if wakeup_watermark else data_size // 2
        rb._put(_OFF_SIZE, _USERPG_SIZE, _U32)
        rb._put(_OFF_CAPS, _CAP_BIT0_IS_DEPRECATED, _U64)
        rb._put(_OFF_DATA_OFFSET, PAGE_SIZE, _U64)
        rb._put(_OFF_DATA_SIZE, nr_pages * PAGE_SIZE, _U64)
        rb._put(_OFF_LOCK, 2, _U32)              # one seqcount update (++ before, ++ after)
        return rb

    def _put(self, off: int, v: int, n: int) -> None:
        self.buf[off:off + n] = v.to_bytes(n, "little")

    @property
    def data_size(self) -> int:
        return self.nr_pages * PAGE_SIZE

    @property
    def data_tail(self) -> int:
        return int.from_bytes(self.buf[_OFF_TAIL:_OFF_TAIL + _U64], "little")

    def free(self) -> None:
        if self.buf is not None:
            self.buf.close()
            if self.owns_memfd:
                os.close(self.memfd)
            self.buf, self.memfd = None, -1

    # ---- output ----
    def _has_space(self, size: int) -> bool:
        """ring_buffer_has_space() (forward): CIRC_SPACE(head, tail, data_size) >= size."""
        if self.overwrite:
            return True
        return ((self.data_tail - (self.head + 1)) & (self.data_size - 1)) >= size

    def _copy(self, data: bytes) -> None:
        """Write `data` at head (wrapping), head moves on."""
        off = self.head & (self.data_size - 1)
        first = min(len(data), self.data_size - off)
        base = PAGE_SIZE
        self.buf[base + off:base + off + first] = data[:first]
        if first < len(data):
            self.buf[base:base + len(data) - first] = data[first:]
        self.head += len(data)

    def output(self, event_id: int, record: bytes, skip_tail: int) -> int:
        """perf_output_begin() + copy + perf_output_end(): 0, or -ENOSPC (counted as lost).

        `record` is written, then `skip_tail` bytes are skipped (the raw padding)."""
        if self.paused or not self.nr_pages:
            if self.paused and self.nr_pages:
                self.lost += 1
            return -Errno.ENOSPC
        size = len(record) + skip_tail
        have_lost = self.lost
        if have_lost:
            size += _LOST_SIZE
        if not self._has_space(size):
            self.lost += 1
            return -Errno.ENOSPC
        if have_lost:
            self._copy(_header(PerfRecord.LOST, 0, _LOST_SIZE) + _u64(event_id) + _u64(have_lost))
            self.lost = 0
        self._copy(record)
        self.head += skip_tail
        self._put(_OFF_HEAD, self.head & _U64_MASK, _U64)
        return 0

    def wakeup_due(self, wakeup_events: int) -> bool:
        """The watermark (__perf_output_begin) and wakeup_events (perf_output_sample) rules."""
        due = False
        if self.watermark and self.head - self.wakeup_head > self.watermark:
            self.wakeup_head += self.watermark
            due = True
        if wakeup_events:
            self.events += 1
            if self.events >= wakeup_events:
                self.events = 0
                due = True
        return due


def _header(rtype: int, misc: int, size: int) -> bytes:
    h = ffi.new("struct perf_event_header *", {"type": rtype, "misc": misc, "size": size})
    return bytes(ffi.buffer(h))


def perf_output_sample(event, frags: list[bytes], *, pid: int, tid: int, cpu: int,
                       time_ns: int, misc: int = PerfMisc.KERNEL) -> int:
    """perf_prepare_sample() + perf_output_sample() of one PERF_RECORD_SAMPLE carrying the raw
    fragments `frags` (bpf_perf_event_output's data, then any ctx bytes).  0 or -errno."""
    rb = event.ring_buffer()
    if rb is None:
        return -Errno.ENOSPC                     # perf_output_begin() without a buffer
    st = event.attr.sample_type
    body = bytearray()
    if st & PerfSample.IDENTIFIER:
        body += _u64(event.id)
    if st & PerfSample.IP:
        body += _u64(0)
    if st & PerfSample.TID:
        body += pid.to_bytes(_U32, "little") + tid.to_bytes(_U32, "little")
    if st & PerfSample.TIME:
        body += _u64(time_ns)
    if st & PerfSample.ID:
        body += _u64(event.id)
    if st & PerfSample.STREAM_ID:
        body += _u64(event.id)
    if st & PerfSample.CPU:
        body += cpu.to_bytes(_U32, "little") + bytes(_U32)
    if st & PerfSample.PERIOD:
        body += _u64(event.attr.sample_period)
    pad = 0
    if st & PerfSample.RAW:
        raw = b"".join(frags)
        total = -(-(len(raw) + _U32) // _U64) * _U64
        pad = total - _U32 - len(raw)
        body += (total - _U32).to_bytes(_U32, "little") + raw
    size = _HDR + len(body) + pad
    ret = rb.output(event.id, _header(PerfRecord.SAMPLE, misc, size) + bytes(body), pad)
    if ret == 0 and rb.wakeup_due(0 if event.attr.watermark else event.attr.wakeup_events):
        event.perf_output_wakeup()
    return ret


@attrs.define(eq=False)
class PerfVmArea:
    """One mapping of a perf event file (vma->vm_file holds the file)."""

    file: object
    event: object
    mmap: _mmap.mmap | None
    length: int

    def munmap(self) -> None:
        """perf_mmap_close(): the last mapping detaches and frees the buffer."""
        if self.mmap is None:
            return
        try:
            self.mmap.close()
        except BufferError:
            pass
        self.mmap = None
        rb = self.event.rb
        rb.mmap_count -= 1
        if rb.mmap_count == 0:
            self.event.rb = None
            rb.free()
        self.file.put()

    def __enter__(self) -> "PerfVmArea":
        return self

    def __exit__(self, *exc) -> None:
        self.munmap()


def perf_mmap(event, file, length: int, writable: bool, shared: bool, offset: int) -> PerfVmArea:
    """perf_mmap(): the control page + 2^n data pages at offset 0 (the AUX area is not
    modelled: any other offset is EINVAL)."""
    if event.cpu == -1 and event.attr.inherit:
        raise KernelError(Errno.EINVAL, "inherited per-task events cannot be mmapped")
    if not shared:
        raise KernelError(Errno.EINVAL, "perf mappings must be MAP_SHARED")
    if offset:
        raise KernelError(Errno.EINVAL, "no AUX area")
    nr_pages = length // PAGE_SIZE - 1
    if nr_pages < 0 or (nr_pages and nr_pages & (nr_pages - 1)):
        raise KernelError(Errno.EINVAL, "data pages must be a power of two")
    if length != PAGE_SIZE * (1 + nr_pages):
        raise KernelError(Errno.EINVAL, "mapping size is not whole pages")
    rb = event.rb
    if rb is not None and rb.nr_pages != nr_pages:
        raise KernelError(Errno.EINVAL, "the buffer is already mapped with another size")
    if rb is None:
        rb = event.rb = PerfBuffer.alloc(nr_pages, overwrite=not writable,
                                         memfd=event.user_memfd(),
                                         wakeup_watermark=event.wakeup_watermark)
    m = _mmap.mmap(rb.memfd, length, _mmap.MAP_SHARED,
                   _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0))
    rb.mmap_count += 1
    return PerfVmArea(file=file.get(), event=event, mmap=m, length=length)


_MAP_TYPE = 0x0f
_MAP_SHARED_VALIDATE = 0x03


def sys_perf_mmap(file, length: int, prot: int, flags: int | None, offset: int) -> PerfVmArea:
    """mmap(2) of a perf event file: do_mmap()'s generic checks, then perf_mmap()."""
    flags = _mmap.MAP_SHARED if flags is None else flags
    if length <= 0 or offset < 0 or offset % PAGE_SIZE:
        raise KernelError(Errno.EINVAL, "bad length or unaligned offset")
    length = -(-length // PAGE_SIZE) * PAGE_SIZE
    map_type = flags & _MAP_TYPE
    if map_type not in (_mmap.MAP_SHARED, _mmap.MAP_PRIVATE, _MAP_SHARED_VALIDATE):
        raise KernelError(Errno.EINVAL, "neither MAP_SHARED nor MAP_PRIVATE")
    if prot & _mmap.PROT_EXEC:
        raise KernelError(Errno.EPERM, "executable mapping on a noexec mount")
    return perf_mmap(file.private_data, file, length, bool(prot & _mmap.PROT_WRITE),
                     map_type != _mmap.MAP_PRIVATE, offset)
