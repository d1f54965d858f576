"""BPF_MAP_TYPE_USER_RINGBUF against the real kernel: creation, element commands, the
reversed mmap permissions (consumer page read-only, producer page and data writable), and
the record layout the friendly producer (libbpf's user_ring_buffer__*) leaves in the shared
pages on both kernels."""
from __future__ import annotations

import mmap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakekernel.friendly.user_ringbuf import UserRingBuffer
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapFlags, MapType, ProgType
from uapi.errno import Errno

from .test_ringbuf import PRIVATE, RO, RW, SHARED, _kern, try_mmap

pytestmark = pytest.mark.differential

P = mmap.PAGESIZE


def create(b, max_entries, key_size=0, value_size=0, flags=0, numa_node=0, map_extra=0):
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.USER_RINGBUF,
                       key_size=key_size, value_size=value_size, max_entries=max_entries,
                       map_flags=flags, numa_node=numa_node, map_extra=map_extra)
    return ret


CREATE_CASES = [
    dict(max_entries=P), dict(max_entries=4 * P), dict(max_entries=3 * P), dict(max_entries=0),
    dict(max_entries=P // 2), dict(max_entries=P, key_size=4), dict(max_entries=P, value_size=4),
    dict(max_entries=P, flags=MapFlags.NUMA_NODE), dict(max_entries=P, flags=MapFlags.NUMA_NODE, numa_node=1),
    dict(max_entries=P, flags=MapFlags.MMAPABLE), dict(max_entries=P, flags=MapFlags.RDONLY),
    dict(max_entries=P, flags=MapFlags.RDONLY_PROG), dict(max_entries=P, flags=MapFlags.NO_PREALLOC),
    dict(max_entries=P, map_extra=1), dict(max_entries=(1 << 31) + P),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_map_create_user_ringbuf_matrix(both, case):
    def scenario(b):
        fd = create(b, **case)
        if fd >= 0:
            b.close(fd)
            return "ok"
        return fd
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_info_user_ringbuf(both):
    def scenario(b):
        fd = create(b, 2 * P)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == (MapType.USER_RINGBUF, 0, 0, 2 * P, 0)


def test_map_elem_cmds_user_ringbuf_enotsupp(both):
    def scenario(b):
        fd = create(b, P)
        buf = bytearray(8)
        out = []
        for cmd in (BpfCmd.MAP_LOOKUP_ELEM, BpfCmd.MAP_UPDATE_ELEM, BpfCmd.MAP_DELETE_ELEM,
                    BpfCmd.MAP_GET_NEXT_KEY, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM):
            out.append(calls.raw(b, cmd, None, map_fd=fd)[0])
            out.append(calls.raw(b, cmd, None, map_fd=fd, key=buf, value=buf)[0])
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        out.append(try_mmap(b, fd, P, RW, offset=P))        # frozen: no writable mapping
        out.append(try_mmap(b, fd, P, RO, offset=P))
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == -Errno.ENOTSUPP


def test_map_freeze_user_ringbuf_writable_mapping_ebusy(both):
    def scenario(b):
        fd = create(b, P)
        out = []
        if hasattr(b, "kern"):
            area = b.kern.mmap(fd, P, RW, offset=P)
            out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
            area.munmap()
        else:
            m = mmap.mmap(fd, P, SHARED, RW, offset=P)
            out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
            m.close()
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == [-Errno.EBUSY, 0]


MMAP_CASES = [  # (length, prot, flags, offset) for a 4 KiB ring: consumer, producer, data x2
    (P, RW, SHARED, 0), (P, RO, SHARED, 0), (2 * P, RW, SHARED, 0), (2 * P, RO, SHARED, 0),
    (P, RW, SHARED, P), (P, RO, SHARED, P), (3 * P, RW, SHARED, P), (P, RW, SHARED, 2 * P),
    (2 * P, RW, SHARED, 2 * P), (P, RW, SHARED, 3 * P), (P, RO, SHARED, 4 * P), (4 * P, RO, SHARED, 0),
    (5 * P, RO, SHARED, 0), (4 * P, RW, SHARED, P), (P, RW, PRIVATE, P), (P, RO, PRIVATE, 0),
    (P, RO | mmap.PROT_EXEC, SHARED, P),
]


@pytest.mark.parametrize("case", MMAP_CASES, ids=str)
def test_mmap_user_ringbuf_rules(both, case):
    def scenario(b):
        fd = create(b, P)
        ret = try_mmap(b, fd, *case)
        b.close(fd)
        return ret
    fake, host = both
    assert scenario(fake) == scenario(host)


def _snapshot(b, fd, size):
    """(consumer page, producer page + first copy of the data) through fresh read-only mappings."""
    if hasattr(b, "kern"):
        with b.kern.mmap(fd, 2 * P + size, RO) as area:
            raw = bytes(area.mmap[:])
    else:
        m = mmap.mmap(fd, 2 * P + size, SHARED, RO)
        raw = bytes(m[:])
        m.close()
    return raw[:16], raw[P:P + 16], raw[2 * P:]


def _produce(b, fd, steps):
    """Run producer steps; each is ('w', n) reserve+fill+submit, ('d', n) reserve+discard,
    ('r', n) reserve and leave busy. Returns what each step gave (sample offset or errno)."""
    out = []
    with UserRingBuffer(_kern(b), fd) as rb:
        for i, (op, n) in enumerate(steps):
            try:
                s = rb.reserve(n)
            except OSError as e:
                out.append(-e.errno)
                continue
            s.data[:] = bytes((i * 16 + j) & 0xFF for j in range(n))
            if op == "w":
                rb.submit(s)
            elif op == "d":
                rb.discard(s)
            out.append(s.offset)
            del s
        out.append((rb.consumer_pos, rb.producer_pos))
    return out


PRODUCE_CASES = {
    "simple": [("w", 12), ("d", 5), ("w", 1), ("r", 3)],
    "fill": [("w", 1000)] * 5,
    "too_big": [("w", P), ("w", P - 8), ("w", 1 << 31)],
    "wrap_enospc": [("w", 1500), ("w", 1500), ("w", 1200), ("w", 1)],
    "zero": [("w", 0), ("d", 0), ("w", 7)],
}


@pytest.mark.parametrize("steps", PRODUCE_CASES.values(), ids=PRODUCE_CASES.keys())
def test_user_ringbuf_producer_layout(both, steps):
    def scenario(b):
        fd = create(b, P)
        res = _produce(b, fd, steps)
        snap = _snapshot(b, fd, P)
        b.close(fd)
        return res, snap
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_user_ringbuf_producer_rejects_ringbuf_map(both):
    def scenario(b):
        ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.RINGBUF, max_entries=P)
        try:
            UserRingBuffer(_kern(b), ret)
            out = "accepted"
        except ValueError:
            out = "rejected"
        b.close(ret)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == "rejected"


# ---- the program side: bpf_user_ringbuf_drain() from a tc program (PROG_TEST_RUN) ----

PKT = bytes(14) + b"\x45" + bytes(50)

DRAIN_PROG = """
    r1 = 0
    *(u64 *)(r10 -8) = r1
    r1 = map[id:{urb}]
    r2 = subprog[+18]
    r3 = r10
    r3 += -8
    r4 = {flags}
    call bpf_user_ringbuf_drain
    r6 = r0
    r1 = 0
    *(u32 *)(r10 -12) = r1
    r1 = map[id:{out}]
    r2 = r10
    r2 += -12
    r3 = r10
    r3 += -8
    r4 = 0
    call bpf_map_update_elem
    r0 = r6
    exit
    r6 = r2
    r7 = r1
    r1 = 0
    *(u64 *)(r10 -8) = r1
    r1 = r10
    r1 += -8
    r2 = 8
    r3 = r7
    r4 = 0
    r5 = 0
    call bpf_dynptr_read
    r8 = r0
    r1 = 0
    *(u64 *)(r10 -16) = r1
    r1 = r10
    r1 += -16
    r2 = 8
    r3 = r7
    r4 = 2000
    r5 = 0
    call bpf_dynptr_read
    r8 += r0
    r1 = *(u64 *)(r10 -8)
    r2 = *(u64 *)(r10 -16)
    r2 <<= 1
    r1 += r2
    r2 = *(u64 *)(r6 +0)
    r2 += r1
    r2 += r8
    *(u64 *)(r6 +0) = r2
    r0 = 0
    exit
"""


def load_with_callback(b, prog_type, insns, subprogs):
    """PROG_LOAD with the BTF func_info a program with callbacks needs (one static
    ``int f(void)`` per subprogram start in `subprogs`)."""
    from btfutil import BtfWriter, btf_load
    w = BtfWriter()
    proto = w.func_proto(w.int_("int", 4, encoding=1), [])
    funcs = [w.func(f"f{i}", proto) for i in range(len(subprogs))]
    btf = btf_load(b, w.blob()).ret
    assert btf >= 0
    recs = bytearray(b"".join(off.to_bytes(4, "little") + t.to_bytes(4, "little")
                              for off, t in zip(subprogs, funcs)))
    log = bytearray(1 << 16)
    ret, _ = calls.raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=prog_type, insns=bytes(insns),
                       insn_cnt=len(insns) // 8, license=b"GPL\0", log_level=1, log_size=len(log),
                       log_buf=log, prog_btf_fd=btf, func_info_rec_size=8, func_info=recs,
                       func_info_cnt=len(subprogs))
    b.close(btf)
    assert ret >= 0, bytes(log).split(b"\0", 1)[0].decode()
    return ret


