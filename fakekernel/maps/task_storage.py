"""Task storage — kernel/bpf/bpf_task_storage.c.

BPF_MAP_TYPE_TASK_STORAGE: the syscall key is a pidfd (``pidfd_get_pid``: EBADF for any
other fd), an exited task is ENOENT; storages live in ``Task.bpf_storage`` and go when the
task exits (fakekernel/pid.py task_exit -> bpf_task_storage_free).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.bpf_local_storage import LocalStorageMap
from fakekernel.pid import pid_task, pidfd_get_pid

__all__ = ["TaskStorageMap"]


@attrs.define(eq=False)
class TaskStorageMap(LocalStorageMap):
    """task_storage_map_ops."""

    def owner_from_fd(self, task, fd: int):
        """pidfd_get_pid() then pid_task(): EBADF for a non-pidfd, ENOENT for an exited task."""
        owner = pid_task(self.kern, pidfd_get_pid(task, fd))
        if owner is None:
            raise KernelError(Errno.ENOENT, "the pidfd's task has exited")
        return owner
