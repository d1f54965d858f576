"""Task and cgroup kfuncs — kernel/bpf/helpers.c (bpf_task_acquire, bpf_task_release,
bpf_task_from_pid, bpf_task_from_vpid, bpf_task_under_cgroup, bpf_cgroup_acquire,
bpf_cgroup_release, bpf_cgroup_ancestor, bpf_cgroup_from_id) and kernel/trace/bpf_trace.c
(bpf_send_signal_task).

Tasks are the simulated processes (``kern.tasks``), cgroups the cgroup2 hierarchy
(``kern.world.cgroup``).  A pointer these kfuncs hand out is the address of the object's
task_struct / cgroup image (fakekernel/btf_objects.py), so the program can load ``pid``,
``tgid``, ``comm``, ``level`` and ``kn->id`` through it; the image stays mapped while the
program holds references on the object (`refobj.RefObjects`).  A pointer argument may also be
an opaque handle (bpf_get_current_task_btf, the storage helpers' owners) or an iterator's
task_struct image.

Lifetimes follow the kernel's tryget rules: a task can be acquired while it is alive or still
referenced (rcu_users), a cgroup while it is online or still referenced; bpf_task_from_pid
finds only live tasks and bpf_cgroup_from_id only online cgroups.  The machine has one pid
namespace, so bpf_task_from_vpid looks up the same ids as bpf_task_from_pid.
"""
from __future__ import annotations

from fakekernel.btf_objects import struct_layout
from fakekernel.btf_vmlinux import btf_index
from fakekernel.cgroup import Cgroup
from fakekernel.helpers.task import PIDTYPE_PID, PIDTYPE_TGID, SIGRTMAX, task_dfl_cgroup
from fakekernel.interp.memory import InterpreterFault
from fakekernel.kfuncs.dynptr import kfunc_int_errno
from fakekernel.kfuncs.refobj import ref_objects
from fakekernel.pid import find_task_by_pid
from fakekernel.task import Task
from uapi.errno import Errno
from uapi.insn import s32, u32

__all__ = ["TASK_KFUNCS"]

_TASK, _CGROUP = "task_struct", "cgroup"


def _handle(env, addr: int, cls):
    try:
        obj = env.mem.object_at(addr)
    except InterpreterFault:
        return None
    return obj if isinstance(obj, cls) else None


def _task_at(env, addr: int) -> Task:
    """The task behind a task_struct pointer: one of our images, an iterator's image (found
    by its pid), or an opaque handle."""
    task = ref_objects(env.kernel).object_at(addr, _TASK)
    if task is None:
        region = env.mem.region_at(addr)
        if region is not None and region.name == _TASK and addr == region.base:
            off, size = struct_layout(btf_index(env.kernel.btf_vmlinux), _TASK)[1]["pid"]
            task = find_task_by_pid(env.kernel, env.mem.load(addr + off, size))
    if task is None:
        task = _handle(env, addr, Task)
    if task is None:
        raise InterpreterFault(None, f"0x{addr:x} is not a task_struct the simulated kernel knows")
    return task


def _cgroup_at(env, addr: int) -> Cgroup:
    cgrp = ref_objects(env.kernel).object_at(addr, _CGROUP) or _handle(env, addr, Cgroup)
    if cgrp is None:
        raise InterpreterFault(None, f"0x{addr:x} is not a cgroup the simulated kernel knows")
    return cgrp


def _task_alive(env, task: Task) -> bool:
    return any(t is task for t in env.kernel.tasks)


def _acquire(env, addr: int, obj, kind: str, alive: bool) -> int:
    """refcount_inc_not_zero(): NULL once nothing keeps the object; else the same pointer."""
    objs = ref_objects(env.kernel)
    if not alive and not objs.refs(obj):
        return 0
    if objs.object_at(addr, kind) is obj:
        return objs.get(obj, kind)
    objs.hold(obj)
    return addr


