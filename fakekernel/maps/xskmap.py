"""AF_XDP socket maps — net/xdp/xskmap.c (xsk_map_ops).

BPF_MAP_TYPE_XSKMAP: an array of AF_XDP sockets (fakekernel.net.xsk), the targets of
bpf_redirect_map.  Userspace stores a socket *fd* (bound or not; any other socket is
EOPNOTSUPP, a non-socket ENOTSOCK) and cannot read a slot back (EOPNOTSUPP).  Each stored
slot is an `xsk_map_node` on the socket's map list that holds a reference on the *map*
(not on the socket): a map stays alive while sockets sit in it, and a closing socket
removes itself from every slot (xsk_map_try_sock_delete).  fdinfo memlock counts the nodes.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import TOTALRAM, array_get_next_key, map_fields_from_attr
from uapi.bpf import MapFlags, UpdateFlags
from uapi.ffi import ffi

__all__ = ["XskMap", "XSK_CREATE_FLAG_MASK"]

XSK_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | MapFlags.RDONLY | MapFlags.WRONLY
U32_SIZE = ffi.sizeof("__u32")
U32_MAX = 2**32 - 1
PTR_SIZE = ffi.sizeof("void *")
XSK_MAP_SIZE = 304              # struct xsk_map before xsk_map[] on x86_64 6.18 (fdinfo memlock)
XSK_MAP_NODE_SIZE = 32          # struct xsk_map_node (measured the same way)


def _u32(b: bytes) -> int:
    return int.from_bytes(b[:U32_SIZE], "little")


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@attrs.define(eq=False)
class XskMap(BpfMap):
    """BPF_MAP_TYPE_XSKMAP — xsk_map_ops."""

    xsk_map: dict = attrs.field(factory=dict)        # index -> XdpSock
    count: int = 0                                   # live xsk_map_nodes

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "XskMap":
        """xsk_map_alloc()."""
        if (attr.max_entries == 0 or attr.key_size != U32_SIZE or attr.value_size != U32_SIZE
                or attr.map_flags & ~int(XSK_CREATE_FLAG_MASK)):
            raise KernelError(Errno.EINVAL, "bad xskmap attributes")
        m = cls(**map_fields_from_attr(kern, attr))
        if XSK_MAP_SIZE + m.max_entries * PTR_SIZE > TOTALRAM:
            raise KernelError(Errno.ENOMEM, "xskmap too large")
        m._charge()
        return m

    def map_mem_usage(self) -> int:
        """xsk_map_mem_usage()."""
        return XSK_MAP_SIZE + self.max_entries * PTR_SIZE + self.count * XSK_MAP_NODE_SIZE

    def _charge(self) -> None:
        self.memlock = self.map_mem_usage()

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    @staticmethod
    def map_meta_equal(meta0, meta1) -> bool:
        """xsk_map_meta_equal(): inner xskmaps must also agree on max_entries."""
        return meta0.max_entries == meta1.max_entries and bpf_map_meta_equal(meta0, meta1)

    def map_free(self) -> None:
        """xsk_map_free(): every node holds a map reference, so the map is empty by now."""
        self.xsk_map.clear()

    # ---- the socket's map list (xsk_map_node_alloc / xsk_map_sock_add / _delete) ----
    def _node_add(self, xs, index: int) -> None:
        self.get()
        self.count += 1
        xs.map_list.append((self, index))
        self._charge()

    def _node_del(self, xs, index: int) -> None:
        xs.map_list.remove((self, index))
        self.count -= 1
        self._charge()
        self.put()

    def xsk_map_try_sock_delete(self, xs, index: int) -> None:
        """xsk_map_try_sock_delete(): a closing socket leaves the slot if it still holds it."""
        if self.xsk_map.get(index) is xs:
            del self.xsk_map[index]
        self._node_del(xs, index)

    # ---- element ops ----
    def lookup(self, index: int):
        """__xsk_map_lookup_elem()."""
        return self.xsk_map.get(index) if index < self.max_entries else None

    def map_lookup_elem(self, key: bytes) -> int:
        """xsk_map_lookup_elem(): programs get the socket (struct bpf_xdp_sock: queue_id)."""
        xs = self.lookup(_u32(key))
        return 0 if xs is None else xs.bpf_xdp_sock_addr(self.kern)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """xsk_map_lookup_elem_sys_only()."""
        raise KernelError(Errno.EOPNOTSUPP, "xskmap slots cannot be read from userspace")

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """xsk_map_update_elem()."""
        from fakekernel.net.socket import AF_XDP, sockfd_lookup
        i = _u32(key)
        if flags > UpdateFlags.EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        if i >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        xs = sockfd_lookup(self.kern.current, _s32(_u32(value)))
        if xs.family != AF_XDP:
            raise KernelError(Errno.EOPNOTSUPP, "not an AF_XDP socket")
        old = self.xsk_map.get(i)
        if old is xs:
            return
        if old is not None and flags == UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "slot in use")
        if old is None and flags == UpdateFlags.EXIST:
            raise KernelError(Errno.ENOENT, "slot empty")
        self._node_add(xs, i)
        self.xsk_map[i] = xs
        if old is not None:
            self._node_del(old, i)

    def map_delete_elem(self, key: bytes) -> None:
        """xsk_map_delete_elem()."""
        k = _u32(key)
        if k >= self.max_entries:
            raise KernelError(Errno.EINVAL, "index past max_entries")
        old = self.xsk_map.pop(k, None)
        if old is not None:
            self._node_del(old, k)

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """xsk_map_get_next_key(): array order."""
        return array_get_next_key(key, self.max_entries)

    def map_redirect(self, ctx, index: int, flags: int) -> int:
        """xsk_map_redirect(): no broadcast."""
        from fakekernel.helpers.redirect import bpf_xdp_redirect_map
        return bpf_xdp_redirect_map(ctx, self, index, flags, 0, self.lookup)

    map_lookup_batch = None
    map_lookup_and_delete_batch = None
    map_update_batch = None
    map_delete_batch = None
