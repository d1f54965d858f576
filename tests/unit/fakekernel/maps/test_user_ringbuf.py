"""fakekernel/maps/user_ringbuf.py + fakekernel/friendly/user_ringbuf.py — the producer's
records and the kernel-side walk of bpf_user_ringbuf_drain(), without programs."""
from __future__ import annotations

import mmap

import pytest

from fakekernel.friendly.user_ringbuf import UserRingBuffer
from fakekernel.maps.ringbuf import PRODUCER_POS_OFF
from fakekernel.maps.user_ringbuf import UserRingbufMap
from uapi import calls
from uapi.bpf import BPF_RINGBUF_BUSY_BIT, MapType, RingbufFlags
from uapi.errno import Errno

P = mmap.PAGESIZE


@pytest.fixture
def urb(kernel):
    fd = calls.map_create(kernel, MapType.USER_RINGBUF, 0, 0, P)
    m = kernel.current.files.fdget(fd).private_data
    prod = UserRingBuffer(kernel, fd)
    yield m, prod
    prod.close()
    kernel.close(fd)


def _collect(kernel, out, stop_after=None):
    def cb(addr, size):
        out.append(kernel.mem.read(addr, size))
        return 1 if stop_after is not None and len(out) >= stop_after else 0
    return cb


def test_user_ringbuf_is_its_own_class(urb):
    m, _ = urb
    assert isinstance(m, UserRingbufMap) and m.memlock == 16728     # fdinfo on 6.18, as RINGBUF


def test_drain_submitted_in_order_skips_discarded(kernel, urb):
    m, prod = urb
    prod.write(b"one")
    s = prod.reserve(5)
    prod.discard(s)
    prod.write(b"three!!!")
    got = []
    assert m.drain(_collect(kernel, got), 0) == 2          # the discarded record is not counted
    assert got == [b"one", b"three!!!"]
    assert m.consumer_pos == m.producer_pos == 3 * 16
    assert prod.consumer_pos == m.consumer_pos             # the producer sees it read-only
    assert m.wakeups == 1


def test_drain_empty_returns_zero_without_wakeup(kernel, urb):
    m, _ = urb
    assert m.drain(_collect(kernel, []), 0) == 0
    assert m.wakeups == 0
    assert m.drain(_collect(kernel, []), RingbufFlags.FORCE_WAKEUP) == 0
    assert m.wakeups == 1


def test_drain_stops_at_busy_record(kernel, urb):
    m, prod = urb
    prod.write(b"a")
    busy = prod.reserve(4)
    prod.write(b"b")
    got = []
    assert m.drain(_collect(kernel, got), 0) == 1
    assert got == [b"a"]
    prod.submit(busy)
    got.clear()
    assert m.drain(_collect(kernel, got), RingbufFlags.NO_WAKEUP) == 2
    assert got[1] == b"b"
    assert m.wakeups == 1


def test_drain_callback_nonzero_stops(kernel, urb):
    m, prod = urb
    for i in range(3):
        prod.write(bytes([i]) * 3)
    got = []
    assert m.drain(_collect(kernel, got, stop_after=1), 0) == 1
    assert m.drain(_collect(kernel, got), 0) == 2
    assert got == [b"\0\0\0", b"\1\1\1", b"\2\2\2"]


def test_drain_unknown_flags_einval(kernel, urb):
    m, prod = urb
    prod.write(b"x")
    assert m.drain(_collect(kernel, []), 1 << 2) == -Errno.EINVAL
    assert m.consumer_pos == 0


def test_drain_nested_ebusy(kernel, urb):
    m, prod = urb
    prod.write(b"x")
    inner = []

    def cb(addr, size):
        inner.append(m.drain(_collect(kernel, []), 0))
        return 0
    assert m.drain(cb, 0) == 1
    assert inner == [-Errno.EBUSY]


