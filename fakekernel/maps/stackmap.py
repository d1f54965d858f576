"""Stack trace maps — kernel/bpf/stackmap.c.

BPF_MAP_TYPE_STACK_TRACE: ``max_entries`` preallocated stack records in a table of
``roundup_pow_of_two(max_entries)`` buckets keyed by a u32 stack id.  A value is an
array of u64 instruction pointers, or of ``struct bpf_stack_build_id`` with
BPF_F_STACK_BUILD_ID; value_size bounds the depth (at most
``kernel.perf_event_max_stack`` frames).  All creation checks happen in map_alloc, after
the CAP_BPF check.  Userspace can read a bucket (the recorded frames, zero-padded),
delete it (or both at once: LOOKUP_AND_DELETE, new in 6.x) and walk the ids; it cannot
update it (EINVAL), and programs cannot look it up.

bpf_get_stackid (fakekernel/helpers/stack.py, over the simulated call chains) fills the
buckets through `stack_map_store`.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.bpf.map_btf import map_check_no_btf
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import TOTALRAM, map_fields_from_attr
from uapi.bpf import BPF_BUILD_ID_SIZE, MapFlags
from uapi.ffi import ffi

__all__ = ["StackTraceMap", "STACK_CREATE_FLAG_MASK", "PERF_MAX_STACK_DEPTH"]

STACK_CREATE_FLAG_MASK = MapFlags.NUMA_NODE | MapFlags.RDONLY | MapFlags.WRONLY | MapFlags.STACK_BUILD_ID
PERF_MAX_STACK_DEPTH = 127              # include/uapi/linux/perf_event.h; the sysctl's default
U32_SIZE = ffi.sizeof("__u32")
U64_SIZE = ffi.sizeof("__u64")
PTR_SIZE = ffi.sizeof("void *")
# struct bpf_stack_build_id: s32 status, build_id[BPF_BUILD_ID_SIZE], union { u64 offset; u64 ip; }
BPF_STACK_BUILD_ID_SIZE = U32_SIZE + BPF_BUILD_ID_SIZE + U64_SIZE
# struct stack_map_bucket before data[]: pcpu_freelist_node (a pointer), u32 hash, u32 nr
STACK_MAP_BUCKET_HDR_SIZE = PTR_SIZE + 2 * U32_SIZE
# sizeof(struct bpf_stack_map) before buckets[] on x86_64 6.18 (fdinfo memlock, measured)
BPF_STACK_MAP_HDR_SIZE = 320
MAX_BUCKETS = 1 << 31


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _charge(size: int) -> None:
    """bpf_map_area_alloc() of `size` bytes: ENOMEM beyond what the machine has."""
    if size > TOTALRAM:
        raise KernelError(Errno.ENOMEM, f"cannot allocate {size} bytes of stack map memory")


@attrs.define(eq=False)
class StackTraceMap(BpfMap):
    """BPF_MAP_TYPE_STACK_TRACE — stack_trace_map_ops."""

    n_buckets: int = 0
    buckets: dict = attrs.field(factory=dict)      # id -> (nr, data bytes)

    # ---- creation: stack_map_alloc ----
    @classmethod
    def map_alloc(cls, kern, attr, task) -> "StackTraceMap":
        value_size = attr.value_size
        if attr.map_flags & ~int(STACK_CREATE_FLAG_MASK):
            raise KernelError(Errno.EINVAL, "unknown stack map flags")
        if (attr.max_entries == 0 or attr.key_size != U32_SIZE or value_size < U64_SIZE
                or value_size % U64_SIZE):
            raise KernelError(Errno.EINVAL, "bad stack map attributes")
        max_stack = kern.sysctls.get("kernel.perf_event_max_stack", PERF_MAX_STACK_DEPTH)
        frame = BPF_STACK_BUILD_ID_SIZE if attr.map_flags & MapFlags.STACK_BUILD_ID else U64_SIZE
        if value_size % frame or value_size // frame > max_stack:
            raise KernelError(Errno.EINVAL, "value_size is not a whole stack within perf_event_max_stack")
        if attr.max_entries > MAX_BUCKETS:
            raise KernelError(Errno.E2BIG, "max_entries > 2^31")
        n_buckets = _roundup_pow_of_two(attr.max_entries)
        _charge(n_buckets * PTR_SIZE + BPF_STACK_MAP_HDR_SIZE)
        _charge((STACK_MAP_BUCKET_HDR_SIZE + value_size) * attr.max_entries)   # the elements
        m = cls(**map_fields_from_attr(kern, attr), n_buckets=n_buckets)
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """stack_map_mem_usage()."""
        return (BPF_STACK_MAP_HDR_SIZE + self.n_buckets * PTR_SIZE
                + self.max_entries * (STACK_MAP_BUCKET_HDR_SIZE + self.value_size))

    def map_check_btf(self, btf, key_type, value_type) -> None:
        map_check_no_btf(self, btf, key_type, value_type)

    def map_free(self) -> None:
        self.buckets.clear()

    def _frame_size(self) -> int:
        """stack_map_data_size()."""
        return BPF_STACK_BUILD_ID_SIZE if self.map_flags & MapFlags.STACK_BUILD_ID else U64_SIZE

    def stack_map_store(self, stack_id: int, frames: bytes) -> None:
        """Record `frames` (whole frames, at most value_size bytes) in bucket `stack_id`."""
        size = self._frame_size()
        if stack_id >= self.n_buckets or len(frames) % size or len(frames) > self.value_size:
            raise ValueError("stack record does not fit the map")
        self.buckets[stack_id] = (len(frames) // size, bytes(frames))

    # ---- bpf_map_ops ----
    def map_lookup_elem(self, key: bytes) -> int:
        """stack_map_lookup_elem(): never a value pointer (the verifier refuses the call)."""
        return 0

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> None:
        """stack_map_update_elem(): buckets are only filled by bpf_get_stackid."""
        raise KernelError(Errno.EINVAL, "stack maps cannot be updated")

    def map_delete_elem(self, key: bytes) -> None:
        """stack_map_delete_elem()."""
        stack_id = int.from_bytes(key[:U32_SIZE], "little")
        if stack_id >= self.n_buckets:
            raise KernelError(Errno.E2BIG, "stack id past the bucket table")
        if self.buckets.pop(stack_id, None) is None:
            raise KernelError(Errno.ENOENT, "no stack with this id")

    def map_get_next_key(self, key: bytes | None) -> bytes:
        """stack_map_get_next_key(): the next used id; an unknown key restarts at 0."""
        if key is None:
            start = 0
        else:
            stack_id = int.from_bytes(key[:U32_SIZE], "little")
            start = stack_id + 1 if stack_id in self.buckets else 0
        later = [i for i in self.buckets if i >= start]
        if not later:
            raise KernelError(Errno.ENOENT, "no further stack ids")
        return min(later).to_bytes(U32_SIZE, "little")

    # ---- syscall side ----
    def _extract(self, key: bytes, delete: bool) -> bytes:
        """bpf_stackmap_extract(): the recorded frames, zero-padded to value_size."""
        stack_id = int.from_bytes(key[:U32_SIZE], "little")
        bucket = self.buckets.pop(stack_id, None) if delete else self.buckets.get(stack_id)
        if bucket is None:
            raise KernelError(Errno.ENOENT, "no stack with this id")
        _, data = bucket
        return data + bytes(self.value_size - len(data))

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_stackmap_copy()."""
        return self._extract(key, delete=False)

    def map_lookup_and_delete_elem(self, key: bytes | None, flags: int) -> bytes:
        """stack_map_lookup_and_delete_elem() (6.18; flags beyond BPF_F_LOCK are refused earlier)."""
        return self._extract(key, delete=True)
