"""User ring buffers — kernel/bpf/ringbuf.c (user_ringbuf_map_ops, ringbuf_map_mmap_user,
__bpf_user_ringbuf_peek, __bpf_user_ringbuf_sample_release, bpf_user_ringbuf_drain).

BPF_MAP_TYPE_USER_RINGBUF is the ring buffer the other way round: userspace produces
(libbpf's user_ring_buffer__reserve/submit/discard, see fakekernel/friendly/user_ringbuf.py),
a BPF program consumes with ``bpf_user_ringbuf_drain()``.  Creation, memory layout, memlock
and the element commands (ENOTSUPP) are the RINGBUF ones (`RingbufMap`); what differs:

* mmap: userspace may map everything *except* the consumer page writable (the producer
  page and the data pages are the producer's), the consumer page read-only;
* the kernel side walks records from ``consumer_pos`` to ``producer_pos``: a record header
  ``{u32 len; u32 pad}`` whose ``len`` carries BPF_RINGBUF_BUSY_BIT while the producer still
  writes it (the walk stops there) and BPF_RINGBUF_DISCARD_BIT for a discarded record (the
  walk skips it); records advance by ``round_up(len + BPF_RINGBUF_HDR_SZ, 8)``.  A
  misaligned producer position or a header that claims more than was produced is EINVAL, a
  record larger than the ring or than a dynptr can describe E2BIG.

Samples are read from the data area at ``(consumer_pos + HDR) & mask`` over the data and its
mirror copy (see ringbuf.py): a producer that writes a wrapping sample linearly through its
mapping (as libbpf does, relying on the double mapping) writes exactly those bytes.
"""
from __future__ import annotations

from typing import Callable

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import round_up
from fakekernel.maps.ringbuf import DATA_OFF, PRODUCER_POS_OFF, CONSUMER_POS_OFF, RingbufMap
from uapi.bpf import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, RingbufFlags
from uapi.ffi import ffi

__all__ = ["UserRingbufMap", "BPF_MAX_USER_RINGBUF_SAMPLES", "DYNPTR_MAX_SIZE"]

BPF_MAX_USER_RINGBUF_SAMPLES = 128 * 1024
DYNPTR_MAX_SIZE = (1 << 24) - 1         # bpf_dynptr_check_size(): the dynptr size field is 24 bits
_REC_ALIGN = ffi.sizeof("__u64")
_BUSY, _DISCARD = int(BPF_RINGBUF_BUSY_BIT), int(BPF_RINGBUF_DISCARD_BIT)
_HDR_SZ = int(BPF_RINGBUF_HDR_SZ)
_WAKEUP_FLAGS = int(RingbufFlags.NO_WAKEUP | RingbufFlags.FORCE_WAKEUP)


class _Skip(Exception):
    """__bpf_user_ringbuf_peek()'s -EAGAIN: a discarded record was consumed."""


@attrs.define(eq=False)
class UserRingbufMap(RingbufMap):
    """BPF_MAP_TYPE_USER_RINGBUF — user_ringbuf_map_ops."""

    busy: bool = False                  # a drain is running (a nested drain gets EBUSY)

    # ---- mmap: ringbuf_map_mmap_user ----
    def map_mmap(self, offset: int, length: int, writable: bool) -> tuple[int, int]:
        """ringbuf_map_mmap_user(): everything but the consumer page may be writable."""
        if writable and offset == 0:
            raise KernelError(Errno.EPERM, "the consumer page is the kernel's")
        if offset + length > DATA_OFF + 2 * self.max_entries:
            raise KernelError(Errno.EINVAL, "mapping past the end of the ring buffer")
        return self.memfd, offset

    # ---- the consumer: __bpf_user_ringbuf_peek / __bpf_user_ringbuf_sample_release ----
    def _set_consumer_pos(self, pos: int) -> None:
        self._set_ulong(CONSUMER_POS_OFF, pos)

    def peek(self) -> tuple[int, int] | None:
        """__bpf_user_ringbuf_peek(): (data-area offset, size) of the next sample, None when
        there is none (empty, or the next record is still busy); raises _Skip after consuming
        a discarded record and KernelError for a corrupt producer."""
        prod_pos = self._ulong(PRODUCER_POS_OFF)
        if prod_pos % _REC_ALIGN:
            raise KernelError(Errno.EINVAL, "producer position not 8-byte aligned")
        cons_pos = self.consumer_pos
        if cons_pos >= prod_pos:
            return None
        hdr_len = self._hdr_len(cons_pos & self.mask)
        flags = hdr_len & (_BUSY | _DISCARD)
        sample_len = hdr_len & ~flags
        total_len = round_up(sample_len + _HDR_SZ, _REC_ALIGN)
        if total_len > prod_pos - cons_pos:
            raise KernelError(Errno.EINVAL, "record larger than what was produced")
        if total_len > self.total_data_sz():
            raise KernelError(Errno.E2BIG, "record larger than the ring")
        if sample_len > DYNPTR_MAX_SIZE:
            raise KernelError(Errno.E2BIG, "record larger than a dynptr")
        if flags & _DISCARD:
            self._set_consumer_pos(cons_pos + total_len)
            raise _Skip()
        if flags & _BUSY:
            return None
        return (cons_pos + _HDR_SZ) & self.mask, sample_len

    def sample_release(self, size: int) -> None:
        """__bpf_user_ringbuf_sample_release(): advance consumer_pos past the record."""
        self._set_consumer_pos(self.consumer_pos + round_up(size + _HDR_SZ, _REC_ALIGN))

    def sample_addr(self, data_off: int) -> int:
        """Kernel address of a sample (data + mirror are one region: wrapping samples are contiguous)."""
        return self.data_base() + data_off

    def drain(self, callback: Callable[[int, int], int], flags: int) -> int:
        """bpf_user_ringbuf_drain(): call ``callback(sample_addr, size)`` per sample until it
        returns non-zero or the ring is empty; the number of records consumed (discarded ones
        not counted) or -errno."""
        if flags & ~_WAKEUP_FLAGS:
            return -Errno.EINVAL
        if self.busy:
            return -Errno.EBUSY
        self.busy = True
        samples = discarded = 0
        err = 0
        try:
            stop = False
            while samples < BPF_MAX_USER_RINGBUF_SAMPLES and not stop:
                try:
                    found = self.peek()
                except _Skip:
                    samples += 1
                    discarded += 1
                    continue
                except KernelError as e:
                    err = -e.errno
                    break
                if found is None:
                    break
                samples += 1
                off, size = found
                stop = callback(self.sample_addr(off), size) != 0
                self.sample_release(size)
        finally:
            self.busy = False
        if flags & RingbufFlags.FORCE_WAKEUP or (not flags & RingbufFlags.NO_WAKEUP and samples > 0):
            self.wakeups += 1
        return err if err else samples - discarded
