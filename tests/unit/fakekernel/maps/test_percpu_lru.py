"""fakekernel/maps/arraymap.py + hashtab.py per-CPU and LRU variants, fakekernel/maps/bpf_lru_list.py."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from uapi import calls
from uapi.bpf import MapFlags, MapType

from backends import FakeBackend


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _map(kern, fd):
    return kern.current.files.fdget(fd).private_data


@pytest.mark.parametrize("map_type", [MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH])
def test_map_lookup_elem_percpu_slot_of_running_cpu(map_type):
    k = Kernel(nr_cpus=3)
    b = FakeBackend(k)
    fd = calls.map_create(b, map_type, 4, 4, 4)
    calls.map_update_elem(b, fd, k32(1), b"AAAA\0\0\0\0BBBB\0\0\0\0CCCC\0\0\0\0")
    m = _map(k, fd)
    addrs = []
    for cpu in range(3):
        k.cpu = cpu                                   # as bpf_prog_run sets it for a run
        addr = m.map_lookup_elem(k32(1))
        addrs.append(addr)
        assert k.mem.read(addr, 4) == b"ABC"[cpu:cpu + 1] * 4
        k.mem.write(addr, bytes([0x30 + cpu]) * 4)    # a program store on that CPU
        m.map_update_elem(k32(2), bytes([0x40 + cpu]) * 4, 0)
    k.cpu = 0
    assert len(set(addrs)) == 3
    assert m.map_lookup_percpu_elem(k32(1), 3) == 0
    assert calls.map_lookup_elem(b, fd, k32(1), 24) == b"0000\0\0\0\0" b"1111\0\0\0\0" b"2222\0\0\0\0"
    # hashes: the program's insert on CPU 0 zeroed the other CPUs; later updates touch only their own
    assert calls.map_lookup_elem(b, fd, k32(2), 24) == b"@@@@\0\0\0\0AAAA\0\0\0\0BBBB\0\0\0\0"
    b.close(fd)


def test_lru_hash_never_exceeds_max_entries_and_keeps_new_key():
    k = Kernel(nr_cpus=4)
    b = FakeBackend(k)
    for flags in (0, MapFlags.NO_COMMON_LRU):
        fd = calls.map_create(b, MapType.LRU_HASH, 4, 8, 10, map_flags=flags)
        m = _map(k, fd)
        for i in range(500):
            k.cpu = i % 4
            m.map_update_elem(k32(i * 7 % 37), k32(i) * 2, 0)
            assert len(m.elems) <= m.max_entries
            assert bytes(m.elems[k32(i * 7 % 37)].value) == k32(i) * 2
        k.cpu = 0
        b.close(fd)


def test_lru_no_common_rounds_max_entries_to_cpus():
    k = Kernel(nr_cpus=4)
    b = FakeBackend(k)
    fd = calls.map_create(b, MapType.LRU_HASH, 4, 8, 5, map_flags=MapFlags.NO_COMMON_LRU)
    assert _map(k, fd).max_entries == 8
    b.close(fd)


def test_lru_large_map_costs_nothing_until_used():
    k = Kernel()
    b = FakeBackend(k)
    fd = calls.map_create(b, MapType.LRU_HASH, 4, 8, 1 << 24)
    m = _map(k, fd)
    calls.map_update_elem(b, fd, k32(1), b"x" * 8)
    assert sum(m.lru.virgin) == (1 << 24) - m.lru.target_free
    b.close(fd)
