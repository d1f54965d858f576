"""fakekernel/maps/ringbuf.py — the ring's positions, headers and mirror, without programs."""
from __future__ import annotations

import mmap
import os

import pytest

from fakekernel.errors import KernelError
from fakekernel.friendly import RingBuffer
from fakekernel.helpers import HELPERS
from fakekernel.interp.memory import InterpreterFault
from fakekernel.maps.ringbuf import DATA_OFF, ringbuf_from_sample
from uapi import calls
from uapi.bpf import (BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, FuncId, MapFlags, MapType,
                      RingbufQuery)
from uapi.errno import Errno

P = mmap.PAGESIZE


def _rb(kernel, size=P):
    fd = calls.map_create(kernel, MapType.RINGBUF, 0, 0, size)
    return fd, kernel.current.files.fdget(fd).private_data


@pytest.mark.parametrize("size,memlock", [(4096, 16728), (8192, 20840), (1 << 20, 1065288)])
def test_ringbuf_memlock_measured(kernel, size, memlock):
    fd, rb = _rb(kernel, size)
    assert rb.memlock == memlock                 # /proc/<pid>/fdinfo on Linux 6.18
    kernel.close(fd)


def _fill(rb, size: int, byte: int) -> int:
    addr = rb.reserve(size)
    assert addr
    rb.kern.mem.write(addr, bytes([byte]) * size)
    return addr


def test_ringbuf_wrapping_record_is_contiguous_and_mirrored(kernel):
    fd, rb = _rb(kernel)
    # advance to 8 bytes before the end: header fits, the body wraps
    addr = _fill(rb, P - 16 - 8, 1)
    rb.commit(rb.sample_off(addr), 0, discard=False)
    rb._set_ulong(0, rb.producer_pos)            # consumer caught up
    addr = _fill(rb, 20, 0xAB)
    assert rb.sample_off(addr) == P - 16 + 8 - 8    # header at ring offset P-16
    rb.commit(rb.sample_off(addr), 0, discard=False)
    data = rb.data
    assert bytes(data[P - 16 + 8:P]) == b"\xab" * 8          # first copy, end of the ring
    assert bytes(data[0:12]) == b"\xab" * 12                  # ...wrapped to its start
    assert bytes(data[:P]) == bytes(data[P:])                  # the mirror is identical
    # an independent mapping of the memfd sees the same record at the kernel's user offsets
    with mmap.mmap(rb.memfd, DATA_OFF + 2 * P, mmap.MAP_SHARED, mmap.PROT_READ) as view:
        hdr = DATA_OFF + (P - 16)
        assert int.from_bytes(view[hdr:hdr + 4], "little") == 20
        assert int.from_bytes(view[hdr + 4:hdr + 8], "little") == (3 * P + P - 16) // P
        assert view[hdr + 8:hdr + 28] == b"\xab" * 20
    kernel.close(fd)


def test_ringbuf_busy_record_stops_consumer_and_discard_is_skipped(kernel):
    fd, rb = _rb(kernel)
    a1 = _fill(rb, 4, 1)
    a2 = _fill(rb, 4, 2)
    a3 = _fill(rb, 4, 3)
    rb.commit(rb.sample_off(a2), 0, discard=False)            # out of order
    got = []
    with RingBuffer(kernel, fd, got.append) as cons:
        assert cons.consume() == 0                             # a1 still busy
        rb.commit(rb.sample_off(a1), 0, discard=True)
        assert cons.consume() == 1 and got == [b"\x02" * 4]    # a1 skipped, a2 read, a3 busy
        hdr = rb._hdr_len(rb.sample_off(a1))
        assert hdr == 4 | BPF_RINGBUF_DISCARD_BIT
        assert rb._hdr_len(rb.sample_off(a3)) == 4 | BPF_RINGBUF_BUSY_BIT
        rb.commit(rb.sample_off(a3), 0, discard=False)
        assert cons.consume() == 1 and got[-1] == b"\x03" * 4
        assert cons.consumer_pos == rb.producer_pos == 48
    kernel.close(fd)


