"""PROG_BIND_MAP and ENABLE_STATS — kernel/bpf/syscall.c: bpf_prog_bind_map(), bpf_enable_stats(),
bpf_enable_runtime_stats(), bpf_stats_release().

Run-time statistics (prog info run_cnt / run_time_ns) are collected only while the
bpf_stats_enabled static key is on: while the sysctl kernel.bpf_stats_enabled is set or a
"bpf-stats" fd from ENABLE_STATS is open (`fakekernel.bpf.core.bpf_stats_enabled`, read by
bpf_prog_run).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_stats_enabled
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDWR, File
from fakekernel.idr import INT_MAX
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd, StatsType
from uapi.capability import Cap

__all__ = ["bpf_prog_bind_map", "bpf_enable_stats", "bpf_stats_enabled", "STATS_FILE_KIND"]

STATS_FILE_KIND = "bpf-stats"       # anon_inode:bpf-stats


@bpf_command(BpfCmd.PROG_BIND_MAP, last_field="prog_bind_map.flags")
def bpf_prog_bind_map(kern, task, attr, ctx) -> int:
    """bpf_prog_bind_map(): add the map to the prog's used maps (once), holding a reference."""
    pbm = attr.prog_bind_map
    if pbm.flags:
        raise KernelError(Errno.EINVAL, "prog_bind_map.flags must be 0")
    prog = fdget.bpf_prog_get(task, pbm.prog_fd)
    _, bpf_map = fdget.bpf_map_get(task, pbm.map_fd)
    if any(m is bpf_map for m in prog.aux.used_maps):
        return 0
    prog.aux.used_maps.append(bpf_map.get())
    return 0


@attrs.define(eq=False)
class _BpfStats:
    """The private data of a "bpf-stats" file: closing it drops one enable count."""

    kern: object

    def file_release(self, file) -> None:
        """bpf_stats_release()."""
        self.kern.bpf_stats_enabled_key -= 1


def _bpf_enable_runtime_stats(kern, task) -> int:
    """bpf_enable_runtime_stats(): a new "bpf-stats" fd; the key stays on while it is open."""
    if kern.bpf_stats_enabled_key > INT_MAX // 2:
        raise KernelError(Errno.EBUSY, "stats enable count would overflow")
    fd = task.files.install(File(kind=STATS_FILE_KIND, private_data=None,
                                 f_flags=O_RDWR | O_CLOEXEC))
    f = task.files.lookup(fd)
    f.private_data = _BpfStats(kern)
    kern.bpf_stats_enabled_key += 1
    return fd


_ENABLE_STATS = {StatsType.RUN_TIME: _bpf_enable_runtime_stats}


@bpf_command(BpfCmd.ENABLE_STATS, last_field="enable_stats.type")
def bpf_enable_stats(kern, task, attr, ctx) -> int:
    """bpf_enable_stats(): CAP_SYS_ADMIN, then the stats type (only BPF_STATS_RUN_TIME)."""
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "ENABLE_STATS needs CAP_SYS_ADMIN")
    enable = _ENABLE_STATS.get(attr.enable_stats.type)
    if enable is None:
        raise KernelError(Errno.EINVAL, f"unknown stats type {attr.enable_stats.type}")
    return enable(kern, task)
