"""The cgroup device hook — kernel/bpf/cgroup.c (__cgroup_bpf_check_dev_permission) as
security/device_cgroup.c's devcgroup_check_permission() calls it on open(2) of a device node
(devcgroup_inode_permission) and on mknod(2).

`devcgroup_check_permission` runs the effective CGROUP_DEVICE programs of the task's cgroup on
a ``struct bpf_cgroup_dev_ctx`` (``access_type`` = access << 16 | device type, ``major``,
``minor``): 0 allows, -EPERM (or what bpf_set_retval() chose) refuses.  The simulated kernel
has no device nodes: callers (tests, a runner) ask this entry point directly.
"""
from __future__ import annotations

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, task_dfl_cgroup
from uapi.bpf import AttachType
from uapi.ffi import ffi

__all__ = ["devcgroup_check_permission", "DEVCG_DEV_BLOCK", "DEVCG_DEV_CHAR", "DEVCG_ACC_MKNOD",
           "DEVCG_ACC_READ", "DEVCG_ACC_WRITE"]

# include/uapi/linux/bpf.h: BPF_DEVCG_DEV_* and BPF_DEVCG_ACC_* (anonymous enums, not in BTF)
DEVCG_DEV_BLOCK, DEVCG_DEV_CHAR = 1, 2
DEVCG_ACC_MKNOD, DEVCG_ACC_READ, DEVCG_ACC_WRITE = 1, 2, 4
_ACCESS_SHIFT = 16


def devcgroup_check_permission(kern, task, dev_type: int, major: int, minor: int, access: int) -> int:
    """0 if the task's cgroup programs allow the access, else -errno."""
    task = task or kern.current
    dc = ffi.new("struct bpf_cgroup_dev_ctx *")
    dc.access_type = (access << _ACCESS_SHIFT) | dev_type
    dc.major, dc.minor = major, minor
    return bpf_prog_run_array_cg(kern, task_dfl_cgroup(kern, task), AttachType.CGROUP_DEVICE,
                                 CgCtx(uapi=dc, name="bpf_cgroup_dev_ctx"))