def test_drain_wrapping_sample_contiguous(kernel, urb):
    m, prod = urb
    prod.write(bytes(2000))
    assert m.drain(_collect(kernel, []), 0) == 1             # consumer now at 2008
    prod.write(bytes(1500))                                  # 2008..3516
    assert m.drain(_collect(kernel, []), 0) == 1
    payload = bytes(range(256)) * 4                          # header at 3520, body wraps
    s = prod.reserve(len(payload))
    assert s.offset + s.size > P
    s.data[:] = payload
    prod.submit(s)
    del s
    got = []
    assert m.drain(_collect(kernel, got), 0) == 1
    assert got == [payload]


def test_drain_misaligned_producer_einval(kernel, urb):
    m, prod = urb
    prod.write(b"abc")
    prod.producer_pos = prod.producer_pos + 4
    assert m.drain(_collect(kernel, []), 0) == -Errno.EINVAL


def test_drain_header_longer_than_produced_einval(kernel, urb):
    m, prod = urb
    prod.write(b"abc")
    m._write_hdr(0, 100)
    assert m.drain(_collect(kernel, []), 0) == -Errno.EINVAL
    assert m.consumer_pos == 0


def test_drain_record_larger_than_ring_e2big(kernel, urb):
    m, prod = urb
    m._set_ulong(PRODUCER_POS_OFF, 2 * P)
    m._write_hdr(0, P + 8)
    assert m.drain(_collect(kernel, []), 0) == -Errno.E2BIG


def test_producer_reserve_errors(urb):
    _, prod = urb
    with pytest.raises(OSError) as e:
        prod.reserve(BPF_RINGBUF_BUSY_BIT | 4)
    assert e.value.errno == Errno.E2BIG
    with pytest.raises(OSError) as e:
        prod.reserve(P - 7)
    assert e.value.errno == Errno.E2BIG
    prod.write(bytes(P - 8))                                 # exactly fills the ring
    with pytest.raises(OSError) as e:
        prod.reserve(0)
    assert e.value.errno == Errno.ENOSPC



# ---- a model: the ring as a list of records between consumer_pos and producer_pos ----

from hypothesis import given, settings, strategies as st  # noqa: E402

_STEPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1200)),
    st.tuples(st.just("discard"), st.integers(0, 600)),
    st.tuples(st.just("busy"), st.integers(0, 600)),
    st.tuples(st.just("release"), st.just(0)),
    st.tuples(st.just("drain"), st.integers(0, 3)),
), max_size=40)


def _rec_len(n):
    return (n + 8 + 7) // 8 * 8


@settings(max_examples=60, deadline=None)
@given(steps=_STEPS)
def test_user_ringbuf_matches_model(steps):
    from fakekernel import Kernel
    kernel = Kernel()
    fd = calls.map_create(kernel, MapType.USER_RINGBUF, 0, 0, P)
    m = kernel.current.files.fdget(fd).private_data
    prod = UserRingBuffer(kernel, fd)
    model = []                 # [size, state ('ok' | 'discard' | 'busy'), payload]
    busy = []
    try:
        for i, (op, n) in enumerate(steps):
            if op == "release":
                for s in busy:
                    prod.submit(s)
                for r in model:
                    if r[1] == "busy":
                        r[1] = "ok"
                busy.clear()
                continue
            if op == "drain":
                got = []
                stop = n or None
                ret = m.drain(_collect(kernel, got, stop_after=stop), 0)
                expect, consumed = [], 0
                for r in model:
                    if r[1] == "busy" or (stop is not None and len(expect) >= stop):
                        break
                    consumed += 1
                    if r[1] == "ok":
                        expect.append(r[2])
                del model[:consumed]
                assert got == expect and ret == len(expect)
                continue
            used = sum(_rec_len(r[0]) for r in model)
            payload = bytes((i + k) & 0xFF for k in range(n))
            if _rec_len(n) > P - used:
                with pytest.raises(OSError):
                    prod.reserve(n)
                continue
            s = prod.reserve(n)
            s.data[:] = payload
            if op == "write":
                prod.submit(s)
                model.append([n, "ok", payload])
            elif op == "discard":
                prod.discard(s)
                model.append([n, "discard", payload])
            else:
                busy.append(s)
                model.append([n, "busy", payload])
            del s
        assert m.producer_pos - m.consumer_pos == sum(_rec_len(r[0]) for r in model)
    finally:
        busy.clear()
        prod.close()
        kernel.close(fd)
