"""Batch map commands — kernel/bpf/syscall.c (bpf_map_do_batch).

MAP_LOOKUP_BATCH, MAP_LOOKUP_AND_DELETE_BATCH, MAP_UPDATE_BATCH and MAP_DELETE_BATCH share
one entry: CHECK_ATTR up to ``batch.flags``, the map fd, the read/write permission the
command needs (a frozen map is not writable), then the map type's own batch op
(``map_lookup_batch`` ...); a type without that op answers ENOTSUPP.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import FMode
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.fdget import bpf_map_get
from uapi.bpf import BpfCmd

__all__ = ["map_lookup_batch", "map_lookup_and_delete_batch", "map_update_batch", "map_delete_batch"]

_CAN_READ, _CAN_WRITE = int(FMode.READ), int(FMode.WRITE)


def _bpf_map_do_batch(task, attr, ctx, op: str, has_read: bool, has_write: bool) -> int:
    f, m = bpf_map_get(task, attr.batch.map_fd)
    perms = int(f.f_mode) & ~(_CAN_WRITE if m.frozen else 0)   # map_get_sys_perms()
    if has_read and not perms & _CAN_READ:
        raise KernelError(Errno.EPERM, "map fd not readable")
    if has_write and not perms & _CAN_WRITE:
        raise KernelError(Errno.EPERM, "map fd not writable (or map frozen)")
    fn = getattr(m, op)
    if fn is None:
        raise KernelError(Errno.ENOTSUPP, f"{op} not supported by this map type")
    return fn(task, attr, ctx)


@bpf_command(BpfCmd.MAP_LOOKUP_BATCH, last_field="batch.flags")
def map_lookup_batch(kern, task, attr, ctx) -> int:
    return _bpf_map_do_batch(task, attr, ctx, "map_lookup_batch", True, False)


@bpf_command(BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH, last_field="batch.flags")
def map_lookup_and_delete_batch(kern, task, attr, ctx) -> int:
    return _bpf_map_do_batch(task, attr, ctx, "map_lookup_and_delete_batch", True, True)


@bpf_command(BpfCmd.MAP_UPDATE_BATCH, last_field="batch.flags")
def map_update_batch(kern, task, attr, ctx) -> int:
    return _bpf_map_do_batch(task, attr, ctx, "map_update_batch", False, True)


@bpf_command(BpfCmd.MAP_DELETE_BATCH, last_field="batch.flags")
def map_delete_batch(kern, task, attr, ctx) -> int:
    return _bpf_map_do_batch(task, attr, ctx, "map_delete_batch", False, True)
