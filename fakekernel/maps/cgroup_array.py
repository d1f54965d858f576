"""Cgroup arrays — kernel/bpf/arraymap.c (cgroup_array_map_ops).

BPF_MAP_TYPE_CGROUP_ARRAY: an fd array of cgroup2 directories, consulted by
bpf_skb_under_cgroup / bpf_current_task_under_cgroup.  Userspace stores a cgroup2
directory fd (anything else is EBADF), cannot read the slot back (ENOTSUPP) and may delete
it.  The map holds its cgroups until the slot is overwritten or deleted or the map is
freed (cgroup_fd_array_free); a held cgroup may still be removed, as in the kernel.

Not modelled here: the two under_cgroup helpers' runtime (`fd_array_elem(index)` is what
they read).
"""
from __future__ import annotations

import attrs

from fakekernel.cgroup import cgroup_get_from_fd
from fakekernel.maps.fd_array import FdArrayMap

__all__ = ["CgroupArrayMap"]


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@attrs.define(eq=False)
class CgroupArrayMap(FdArrayMap):
    """BPF_MAP_TYPE_CGROUP_ARRAY — cgroup_array_map_ops."""

    def map_fd_get_ptr(self, ufd: int):
        """cgroup_fd_array_get_ptr(): cgroup_get_from_fd() (the fd is an int there)."""
        return cgroup_get_from_fd(self.kern.current, _s32(ufd))

    def map_fd_put_ptr(self, ptr) -> None:
        """cgroup_fd_array_put_ptr(): cgroups are not refcounted in the simulation."""
