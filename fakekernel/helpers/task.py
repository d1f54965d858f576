"""Helpers about the current task — kernel/bpf/helpers.c (bpf_get_current_cgroup_id,
bpf_get_current_ancestor_cgroup_id, bpf_get_ns_current_pid_tgid, bpf_map_lookup_percpu_elem,
bpf_ktime_get_tai_ns, bpf_kptr_xchg) and kernel/trace/bpf_trace.c (bpf_get_current_task,
bpf_current_task_under_cgroup, bpf_send_signal, bpf_send_signal_thread, bpf_copy_from_user_task)
and kernel/bpf/task_iter.c (bpf_find_vma).

The current task is the run's task (``env.task``) or the kernel's ``current``; its cgroup is
``task.cgroup`` (the root cgroup when unset).  The simulated machine has one pid namespace,
the initial one, reached through nsfs as the host's is (device 4, inode PROC_PID_INIT_INO).
A signal sent by a program is queued on the task (``task.pending_signals``): a simulated
task receives it there, a runner target gets nothing real.
"""
from __future__ import annotations

import time

from fakekernel.helpers.base import neg_errno
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import s32, u32, u64

__all__ = ["TASK_RUNTIME", "PROC_PID_INIT_INO", "NSFS_DEV", "current_task", "task_dfl_cgroup",
           "SIGRTMAX"]

PROC_PID_INIT_INO = 0xEFFFFFFC      # include/linux/proc_ns.h
NSFS_DEV = 4                        # the nsfs superblock's s_dev (an anonymous device; 4 on 6.18 hosts)
SIGRTMAX = 64                       # _NSIG: valid_signal() accepts 0..64
_DEV_T_MASK = 0xFFFFFFFF            # dev_t is a u32
_PIDNS_INFO = ffi.sizeof("struct bpf_pidns_info")
_PTR = ffi.sizeof("void *")
PIDTYPE_PID, PIDTYPE_TGID = 0, 1    # enum pid_type


def current_task(env):
    return getattr(env, "task", None) or env.kernel.current


def task_dfl_cgroup(env, task):
    """task_dfl_cgroup(): the task's cgroup2 cgroup (the root one unless it was moved)."""
    return task.cgroup or env.kernel.world.cgroup.root


def _cgroup_level(cgrp) -> int:
    return sum(1 for _ in cgrp.ancestors()) - 1


