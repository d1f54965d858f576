"""Socket maps — net/core/sock_map.c (sock_map_ops, sock_hash_ops) and the psock links of
net/core/skmsg.c.

BPF_MAP_TYPE_SOCKMAP is an array of sockets, BPF_MAP_TYPE_SOCKHASH a hash table of them
(jhash with seed 0, head insertion: GET_NEXT_KEY walks buckets in the kernel's order).
Userspace stores a socket *fd* (a u32 or u64 value); what may go in is decided as
sock_map_update_elem_sys() does: the fd must name a socket (EBADF / ENOTSOCK), its protocol
must have a sockmap proto (TCP, UDP, unix stream/dgram — else EOPNOTSUPP), and it must be
in a usable state (TCP established or listening, UDP hashed, unix stream established —
else EOPNOTSUPP).  A lookup answers the socket's cookie when the value is 8 bytes wide and
ENOSPC when it is 4.

A socket in a map carries a psock (`SkPsock`, sk_user_data) with one link per map slot
holding it; closing the socket (sock_map_close) removes it from every map — a reset TCP
connection stays (6.18's tcp/udp bpf protos have no unhash hook) — and the psock goes with
its last link.  A socket whose sk_user_data is taken (by a reuseport array) cannot get a
psock (EBUSY).

Programs attached to the map (PROG_ATTACH of SK_SKB / SK_MSG) are in sock_map_progs.py.
Not modelled: the program-side lookup and update (they pass socket pointers the emulated
verifier does not model yet: HelperNotImplemented at run time).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import TOTALRAM, map_fields_from_attr
from fakekernel.maps.jhash import jhash
from fakekernel.maps.sock_map_progs import (SkPsock, SkPsockProgs, sk_psock_put, sock_map_link,
                                            sock_map_unref)
from fakekernel.net.socket import TcpState, sockfd_lookup
from uapi.bpf import FuncId, MapFlags, UpdateFlags
from uapi.ffi import ffi

__all__ = ["SockMap", "SockHash", "SkPsock", "sock_map_sk_state_allowed"]

U32_SIZE = ffi.sizeof("__u32")
U64_SIZE = ffi.sizeof("__u64")
S32_MAX = (1 << 31) - 1
MAX_BPF_STACK = 512
SOCK_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | MapFlags.RDONLY | MapFlags.WRONLY
_PTR_SIZE = 8                          # sizeof(struct sock *)
_BUCKET_SIZE = 16                      # sizeof(struct bpf_shtab_bucket) on x86_64
# x86_64 6.18 struct sizes, measured through fdinfo memlock (sock_*_mem_usage)
BPF_STAB_SIZE = 376                    # sizeof(struct bpf_stab)
BPF_SHTAB_SIZE = 384                   # sizeof(struct bpf_shtab)
SHTAB_ELEM_SIZE = 48                   # sizeof(struct bpf_shtab_elem) before its key
_KEY_ALIGN = 8
_U32_MAX = (1 << 32) - 1
_EXIST = int(UpdateFlags.EXIST)
_NOEXIST = int(UpdateFlags.NOEXIST)


def sock_map_sk_state_allowed(sk) -> bool:
    """sock_map_sk_state_allowed()."""
    if sk.sk_is_tcp():
        return sk.state in (TcpState.ESTABLISHED, TcpState.LISTEN)
    if sk.sk_is_udp():
        return sk.sk_hashed()
    if sk.sk_is_stream_unix():
        return sk.state == TcpState.ESTABLISHED
    return True


class _SlotRef:
    """&stab->sks[idx]: what a sockmap link points at (compared by identity)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


