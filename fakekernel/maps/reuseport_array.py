"""Reuseport socket arrays — kernel/bpf/reuseport_array.c (reuseport_array_ops).

BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: an array of SO_REUSEPORT sockets for SK_REUSEPORT
programs' bpf_sk_select_reuseport().  Userspace stores a socket fd (u32 or u64 value).
The socket must be TCP or UDP over IPv4/IPv6 (else ENOTSUPP), hashed (a TCP listener or a
bound UDP socket) with SO_REUSEPORT set (else EINVAL), and not already held through its
sk_user_data — by another reuseport slot or a sockmap psock (EBUSY).  A lookup answers the
socket's cookie (ENOSPC for 4-byte values).  The slot is emptied when the socket closes
(bpf_sk_reuseport_detach) or the map is freed.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.arraymap import ArrayMap
from fakekernel.maps.common import TOTALRAM, map_fields_from_attr
from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.net.af_inet import IPPROTO_TCP, IPPROTO_UDP
from fakekernel.net.socket import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM, sockfd_lookup
from uapi.bpf import FuncId, UpdateFlags
from uapi.ffi import ffi

__all__ = ["ReuseportArrayMap"]

U32_SIZE = ffi.sizeof("__u32")
U64_SIZE = ffi.sizeof("__u64")
S32_MAX = (1 << 31) - 1
_U32_MAX = (1 << 32) - 1
_PTR_SIZE = 8
REUSEPORT_ARRAY_SIZE = 296          # sizeof(struct reuseport_array) on x86_64 6.18 (fdinfo memlock)
_EXIST = int(UpdateFlags.EXIST)
_NOEXIST = int(UpdateFlags.NOEXIST)


def _index(key: bytes) -> int:
    return int.from_bytes(key[:U32_SIZE], "little")


@attrs.define(eq=False)
class _ReuseportSlot:
    """sk_user_data of a socket in the array: &array->ptrs[index]."""

    array: "ReuseportArrayMap"
    index: int

    def bpf_sk_reuseport_detach(self, sk) -> None:
        """bpf_sk_reuseport_detach(): the socket is closing."""
        if sk.user_data is self:
            sk.user_data = None
        if self.array.ptrs.get(self.index) is sk:
            del self.array.ptrs[self.index]


@attrs.define(eq=False)
class ReuseportArrayMap(BpfMap):
    """struct reuseport_array."""

    ptrs: dict = attrs.field(factory=dict)        # index -> socket

    map_meta_equal = staticmethod(bpf_map_meta_equal)

    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """reuseport_array_alloc_check(), then array_map_alloc_check()."""
        if attr.value_size not in (U32_SIZE, U64_SIZE):
            raise KernelError(Errno.EINVAL, "reuseport arrays hold u32/u64 fds")
        ArrayMap.map_alloc_check(attr, task)

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "ReuseportArrayMap":
        """reuseport_array_alloc()."""
        if attr.max_entries * _PTR_SIZE > TOTALRAM:
            raise KernelError(Errno.ENOMEM, "reuseport array does not fit in memory")
        m = cls(**map_fields_from_attr(kern, attr))
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """reuseport_array_mem_usage()."""
        return REUSEPORT_ARRAY_SIZE + self.max_entries * _PTR_SIZE

    def map_free(self) -> None:
        """reuseport_array_free(): every socket's sk_user_data is cleared."""
        for index in sorted(self.ptrs):
            sk = self.ptrs.pop(index)
            sk.user_data = None

    # ---- element ops ----
    def lookup_sk(self, key: bytes):
        """reuseport_array_lookup_elem()."""
        return self.ptrs.get(_index(key))

    def map_lookup_elem(self, key: bytes) -> int:
        """Program-side lookup: a socket pointer (PTR_TO_SOCKET), which the emulated verifier
        and interpreter do not model yet — an emulator gap, not a NULL."""
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(FuncId.map_lookup_elem)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_fd_reuseport_array_lookup_elem()."""
        if self.value_size != U64_SIZE:
            raise KernelError(Errno.ENOSPC, "a cookie needs an 8-byte value")
        sk = self.lookup_sk(key)
        if sk is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        return sk.sock_gen_cookie().to_bytes(U64_SIZE, "little")

    def map_delete_elem(self, key: bytes) -> None:
        """reuseport_array_delete_elem()."""
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        sk = self.ptrs.pop(index, None)
        if sk is None:
            raise KernelError(Errno.ENOENT, "slot is empty")
        sk.user_data = None

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """reuseport_array_get_next_key()."""
        index = _index(key) if key is not None else _U32_MAX
        if index >= self.max_entries:
            return bytes(U32_SIZE)
        if index == self.max_entries - 1:
            raise KernelError(Errno.ENOENT, "last index")
        return (index + 1).to_bytes(U32_SIZE, "little")

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "programs cannot update reuseport arrays")

    @staticmethod
    def _update_check(nsk, osk, flags: int) -> None:
        """reuseport_array_update_check()."""
        if osk is not None and flags == _NOEXIST:
            raise KernelError(Errno.EEXIST, "slot is taken")
        if osk is None and flags == _EXIST:
            raise KernelError(Errno.ENOENT, "slot is empty")
        if nsk.protocol not in (IPPROTO_UDP, IPPROTO_TCP) or \
                nsk.family not in (AF_INET, AF_INET6) or nsk.type not in (SOCK_STREAM, SOCK_DGRAM):
            raise KernelError(Errno.ENOTSUPP, "only TCP/UDP inet sockets")
        if not nsk.sk_hashed() or not getattr(nsk, "reuseport_cb", False):
            raise KernelError(Errno.EINVAL, "socket is not a hashed SO_REUSEPORT socket")
        if nsk.user_data is not None:
            raise KernelError(Errno.EBUSY, "sk_user_data is taken")

    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_reuseport_array_update_elem()."""
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        index = _index(key)
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        if self.value_size == U64_SIZE:
            fd = int.from_bytes(value[:U64_SIZE], "little")
            if fd > S32_MAX:
                raise KernelError(Errno.EINVAL, "fd out of range")
        else:
            fd = int.from_bytes(value[:U32_SIZE], "little", signed=True)
        nsk = sockfd_lookup(self.kern.current, fd)
        osk = self.ptrs.get(index)
        self._update_check(nsk, osk, flags)
        nsk.user_data = _ReuseportSlot(self, index)
        self.ptrs[index] = nsk
        if osk is not None and osk is not nsk:
            osk.user_data = None
