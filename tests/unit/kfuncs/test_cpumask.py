"""bpf_cpumask kfuncs in the fake: allocation and usage count, whole-long bitmap writes, and
nr_cpu_ids other than the development machine's 2 (the differential tests cover 2 CPUs,
tests/differential/test_kfuncs_more.py)."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel.kfuncs import KFUNCS

EACCES = 13


class Env:
    def __init__(self, kern):
        self.kernel, self.mem = kern, kern.mem


def call(env, name, *args):
    return KFUNCS[name](env, *(list(args) + [0] * (5 - len(args))))


def make(nr_cpus: int):
    kern = Kernel(nr_cpus=nr_cpus)
    env = Env(kern)
    return env, call(env, "bpf_cpumask_create")


def word(env, m, k=0):
    return env.mem.load(m + 8 * k, 8)


def test_create_acquire_release_frees_with_last_usage():
    env, m = make(2)
    assert m and word(env, m) == 0
    assert call(env, "bpf_cpumask_acquire", m) == m
    call(env, "bpf_cpumask_release", m)
    assert env.mem.region_at(m) is not None
    call(env, "bpf_cpumask_release", m)
    assert env.mem.region_at(m) is None


def test_setall_fills_whole_longs_and_and_masks_the_tail():
    env, m = make(2)
    call(env, "bpf_cpumask_setall", m)
    assert word(env, m) == (1 << 64) - 1                 # bitmap_fill writes the whole long
    assert call(env, "bpf_cpumask_full", m) == 1 and call(env, "bpf_cpumask_weight", m) == 2
    assert call(env, "bpf_cpumask_and", m, m, m) == 1
    assert word(env, m) == 0b11
    call(env, "bpf_cpumask_release", m)


@pytest.mark.parametrize("nr", [1, 4, 64, 65, 130])
def test_queries_use_nr_cpu_ids(nr):
    env, m = make(nr)
    assert call(env, "bpf_cpumask_first", m) == nr
    assert call(env, "bpf_cpumask_first_zero", m) == 0
    call(env, "bpf_cpumask_set_cpu", nr - 1, m)
    call(env, "bpf_cpumask_set_cpu", nr, m)              # not a valid cpu: ignored
    assert call(env, "bpf_cpumask_test_cpu", nr - 1, m) == 1
    assert call(env, "bpf_cpumask_test_cpu", nr, m) == 0
    assert call(env, "bpf_cpumask_weight", m) == 1
    assert call(env, "bpf_cpumask_first", m) == nr - 1
    call(env, "bpf_cpumask_setall", m)
    assert call(env, "bpf_cpumask_first_zero", m) == nr
    assert call(env, "bpf_cpumask_weight", m) == nr
    call(env, "bpf_cpumask_release", m)


def test_binary_ops_and_relations():
    env, a = make(4)
    b = call(env, "bpf_cpumask_create")
    d = call(env, "bpf_cpumask_create")
    for cpu in (0, 2):
        call(env, "bpf_cpumask_set_cpu", cpu, a)
    for cpu in (2, 3):
        call(env, "bpf_cpumask_set_cpu", cpu, b)
    assert call(env, "bpf_cpumask_first_and", a, b) == 2
    assert call(env, "bpf_cpumask_intersects", a, b) == 1
    assert call(env, "bpf_cpumask_subset", a, b) == 0
    call(env, "bpf_cpumask_or", d, a, b)
    assert word(env, d) == 0b1101
    call(env, "bpf_cpumask_xor", d, a, b)
    assert word(env, d) == 0b1001
    assert call(env, "bpf_cpumask_and", d, d, b) == 1 and word(env, d) == 0b1000
    assert call(env, "bpf_cpumask_subset", d, b) == 1
    call(env, "bpf_cpumask_copy", d, a)
    assert call(env, "bpf_cpumask_equal", d, a) == 1
    assert call(env, "bpf_cpumask_test_and_clear_cpu", 0, d) == 1
    assert call(env, "bpf_cpumask_test_and_clear_cpu", 0, d) == 0
    assert call(env, "bpf_cpumask_test_and_set_cpu", 1, d) == 0
    assert word(env, d) == 0b110
    call(env, "bpf_cpumask_clear", d)
    assert call(env, "bpf_cpumask_empty", d) == 1
    for m in (a, b, d):
        call(env, "bpf_cpumask_release", m)


def test_any_distribute_rotates_from_the_previous_pick():
    env, m = make(4)
    for cpu in (0, 1, 3):
        call(env, "bpf_cpumask_set_cpu", cpu, m)
    picks = [call(env, "bpf_cpumask_any_distribute", m) for _ in range(4)]
    assert picks == [1, 3, 0, 1]
    call(env, "bpf_cpumask_clear", m)
    assert call(env, "bpf_cpumask_any_distribute", m) == 4
    assert call(env, "bpf_cpumask_any_and_distribute", m, m) == 4
    call(env, "bpf_cpumask_release", m)


def test_populate_needs_bitmap_size_bytes():
    env, m = make(70)                                     # BITS_TO_LONGS(70) = 2 longs
    src = env.mem.map_region(bytearray((0b101).to_bytes(8, "little") + (1 << 5 | 1 << 10).to_bytes(8, "little")),
                             "stack", "src")
    assert call(env, "bpf_cpumask_populate", m, src.base, 8) == (-EACCES) & 0xFFFFFFFF
    assert call(env, "bpf_cpumask_populate", m, src.base, 16) == 0
    assert call(env, "bpf_cpumask_weight", m) == 3       # bits 0, 2, 69; bit 74 is past nr_cpu_ids
    assert call(env, "bpf_cpumask_test_cpu", 69, m) == 1
    assert call(env, "bpf_cpumask_test_cpu", 74, m) == 0
    assert word(env, m, 1) == 1 << 5 | 1 << 10            # bitmap_copy moves whole longs
    call(env, "bpf_cpumask_release", m)
    env.mem.unmap(src)