@attrs.define(eq=False)
class _SockMapBase(BpfMap):
    """What SOCKMAP and SOCKHASH share."""

    progs: SkPsockProgs = attrs.field(factory=SkPsockProgs)   # attached SK_SKB/SK_MSG progs

    map_meta_equal = staticmethod(bpf_map_meta_equal)

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    def map_release_uref(self) -> None:
        """sock_map_release_progs() / sock_hash_release_progs()."""
        self.progs.drop()

    @classmethod
    def _check_common(cls, attr) -> None:
        if (attr.max_entries == 0 or attr.value_size not in (U32_SIZE, U64_SIZE)
                or attr.map_flags & ~int(SOCK_CREATE_FLAG_MASK)):
            raise KernelError(Errno.EINVAL, "bad socket map attributes")

    # ---- syscall side ----
    def sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """sock_map_update_elem_sys()."""
        width = U64_SIZE if self.value_size == U64_SIZE else U32_SIZE
        ufd = int.from_bytes(value[:width], "little")
        if ufd > S32_MAX:
            raise KernelError(Errno.EINVAL, "fd out of range")
        sk = sockfd_lookup(self.kern.current, ufd)
        if not sk.psock_update_sk_prot:
            raise KernelError(Errno.EOPNOTSUPP, "this protocol cannot be in a socket map")
        if not sock_map_sk_state_allowed(sk):
            raise KernelError(Errno.EOPNOTSUPP, "socket not in a state a socket map accepts")
        self.update_common(key, sk, flags)

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """sock_map_lookup_sys() / sock_hash_lookup_sys(): the socket's cookie."""
        if self.value_size != U64_SIZE:
            raise KernelError(Errno.ENOSPC, "a cookie needs an 8-byte value")
        sk = self.lookup_sk(key)
        if sk is None:
            raise KernelError(Errno.ENOENT, "no socket there")
        return sk.sock_gen_cookie().to_bytes(U64_SIZE, "little")

    def map_lookup_elem(self, key: bytes) -> int:
        """Program-side lookup: a socket pointer (PTR_TO_SOCKET), which the emulated verifier
        and interpreter do not model yet — an emulator gap, not a NULL."""
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(FuncId.map_lookup_elem)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """The program-side update takes a socket pointer (sock_map_update_elem): not
        modelled yet (an emulator gap)."""
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(FuncId.map_update_elem)

    def sockets(self) -> list:
        """The sockets the map holds (for helpers and tests)."""
        raise NotImplementedError


