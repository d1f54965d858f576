"""Local storage helpers — kernel/bpf/bpf_task_storage.c (bpf_task_storage_get/delete),
kernel/bpf/bpf_inode_storage.c (bpf_inode_storage_get/delete), kernel/bpf/bpf_cgrp_storage.c
(bpf_cgrp_storage_get/delete) and kernel/bpf/cgroup.c (bpf_get_local_storage).

Runtime functions ``fn(env, r1..r5) -> int``; the map comes from ``env.mem.object_at(r1)``.
Owner pointers (a task, an inode, a cgroup: PTR_TO_BTF_ID) are object handles
(``env.mem.map_object(owner)``); 0 is NULL.  An inode pointer may be a `File` (its inode is
resolved as ``file_inode``) or a `BpfInodeBlob`.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from fakekernel.errors import Errno
from fakekernel.maps.cgroup_storage import CgroupStorageType
from uapi.bpf import BPF_LOCAL_STORAGE_GET_F_CREATE, FuncId

__all__ = ["LOCAL_STORAGE_RUNTIME", "LOCAL_STORAGE_PROTOS", "bpf_task_storage_get", "bpf_task_storage_delete",
           "bpf_inode_storage_get", "bpf_inode_storage_delete", "bpf_cgrp_storage_get",
           "bpf_cgrp_storage_delete", "bpf_get_local_storage", "bpf_get_current_task_btf"]

_NOT_CREATE = ~int(BPF_LOCAL_STORAGE_GET_F_CREATE)

# bpf_inode_storage_get_proto / bpf_inode_storage_delete_proto (offered by the LSM prog types'
# get_func_proto, kernel/bpf/bpf_lsm.c); the task and cgrp protos are in helpers/base.py
LOCAL_STORAGE_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.inode_storage_get, gpl_only=False, ret_type=RetType.PTR_TO_MAP_VALUE_OR_NULL,
              arg_types=(ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_OR_NULL,
                         ArgType.PTR_TO_MAP_VALUE_OR_NULL, ArgType.ANYTHING)),
    FuncProto(func=FuncId.inode_storage_delete, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=(ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_OR_NULL)),
)}


def _init_value(env, smap, addr: int) -> bytes | None:
    return env.mem.read(addr, smap.value_size) if addr else None


def _storage_get(env, r1, owner, r3, r4) -> int:
    smap = env.mem.object_at(r1)
    if r4 & _NOT_CREATE or owner is None:
        return 0
    return smap.storage_get(owner, _init_value(env, smap, r3), r4)


def _delete(env, r1, owner) -> int:
    """The map's storage_delete (0 / -errno) as r0."""
    ret = env.mem.object_at(r1).storage_delete(owner)
    return neg_errno(-ret) if ret else 0


def _task(env, addr: int):
    """A task pointer (None for NULL)."""
    if not addr:
        return None
    return env.mem.object_at(addr)


def bpf_task_storage_get(env, r1, r2, r3, r4, r5) -> int:
    """bpf_task_storage_get(map, task, value, flags)."""
    return _storage_get(env, r1, _task(env, r2), r3, r4)


def bpf_task_storage_delete(env, r1, r2, r3, r4, r5) -> int:
    task = _task(env, r2)
    if task is None:
        return neg_errno(Errno.EINVAL)
    return _delete(env, r1, task)


def _inode(env, addr: int):
    from fakekernel.maps.inode_storage import BpfInodeBlob, file_inode   # maps -> btf -> helpers
    obj = env.mem.object_at(addr)
    if isinstance(obj, BpfInodeBlob):
        return obj
    return file_inode(env.kernel, obj)


def bpf_inode_storage_get(env, r1, r2, r3, r4, r5) -> int:
    """bpf_inode_storage_get(): NULL for unknown flags, a NULL inode or one without a bpf blob."""
    if r4 & _NOT_CREATE or not r2:
        return 0
    blob = _inode(env, r2)
    if blob is None:
        return 0
    return _storage_get(env, r1, blob, r3, r4)


def bpf_inode_storage_delete(env, r1, r2, r3, r4, r5) -> int:
    if not r2:
        return neg_errno(Errno.EINVAL)
    blob = _inode(env, r2)
    if blob is None:
        return neg_errno(Errno.ENOENT)
    return _delete(env, r1, blob)


def bpf_cgrp_storage_get(env, r1, r2, r3, r4, r5) -> int:
    """bpf_cgrp_storage_get(map, cgroup, value, flags)."""
    return _storage_get(env, r1, env.mem.object_at(r2) if r2 else None, r3, r4)


def bpf_cgrp_storage_delete(env, r1, r2, r3, r4, r5) -> int:
    if not r2:
        return neg_errno(Errno.EINVAL)
    return _delete(env, r1, env.mem.object_at(r2))


def bpf_get_current_task_btf(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_current_task_btf() (kernel/trace/bpf_trace.c): the current task as an object
    handle — what the task storage helpers take.  (Lives here until trace helpers grow
    dereferenceable task_structs; fields of it cannot be loaded.)"""
    return env.mem.map_object(env.kernel.current)


def bpf_get_local_storage(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_local_storage(map, flags): the running item's storage for the map's type (this
    CPU's copy for a per-CPU storage).  The verifier guarantees a cgroup storage map and
    flags == 0; the run context has the storages of the prog item (by kind, not by map)."""
    smap = env.mem.object_at(r1)
    ctx = env.kernel.current.bpf_ctx
    storage = ctx.cgroup_storage.get(smap.STYPE) if ctx is not None else None
    if storage is None:         # (a link updated to a prog using the other kind: NULL)
        return 0
    cpu = env.cpu if smap.STYPE == CgroupStorageType.PERCPU else 0
    return storage.addr(cpu)


LOCAL_STORAGE_RUNTIME = {
    FuncId.task_storage_get: bpf_task_storage_get,
    FuncId.task_storage_delete: bpf_task_storage_delete,
    FuncId.inode_storage_get: bpf_inode_storage_get,
    FuncId.inode_storage_delete: bpf_inode_storage_delete,
    FuncId.cgrp_storage_get: bpf_cgrp_storage_get,
    FuncId.cgrp_storage_delete: bpf_cgrp_storage_delete,
    FuncId.get_local_storage: bpf_get_local_storage,
    FuncId.get_current_task_btf: bpf_get_current_task_btf,
}