def _drain_rounds(b, rounds, flags=0):
    """Each round: producer steps (as _produce), then one drain; (retval, callback sum, positions)."""
    from fakekernel.friendly.user_ringbuf import UserRingBuffer
    urb = create(b, P)
    out_map = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    prog = load_with_callback(b, ProgType.SCHED_CLS,
                              assemble(DRAIN_PROG.format(urb=urb, out=out_map, flags=flags)), [0, 23])
    res = []
    with UserRingBuffer(_kern(b), urb) as rb:
        busy = []
        for i, steps in enumerate(rounds):
            for j, (op, n) in enumerate(steps):
                if op == "submit_busy":
                    for s in busy:
                        rb.submit(s)
                    busy.clear()
                    continue
                try:
                    s = rb.reserve(n)
                except OSError as e:
                    res.append(-e.errno)
                    continue
                s.data[:] = bytes((i * 7 + j + k) & 0xFF for k in range(n))
                if op == "w":
                    rb.submit(s)
                elif op == "d":
                    rb.discard(s)
                else:
                    busy.append(s)
                del s
            retval = calls.prog_test_run(b, prog, PKT).retval
            total = calls.map_lookup_elem(b, out_map, bytes(4), 8)
            res.append((retval, total, rb.consumer_pos, rb.producer_pos))
        busy.clear()
    for fd in (prog, out_map, urb):
        b.close(fd)
    return res


