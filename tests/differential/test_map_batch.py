"""The four BATCH commands, fakekernel vs the real kernel: array, hash, per-CPU and LRU maps.

Covers CHECK_ATTR (last field ``batch.flags``), fd / permission errors, ENOTSUPP for ops a
type lacks, ``count`` = 0, ENOENT at the end with ``count``/``out_batch`` written, ENOSPC
for a bucket larger than ``count``, elem_flags / flags checks, and EFAULT part-way (what
``count`` says and what the map holds after).  Hash orders are compared exactly with
BPF_F_ZERO_SEED; the lockstep machine mixes batch and element ops at random."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from uapi import calls
from uapi.attr import Attr
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.ffi import ffi

from backends import FakeBackend, HostBackend
from maputil import NR_CPUS, on_cpu0, pair, sys_value_size  # noqa: F401  (pair is a fixture)

pytestmark = pytest.mark.differential

A, H, PA, PH, LH, LPH = (MapType.ARRAY, MapType.HASH, MapType.PERCPU_ARRAY, MapType.PERCPU_HASH,
                         MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
ALL = (A, H, PA, PH, LH, LPH)
LOOKUP, LOOKUP_DEL, UPDATE, DELETE = (BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
                                      BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH)
BATCH_CMDS = (LOOKUP, LOOKUP_DEL, UPDATE, DELETE)
BAD_PTR = 1
KS, VSZ = 4, 8


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def batch(b, cmd, fd, *, keys=0, values=0, count=0, in_batch=0, out_batch=0, elem_flags=0, flags=0,
          tail_byte=False):
    """One batch command; returns (ret, count written back)."""
    a = Attr()
    for k, v in dict(map_fd=fd, keys=keys, values=values, count=count, in_batch=in_batch,
                     out_batch=out_batch, elem_flags=elem_flags, flags=flags).items():
        a.set("batch." + k, v)
    size = Attr.size("batch.flags")
    if tail_byte:
        size = ffi.sizeof("union bpf_attr")
        ffi.cast("unsigned char *", a.c)[Attr.size("batch.flags")] = 1
    ret = b.bpf(cmd, a.c, size)
    return ret, a.get("batch.count")


def make(b, map_type, max_entries=8, n=0, map_flags=0):
    """A map with keys 0..n-1 (array: indexes) holding distinct values."""
    if map_type in (H, PH, LH, LPH) and not map_flags & MapFlags.NO_COMMON_LRU:
        map_flags |= MapFlags.ZERO_SEED
    fd = calls.map_create(b, map_type, KS, VSZ, max_entries, map_flags=map_flags)
    vs = sys_value_size(map_type, VSZ)
    stride = 1 if map_type in (A, PA) else 3
    for i in range(n):
        calls.map_update_elem(b, fd, k32(i * stride), bytes([i + 1]) * vs)
    return fd


def dump(b, fd, map_type):
    """Every (key, value) via get_next_key + lookup, sorted."""
    vs = sys_value_size(map_type, VSZ)
    out, key = [], None
    while len(out) < 64:
        nk = bytearray(KS)
        if raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk)[0]:
            break
        val = bytearray(vs)
        raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=bytes(nk), value=val)
        out.append((bytes(nk), bytes(val)))
        key = bytes(nk)
    return sorted(out)


def both_equal(pair, scenario):
    fake, host = pair
    got_fake, got_host = scenario(fake), scenario(host)
    assert got_fake == got_host
    return got_host


# ------------------------------------------------------------------ gateway checks

@pytest.mark.parametrize("cmd", BATCH_CMDS, ids=lambda c: c.name)
def test_map_batch_gateway(pair, cmd):
    def scenario(b):
        out = []
        fd = make(b, H, n=3)
        keys, vals = bytearray(KS * 8), bytearray(VSZ * 8)
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8, tail_byte=True))
        out.append(batch(b, cmd, 999, keys=keys, values=vals, count=8))           # EBADF
        out.append(batch(b, cmd, 0, keys=keys, values=vals, count=8))             # EINVAL
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=0))            # 0, nothing
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8, elem_flags=8))
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8, elem_flags=UpdateFlags.F_LOCK))
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8, flags=1))
        out.append(dump(b, fd, H))
        b.close(fd)
        for flag in (MapFlags.RDONLY, MapFlags.WRONLY):
            fd = make(b, H, map_flags=flag)
            out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8))
            b.close(fd)
        fd = make(b, A, n=2)
        calls.map_freeze(b, fd)
        out.append(batch(b, cmd, fd, keys=keys, values=vals, count=8))
        b.close(fd)
        return out
    both_equal(pair, scenario)


@pytest.mark.parametrize("cmd", BATCH_CMDS, ids=lambda c: c.name)
@pytest.mark.parametrize("map_type", ALL, ids=lambda t: t.name)
def test_map_batch_supported_ops(pair, map_type, cmd):
    """Which op each type has (array types: no deleting batch -> ENOTSUPP) and its plain result."""
    def scenario(b):
        fd = make(b, map_type, n=3)
        vs = sys_value_size(map_type, VSZ)
        keys = bytearray(b"".join(k32(i * 3) for i in range(3)) + bytes(KS * 5))
        vals = bytearray(bytes([0x40 + i]) * vs for i in range(8)) if False else bytearray(
            b"".join(bytes([0x40 + i]) * vs for i in range(8)))
        ret = batch(b, cmd, fd, keys=keys, values=vals, count=3 if cmd in (UPDATE, DELETE) else 8)
        out = [ret, bytes(keys), bytes(vals), dump(b, fd, map_type)]
        b.close(fd)
        return out
    both_equal(pair, scenario)


# ------------------------------------------------------------------ lookup walks

@pytest.mark.parametrize("step", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("map_type", ALL, ids=lambda t: t.name)
@pytest.mark.parametrize("cmd", [LOOKUP, LOOKUP_DEL], ids=lambda c: c.name)
def test_map_batch_walk_in_steps(pair, map_type, cmd, step):
    """Repeated batches of `step` from in_batch = the previous out_batch until ENOENT/ENOSPC."""
    def scenario(b):
        fd = make(b, map_type, max_entries=12, n=9)
        vs = sys_value_size(map_type, VSZ)
        out, in_b = [], 0
        for _ in range(20):
            keys, vals, ob = bytearray(KS * step), bytearray(vs * step), bytearray(KS)
            ret, cnt = batch(b, cmd, fd, keys=keys, values=vals, count=step, in_batch=in_b, out_batch=ob)
            out.append((ret, cnt, bytes(keys[:KS * cnt]), bytes(vals[:vs * cnt]), bytes(ob)))
            if ret:
                break
            in_b = ob
        out.append(dump(b, fd, map_type))
        b.close(fd)
        return out
    both_equal(pair, scenario)


@pytest.mark.parametrize("map_type", ALL, ids=lambda t: t.name)
def test_map_batch_lookup_in_batch_edges(pair, map_type):
    def scenario(b):
        fd = make(b, map_type, max_entries=8, n=4)
        vs = sys_value_size(map_type, VSZ)
        out = []
        for in_b in (k32(7), k32(8), k32(2**32 - 1), k32(3), BAD_PTR):
            keys, vals, ob = bytearray(KS * 8), bytearray(vs * 8), bytearray(KS)
            ret, cnt = batch(b, LOOKUP, fd, keys=keys, values=vals, count=8, in_batch=in_b, out_batch=ob)
            out.append((ret, cnt, bytes(keys), bytes(vals), bytes(ob)))
        empty = make(b, map_type, max_entries=4, n=0)
        ob = bytearray(KS)
        out.append(batch(b, LOOKUP, empty, keys=bytearray(KS * 4), values=bytearray(vs * 4), count=4,
                         out_batch=ob) + (bytes(ob),))
        b.close(empty)
        b.close(fd)
        return out
    both_equal(pair, scenario)


# ------------------------------------------------------------------ EFAULT part-way

@pytest.mark.parametrize("where", ["keys", "values", "out_batch"])
@pytest.mark.parametrize("map_type", ALL, ids=lambda t: t.name)
@pytest.mark.parametrize("cmd", BATCH_CMDS, ids=lambda c: c.name)
def test_map_batch_efault(pair, cmd, map_type, where):
    def scenario(b):
        fd = make(b, map_type, max_entries=8, n=5)
        vs = sys_value_size(map_type, VSZ)
        good_keys = bytearray(b"".join(k32(i * 3) for i in range(8)))
        good_vals = bytearray(b"".join(bytes([0x50 + i]) * vs for i in range(8)))
        kw = dict(keys=good_keys, values=good_vals, out_batch=bytearray(KS))
        kw[where] = BAD_PTR
        ret, cnt = batch(b, cmd, fd, count=6, **kw)
        out = [ret, cnt, dump(b, fd, map_type)]
        b.close(fd)
        return out
    both_equal(pair, scenario)


def test_map_batch_update_stops_at_first_error(pair):
    """UPDATE_BATCH with NOEXIST stops at the first existing key: count = the ones done."""
    def scenario(b):
        out = []
        for map_type in (H, LH, PH, A):
            fd = make(b, map_type, max_entries=6, n=2)
            vs = sys_value_size(map_type, VSZ)
            keys = b"".join(k32(k) for k in (1, 2, 3, 6, 4, 5, 7, 8))   # 3 = key of element 1
            vals = b"".join(bytes([0x60 + i]) * vs for i in range(8))
            for flags in (UpdateFlags.NOEXIST, UpdateFlags.ANY, UpdateFlags.EXIST):
                out.append(batch(b, UPDATE, fd, keys=keys, values=vals, count=8, elem_flags=flags))
                out.append(dump(b, fd, map_type))
            out.append(batch(b, DELETE, fd, keys=keys, count=8) if map_type != A else None)
            out.append(dump(b, fd, map_type))
            b.close(fd)
        return out
    both_equal(pair, scenario)


# ------------------------------------------------------------------ lockstep

class _BatchLockstep(RuleBasedStateMachine):
    """Random element and batch ops on the same map in both kernels, compared step by step."""

    MAP_TYPE = H
    MAP_FLAGS = MapFlags.ZERO_SEED
    MAX_ENTRIES = 6

    @initialize()
    def setup(self):
        from fakekernel import Kernel
        self._cpu = on_cpu0()
        self._cpu.__enter__()
        self.backends = [FakeBackend(Kernel(nr_cpus=NR_CPUS)), HostBackend()]
        self.vs = sys_value_size(self.MAP_TYPE, VSZ)
        self.fds = [calls.map_create(b, self.MAP_TYPE, KS, VSZ, self.MAX_ENTRIES, map_flags=self.MAP_FLAGS)
                    for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd) for b, fd in zip(self.backends, self.fds)]
        assert res[0] == res[1]

    @rule(k=st.integers(0, 9), v=st.integers(0, 255),
          flags=st.sampled_from([0, UpdateFlags.NOEXIST, UpdateFlags.EXIST]))
    def update(self, k, v, flags):
        self._each(lambda b, fd: raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=fd, key=k32(k),
                                     value=bytes([v]) * self.vs, flags=flags)[0])

    @rule(k=st.integers(0, 9))
    def delete(self, k):
        self._each(lambda b, fd: raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(k))[0])

    @rule(k=st.integers(0, 9))
    def lookup(self, k):
        def go(b, fd):
            val = bytearray(self.vs)
            return raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=k32(k), value=val)[0], bytes(val)
        self._each(go)

    @rule(cmd=st.sampled_from([LOOKUP, LOOKUP_DEL]), count=st.integers(0, 8),
          start=st.one_of(st.none(), st.integers(0, 10)))
    def lookup_batch(self, cmd, count, start):
        def go(b, fd):
            keys, vals, ob = bytearray(KS * 8), bytearray(self.vs * 8), bytearray(KS)
            ret, cnt = batch(b, cmd, fd, keys=keys, values=vals, count=count,
                             in_batch=0 if start is None else k32(start), out_batch=ob)
            return ret, cnt, bytes(keys), bytes(vals), bytes(ob)
        self._each(go)

    @rule(cmd=st.sampled_from([UPDATE, DELETE]), ks=st.lists(st.integers(0, 9), max_size=6),
          flags=st.sampled_from([0, UpdateFlags.NOEXIST, UpdateFlags.EXIST]))
    def write_batch(self, cmd, ks, flags):
        keys = b"".join(k32(k) for k in ks) or b"\0"
        vals = b"".join(bytes([k + 0x30]) * self.vs for k in ks) or b"\0"
        self._each(lambda b, fd: batch(b, cmd, fd, keys=keys, values=vals, count=len(ks),
                                       elem_flags=flags if cmd == UPDATE else 0))

    @rule()
    def contents(self):
        self._each(lambda b, fd: dump(b, fd, self.MAP_TYPE))

    def teardown(self):
        for b, fd in zip(getattr(self, "backends", []), getattr(self, "fds", [])):
            b.close(fd)
            assert not b.cleanup()
        if hasattr(self, "_cpu"):
            self._cpu.__exit__(None, None, None)


def _machine(map_type, map_flags=0, max_entries=6):
    return type(f"_Lockstep_{map_type.name}", (_BatchLockstep,),
                dict(MAP_TYPE=map_type, MAP_FLAGS=map_flags, MAX_ENTRIES=max_entries))


MACHINES = {
    "array": _machine(A),
    "percpu_array": _machine(PA),
    "hash": _machine(H, MapFlags.ZERO_SEED),
    "hash_no_prealloc": _machine(H, MapFlags.ZERO_SEED | MapFlags.NO_PREALLOC),
    "percpu_hash": _machine(PH, MapFlags.ZERO_SEED),
    "lru_hash": _machine(LH, MapFlags.ZERO_SEED),
    "lru_hash_no_common": _machine(LH, MapFlags.ZERO_SEED | MapFlags.NO_COMMON_LRU),
    "lru_percpu_hash": _machine(LPH, MapFlags.ZERO_SEED),
    "lru_percpu_hash_no_common": _machine(LPH, MapFlags.ZERO_SEED | MapFlags.NO_COMMON_LRU),
}


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_map_batch_lockstep_random_ops(host, name):
    machine = MACHINES[name]
    machine.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)
    machine.TestCase().runTest()
