"""Map memory against the memory cgroup's limit — mm/memcontrol.c as seen from kernel/bpf
(bpf_map_kmalloc_node / bpf_map_area_alloc charge __GFP_ACCOUNT memory to the map's memcg).

Since 5.11 map memory is not checked against RLIMIT_MEMLOCK but charged to the memory
cgroup of the process creating the map; an allocation that would take the cgroup over its
``memory.max`` fails and MAP_CREATE answers ENOMEM.  ``Kernel(memlock_limit=N)`` puts every
simulated process in one memcg whose limit for map memory is N bytes (None: no limit).

What a map is charged is its fdinfo ``memlock`` (map_mem_usage) without per-CPU value
storage: on the measured 6.18 a 16 MiB memcg creates a PERCPU_ARRAY with 256 MiB of per-CPU
values while a 32 MiB ARRAY, a preallocated HASH of 64 Ki 1 KiB values or a 64 MiB RINGBUF
get ENOMEM.  Memory that maps allocate later (elements of BPF_F_NO_PREALLOC hashes) counts
toward the usage seen by the next creation, but an update that would cross the limit is not
refused here.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import round_up
from uapi.bpf import MapFlags, MapType
from uapi.ffi import ffi

__all__ = ["bpf_map_memcg_charge", "memcg_usage", "memcg_charge_new_map", "PERCPU_VALUE_MAP_TYPES"]

#: maps whose values are per-CPU copies (always preallocated unless BPF_F_NO_PREALLOC)
PERCPU_VALUE_MAP_TYPES = frozenset({MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH})
_VALUE_ALIGN = ffi.sizeof("__u64")     # per-CPU values are 8-byte rounded


def _percpu_value_bytes(m) -> int:
    if m.map_type not in PERCPU_VALUE_MAP_TYPES:
        return 0
    if m.map_type == MapType.PERCPU_ARRAY:
        entries = m.max_entries
    elif m.map_flags & MapFlags.NO_PREALLOC:
        entries = len(getattr(m, "elems", ()))
    else:
        entries = m.max_entries
    return round_up(m.value_size, _VALUE_ALIGN) * m.kern.nr_cpus * entries


def bpf_map_memcg_charge(m) -> int:
    """Bytes `m` holds in its memory cgroup."""
    return max(0, m.memlock - _percpu_value_bytes(m))


def memcg_usage(kern) -> int:
    """Map memory charged by the live maps."""
    return sum(bpf_map_memcg_charge(m) for m in kern.map_idr.values())


def memcg_charge_new_map(kern, m) -> None:
    """The allocation of a new map: ENOMEM when it would take the memcg over its limit."""
    limit = getattr(kern, "memlock_limit", None)
    if limit is None:
        return
    if memcg_usage(kern) + bpf_map_memcg_charge(m) > limit:
        raise KernelError(Errno.ENOMEM, "memory cgroup limit reached")
