"""Longest-prefix-match trie maps — kernel/bpf/lpm_trie.c.

BPF_MAP_TYPE_LPM_TRIE: keys are ``struct bpf_lpm_trie_key_u8`` (a u32 ``prefixlen`` then
``data_size = key_size - 4`` bytes, most significant bit first).  The trie is the kernel's
binary path-compressed one: every node holds a prefix; nodes that only join two subtrees
are *intermediate* (no value, not counted, never returned).  Lookups return the value of
the longest stored prefix covering the key's first ``prefixlen`` bits; updates and
deletes are exact; GET_NEXT_KEY walks the trie in the kernel's post-order (children,
0 before 1, then the node itself), restarting at the leftmost leaf for a missing key.
BPF_F_NO_PREALLOC is mandatory; a full trie refuses new prefixes with ENOSPC.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.batch import (generic_map_delete_batch, generic_map_lookup_batch,
                                   generic_map_update_batch)
from fakekernel.maps.common import BPF_F_ACCESS_MASK, bpf_map_flags_access_ok, map_fields_from_attr
from uapi.bpf import MapFlags, UpdateFlags
from uapi.ffi import ffi

__all__ = ["LpmTrieMap", "LPM_CREATE_FLAG_MASK"]

LPM_CREATE_FLAG_MASK = MapFlags.NO_PREALLOC | MapFlags.NUMA_NODE | BPF_F_ACCESS_MASK
KMALLOC_MAX_SIZE = 1 << 22                  # x86_64: PAGE_SIZE << MAX_PAGE_ORDER
LPM_KEY_HDR = ffi.offsetof("struct bpf_lpm_trie_key_u8", "data")
LPM_DATA_SIZE_MAX = 256
LPM_DATA_SIZE_MIN = 1
# sizeof(struct lpm_trie_node) on x86_64 6.18 (measured: the largest accepted value_size
# is KMALLOC_MAX_SIZE - 256 - 24; fdinfo memlock is n_entries * (24 + data + value))
LPM_TRIE_NODE_SIZE = 24
LPM_VAL_SIZE_MAX = KMALLOC_MAX_SIZE - LPM_DATA_SIZE_MAX - LPM_TRIE_NODE_SIZE
LPM_VAL_SIZE_MIN = 1
LPM_KEY_SIZE_MAX = LPM_KEY_HDR + LPM_DATA_SIZE_MAX
LPM_KEY_SIZE_MIN = LPM_KEY_HDR + LPM_DATA_SIZE_MIN


class _Node:
    """struct lpm_trie_node: `value` is None for intermediate nodes."""

    __slots__ = ("prefixlen", "data", "value", "child", "region")

    def __init__(self, prefixlen: int, data: bytes, value: bytearray | None):
        self.prefixlen = prefixlen
        self.data = data
        self.value = value
        self.child: list[_Node | None] = [None, None]
        self.region = None

    @property
    def intermediate(self) -> bool:
        return self.value is None


def _extract_bit(data: bytes, index: int) -> int:
    return data[index >> 3] >> (7 - (index & 7)) & 1


@attrs.define(eq=False)
class LpmTrieMap(BpfMap):
    """BPF_MAP_TYPE_LPM_TRIE — trie_map_ops."""

    root: object = None
    n_entries: int = 0
    data_size: int = 0
    max_prefixlen: int = 0

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "LpmTrieMap":
        """trie_alloc()."""
        if (attr.max_entries == 0 or not attr.map_flags & MapFlags.NO_PREALLOC
                or attr.map_flags & ~int(LPM_CREATE_FLAG_MASK)
                or not bpf_map_flags_access_ok(attr.map_flags)
                or not LPM_KEY_SIZE_MIN <= attr.key_size <= LPM_KEY_SIZE_MAX
                or not LPM_VAL_SIZE_MIN <= attr.value_size <= LPM_VAL_SIZE_MAX):
            raise KernelError(Errno.EINVAL, "bad LPM trie attributes")
        data_size = attr.key_size - LPM_KEY_HDR
        return cls(**map_fields_from_attr(kern, attr), data_size=data_size, max_prefixlen=data_size * 8)

    def map_mem_usage(self) -> int:
        """trie_mem_usage(): only the stored prefixes count."""
        return (LPM_TRIE_NODE_SIZE + self.data_size + self.value_size) * self.n_entries

    def _count(self, delta: int) -> None:
        self.n_entries += delta
        self.memlock = self.map_mem_usage()

    def map_free(self) -> None:
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node is not None:
                self._unmap(node)
                stack.extend(node.child)
        self.root = None

    # ---- helpers ----
    def _split_key(self, key: bytes) -> tuple[int, bytes]:
        return int.from_bytes(key[:LPM_KEY_HDR], "little"), bytes(key[LPM_KEY_HDR:LPM_KEY_HDR + self.data_size])

    def _match(self, node: _Node, prefixlen: int, data: bytes) -> int:
        """longest_prefix_match(): common leading bits, at most min(node, key) prefixlen."""
        limit = min(node.prefixlen, prefixlen)
        diff = int.from_bytes(node.data, "big") ^ int.from_bytes(data, "big")
        common = self.max_prefixlen - diff.bit_length()
        return min(common, limit)

    def _unmap(self, node: _Node) -> None:
        if node.region is not None:
            self.kern.mem.unmap(node.region)
            node.region = None

    def _value_addr(self, node: _Node) -> int:
        if node.region is None:
            node.region = self.kern.mem.map_region(node.value, "map_value",
                                                   f"lpm_trie:{self.name.decode(errors='replace')}")
        return node.region.base

    def _find(self, prefixlen: int, data: bytes) -> _Node | None:
        """trie_lookup_elem()'s walk: the longest non-intermediate match."""
        if prefixlen > self.max_prefixlen:
            return None
        found, node = None, self.root
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if matchlen == self.max_prefixlen:
                return node
            if matchlen < node.prefixlen:
                break
            if not node.intermediate:
                found = node
            node = node.child[_extract_bit(data, node.prefixlen)]
        return found

    def _check_add_elem(self, flags: int) -> None:
        """trie_check_add_elem()."""
        if flags == UpdateFlags.EXIST:
            raise KernelError(Errno.ENOENT, "BPF_EXIST for a prefix not in the trie")
        if self.n_entries == self.max_entries:
            raise KernelError(Errno.ENOSPC, "LPM trie full")
        self._count(1)

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        node = self._find(*self._split_key(key))
        return 0 if node is None else self._value_addr(node)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """trie_update_elem()."""
        if flags > UpdateFlags.EXIST:
            raise KernelError(Errno.EINVAL, "unknown update flags")
        prefixlen, data = self._split_key(key)
        if prefixlen > self.max_prefixlen:
            raise KernelError(Errno.EINVAL, "prefixlen larger than the key's data")
        new = _Node(prefixlen, data, bytearray(value[:self.value_size]))
        parent, side, node, matchlen = None, 0, self.root, 0
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if (node.prefixlen != matchlen or node.prefixlen == prefixlen
                    or node.prefixlen == self.max_prefixlen):
                break
            parent, side = node, _extract_bit(data, node.prefixlen)
            node = node.child[side]

        def put(n: _Node) -> None:
            if parent is None:
                self.root = n
            else:
                parent.child[side] = n

        if node is None:
            self._check_add_elem(flags)
            put(new)
            return
        if node.prefixlen == matchlen:          # same prefix: replace the node
            if not node.intermediate:
                if flags == UpdateFlags.NOEXIST:
                    raise KernelError(Errno.EEXIST, "prefix already in the trie")
            else:
                self._check_add_elem(flags)
            new.child = list(node.child)
            self._unmap(node)
            put(new)
            return
        self._check_add_elem(flags)
        if matchlen == prefixlen:               # the new prefix covers the node
            new.child[_extract_bit(node.data, matchlen)] = node
            put(new)
            return
        im = _Node(matchlen, node.data, None)   # join both under an intermediate node
        if _extract_bit(data, matchlen):
            im.child = [node, new]
        else:
            im.child = [new, node]
        put(im)

    def map_delete_elem(self, key: bytes) -> None:
        """trie_delete_elem()."""
        prefixlen, data = self._split_key(key)
        if prefixlen > self.max_prefixlen:
            raise KernelError(Errno.EINVAL, "prefixlen larger than the key's data")
        grand, gside = None, 0                  # holder of the slot pointing at `parent`
        parent, side, node, matchlen = None, 0, self.root, 0
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                break
            grand, gside = parent, side
            parent, side = node, _extract_bit(data, node.prefixlen)
            node = node.child[side]
        if node is None or node.prefixlen != prefixlen or node.prefixlen != matchlen or node.intermediate:
            raise KernelError(Errno.ENOENT, "prefix not in the trie")
        self._count(-1)
        if node.child[0] is not None and node.child[1] is not None:
            self._unmap(node)
            node.value = None                   # becomes an intermediate node
            return
        if parent is not None and parent.intermediate and node.child == [None, None]:
            other = parent.child[1] if parent.child[0] is node else parent.child[0]
            if grand is None:
                self.root = other
            else:
                grand.child[gside] = other
            self._unmap(node)
            return
        repl = node.child[0] if node.child[0] is not None else node.child[1]
        if parent is None:
            self.root = repl
        else:
            parent.child[side] = repl
        self._unmap(node)

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """trie_get_next_key(): post-order; a missing key restarts at the leftmost node."""
        search_root = self.root
        if search_root is None:
            raise KernelError(Errno.ENOENT, "empty trie")
        nxt = None
        prefixlen, data = self._split_key(key) if key is not None else (0, b"")
        if key is not None and prefixlen <= self.max_prefixlen:
            stack, node, matchlen = [], search_root, 0
            while node is not None:
                stack.append(node)
                matchlen = self._match(node, prefixlen, data)
                if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                    break
                node = node.child[_extract_bit(data, node.prefixlen)]
            if node is not None and node.prefixlen == matchlen and not node.intermediate:
                node = stack[-1]
                search_root = None
                while len(stack) > 1:
                    parent = stack[-2]
                    if parent.child[0] is node and parent.child[1] is not None:
                        search_root = parent.child[1]
                        break
                    if not parent.intermediate:
                        nxt = parent
                        break
                    node = parent
                    stack.pop()
                if search_root is None and nxt is None:
                    raise KernelError(Errno.ENOENT, "last prefix")
        if nxt is None:
            node = search_root
            while node is not None:             # find_leftmost
                if node.intermediate:
                    node = node.child[0]
                else:
                    nxt = node
                    node = node.child[0] if node.child[0] is not None else node.child[1]
        return nxt.prefixlen.to_bytes(LPM_KEY_HDR, "little") + nxt.data

    # ---- syscall side ----
    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        node = self._find(*self._split_key(key))
        if node is None:
            raise KernelError(Errno.ENOENT, "no prefix matches")
        return bytes(node.value)

    map_lookup_batch = generic_map_lookup_batch
    map_update_batch = generic_map_update_batch
    map_delete_batch = generic_map_delete_batch
