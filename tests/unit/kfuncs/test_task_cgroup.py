"""Task and cgroup kfuncs in the fake: reference counts, image lifetimes and the cases the real
kernel cannot be driven into from a test (exited tasks, removed cgroups, signals actually
queued).  The common paths are differential (tests/differential/test_kfuncs_more.py)."""
from __future__ import annotations

import pytest

from fakekernel.btf_objects import ObjectImages, struct_layout
from fakekernel.btf_vmlinux import btf_index
from fakekernel.interp.memory import InterpreterFault
from fakekernel.kfuncs import KFUNCS
from fakekernel.kfuncs.refobj import ref_objects

EINVAL, EPERM = 22, 1


class Env:
    def __init__(self, kern):
        self.kernel, self.mem = kern, kern.mem


def call(env, name, *args):
    regs = list(args) + [0] * (5 - len(args))
    return KFUNCS[name](env, *regs)


def field(env, addr, struct, name):
    off, size = struct_layout(btf_index(env.kernel.btf_vmlinux), struct)[1][name]
    return env.mem.load(addr + off, size)


@pytest.fixture
def env(kernel):
    return Env(kernel)


def test_task_from_pid_maps_an_image_until_the_last_release(env):
    me = env.kernel.current
    addr = call(env, "bpf_task_from_pid", me.pid)
    assert addr and field(env, addr, "task_struct", "pid") == me.pid
    assert field(env, addr, "task_struct", "tgid") == me.tgid
    assert call(env, "bpf_task_acquire", addr) == addr
    assert ref_objects(env.kernel).refs(me) == 2
    call(env, "bpf_task_release", addr)
    assert env.mem.region_at(addr) is not None
    call(env, "bpf_task_release", addr)
    assert env.mem.region_at(addr) is None and ref_objects(env.kernel).refs(me) == 0


def test_task_from_pid_and_vpid_unknown_pid_is_null(env):
    assert call(env, "bpf_task_from_pid", 4242) == 0
    assert call(env, "bpf_task_from_vpid", (-1) & 0xFFFFFFFF) == 0


def test_task_acquire_of_exited_task_only_while_still_referenced(env):
    child = env.kernel.spawn()
    addr = call(env, "bpf_task_from_pid", child.pid)
    handle = env.mem.map_object(child)
    env.kernel.exit_task(child)
    assert call(env, "bpf_task_from_pid", child.pid) == 0
    assert call(env, "bpf_task_acquire", addr) == addr          # rcu_users still held by the program
    call(env, "bpf_task_release", addr)
    call(env, "bpf_task_release", addr)
    assert call(env, "bpf_task_acquire", handle) == 0           # nothing holds it any more


def test_task_acquire_through_opaque_handle_returns_the_handle(env):
    me = env.kernel.current
    handle = env.mem.map_object(me)                            # bpf_get_current_task_btf()
    assert call(env, "bpf_task_acquire", handle) == handle
    assert ref_objects(env.kernel).refs(me) == 1
    call(env, "bpf_task_release", handle)
    assert ref_objects(env.kernel).refs(me) == 0


def test_task_acquire_of_iterator_image_finds_task_by_pid(env):
    child = env.kernel.spawn()
    images = ObjectImages(env.kernel, btf_index(env.kernel.btf_vmlinux))
    try:
        addr = images.object_image("task_struct", child)
        assert call(env, "bpf_task_acquire", addr) == addr
        assert ref_objects(env.kernel).refs(child) == 1
        call(env, "bpf_task_release", addr)
    finally:
        images.unmap()
    env.kernel.exit_task(child)


def test_task_kfunc_on_unknown_pointer_faults(env):
    with pytest.raises(InterpreterFault):
        call(env, "bpf_task_release", 0x1234)


def test_task_under_cgroup_follows_the_hierarchy(env):
    kern = env.kernel
    cgfs = kern.world.cgroup
    a = cgfs.mkdir(cgfs.mountpoint + "/a")
    b = cgfs.mkdir(cgfs.mountpoint + "/b")
    ab = cgfs.mkdir(cgfs.mountpoint + "/a/x")
    kern.current.cgroup = ab
    task = call(env, "bpf_task_from_pid", kern.current.pid)
    try:
        for cg, want in ((cgfs.root, 1), (a, 1), (ab, 1), (b, 0)):
            cp = call(env, "bpf_cgroup_from_id", cg.id)
            assert call(env, "bpf_task_under_cgroup", task, cp) == want
            call(env, "bpf_cgroup_release", cp)
    finally:
        call(env, "bpf_task_release", task)
        kern.current.cgroup = None


def test_cgroup_image_level_and_kn_id(env):
    cgfs = env.kernel.world.cgroup
    c = cgfs.mkdir(cgfs.mountpoint + "/lvl")
    d = cgfs.mkdir(cgfs.mountpoint + "/lvl/two")
    p = call(env, "bpf_cgroup_from_id", d.id)
    assert field(env, p, "cgroup", "level") == 2
    assert field(env, field(env, p, "cgroup", "kn"), "kernfs_node", "id") == d.id
    anc = call(env, "bpf_cgroup_ancestor", p, 1)
    assert field(env, anc, "cgroup", "level") == 1 and ref_objects(env.kernel).refs(c) == 1
    assert call(env, "bpf_cgroup_ancestor", p, 3) == 0
    assert call(env, "bpf_cgroup_ancestor", p, (-1) & 0xFFFFFFFF) == 0
    call(env, "bpf_cgroup_release", anc)
    call(env, "bpf_cgroup_release", p)
    assert env.mem.region_at(p) is None


def test_removed_cgroup_is_not_found_but_stays_acquirable_while_held(env):
    cgfs = env.kernel.world.cgroup
    gone = cgfs.mkdir(cgfs.mountpoint + "/gone")
    p = call(env, "bpf_cgroup_from_id", gone.id)
    cgfs.rmdir(cgfs.mountpoint + "/gone")
    assert call(env, "bpf_cgroup_from_id", gone.id) == 0
    assert call(env, "bpf_cgroup_acquire", p) == p
    call(env, "bpf_cgroup_release", p)
    call(env, "bpf_cgroup_release", p)
    handle = env.mem.map_object(gone)
    assert call(env, "bpf_cgroup_acquire", handle) == 0


def test_send_signal_task_queues_on_the_target(env):
    child = env.kernel.spawn()
    p = call(env, "bpf_task_from_pid", child.pid)
    assert call(env, "bpf_send_signal_task", p, 10, 0, 99) == 0
    assert call(env, "bpf_send_signal_task", p, 0, 1, 0) == 0
    assert call(env, "bpf_send_signal_task", p, 65, 1, 0) == (-EINVAL) & 0xFFFFFFFF
    assert call(env, "bpf_send_signal_task", p, 10, 3, 0) == (-EINVAL) & 0xFFFFFFFF
    assert child.pending_signals == [(10, 0)]
    env.kernel.exit_task(child)
    assert call(env, "bpf_send_signal_task", p, 10, 0, 0) == (-EPERM) & 0xFFFFFFFF
    call(env, "bpf_task_release", p)


def test_send_signal_task_refuses_init(env):
    init = env.kernel.spawn(pid=1)
    p = call(env, "bpf_task_from_pid", 1)
    assert call(env, "bpf_send_signal_task", p, 9, 1, 0) == (-EPERM) & 0xFFFFFFFF
    assert init.pending_signals == []
    call(env, "bpf_task_release", p)
    env.kernel.exit_task(init)
