"""Inode storage — kernel/bpf/bpf_inode_storage.c (+ security/bpf/hooks.c: the inode blob).

BPF_MAP_TYPE_INODE_STORAGE: the syscall key is any fd; the storage belongs to the fd's inode.
Storages live in the bpf LSM's inode blob (`BpfInodeBlob`), which exists only when the bpf
LSM is active (``Kernel.bpf_lsm_active``): without it lookup and delete find nothing
(ENOENT) and update is EBADF, as ``inode_storage_ptr()`` is NULL.

Which inode a `File` has (`file_inode`): every anon-inode file (bpf maps, progs, links, BTF,
stats fds) shares the kernel's one anon inode — measured: storage set through a map fd is
seen through a BTF fd; a cgroup or bpffs directory is its node's inode; a pidfd is its pid's
pidfs inode; any other file (ttys) has its own.
"""
from __future__ import annotations

import attrs

from fakekernel.btf import BTF_FILE_KIND
from fakekernel.cgroup import CGROUP_FILE_KIND
from fakekernel.maps.bpf_local_storage import LocalStorageMap
from fakekernel.pid import PIDFD_FILE_KIND
from fakekernel.syscall.fdget import LINK_FILE_KIND, MAP_FILE_KIND, PROG_FILE_KIND
from fakekernel.syscall.prog_aux_cmds import STATS_FILE_KIND

__all__ = ["InodeStorageMap", "BpfInodeBlob", "file_inode", "ANON_INODE_KINDS"]

ANON_INODE_KINDS = frozenset({MAP_FILE_KIND, PROG_FILE_KIND, LINK_FILE_KIND, BTF_FILE_KIND,
                              STATS_FILE_KIND})
_DIR_FILE_KIND = "dir"                      # fakekernel/bpffs.py: an opened bpffs directory


@attrs.define(eq=False)
class BpfInodeBlob:
    """struct bpf_storage_blob in an inode's i_security (the inode as a storage owner)."""

    bpf_storage: dict = attrs.field(factory=dict)


def _inode_identity(kern, f):
    if f.kind in ANON_INODE_KINDS:
        return kern
    if f.kind in (CGROUP_FILE_KIND, _DIR_FILE_KIND, PIDFD_FILE_KIND):
        return f.private_data
    return f


def file_inode(kern, f) -> BpfInodeBlob | None:
    """file_inode() + bpf_inode(): the inode's bpf blob, None without the bpf LSM."""
    if not kern.bpf_lsm_active:
        return None
    key = _inode_identity(kern, f)
    blob = kern.inode_blobs.get(key)
    if blob is None:
        blob = kern.inode_blobs[key] = BpfInodeBlob()
    return blob


@attrs.define(eq=False)
class InodeStorageMap(LocalStorageMap):
    """inode_storage_map_ops; an owner is a `BpfInodeBlob` or None (no blob)."""

    def owner_from_fd(self, task, fd: int):
        """fdget_raw(): EBADF for a closed fd; the owner may be None (no bpf blob)."""
        return file_inode(self.kern, task.files.fdget(fd))

    def owner_storage(self, owner) -> dict | None:
        """inode_storage_ptr(): NULL without a bpf blob."""
        return None if owner is None else owner.bpf_storage
