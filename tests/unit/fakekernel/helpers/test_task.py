"""Current-task helpers (fakekernel.helpers.task) on the simulated world: cgroup ids and
ancestry for a task moved into a nested cgroup, pid namespace info, signals, per-task copies,
kptr exchange and per-CPU lookups."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel.helpers.task import (NSFS_DEV, PROC_PID_INIT_INO, bpf_copy_from_user_task,
                                     bpf_current_task_under_cgroup, bpf_get_current_ancestor_cgroup_id,
                                     bpf_get_current_cgroup_id, bpf_get_ns_current_pid_tgid,
                                     bpf_kptr_xchg, bpf_map_lookup_percpu_elem, bpf_send_signal,
                                     bpf_send_signal_thread, bpf_ktime_get_tai_ns)
from fakekernel.interp.run import RunEnv
from uapi import calls
from uapi.bpf import MapType
from uapi.errno import Errno

NEG = lambda e: 2**64 - e       # noqa: E731


@pytest.fixture
def env():
    k = Kernel()
    return RunEnv(mem=k.mem, kernel=k)


def _region(env, data: bytes):
    return env.kernel.mem.map_region(bytearray(data), "arg", "buf")


def test_cgroup_ids_of_a_nested_task(env):
    cg = env.kernel.world.cgroup
    a = cg.mkdir(cg.mountpoint + "/a")
    b = cg.mkdir(cg.mountpoint + "/a/b")
    env.kernel.current.cgroup = b
    assert bpf_get_current_cgroup_id(env, 0, 0, 0, 0, 0) == b.id
    got = [bpf_get_current_ancestor_cgroup_id(env, lvl, 0, 0, 0, 0) for lvl in (0, 1, 2, 3, 2**32 - 1)]
    assert got == [cg.root.id, a.id, b.id, 0, 0]
    env.kernel.current.cgroup = None
    cg.rmdir(cg.mountpoint + "/a/b")
    cg.rmdir(cg.mountpoint + "/a")


def test_current_task_under_cgroup(env):
    k = env.kernel
    cg = k.world.cgroup
    cg.mkdir(cg.mountpoint + "/a")
    cg.mkdir(cg.mountpoint + "/o")
    k.current.cgroup = cg.mkdir(cg.mountpoint + "/a/b")
    fds = [k.open(cg.mountpoint + p) for p in ("/a", "/o")]
    arr = calls.map_create(k, MapType.CGROUP_ARRAY, 4, 4, 3)
    for i, fd in enumerate(fds):
        calls.map_update_elem(k, arr, i.to_bytes(4, "little"), fd.to_bytes(4, "little"))
    m = env.mem.map_object(k.current.files.fdget(arr).private_data)
    assert [bpf_current_task_under_cgroup(env, m, i, 0, 0, 0) for i in (0, 1, 2, 3)] == \
        [1, 0, NEG(Errno.EAGAIN), NEG(Errno.E2BIG)]
    k.current.cgroup = None
    for fd in fds + [arr]:
        k.close(fd)
    for p in ("/a/b", "/a", "/o"):
        cg.rmdir(cg.mountpoint + p)


def test_ns_current_pid_tgid(env):
    out = _region(env, b"\xaa" * 8)
    assert bpf_get_ns_current_pid_tgid(env, NSFS_DEV, PROC_PID_INIT_INO, out.base, 8, 0) == 0
    pid = env.kernel.current.pid
    assert bytes(out.buf) == pid.to_bytes(4, "little") * 2
    assert bpf_get_ns_current_pid_tgid(env, NSFS_DEV, 1, out.base, 8, 0) == NEG(Errno.EINVAL)
    assert bytes(out.buf) == bytes(8)


def test_send_signal_init_eperm_and_queue(env):
    task = env.kernel.current
    assert bpf_send_signal_thread(env, 9, 0, 0, 0, 0) == 0
    assert bpf_send_signal(env, 65, 0, 0, 0, 0) == NEG(Errno.EINVAL)
    assert task.pending_signals == [(9, 0)]
    init = env.kernel.spawn(pid=1)
    env.kernel.current = init
    assert bpf_send_signal(env, 9, 0, 0, 0, 0) == NEG(Errno.EPERM)
    assert init.pending_signals == []
    env.kernel.current = task


def test_copy_from_user_task(env):
    import ctypes
    src = ctypes.create_string_buffer(b"user data", 16)
    dst = _region(env, b"\xff" * 9)
    task = env.mem.map_object(env.kernel.current)
    assert bpf_copy_from_user_task(env, dst.base, 9, ctypes.addressof(src), task, 0) == 0
    assert bytes(dst.buf) == b"user data"
    assert bpf_copy_from_user_task(env, dst.base, 9, ctypes.addressof(src), task, 1) == NEG(Errno.EINVAL)
    assert bpf_copy_from_user_task(env, dst.base, 9, 8, task, 0) == NEG(Errno.EFAULT)
    assert bytes(dst.buf) == bytes(9)


def test_kptr_xchg_swaps(env):
    slot = _region(env, (0x1234).to_bytes(8, "little"))
    assert bpf_kptr_xchg(env, slot.base, 0x5678, 0, 0, 0) == 0x1234
    assert int.from_bytes(slot.buf, "little") == 0x5678


def test_map_lookup_percpu_elem(env):
    k = env.kernel
    fd = calls.map_create(k, MapType.PERCPU_ARRAY, 4, 8, 2)
    calls.map_update_elem(k, fd, (1).to_bytes(4, "little"),
                          b"".join((10 + c).to_bytes(8, "little") for c in range(k.nr_cpus)))
    m = env.mem.map_object(k.current.files.fdget(fd).private_data)
    key = _region(env, (1).to_bytes(4, "little"))
    for cpu in range(k.nr_cpus):
        addr = bpf_map_lookup_percpu_elem(env, m, key.base, cpu, 0, 0)
        assert env.mem.load(addr, 8) == 10 + cpu
    assert bpf_map_lookup_percpu_elem(env, m, key.base, k.nr_cpus, 0, 0) == 0
    k.close(fd)


def test_ktime_get_tai_ns_injected_clock():
    now = [5_000]
    k = Kernel(clock=lambda: now[0])
    e = RunEnv(mem=k.mem, kernel=k)
    now[0] = 7_000
    assert bpf_ktime_get_tai_ns(e, 0, 0, 0, 0, 0) == 2_000
