"""Device maps — kernel/bpf/devmap.c (dev_map_ops, dev_map_hash_ops).

BPF_MAP_TYPE_DEVMAP is an array and BPF_MAP_TYPE_DEVMAP_HASH a hash table (keyed by any
u32, usually an ifindex) of `struct bpf_devmap_val`: a netdev ifindex and, with an 8-byte
value, the fd of a BPF_XDP_DEVMAP program to run on every frame sent through the entry.
Userspace stores {ifindex, prog fd} and reads back {ifindex, prog id}; each entry holds the
device and a reference on its program.  Programs may only look entries up (read-only: the
map is created with BPF_F_RDONLY_PROG) and redirect through them (`map_redirect`,
bpf_redirect_map).  An entry whose device is unregistered leaves the map
(dev_map_notification).

Sending a frame through an entry (`dev_map_enqueue` for native XDP, `dev_map_generic_redirect`
for generic XDP) runs the entry's program with ``egress_ifindex`` set and, on XDP_PASS,
queues the frame on the device's transmit list (``kern.world.net.tx``).  The array's
``items`` counter counts NULL-device stores too, as the kernel's does (fdinfo memlock shows it).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import TOTALRAM, array_get_next_key, map_fields_from_attr
from fakekernel.maps.prog_array import bpf_prog_map_compatible
from uapi.bpf import AttachType, MapFlags, MapType, ProgType, UpdateFlags, XdpAction
from uapi.ffi import ffi

__all__ = ["DevMap", "DevMapHash", "DtabNetdev", "DEV_CREATE_FLAG_MASK", "xdp_prog_get_from_val",
           "parse_val", "dev_map_run_prog"]

DEV_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | MapFlags.RDONLY | MapFlags.WRONLY
U32_SIZE = ffi.sizeof("__u32")
U32_MAX = 2**32 - 1
PTR_SIZE = ffi.sizeof("void *")
_VAL = "struct bpf_devmap_val"
_VAL_IFINDEX_END = ffi.offsetof(_VAL, "ifindex") + U32_SIZE
_VAL_PROG_END = ffi.offsetof(_VAL, "bpf_prog") + ffi.sizeof("int32_t")
_DEVMAP_HASH_MAX_ENTRIES = 1 << 31
# kernel-internal sizes on x86_64 6.18, measured through fdinfo memlock
BPF_DTAB_SIZE = 344              # struct bpf_dtab
BPF_DTAB_NETDEV_SIZE = 64        # struct bpf_dtab_netdev (one per stored entry)
HLIST_HEAD_SIZE = PTR_SIZE


def _u32(b: bytes) -> int:
    return int.from_bytes(b[:U32_SIZE], "little")


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def parse_val(value: bytes, value_size: int) -> tuple[int, int]:
    """memcpy into a zeroed struct bpf_devmap_val / bpf_cpumap_val: (first u32, prog fd)."""
    buf = bytes(value[:value_size]).ljust(ffi.sizeof(_VAL), b"\0")
    val = ffi.from_buffer(_VAL + " *", buf)
    return val.ifindex, val.bpf_prog.fd


def xdp_prog_get_from_val(kern, fd: int, bpf_map, attach_type: int):
    """bpf_prog_get_type_dev(fd, BPF_PROG_TYPE_XDP) + the expected_attach_type and owner
    checks both map kinds make; the prog with a new reference, or None on any failure."""
    from fakekernel.syscall.fdget import bpf_prog_get
    try:
        prog = bpf_prog_get(kern.current, fd)
    except KernelError:
        return None
    if prog.type != ProgType.XDP or prog.aux.ifindex:
        return None
    if prog.expected_attach_type != attach_type or not bpf_prog_map_compatible(bpf_map, prog):
        return None
    return prog.get()


@attrs.define(eq=False)
class DtabNetdev:
    """struct bpf_dtab_netdev: a device, its program and the bpf_devmap_val programs read."""

    dev: object
    xdp_prog: object
    idx: int
    val: bytearray
    region: object = None            # `val` in kern.mem, mapped on the first program lookup


def dev_map_run_prog(kern, entry: DtabNetdev, frame: bytes, dev_rx, *, rx_queue: int = 0):
    """dev_map_bpf_prog_run() / dev_map_bpf_prog_run_skb(): the frame to transmit, or None
    when the entry's program did not pass it."""
    if entry.xdp_prog is None:
        return frame
    from fakekernel.helpers.redirect import xdp_drop_verdict
    from fakekernel.net.rx import bpf_prog_run_xdp
    from fakekernel.net.xdp import XdpBuff
    xdp = XdpBuff.from_frame(frame, ifindex=dev_rx.ifindex, rx_queue=rx_queue)
    xdp.egress_ifindex = entry.dev.ifindex
    act = bpf_prog_run_xdp(kern, entry.xdp_prog, xdp)
    if act == XdpAction.PASS:
        return xdp.frame()
    xdp_drop_verdict(kern, entry.dev, entry.xdp_prog, act)
    return None


