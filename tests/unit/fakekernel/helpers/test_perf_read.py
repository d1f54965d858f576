"""bpf_perf_event_read / _value and bpf_get_branch_snapshot (fakekernel.helpers.perf_read): the
perf_event_read_local() checks on events of other CPUs and tasks, inherited and pinned events."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fakekernel import Kernel
from fakekernel.helpers.perf_read import (bpf_get_branch_snapshot, bpf_perf_event_read,
                                          bpf_perf_event_read_value)
from fakekernel.interp.run import RunEnv
from uapi.errno import Errno

NEG = lambda e: 2**64 - e       # noqa: E731
CURRENT_CPU = 0xFFFFFFFF


@pytest.fixture
def env():
    k = Kernel()
    return RunEnv(mem=k.mem, kernel=k)


def _event(cpu=-1, task=None, inherit=0, pinned=0, oncpu=0):
    return SimpleNamespace(cpu=cpu, task=task, oncpu=oncpu,
                           attr=SimpleNamespace(inherit=inherit, pinned=pinned))


def _array(env, *events):
    arr = SimpleNamespace(max_entries=len(events),
                          fd_array_elem=lambda i: None if events[i] is None else SimpleNamespace(event=events[i]))
    return env.mem.map_object(arr)


def test_perf_event_read_checks(env):
    me = env.kernel.current
    other = env.kernel.spawn()
    m = _array(env, _event(cpu=0), _event(task=me), _event(task=other), _event(cpu=1),
               _event(cpu=0, inherit=1), _event(cpu=0, pinned=1, oncpu=-1), None)
    got = [bpf_perf_event_read(env, m, i, 0, 0, 0) for i in range(7)]
    assert got == [0, 0, NEG(Errno.EINVAL), NEG(Errno.EINVAL), NEG(Errno.EOPNOTSUPP), NEG(Errno.EBUSY),
                   NEG(Errno.ENOENT)]
    assert bpf_perf_event_read(env, m, 7, 0, 0, 0) == NEG(Errno.E2BIG)
    assert bpf_perf_event_read(env, m, CURRENT_CPU, 0, 0, 0) == 0          # CPU 0 -> slot 0
    assert bpf_perf_event_read(env, m, 1 << 32, 0, 0, 0) == NEG(Errno.EINVAL)
    env.kernel.exit_task(other)


def test_perf_event_read_value_clears_on_error(env):
    m = _array(env, _event(cpu=0), None)
    buf = env.kernel.mem.map_region(bytearray(b"\xff" * 24), "arg", "value")
    assert bpf_perf_event_read_value(env, m, 0, buf.base, 24, 0) == 0
    assert bytes(buf.buf) == bytes(24)
    buf.buf[:] = b"\xff" * 24
    assert bpf_perf_event_read_value(env, m, 1, buf.base, 24, 0) == NEG(Errno.ENOENT)
    assert bytes(buf.buf) == bytes(24)
    assert bpf_perf_event_read_value(env, m, 0, buf.base, 16, 0) == NEG(Errno.EINVAL)


@pytest.mark.parametrize("size,flags,want", [(0, 0, Errno.ENOENT), (24, 0, Errno.ENOENT),
                                             (25, 0, Errno.ENOENT), (24, 1, Errno.EINVAL)])
def test_branch_snapshot_empty(env, size, flags, want):
    assert bpf_get_branch_snapshot(env, 0, size, flags, 0, 0) == NEG(want)
