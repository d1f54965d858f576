"""Socket storage — net/core/bpf_sk_storage.c (sk_storage_map_ops, bpf_sk_storage_clone,
bpf_sk_storage_charge, bpf_sk_storage_get/delete).

BPF_MAP_TYPE_SK_STORAGE: the syscall key is a socket fd (``sockfd_lookup``: EBADF / ENOTSOCK);
every socket keeps its elements in ``Socket.sk_bpf_storage`` and they go when it closes.  Each
element is charged to the socket's option memory (sk_omem_alloc) and an update that would
pass net.core.optmem_max is ENOMEM.  Elements of BPF_F_CLONE maps are copied to the sockets a
TCP listener accepts (`bpf_sk_storage_clone`, called from the connection's creation).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.bpf_local_storage import SELEM_SIZE, LocalStorageElem, LocalStorageMap
from fakekernel.net.socket import sockfd_lookup
from uapi.bpf import MapFlags, UpdateFlags

__all__ = ["SkStorageMap", "bpf_sk_storage_clone", "OPTMEM_MAX"]

OPTMEM_MAX = 131072             # net.core.optmem_max default
# sizeof(struct bpf_local_storage) on x86_64 6.18, charged with a socket's first element
LOCAL_STORAGE_SIZE = 64
_F_LOCK = int(UpdateFlags.F_LOCK)
_NOT_F_LOCK = ~_F_LOCK
_EXIST = int(UpdateFlags.EXIST)


@attrs.define(eq=False)
class SkStorageMap(LocalStorageMap):
    """sk_storage_map_ops."""

    def owner_from_fd(self, task, fd: int):
        """sockfd_lookup()."""
        return sockfd_lookup(task, fd)

    def owner_storage(self, owner) -> dict | None:
        """bpf_sk_storage_ptr(): &sk->sk_bpf_storage (test runs' dummy socks keep theirs in
        the socket table's side table)."""
        storage = getattr(owner, "sk_bpf_storage", None)
        if storage is None:
            storage = self.kern.world.net.socktab.dummy_storage(owner)
        return storage

    def local_storage_update(self, owner, value, flags):
        """bpf_local_storage_update(): a new element is allocated (and charged to the socket)
        before the old one is looked up, so ENOMEM can win over EEXIST; the socket's first
        element also charges the storage header."""
        storage = self.owner_storage(owner)
        if flags & _NOT_F_LOCK > _EXIST or flags & _F_LOCK:
            return super().local_storage_update(owner, value, flags)   # its EINVAL
        if not storage and flags & _NOT_F_LOCK == _EXIST:
            raise KernelError(Errno.ENOENT, "no element to update")
        omem = _omem(storage)
        if not _charge_ok(omem, self.elem_size):
            raise KernelError(Errno.ENOMEM, "socket option memory exhausted (element)")
        if not storage and not _charge_ok(omem + self.elem_size, LOCAL_STORAGE_SIZE):
            raise KernelError(Errno.ENOMEM, "socket option memory exhausted (storage)")
        return super().local_storage_update(owner, value, flags)

    @property
    def elem_size(self) -> int:
        """smap->elem_size: the element header and the value."""
        return SELEM_SIZE + self.value_size


def _charge_ok(omem: int, size: int) -> bool:
    """bpf_sk_storage_charge()."""
    return size <= OPTMEM_MAX and omem + size < OPTMEM_MAX


def _omem(storage: dict | None) -> int:
    """sk_omem_alloc taken by a socket's storages."""
    if not storage:
        return 0
    return LOCAL_STORAGE_SIZE + sum(m.elem_size for m in storage)


def bpf_sk_storage_clone(sk, newsk) -> None:
    """bpf_sk_storage_clone(): BPF_F_CLONE maps' elements follow the listener to `newsk`."""
    for smap, elem in list(sk.sk_bpf_storage.items()):
        if not smap.map_flags & MapFlags.CLONE or smap.freed:
            continue
        copy = LocalStorageElem(newsk, bytearray(elem.data))
        newsk.sk_bpf_storage[smap] = copy
        smap.selems[newsk] = copy