@attrs.define(eq=False)
class DevMap(BpfMap):
    """BPF_MAP_TYPE_DEVMAP — dev_map_ops."""

    holds_progs = True               # map_type_contains_progs(): PROG_LOAD checks the owner
    owner: object = None             # struct bpf_map_owner (set by the first program)
    netdev_map: dict = attrs.field(factory=dict)    # index -> DtabNetdev (absent = NULL)
    items: int = 0

    # ---- creation: dev_map_alloc_check / dev_map_alloc ----
    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        if (attr.max_entries == 0 or attr.key_size != U32_SIZE
                or attr.value_size not in (_VAL_IFINDEX_END, _VAL_PROG_END)
                or attr.map_flags & ~int(DEV_CREATE_FLAG_MASK)):
            raise KernelError(Errno.EINVAL, "bad devmap attributes")
        if attr.map_type == MapType.DEVMAP_HASH and attr.max_entries > _DEVMAP_HASH_MAX_ENTRIES:
            raise KernelError(Errno.EINVAL, "devmap_hash max_entries above 2^31")

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "DevMap":
        fields = map_fields_from_attr(kern, attr)
        # lookups return a pointer into the entry: programs must not write it
        fields["map_flags"] |= int(MapFlags.RDONLY_PROG)
        m = cls(**fields)
        m._init_table()
        if m._table_size() > TOTALRAM:
            raise KernelError(Errno.ENOMEM, "devmap table too large")
        m.memlock = m.map_mem_usage()
        net = kern.world.net
        net.dev_maps.append(m)          # dev_map_list, for the unregister notifier
        return m

    def _init_table(self) -> None:
        pass

    def _table_size(self) -> int:
        return self.max_entries * PTR_SIZE

    def map_mem_usage(self) -> int:
        """dev_map_mem_usage()."""
        return BPF_DTAB_SIZE + self._table_size() + self.items * BPF_DTAB_NETDEV_SIZE

    def _charge(self) -> None:
        self.memlock = self.map_mem_usage()

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    map_meta_equal = staticmethod(bpf_map_meta_equal)

    def map_free(self) -> None:
        """dev_map_free(): drop every entry's device and program."""
        net = self.kern.world.net
        if self in net.dev_maps:
            net.dev_maps.remove(self)
        for entry in self._entries():
            self._entry_free(entry)
        self._clear()

    def _clear(self) -> None:
        self.netdev_map.clear()

    def _entries(self) -> list[DtabNetdev]:
        return [e for _, e in sorted(self.netdev_map.items()) if e is not None]

    def _entry_free(self, entry: DtabNetdev) -> None:
        """__dev_map_entry_free()."""
        if entry.region is not None:
            self.kern.mem.unmap(entry.region)
            entry.region = None
        if entry.xdp_prog is not None:
            entry.xdp_prog.put()
            entry.xdp_prog = None

    def _alloc_node(self, ifindex: int, fd: int, idx: int) -> DtabNetdev:
        """__dev_map_alloc_node(): every failure is EINVAL."""
        dev = self.kern.world.net.dev_get_by_index(ifindex)
        if dev is None:
            raise KernelError(Errno.EINVAL, f"no device with ifindex {ifindex}")
        prog = None
        if fd > 0:
            prog = xdp_prog_get_from_val(self.kern, fd, self, AttachType.XDP_DEVMAP)
            if prog is None:
                raise KernelError(Errno.EINVAL, "not a BPF_XDP_DEVMAP program for this map")
        val = ffi.new(_VAL + " *")
        val.ifindex = ifindex
        val.bpf_prog.id = prog.aux.id if prog is not None else 0
        return DtabNetdev(dev=dev, xdp_prog=prog, idx=idx,
                          val=bytearray(ffi.buffer(val)[:self.value_size]))

    # ---- element ops ----
    def lookup(self, index: int) -> DtabNetdev | None:
        """__dev_map_lookup_elem(): the entry behind a u32 key."""
        return self.netdev_map.get(index) if index < self.max_entries else None

    def map_lookup_elem(self, key: bytes) -> int:
        """dev_map_lookup_elem(): a read-only pointer to the entry's bpf_devmap_val."""
        entry = self.lookup(_u32(key))
        if entry is None:
            return 0
        if entry.region is None:
            entry.region = self.kern.mem.map_region(entry.val, "map_value", "bpf_devmap_val",
                                                    writable=False)
        return entry.region.base

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        entry = self.lookup(_u32(key))
        if entry is None:
            raise KernelError(Errno.ENOENT, "no entry")
        return bytes(entry.val)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """__dev_map_update_elem()."""
        i = _u32(key)
        if flags > UpdateFlags.EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        if i >= self.max_entries:
            raise KernelError(Errno.E2BIG, "index past max_entries")
        if flags == UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "devmap slots always exist")
        ifindex, fd = parse_val(value, self.value_size)
        if not ifindex:
            if fd > 0:
                raise KernelError(Errno.EINVAL, "a prog fd needs an ifindex")
            dev = None
        else:
            dev = self._alloc_node(ifindex, fd, i)
        old = self.netdev_map.pop(i, None)
        if dev is not None:
            self.netdev_map[i] = dev
        if old is not None:
            self._entry_free(old)
        else:
            self.items += 1
        self._charge()

    def map_delete_elem(self, key: bytes) -> None:
        """dev_map_delete_elem()."""
        k = _u32(key)
        if k >= self.max_entries:
            raise KernelError(Errno.EINVAL, "index past max_entries")
        old = self.netdev_map.pop(k, None)
        if old is not None:
            self._entry_free(old)
            self.items -= 1
            self._charge()

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """dev_map_get_next_key(): array order."""
        return array_get_next_key(key, self.max_entries)

    # ---- redirect (dev_map_redirect / dev_hash_map_redirect) ----
    def map_redirect(self, ctx, index: int, flags: int) -> int:
        from fakekernel.helpers.redirect import REDIRECT_BROADCAST_FLAGS, bpf_xdp_redirect_map
        return bpf_xdp_redirect_map(ctx, self, index, flags, REDIRECT_BROADCAST_FLAGS,
                                    self.lookup)

    def broadcast_entries(self) -> list[DtabNetdev]:
        """The entries dev_map_enqueue_multi() walks, in its order."""
        return self._entries()

    # ---- netdev notifier (dev_map_notification, NETDEV_UNREGISTER) ----
    def netdev_unregister(self, dev) -> None:
        for idx, entry in list(self.netdev_map.items()):
            if entry is not None and entry.dev.ifindex == dev.ifindex:
                del self.netdev_map[idx]
                self._entry_free(entry)
                self.items -= 1
        self._charge()

    map_lookup_batch = None
    map_lookup_and_delete_batch = None
    map_update_batch = None
    map_delete_batch = None