def test_ringbuf_full_and_pending_pos(kernel):
    fd, rb = _rb(kernel)
    assert rb.reserve(P) == 0                                  # header does not fit
    assert rb.reserve(P - 8) == 0                              # would fill the ring exactly
    a = rb.reserve(P - 16)
    assert a and rb.reserve(0) == 0                            # 8 more bytes: too many
    assert rb.query(RingbufQuery.AVAIL_DATA) == P - 8
    rb.commit(rb.sample_off(a), 0, discard=True)
    rb._set_ulong(0, rb.producer_pos)
    assert rb.reserve(8) and rb.pending_pos == P - 8           # pending skipped the committed record
    assert rb.query(RingbufQuery.RING_SIZE) == P and rb.query(99) == 0
    kernel.close(fd)


def test_ringbuf_output_flags_and_wakeups(kernel):
    fd, rb = _rb(kernel)
    assert rb.output(b"x", 4) == -Errno.EINVAL
    assert rb.output(b"x", 0) == 0 and rb.wakeups == 1        # consumer waits at this record
    assert rb.output(b"y", 0) == 0 and rb.wakeups == 1        # not at the consumer position
    assert rb.output(b"z", 2) == 0 and rb.wakeups == 2        # FORCE_WAKEUP
    rb._set_ulong(0, rb.producer_pos)
    assert rb.output(b"w", 1) == 0 and rb.wakeups == 2        # NO_WAKEUP
    assert rb.output(bytes(P), 0) == -Errno.EAGAIN
    kernel.close(fd)


def test_ringbuf_submit_of_foreign_pointer_faults(kernel):
    fd, rb = _rb(kernel)
    addr = rb.reserve(8)
    from fakekernel.interp.run import RunEnv
    env = RunEnv(mem=kernel.mem, prog=None, kernel=kernel, ctx=None)
    assert ringbuf_from_sample(kernel.mem, addr) is rb
    with pytest.raises(InterpreterFault):
        HELPERS[FuncId.ringbuf_submit](env, 0xFFFF888000001000, 0, 0, 0, 0)
    HELPERS[FuncId.ringbuf_discard](env, addr, 0, 0, 0, 0)
    assert rb._hdr_len(rb.sample_off(addr)) == 8 | BPF_RINGBUF_DISCARD_BIT
    kernel.close(fd)


def test_ringbuf_memfd_closed_when_map_freed(kernel):
    fd, rb = _rb(kernel)
    memfd = rb.memfd
    area = kernel.mmap(fd, P, mmap.PROT_READ | mmap.PROT_WRITE)
    kernel.close(fd)
    assert not rb.freed                                        # the mapping holds the file
    area.munmap()
    assert rb.freed and rb.memfd is None
    with pytest.raises(OSError):
        os.fstat(memfd)


def test_mmap_errors_are_kernel_errors(kernel):
    fd, rb = _rb(kernel)
    with pytest.raises(KernelError) as e:
        kernel.mmap(fd, 2 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    assert e.value.errno == Errno.EPERM and rb.writecnt == 0
    with pytest.raises(KernelError) as e:
        kernel.mmap(fd, 0, mmap.PROT_READ)
    assert e.value.errno == Errno.EINVAL
    with pytest.raises(KernelError) as e:
        kernel.mmap(99, P, mmap.PROT_READ)
    assert e.value.errno == Errno.EBADF
    kernel.close(fd)


def test_ringbuf_consumer_rejects_other_maps(kernel):
    fd = calls.map_create(kernel, MapType.ARRAY, 4, 8, 1, map_flags=MapFlags.MMAPABLE)
    with pytest.raises(ValueError):
        RingBuffer(kernel, fd, print)
    kernel.close(fd)
