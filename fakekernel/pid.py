"""Process ids and pidfds — kernel/pid.c (pidfd_open, pidfd_get_pid, pid_task), kernel/exit.c.

A pidfd is a `File` of kind ``"pidfd"`` whose ``private_data`` is the `Task` it was opened
for (the kernel's struct pid).  `pid_task` answers None once that task has exited.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_RDWR, File

__all__ = ["PIDFD_FILE_KIND", "PIDFD_NONBLOCK", "PIDFD_THREAD", "pidfd_open", "pidfd_get_pid",
           "pid_task", "find_task_by_pid", "task_exit"]

PIDFD_FILE_KIND = "pidfd"
PIDFD_NONBLOCK = 0o4000              # O_NONBLOCK (include/uapi/linux/pidfd.h)
PIDFD_THREAD = 0o200                 # O_EXCL
O_CLOEXEC = 0o2000000


def find_task_by_pid(kern, pid: int):
    for t in kern.tasks:
        if t.pid == pid:
            return t
    return None


def pidfd_open(kern, task, pid: int, flags: int = 0) -> int:
    """sys_pidfd_open(): a new O_CLOEXEC pidfd in `task`'s fd table."""
    if flags & ~(PIDFD_NONBLOCK | PIDFD_THREAD):
        raise KernelError(Errno.EINVAL, "unknown pidfd_open flags")
    if pid <= 0:
        raise KernelError(Errno.EINVAL, "pid must be positive")
    target = find_task_by_pid(kern, pid)
    if target is None:
        raise KernelError(Errno.ESRCH, f"no process {pid}")
    return task.files.install(File(kind=PIDFD_FILE_KIND, private_data=target,
                                   f_flags=O_RDWR | O_CLOEXEC | (flags & PIDFD_NONBLOCK)))


def pidfd_get_pid(task, fd: int):
    """pidfd_get_pid(): the struct pid (here: the Task) behind a pidfd; EBADF for other fds."""
    f = task.files.fdget(fd)
    if f.kind != PIDFD_FILE_KIND:
        raise KernelError(Errno.EBADF, f"fd {fd} is not a pidfd")
    return f.private_data


def pid_task(kern, pid_target):
    """pid_task(pid, PIDTYPE_PID): the task if it has not exited, else None."""
    return pid_target if any(t is pid_target for t in kern.tasks) else None


def task_exit(kern, task) -> None:
    """do_exit() + release_task(): files close, task storage goes, the pid stops resolving."""
    from fakekernel.maps.bpf_local_storage import bpf_local_storage_destroy
    task.files.close_all()
    bpf_local_storage_destroy(task.bpf_storage)
    kern.tasks[:] = [t for t in kern.tasks if t is not task]
