"""Shared by the map differential tests: the host's CPU count, CPU pinning, a (fake, host)
pair whose fake kernel has the host's number of possible CPUs, a scenario run on both
kernels (`both_equal`) and a map fd's memlock as fdinfo reports it (`memlock`)."""
from __future__ import annotations

import contextlib
import os

import pytest

from uapi.bpf import MapType

from backends import FakeBackend

__all__ = ["NR_CPUS", "PERCPU_TYPES", "possible_cpus", "sys_value_size", "on_cpu0", "pair",
           "both_equal", "memlock"]

PERCPU_TYPES = (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)


def possible_cpus() -> int:
    """/sys/devices/system/cpu/possible, e.g. "0-1" -> 2."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return 2
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


NR_CPUS = possible_cpus()


def sys_value_size(map_type, value_size: int) -> int:
    """bpf_map_value_size(): round_up(value_size, 8) * possible CPUs for per-CPU maps."""
    return (value_size + 7) // 8 * 8 * NR_CPUS if map_type in PERCPU_TYPES else value_size


@contextlib.contextmanager
def on_cpu0():
    """Pin this process to CPU 0 (the CPU the fake kernel's syscalls run on)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


@pytest.fixture
def pair(host):
    """(fake, host): the fake kernel has the host's CPU count and the host runs pinned to CPU 0."""
    from fakekernel import Kernel
    fake = FakeBackend(Kernel(nr_cpus=NR_CPUS))
    with on_cpu0():
        yield fake, host
    assert not fake.cleanup()

def both_equal(both, scenario):
    fake, host = both
    got_fake, got_host = scenario(fake), scenario(host)
    assert got_fake == got_host
    return got_host


def memlock(b, fd) -> int:
    if isinstance(b, FakeBackend):
        return b.kern.current.files.fdget(fd).private_data.memlock
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise AssertionError("no memlock in fdinfo")
