"""PERCPU_ARRAY, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH, fakekernel vs the real kernel:
creation matrix, element semantics in the per-CPU syscall layout, and LRU eviction.

The fake kernel runs syscalls on CPU 0 with ``nr_cpus`` = the host's possible CPUs; the
host side of every comparison pins this process to CPU 0 so the common LRU's per-CPU
free lists are used the same way (the eviction order then matches exactly)."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.errno import Errno

from maputil import pair, sys_value_size  # noqa: F401  (pair is a fixture)

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
PA, PH, LH, LPH = MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH
NEW_TYPES = (PA, PH, LH, LPH)


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def both_equal(pair, scenario):
    fake, host = pair
    got_fake, got_host = scenario(fake), scenario(host)
    assert got_fake == got_host
    return got_host


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def create(b, map_type, key_size=4, value_size=8, max_entries=4, **kw):
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, **kw)
    if ret >= 0:
        info, _ = calls.obj_get_info_by_fd(b, ret, "map")
        b.close(ret)
        return "fd", info.max_entries, info.value_size
    return ret


# ------------------------------------------------------------------ MAP_CREATE matrix

CREATE_CASES = {}
for _t in NEW_TYPES:
    _n = _t.name.lower()
    CREATE_CASES.update({
        f"{_n}_ok": dict(map_type=_t),
        f"{_n}_value12_ok": dict(map_type=_t, value_size=12),
        f"{_n}_key0_einval": dict(map_type=_t, key_size=0),
        f"{_n}_key8": dict(map_type=_t, key_size=8),
        f"{_n}_value0_einval": dict(map_type=_t, value_size=0),
        f"{_n}_max0_einval": dict(map_type=_t, max_entries=0),
        f"{_n}_max1": dict(map_type=_t, max_entries=1),
        f"{_n}_max5": dict(map_type=_t, max_entries=5),
        f"{_n}_value_32k": dict(map_type=_t, value_size=32 << 10),
        f"{_n}_value_32k_plus1_e2big": dict(map_type=_t, value_size=(32 << 10) + 1),
        f"{_n}_numa0": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=0),
        f"{_n}_numa_minus1": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=2**32 - 1),
        f"{_n}_unknown_flag_einval": dict(map_type=_t, map_flags=1 << 25),
        f"{_n}_no_common_lru_max5": dict(map_type=_t, max_entries=5, map_flags=MapFlags.NO_COMMON_LRU),
        f"{_n}_no_common_lru_max1": dict(map_type=_t, max_entries=1, map_flags=MapFlags.NO_COMMON_LRU),
        f"{_n}_no_common_lru_max_u32": dict(map_type=_t, max_entries=2**32 - 1,
                                           map_flags=MapFlags.NO_COMMON_LRU),
        f"{_n}_no_common_lru_numa0": dict(map_type=_t, map_flags=MapFlags.NO_COMMON_LRU | MapFlags.NUMA_NODE,
                                         numa_node=0),
    })
    if _t != PA:    # a huge per-CPU array makes the real kernel allocate until the OOM killer runs
        CREATE_CASES[f"{_n}_max_over_2g_e2big"] = dict(map_type=_t, max_entries=2**31 + 1)
    for _bit in MapFlags:
        if _bit in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
            continue
        CREATE_CASES[f"{_n}_flag_{_bit.name.lower()}"] = dict(map_type=_t, map_flags=_bit)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_percpu_lru(pair, case):
    both_equal(pair, lambda b: create(b, **CREATE_CASES[case]))


# ------------------------------------------------------------------ element semantics

def _elem_semantics(map_type, value_size, max_entries=3, map_flags=0):
    vs = sys_value_size(map_type, value_size)

    def val(c: int) -> bytes:
        return bytes((c + i) & 0xFF for i in range(vs))

    def scenario(b):
        fd = calls.map_create(b, map_type, 4, value_size, max_entries, map_flags=map_flags)
        out = []
        up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=v, flags=f)

        def look(k, flags=0):
            buf = bytearray(vs)
            return op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=buf, flags=flags), bytes(buf)
        for k, f in ((0, UpdateFlags.EXIST), (0, UpdateFlags.NOEXIST), (0, UpdateFlags.NOEXIST),
                     (1, 0), (2, 0), (3, 0), (1, UpdateFlags.EXIST), (1, UpdateFlags.F_LOCK),
                     (1, 3), (1, 8), (1, 16), (2**32 - 1, 0)):
            out.append(up(k, val(k * 7 + f), f))
            out.append([look(i) for i in range(5)])
        out.append(look(1, UpdateFlags.F_LOCK))
        out.append(look(1, 8))
        out.append(look(1, 16))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(1)))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(1)))
        buf = bytearray(vs)
        out.append((op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(2), value=buf), bytes(buf)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(2), value=buf))
        walk, key = [], None
        while len(walk) < 10:
            nk = bytearray(4)
            if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk):
                break
            walk.append(bytes(nk))
            key = bytes(nk)
        out.append(sorted(walk))
        out.append([look(i) for i in range(5)])
        b.close(fd)
        return out
    return scenario


@pytest.mark.parametrize("value_size", [4, 8, 13])
@pytest.mark.parametrize("map_type", NEW_TYPES, ids=lambda t: t.name)
def test_map_elem_semantics_percpu_lru(pair, map_type, value_size):
    both_equal(pair, _elem_semantics(map_type, value_size))


@pytest.mark.parametrize("map_type", [LH, LPH], ids=lambda t: t.name)
def test_map_elem_semantics_no_common_lru(pair, map_type):
    both_equal(pair, _elem_semantics(map_type, 8, max_entries=4, map_flags=MapFlags.NO_COMMON_LRU))


def test_map_percpu_value_short_buffer_efault(pair):
    """The syscall copies round_up(value_size, 8) * nr_cpus bytes: a value_size buffer at the
    end of a mapping faults."""
    import mmap

    import ctypes

    def scenario(b):
        page = mmap.mmap(-1, mmap.PAGESIZE * 2)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None)
        libc.mprotect(ctypes.c_void_p(addr + mmap.PAGESIZE), mmap.PAGESIZE, 0)
        out = []
        for t in (PA, PH):
            fd = calls.map_create(b, t, 4, 8, 2)
            tail = addr + mmap.PAGESIZE - 8            # room for one CPU's value only
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=tail))
            out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(0), value=tail))
            b.close(fd)
        libc.mprotect(ctypes.c_void_p(addr + mmap.PAGESIZE), mmap.PAGESIZE, 3)
        return out
    got = both_equal(pair, scenario)
    assert -Errno.EFAULT in got


# ------------------------------------------------------------------ LRU eviction

def _lru_fill(map_type, map_flags, max_entries, ops):
    vs = sys_value_size(map_type, 8)

    def keys(b, fd):
        out, key = [], None
        while len(out) <= max_entries + 2:
            nk = bytearray(4)
            if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk):
                break
            out.append(int.from_bytes(nk, "little"))
            key = bytes(nk)
        return sorted(out)

    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 8, max_entries, map_flags=map_flags)
        out = []
        for what, k, f in ops:
            if what == "up":
                out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=bytes([k & 0xFF]) * vs,
                              flags=f))
            else:
                out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(k)))
            present = keys(b, fd)
            assert len(present) <= max_entries            # the invariant, on both kernels
            out.append(present)
        b.close(fd)
        return out
    return scenario


@pytest.mark.parametrize("max_entries", [1, 2, 4, 7, 16, 64])
@pytest.mark.parametrize("map_flags", [0, MapFlags.NO_COMMON_LRU], ids=["common", "no_common"])
@pytest.mark.parametrize("map_type", [LH, LPH], ids=lambda t: t.name)
def test_map_lru_eviction_order(pair, map_type, map_flags, max_entries):
    import random
    rnd = random.Random(max_entries * 31 + map_flags)
    ops = []
    for _ in range(3 * max_entries + 40):
        r = rnd.random()
        k = rnd.randrange(2 * max_entries + 3)
        if r < 0.15:
            ops.append(("del", k, 0))
        else:
            ops.append(("up", k, rnd.choice([0, 0, 0, UpdateFlags.NOEXIST, UpdateFlags.EXIST])))
    both_equal(pair, _lru_fill(map_type, map_flags, max_entries, ops))


def test_map_lru_update_existing_key_evicts_when_full(pair):
    """Measured on 6.18: replacing a key of a full LRU_HASH takes a free node first and so
    evicts the least recently used other key; a failed NOEXIST update does not."""
    got = both_equal(pair, _lru_fill(LH, 0, 4, [("up", 0, 0), ("up", 1, 0), ("up", 2, 0), ("up", 3, 0),
                                                ("up", 1, 0), ("up", 2, UpdateFlags.NOEXIST),
                                                ("up", 9, 0)]))
    assert got[9] == [1, 2, 3]