# ---------------------------------------------------------------- tasks

def bpf_task_acquire(env, p, r2, r3, r4, r5) -> int:
    task = _task_at(env, p)
    return _acquire(env, p, task, _TASK, _task_alive(env, task))


def bpf_task_release(env, p, r2, r3, r4, r5) -> int:
    ref_objects(env.kernel).put(_task_at(env, p))
    return 0


def bpf_task_from_pid(env, pid, r2, r3, r4, r5) -> int:
    task = find_task_by_pid(env.kernel, s32(pid))
    if task is None:
        return 0
    return ref_objects(env.kernel).get(task, _TASK)


def bpf_task_under_cgroup(env, task_p, ancestor_p, r3, r4, r5) -> int:
    """task_under_cgroup_hierarchy(): is the task's cgroup2 cgroup `ancestor` or below it?"""
    ancestor = _cgroup_at(env, ancestor_p)
    cgrp = task_dfl_cgroup(env, _task_at(env, task_p))
    return int(any(c is ancestor for c in cgrp.ancestors()))


def bpf_send_signal_task(env, task_p, sig, pid_type, value, r5) -> int:
    """bpf_send_signal_task(task, sig, type, value): queued on the task (with its si_value);
    -EINVAL for a pid type other than PID/TGID or an invalid signal, -EPERM towards init or
    an exiting task."""
    if u32(pid_type) not in (PIDTYPE_PID, PIDTYPE_TGID):
        return kfunc_int_errno(Errno.EINVAL)
    task = _task_at(env, task_p)
    if not _task_alive(env, task) or task.tgid == 1:
        return kfunc_int_errno(Errno.EPERM)
    if u32(sig) > SIGRTMAX:
        return kfunc_int_errno(Errno.EINVAL)
    if sig:
        task.pending_signals.append((u32(sig), u32(pid_type)))
    return 0


# ---------------------------------------------------------------- cgroups

def bpf_cgroup_acquire(env, p, r2, r3, r4, r5) -> int:
    cgrp = _cgroup_at(env, p)
    return _acquire(env, p, cgrp, _CGROUP, cgrp.online)


def bpf_cgroup_release(env, p, r2, r3, r4, r5) -> int:
    ref_objects(env.kernel).put(_cgroup_at(env, p))
    return 0


def bpf_cgroup_ancestor(env, p, level, r3, r4, r5) -> int:
    cgrp, level = _cgroup_at(env, p), s32(level)
    chain = list(cgrp.ancestors())          # self, parent, ..., root
    depth = len(chain) - 1
    if level < 0 or level > depth:
        return 0
    ancestor = chain[depth - level]
    if not ancestor.online and not ref_objects(env.kernel).refs(ancestor):
        return 0
    return ref_objects(env.kernel).get(ancestor, _CGROUP)


def bpf_cgroup_from_id(env, cgid, r2, r3, r4, r5) -> int:
    """An online cgroup2 cgroup by kernfs id; NULL for anything else."""
    cgrp = next((c for c in env.kernel.world.cgroup.walk() if c.id == cgid), None)
    if cgrp is None or not cgrp.online:
        return 0
    return ref_objects(env.kernel).get(cgrp, _CGROUP)


TASK_KFUNCS = {
    "bpf_task_acquire": bpf_task_acquire, "bpf_task_release": bpf_task_release,
    "bpf_task_from_pid": bpf_task_from_pid, "bpf_task_from_vpid": bpf_task_from_pid,
    "bpf_task_under_cgroup": bpf_task_under_cgroup, "bpf_send_signal_task": bpf_send_signal_task,
    "bpf_cgroup_acquire": bpf_cgroup_acquire, "bpf_cgroup_release": bpf_cgroup_release,
    "bpf_cgroup_ancestor": bpf_cgroup_ancestor, "bpf_cgroup_from_id": bpf_cgroup_from_id,
}
