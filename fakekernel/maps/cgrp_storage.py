"""Cgroup local storage — kernel/bpf/bpf_cgrp_storage.c.

BPF_MAP_TYPE_CGRP_STORAGE: the syscall key is a cgroup directory fd
(``cgroup_v1v2_get_from_fd``: EBADF for other fds, ENOENT for a removed cgroup); storages live
in ``Cgroup.bpf_storage`` and go when the cgroup is removed (bpf_cgrp_storage_free).
Only the cgroup2 hierarchy is simulated.
"""
from __future__ import annotations

import attrs

from fakekernel.cgroup import cgroup_get_from_fd
from fakekernel.maps.bpf_local_storage import LocalStorageMap

__all__ = ["CgrpStorageMap"]


@attrs.define(eq=False)
class CgrpStorageMap(LocalStorageMap):
    """cgrp_storage_map_ops."""

    def owner_from_fd(self, task, fd: int):
        return cgroup_get_from_fd(task, fd)
