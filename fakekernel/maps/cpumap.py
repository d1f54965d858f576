"""CPU maps — kernel/bpf/cpumap.c (cpu_map_ops).

BPF_MAP_TYPE_CPUMAP: an array indexed by CPU number of `struct bpf_cpumap_val` — the size
of the queue feeding that CPU's kthread and, with an 8-byte value, the fd of a
BPF_XDP_CPUMAP program the kthread runs on every frame.  Userspace stores {qsize, prog fd}
(qsize 0 deletes) and reads back {qsize, prog id}.  Only programs' bpf_redirect_map uses
the map (`map_redirect`).

A frame redirected into an entry (`cpu_map_enqueue`) is processed at once, as the remote
CPU's kthread would: the entry's program runs with the CPU set to the entry's, and frames it
passes enter the stack on the receiving device (``netif_receive_skb``); a frame it
redirects goes on through `xdp_do_redirect`.  ``stats`` counts pass/drop/redirect as the
kernel's xdp_cpumap_kthread tracepoint does.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap, bpf_map_meta_equal
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import array_get_next_key, map_fields_from_attr
from fakekernel.maps.devmap import parse_val, xdp_prog_get_from_val
from uapi.bpf import AttachType, MapFlags, UpdateFlags, XdpAction
from uapi.ffi import ffi

__all__ = ["CpuMap", "CpuMapEntry", "NR_CPUS", "CPU_MAP_MAX_QSIZE", "cpu_map_enqueue"]

U32_SIZE = ffi.sizeof("__u32")
U32_MAX = 2**32 - 1
PTR_SIZE = ffi.sizeof("void *")
_VAL = "struct bpf_cpumap_val"
_VAL_QSIZE_END = ffi.offsetof(_VAL, "qsize") + U32_SIZE
_VAL_PROG_END = ffi.offsetof(_VAL, "bpf_prog") + ffi.sizeof("int32_t")
NR_CPUS = 256                   # CONFIG_NR_CPUS of the reference kernel (measured: 257 is E2BIG)
CPU_MAP_MAX_QSIZE = 16384       # cpu_map_update_elem()'s sanity limit
BPF_CPU_MAP_SIZE = 304          # sizeof(struct bpf_cpu_map) on x86_64 6.18 (fdinfo memlock)


def _u32(b: bytes) -> int:
    return int.from_bytes(b[:U32_SIZE], "little")


@attrs.define(eq=False)
class CpuMapEntry:
    """struct bpf_cpu_map_entry: the CPU, its queue size, program and bpf_cpumap_val."""

    cpu: int
    map_id: int
    qsize: int
    prog: object
    value: bytes
    stats: dict = attrs.field(factory=lambda: {"pass": 0, "drop": 0, "redirect": 0})


@attrs.define(eq=False)
class CpuMap(BpfMap):
    """BPF_MAP_TYPE_CPUMAP — cpu_map_ops."""

    holds_progs = True               # map_type_contains_progs()
    owner: object = None
    cpu_map: dict = attrs.field(factory=dict)        # cpu -> CpuMapEntry

    # ---- creation: cpu_map_alloc (no alloc_check: after the capability checks) ----
    @classmethod
    def map_alloc(cls, kern, attr, task) -> "CpuMap":
        if (attr.max_entries == 0 or attr.key_size != U32_SIZE
                or attr.value_size not in (_VAL_QSIZE_END, _VAL_PROG_END)
                or attr.map_flags & ~int(MapFlags.NUMA_NODE)):
            raise KernelError(Errno.EINVAL, "bad cpumap attributes")
        if attr.max_entries > NR_CPUS:
            raise KernelError(Errno.E2BIG, "more entries than NR_CPUS")
        m = cls(**map_fields_from_attr(kern, attr))
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """cpu_map_mem_usage(): the entries themselves are not counted."""
        return BPF_CPU_MAP_SIZE + self.max_entries * PTR_SIZE

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    map_meta_equal = staticmethod(bpf_map_meta_equal)

    def map_free(self) -> None:
        """cpu_map_free()."""
        for cpu in sorted(self.cpu_map):
            self._entry_free(self.cpu_map[cpu])
        self.cpu_map.clear()

    @staticmethod
    def _entry_free(entry: CpuMapEntry) -> None:
        """__cpu_map_entry_free()."""
        if entry.prog is not None:
            entry.prog.put()
            entry.prog = None

    def _entry_alloc(self, qsize: int, fd: int, cpu: int) -> CpuMapEntry:
        """__cpu_map_entry_alloc(): any failure (a bad program fd too) is ENOMEM."""
        prog = None
        if fd > 0:
            prog = xdp_prog_get_from_val(self.kern, fd, self, AttachType.XDP_CPUMAP)
            if prog is None:
                raise KernelError(Errno.ENOMEM, "not a BPF_XDP_CPUMAP program for this map")
        val = ffi.new(_VAL + " *")
        val.qsize = qsize
        val.bpf_prog.id = prog.aux.id if prog is not None else 0
        return CpuMapEntry(cpu=cpu, map_id=self.id, qsize=qsize, prog=prog,
                           value=bytes(ffi.buffer(val)[:self.value_size]))

    def _replace(self, cpu: int, entry: CpuMapEntry | None) -> None:
        """__cpu_map_entry_replace()."""
        old = self.cpu_map.pop(cpu, None)
        if entry is not None:
            self.cpu_map[cpu] = entry
        if old is not None:
            self._entry_free(old)

    # ---- element ops ----
    def lookup(self, index: int) -> CpuMapEntry | None:
        """__cpu_map_lookup_elem()."""
        return self.cpu_map.get(index) if index < self.max_entries else None

    def map_lookup_elem(self, key: bytes) -> int:
        """Programs cannot look cpumap entries up (the verifier refuses the call)."""
        return 0

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        entry = self.lookup(_u32(key))
        if entry is None:
            raise KernelError(Errno.ENOENT, "no entry")
        return entry.value

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """cpu_map_update_elem()."""
        key_cpu = _u32(key)
        qsize, fd = parse_val(value, self.value_size)
        if flags > UpdateFlags.EXIST:
            raise KernelError(Errno.EINVAL, "bad update flags")
        if key_cpu >= self.max_entries:
            raise KernelError(Errno.E2BIG, "cpu past max_entries")
        if flags == UpdateFlags.NOEXIST:
            raise KernelError(Errno.EEXIST, "cpumap slots always exist")
        if qsize > CPU_MAP_MAX_QSIZE:
            raise KernelError(Errno.EOVERFLOW, "qsize above 16384")
        if key_cpu >= self.kern.nr_cpus:
            raise KernelError(Errno.ENODEV, "not a possible CPU")
        self._replace(key_cpu, self._entry_alloc(qsize, fd, key_cpu) if qsize else None)

    def map_delete_elem(self, key: bytes) -> None:
        """cpu_map_delete_elem()."""
        key_cpu = _u32(key)
        if key_cpu >= self.max_entries:
            raise KernelError(Errno.EINVAL, "cpu past max_entries")
        self._replace(key_cpu, None)

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """cpu_map_get_next_key(): array order."""
        return array_get_next_key(key, self.max_entries)

    def map_redirect(self, ctx, index: int, flags: int) -> int:
        """cpu_map_redirect(): no broadcast."""
        from fakekernel.helpers.redirect import bpf_xdp_redirect_map
        return bpf_xdp_redirect_map(ctx, self, index, flags, 0, self.lookup)

    map_lookup_batch = None
    map_lookup_and_delete_batch = None
    map_update_batch = None
    map_delete_batch = None


def cpu_map_enqueue(kern, entry: CpuMapEntry, frame: bytes, dev_rx, *, generic: bool) -> int:
    """cpu_map_enqueue() / cpu_map_generic_redirect() + the remote kthread
    (cpu_map_kthread_run): run the entry's program on the entry's CPU, then hand what it
    passes to the stack.  Returns 0 (the queue is drained at once, so never full)."""
    from fakekernel.helpers.redirect import xdp_do_redirect, xdp_drop_verdict
    from fakekernel.net.rx import bpf_prog_run_xdp, netif_receive_skb
    from fakekernel.net.xdp import XdpBuff
    if entry.prog is not None:
        # the kthread's rxq: the receiving device, queue 0
        xdp = XdpBuff.from_frame(frame, ifindex=dev_rx.ifindex, rx_queue=0)
        act = bpf_prog_run_xdp(kern, entry.prog, xdp, cpu=entry.cpu)
        if act == XdpAction.REDIRECT:
            err = xdp_do_redirect(kern, dev_rx, xdp, entry.prog, generic=False)
            entry.stats["drop" if err else "redirect"] += 1
            return 0
        if act != XdpAction.PASS:
            # the frame path has no XDP_ABORTED arm (ABORTED is warned about); the skb path has
            xdp_drop_verdict(kern, dev_rx, entry.prog, act, aborted_arm=generic)
            entry.stats["drop"] += 1
            return 0
        frame = xdp.frame()
        entry.stats["pass"] += 1
    netif_receive_skb(kern, dev_rx, frame)
    return 0
