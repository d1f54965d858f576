"""bpf_map_sum_elem_count in the fake: the hash tables' element count through either kind of
map pointer a program can hold (the map handle of ld_imm64, a map iterator's bpf_map image),
LRU evictions and hash-of-maps included; 0 for maps without a counter.  Plain HASH/LRU/PERCPU
and ARRAY against the real kernel: tests/differential/test_kfuncs_more.py."""
from __future__ import annotations

import pytest

from fakekernel.btf_objects import ObjectImages
from fakekernel.btf_vmlinux import btf_index
from fakekernel.kfuncs import KFUNCS
from uapi import calls
from uapi.bpf import MapType


class Env:
    def __init__(self, kern):
        self.kernel, self.mem = kern, kern.mem


def sum_count(env, addr: int) -> int:
    return KFUNCS["bpf_map_sum_elem_count"](env, addr, 0, 0, 0, 0)


def the_map(fake, fd):
    return fake.kern.current.files.fdget(fd).private_data


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH])
def test_count_follows_updates_deletes_and_evictions(fake, map_type):
    fd = calls.map_create(fake, map_type, 4, 8, 4)
    env = Env(fake.kern)
    handle = env.mem.map_object(the_map(fake, fd))
    assert sum_count(env, handle) == 0
    for k in range(3):
        calls.map_update_elem(fake, fd, k.to_bytes(4, "little"), bytes(8))
    assert sum_count(env, handle) == 3
    if map_type != MapType.HASH:
        for k in range(3, 40):                      # LRU: evictions keep the count at most max_entries
            calls.map_update_elem(fake, fd, k.to_bytes(4, "little"), bytes(8))
        assert sum_count(env, handle) == len(the_map(fake, fd).elems) <= 4
    fake.close(fd)


def test_count_through_a_map_iterator_image(fake):
    fd = calls.map_create(fake, MapType.HASH, 4, 8, 8)
    calls.map_update_elem(fake, fd, bytes(4), bytes(8))
    env = Env(fake.kern)
    images = ObjectImages(fake.kern, btf_index(fake.kern.btf_vmlinux))
    try:
        assert sum_count(env, images.object_image("bpf_map", the_map(fake, fd))) == 1
    finally:
        images.unmap()
    fake.close(fd)


def test_hash_of_maps_counts_and_other_types_answer_zero(fake):
    inner = calls.map_create(fake, MapType.ARRAY, 4, 4, 1)
    outer = calls.map_create(fake, MapType.HASH_OF_MAPS, 4, 4, 4, inner_map_fd=inner)
    calls.map_update_elem(fake, outer, bytes(4), inner.to_bytes(4, "little"))
    env = Env(fake.kern)
    assert sum_count(env, env.mem.map_object(the_map(fake, outer))) == 1
    assert sum_count(env, env.mem.map_object(the_map(fake, inner))) == 0
    assert sum_count(env, 0) == 0
    fake.close(outer)
    fake.close(inner)