@attrs.define(eq=False)
class SockMap(_SockMapBase):
    """BPF_MAP_TYPE_SOCKMAP — sock_map_ops."""

    sks: dict = attrs.field(factory=dict)        # index -> socket
    slots: dict = attrs.field(factory=dict)      # index -> _SlotRef of the current occupant

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "SockMap":
        """sock_map_alloc()."""
        if attr.key_size != U32_SIZE:
            raise KernelError(Errno.EINVAL, "sockmap keys are u32")
        cls._check_common(attr)
        if attr.max_entries * _PTR_SIZE > TOTALRAM:
            raise KernelError(Errno.ENOMEM, "sockmap slots do not fit in memory")
        m = cls(**map_fields_from_attr(kern, attr))
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """sock_map_mem_usage()."""
        return BPF_STAB_SIZE + self.max_entries * _PTR_SIZE

    def map_free(self) -> None:
        """sock_map_free(): every socket leaves."""
        for index in sorted(self.sks):
            self._delete(index, None)

    def lookup_sk(self, key: bytes):
        """__sock_map_lookup_elem()."""
        return self.sks.get(int.from_bytes(key[:U32_SIZE], "little"))

    def sockets(self) -> list:
        return [self.sks[i] for i in sorted(self.sks)]

    def _delete(self, index: int, sk_test) -> None:
        """__sock_map_delete()."""
        sk = self.sks.get(index)
        if sk is None or (sk_test is not None and sk_test is not sk):
            raise KernelError(Errno.EINVAL, "slot is empty")
        del self.sks[index]
        sock_map_unref(sk, self, self.slots.pop(index))

    def sock_map_delete_from_link(self, sk, raw: _SlotRef) -> None:
        if self.slots.get(raw.index) is raw:
            try:
                self._delete(raw.index, sk)
            except KernelError:
                pass

    def map_delete_elem(self, key: bytes) -> None:
        """sock_map_delete_elem(): EINVAL (not ENOENT) for an empty or out-of-range slot."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        if index >= self.max_entries:
            raise KernelError(Errno.EINVAL, "index past max_entries")
        self._delete(index, None)

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """sock_map_get_next_key()."""
        i = int.from_bytes(key[:U32_SIZE], "little") if key is not None else _U32_MAX
        if i == self.max_entries - 1:
            raise KernelError(Errno.ENOENT, "last index")
        nxt = 0 if i >= self.max_entries else i + 1
        return nxt.to_bytes(U32_SIZE, "little")

    def update_common(self, key: bytes, sk, flags: int) -> None:
        """sock_map_update_common()."""
        index = int.from_bytes(key[:U32_SIZE], "little")
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        if index >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        psock = sock_map_link(self, sk)
        osk = self.sks.get(index)
        if (osk is not None and flags == _NOEXIST) or (osk is None and flags == _EXIST):
            sk_psock_put(sk, psock)
            raise KernelError(Errno.EEXIST if osk is not None else Errno.ENOENT,
                              "slot occupancy does not match the flags")
        old_ref = self.slots.get(index)
        ref = _SlotRef(index)
        psock.links.append((self, ref))
        self.sks[index], self.slots[index] = sk, ref
        if osk is not None:
            sock_map_unref(osk, self, old_ref)


class _ShtabElem:
    """struct bpf_shtab_elem."""

    __slots__ = ("hash", "key", "sk")

    def __init__(self, hash_: int, key: bytes, sk):
        self.hash, self.key, self.sk = hash_, key, sk


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


@attrs.define(eq=False)
class SockHash(_SockMapBase):
    """BPF_MAP_TYPE_SOCKHASH — sock_hash_ops."""

    nbuckets: int = 1
    buckets: dict = attrs.field(factory=dict)    # bucket index -> [_ShtabElem], head first
    count: int = 0

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "SockHash":
        """sock_hash_alloc()."""
        if attr.key_size == 0:
            raise KernelError(Errno.EINVAL, "sockhash keys cannot be empty")
        cls._check_common(attr)
        if attr.key_size > MAX_BPF_STACK:
            raise KernelError(Errno.E2BIG, "key larger than the BPF stack")
        nbuckets = _roundup_pow_of_two(attr.max_entries) & _U32_MAX
        if nbuckets == 0 or nbuckets > _U32_MAX // _BUCKET_SIZE:
            raise KernelError(Errno.EINVAL, "too many buckets")
        m = cls(**map_fields_from_attr(kern, attr))
        m.nbuckets = nbuckets
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """sock_hash_mem_usage(): the table, its buckets and the elements in it."""
        elem_size = SHTAB_ELEM_SIZE + (self.key_size + _KEY_ALIGN - 1) // _KEY_ALIGN * _KEY_ALIGN
        return BPF_SHTAB_SIZE + self.nbuckets * _BUCKET_SIZE + self.count * elem_size

    def _set_count(self, delta: int) -> None:
        self.count += delta
        self.memlock = self.map_mem_usage()

    def _bucket(self, hash_: int) -> list:
        return self.buckets.setdefault(hash_ & (self.nbuckets - 1), [])

    def _find(self, key: bytes):
        h = jhash(bytes(key[:self.key_size]), 0)
        for elem in self._bucket(h):
            if elem.hash == h and elem.key == key[:self.key_size]:
                return h, elem
        return h, None

    def lookup_sk(self, key: bytes):
        _, elem = self._find(bytes(key))
        return elem.sk if elem is not None else None

    def sockets(self) -> list:
        return [e.sk for i in sorted(self.buckets) for e in self.buckets[i]]

    def _unlink(self, elem: _ShtabElem) -> None:
        self._bucket(elem.hash).remove(elem)
        self._set_count(-1)
        sock_map_unref(elem.sk, self, elem)

    def map_free(self) -> None:
        """sock_hash_free()."""
        for bucket in [self.buckets[i] for i in sorted(self.buckets)]:
            for elem in list(bucket):
                self._unlink(elem)

    def sock_map_delete_from_link(self, sk, raw: _ShtabElem) -> None:
        """sock_hash_delete_from_link()."""
        if any(e is raw for e in self._bucket(raw.hash)):
            self._unlink(raw)

    def map_delete_elem(self, key: bytes) -> None:
        """sock_hash_delete_elem()."""
        _, elem = self._find(bytes(key))
        if elem is None:
            raise KernelError(Errno.ENOENT, "no such key")
        self._unlink(elem)

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """sock_hash_get_next_key(): next in the bucket, else the first of a later bucket."""
        i = 0
        if key is not None:
            h, elem = self._find(bytes(key))
            if elem is not None:
                bucket = self._bucket(h)
                pos = bucket.index(elem)
                if pos + 1 < len(bucket):
                    return bucket[pos + 1].key
                i = (h & (self.nbuckets - 1)) + 1
        for j in sorted(self.buckets):
            if j >= i and self.buckets[j]:
                return self.buckets[j][0].key
        raise KernelError(Errno.ENOENT, "no next key")

    def update_common(self, key: bytes, sk, flags: int) -> None:
        """sock_hash_update_common()."""
        key = bytes(key[:self.key_size])
        if flags > _EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        psock = sock_map_link(self, sk)
        h, elem = self._find(key)
        err = None
        if elem is not None and flags == _NOEXIST:
            err = KernelError(Errno.EEXIST, "key exists")
        elif elem is None and flags == _EXIST:
            err = KernelError(Errno.ENOENT, "no such key")
        elif elem is None and self.count + 1 > self.max_entries:   # sock_hash_alloc_elem()
            err = KernelError(Errno.E2BIG, "sockhash is full")
        if err is not None:
            sk_psock_put(sk, psock)
            raise err
        if elem is None:
            self._set_count(1)
        new = _ShtabElem(h, key, sk)
        psock.links.append((self, new))
        self._bucket(h).insert(0, new)
        if elem is not None:
            self._bucket(h).remove(elem)
            sock_map_unref(elem.sk, self, elem)