DRAIN_CASES = {
    "empty": [[]],
    "three": [[("w", 8), ("w", 16), ("w", 9)]],
    "short_sample_e2big": [[("w", 3), ("w", 8), ("w", 0)]],
    "discarded": [[("w", 8), ("d", 8), ("w", 12)]],
    "busy_stops": [[("w", 8), ("r", 8), ("w", 8)], [("submit_busy", 0)], []],
    "wraps": [[("w", 1500)], [("w", 1500)], [("w", 1500), ("w", 100)], [("w", 2008)], [("w", 3000)],
              [("w", 2500)], [("w", 3500)]],
}


@pytest.mark.parametrize("rounds", DRAIN_CASES.values(), ids=DRAIN_CASES.keys())
def test_user_ringbuf_drain_prog(both, rounds):
    fake, host = both
    assert _drain_rounds(fake, rounds) == _drain_rounds(host, rounds)


@pytest.mark.parametrize("flags", [1, 2, 3, 4], ids=["no_wakeup", "force_wakeup", "both", "unknown"])
def test_user_ringbuf_drain_prog_flags(both, flags):
    rounds = [[("w", 8), ("w", 8)]]
    fake, host = both
    assert _drain_rounds(fake, rounds, flags) == _drain_rounds(host, rounds, flags)


_OPS = st.one_of(st.tuples(st.sampled_from(["w", "d", "r"]), st.integers(0, 1500)),
                 st.just(("submit_busy", 0)))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rounds=st.lists(st.lists(_OPS, max_size=5), min_size=1, max_size=6))
def test_user_ringbuf_drain_prog_random(both, rounds):
    """Random producer rounds (submit / discard / leave busy / release busy), a drain after each."""
    fake, host = both
    assert _drain_rounds(fake, rounds) == _drain_rounds(host, rounds)