@attrs.define(eq=False)
class DevMapHash(DevMap):
    """BPF_MAP_TYPE_DEVMAP_HASH — dev_map_hash_ops: ``n_buckets`` chains, newest first."""

    holds_progs = False              # not in map_type_contains_progs(): no owner check at load
    n_buckets: int = 0
    buckets: dict = attrs.field(factory=dict)      # bucket -> list of DtabNetdev, head first

    def _init_table(self) -> None:
        self.n_buckets = _roundup_pow_of_two(self.max_entries)

    def _table_size(self) -> int:
        return self.n_buckets * HLIST_HEAD_SIZE

    def _bucket(self, idx: int) -> list:
        """dev_map_index_hash() (buckets are made on first use: most stay empty)."""
        return self.buckets.setdefault(idx & (self.n_buckets - 1), [])

    def _clear(self) -> None:
        self.buckets.clear()

    def _entries(self) -> list[DtabNetdev]:
        return [e for b in sorted(self.buckets) for e in self.buckets[b]]

    def lookup(self, index: int) -> DtabNetdev | None:
        """__dev_map_hash_lookup_elem()."""
        chain = self.buckets.get(index & (self.n_buckets - 1), ())
        return next((e for e in chain if e.idx == index), None)

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """__dev_map_hash_update_elem()."""
        idx = _u32(key)
        ifindex, fd = parse_val(value, self.value_size)
        if flags > UpdateFlags.EXIST or not ifindex:
            raise KernelError(Errno.EINVAL, "bad flags or no ifindex")
        old = self.lookup(idx)
        if old is not None and flags & UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "key exists")
        dev = self._alloc_node(ifindex, fd, idx)
        chain = self._bucket(idx)
        if old is not None:
            chain.remove(old)
        elif self.items >= self.max_entries:
            self._entry_free(dev)
            raise KernelError(Errno.E2BIG, "devmap_hash is full")
        else:
            self.items += 1
        chain.insert(0, dev)
        if old is not None:
            self._entry_free(old)
        self._charge()

    def map_delete_elem(self, key: bytes) -> None:
        """dev_map_hash_delete_elem()."""
        old = self.lookup(_u32(key))
        if old is None:
            raise KernelError(Errno.ENOENT, "no such key")
        self._bucket(old.idx).remove(old)
        self._entry_free(old)
        self.items -= 1
        self._charge()

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """dev_map_hash_get_next_key(): chain order, then the following buckets."""
        start = 0
        if key is not None:
            idx = _u32(key)
            entry = self.lookup(idx)
            if entry is not None:
                chain = self._bucket(idx)
                pos = chain.index(entry)
                if pos + 1 < len(chain):
                    return chain[pos + 1].idx.to_bytes(U32_SIZE, "little")
                start = (idx & (self.n_buckets - 1)) + 1
        for b in sorted(b for b, chain in self.buckets.items() if b >= start and chain):
            return self.buckets[b][0].idx.to_bytes(U32_SIZE, "little")
        raise KernelError(Errno.ENOENT, "no more keys")

    def netdev_unregister(self, dev) -> None:
        """dev_map_hash_remove_netdev()."""
        for chain in self.buckets.values():
            for entry in list(chain):
                if entry.dev.ifindex == dev.ifindex:
                    chain.remove(entry)
                    self._entry_free(entry)
                    self.items -= 1
        self._charge()