def bpf_get_current_task(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_current_task(): the task_struct pointer (an opaque handle here)."""
    return env.mem.map_object(current_task(env))


def bpf_get_current_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    return task_dfl_cgroup(env, current_task(env)).id


def bpf_get_current_ancestor_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    """cgroup_ancestor(cgrp, level): 0 for a level below the root or past the task's own."""
    cgrp = task_dfl_cgroup(env, current_task(env))
    level = s32(r1)
    depth = _cgroup_level(cgrp)
    if level < 0 or level > depth:
        return 0
    chain = list(cgrp.ancestors())          # self, parent, ..., root
    return chain[depth - level].id


def bpf_current_task_under_cgroup(env, r1, r2, r3, r4, r5) -> int:
    """bpf_current_task_under_cgroup(map, idx): 1/0, -E2BIG past the array, -EAGAIN for a hole."""
    array = env.mem.object_at(r1)
    idx = u32(r2)
    if idx >= array.max_entries:
        return neg_errno(Errno.E2BIG)
    cgrp = array.fd_array_elem(idx)
    if cgrp is None:
        return neg_errno(Errno.EAGAIN)
    mine = task_dfl_cgroup(env, current_task(env))
    return int(any(c is cgrp for c in mine.ancestors()))


def bpf_get_ns_current_pid_tgid(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_ns_current_pid_tgid(dev, ino, nsdata, size): struct bpf_pidns_info for the
    task's pid namespace if (dev, ino) names it; nsdata cleared and -EINVAL otherwise."""
    size = u32(r4)
    task = current_task(env)
    if size != _PIDNS_INFO or r1 & _DEV_T_MASK != r1 or not (r1 == NSFS_DEV and r2 == PROC_PID_INIT_INO):
        env.mem.write(r3, bytes(size))
        return neg_errno(Errno.EINVAL)
    info = ffi.new("struct bpf_pidns_info *", {"pid": task.pid, "tgid": task.tgid})
    env.mem.write(r3, bytes(ffi.buffer(info)))
    return 0


def _send_signal(env, sig: int, pid_type: int) -> int:
    """bpf_send_signal_common(): never to init or a kernel thread; 0..64 only."""
    task = current_task(env)
    if task.pid == 1:
        return neg_errno(Errno.EPERM)
    if sig > SIGRTMAX:
        return neg_errno(Errno.EINVAL)
    if sig:
        pending = getattr(task, "pending_signals", None)
        if pending is not None:
            pending.append((sig, pid_type))
    return 0


def bpf_send_signal(env, r1, r2, r3, r4, r5) -> int:
    """bpf_send_signal(sig): to the current process (PIDTYPE_TGID)."""
    return _send_signal(env, u32(r1), PIDTYPE_TGID)


def bpf_send_signal_thread(env, r1, r2, r3, r4, r5) -> int:
    """bpf_send_signal_thread(sig): to the current thread (PIDTYPE_PID)."""
    return _send_signal(env, u32(r1), PIDTYPE_PID)


def bpf_copy_from_user_task(env, r1, r2, r3, r4, r5) -> int:
    """bpf_copy_from_user_task(dst, size, user_ptr, task, flags): access_process_vm() on the
    task's memory; -EINVAL for flags, -EFAULT (dst zeroed) unless every byte was read."""
    from fakekernel.errors import KernelError
    size = u32(r2)
    if r5:
        return neg_errno(Errno.EINVAL)
    if not size:
        return 0
    task = env.mem.object_at(r4)
    try:
        data = task.mm.copy_from_user(r3, size)
    except KernelError:
        env.mem.write(r1, bytes(size))
        return neg_errno(Errno.EFAULT)
    env.mem.write(r1, data)
    return 0


# include/linux/mm.h VM_* bits of a /proc/<pid>/maps line's permissions
_VM_READ, _VM_WRITE, _VM_EXEC, _VM_SHARED = 0x1, 0x2, 0x4, 0x8
_PAGE_SHIFT = 12


def task_vmas(task) -> list[tuple[int, int, int, int]]:
    """(vm_start, vm_end, vm_flags, vm_pgoff) of the task's mappings: those of the real process
    behind its memory (/proc/<pid>/maps), none for a task without one."""
    pid = getattr(task.mm, "pid", None)
    if pid is None:
        return []
    try:
        with open(f"/proc/{pid}/maps", encoding="latin-1") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        rng, perms, off = line.split()[:3]
        start, end = (int(x, 16) for x in rng.split("-"))
        flags = sum(bit for ch, bit in zip(perms, (_VM_READ, _VM_WRITE, _VM_EXEC, _VM_SHARED))
                    if ch in "rwxs")
        out.append((start, end, flags, int(off, 16) >> _PAGE_SHIFT))
    return out


def bpf_find_vma(env, r1, r2, r3, r4, r5) -> int:
    """bpf_find_vma(task, addr, callback_fn, callback_ctx, flags): callback_fn(task, vma, ctx)
    for the mapping holding addr (a vm_area_struct image: vm_start, vm_end, vm_flags, vm_pgoff,
    vm_file left NULL); -EINVAL for flags, -ENOENT when nothing maps addr."""
    from fakekernel.btf_objects import ObjectImages
    from fakekernel.btf_vmlinux import btf_index
    if r5:
        return neg_errno(Errno.EINVAL)
    task = env.mem.object_at(r1) if r1 else None
    if task is None:
        return neg_errno(Errno.ENOENT)
    hit = next((v for v in task_vmas(task) if v[0] <= r2 < v[1]), None)
    if hit is None:
        return neg_errno(Errno.ENOENT)
    images = ObjectImages(env.kernel, btf_index(env.kernel.btf_vmlinux))
    try:
        vma = images.image("vm_area_struct", dict(zip(("vm_start", "vm_end", "vm_flags", "vm_pgoff"), hit)))
        env.call_subprog(r3, r1, vma, r4)
    finally:
        images.unmap()
    return 0


def bpf_kptr_xchg(env, r1, r2, r3, r4, r5) -> int:
    """bpf_kptr_xchg(dst, ptr) (kernel/bpf/helpers.c): store ptr in the kptr slot, return the
    old pointer (the verifier moves the reference)."""
    old = env.mem.load(r1, _PTR)
    env.mem.store(r1, _PTR, r2)
    return old


def bpf_map_lookup_percpu_elem(env, r1, r2, r3, r4, r5) -> int:
    """bpf_map_lookup_percpu_elem(map, key, cpu): the value on `cpu`, NULL past nr_cpu_ids."""
    bpf_map = env.mem.object_at(r1)
    key = env.mem.read(r2, bpf_map.key_size)
    return bpf_map.map_lookup_percpu_elem(key, u32(r3))


def bpf_ktime_get_tai_ns(env, r1, r2, r3, r4, r5) -> int:
    """ktime_get_tai_fast_ns(): CLOCK_TAI on the host clock, the boot-relative clock with an
    injected one (a simulated machine whose epoch is its boot)."""
    from fakekernel.kernel import _monotonic_ns
    kern = env.kernel
    if kern.clock is _monotonic_ns:
        return u64(time.clock_gettime_ns(time.CLOCK_TAI))
    return u64(kern.ktime_get_ns())


TASK_RUNTIME = {
    FuncId.get_current_task: bpf_get_current_task,
    FuncId.get_current_cgroup_id: bpf_get_current_cgroup_id,
    FuncId.get_current_ancestor_cgroup_id: bpf_get_current_ancestor_cgroup_id,
    FuncId.current_task_under_cgroup: bpf_current_task_under_cgroup,
    FuncId.get_ns_current_pid_tgid: bpf_get_ns_current_pid_tgid,
    FuncId.send_signal: bpf_send_signal,
    FuncId.send_signal_thread: bpf_send_signal_thread,
    FuncId.map_lookup_percpu_elem: bpf_map_lookup_percpu_elem,
    FuncId.ktime_get_tai_ns: bpf_ktime_get_tai_ns,
    FuncId.copy_from_user_task: bpf_copy_from_user_task,
    FuncId.kptr_xchg: bpf_kptr_xchg,
    FuncId.find_vma: bpf_find_vma,
}
