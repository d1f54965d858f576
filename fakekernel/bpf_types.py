"""THE registry of map, prog and link types — include/linux/bpf_types.h.

What is supported is readable here and only here.  A map or prog type that is absent
behaves as in a kernel built without it: MAP_CREATE / PROG_LOAD answer EINVAL.
Entries are added with explicit imports; nothing registers itself.
"""
from __future__ import annotations

from fakekernel import test_run
from fakekernel.bpf.ops import ProgOps, ProgTypeDef, VerifierOps
from fakekernel.maps import (arraymap, bloom_filter, cgroup_array, hashtab, lpm_trie, map_in_map,
                             perf_event_array, prog_array, queue_stack_maps, stackmap)
from fakekernel.maps import ringbuf
from fakekernel.progs import cgroup_skb, kprobe, sched_cls, socket_filter, tracepoint, xdp
from uapi.bpf import MapType, ProgType

__all__ = ["MAP_TYPES", "PROG_TYPES", "ProgTypeDef", "VerifierOps", "ProgOps",
           "NOT_IMPLEMENTED_MAP_TYPES", "NOT_IMPLEMENTED_PROG_TYPES"]


# Filled in with explicit imports as types are implemented.
MAP_TYPES: dict = {
    MapType.ARRAY: arraymap.ArrayMap,
    MapType.PERCPU_ARRAY: arraymap.PercpuArrayMap,
    MapType.HASH: hashtab.HtabMap,
    MapType.PERCPU_HASH: hashtab.PercpuHtabMap,
    MapType.LRU_HASH: hashtab.LruHtabMap,
    MapType.LRU_PERCPU_HASH: hashtab.LruPercpuHtabMap,
    MapType.RINGBUF: ringbuf.RingbufMap,
    MapType.QUEUE: queue_stack_maps.QueueMap,
    MapType.STACK: queue_stack_maps.StackMap,
    MapType.BLOOM_FILTER: bloom_filter.BloomFilterMap,
    MapType.LPM_TRIE: lpm_trie.LpmTrieMap,
    MapType.PROG_ARRAY: prog_array.ProgArrayMap,
    MapType.ARRAY_OF_MAPS: map_in_map.ArrayOfMaps,
    MapType.HASH_OF_MAPS: map_in_map.HashOfMaps,
    MapType.PERF_EVENT_ARRAY: perf_event_array.PerfEventArrayMap,
    MapType.CGROUP_ARRAY: cgroup_array.CgroupArrayMap,
    MapType.STACK_TRACE: stackmap.StackTraceMap,
}
PROG_TYPES: dict = {
    ProgType.SOCKET_FILTER: ProgTypeDef(socket_filter.VERIFIER_OPS,
                                        ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                        "struct __sk_buff", "struct sk_buff"),
    ProgType.SCHED_CLS: ProgTypeDef(sched_cls.VERIFIER_OPS,
                                    ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                    "struct __sk_buff", "struct sk_buff"),
    ProgType.SCHED_ACT: ProgTypeDef(sched_cls.VERIFIER_OPS,
                                    ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                    "struct __sk_buff", "struct sk_buff"),
    ProgType.XDP: ProgTypeDef(xdp.VERIFIER_OPS, ProgOps(test_run=test_run.bpf_prog_test_run_xdp),
                              "struct xdp_md", "struct xdp_buff"),
    ProgType.CGROUP_SKB: ProgTypeDef(cgroup_skb.VERIFIER_OPS,
                                     ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                     "struct __sk_buff", "struct sk_buff"),
    ProgType.KPROBE: ProgTypeDef(kprobe.VERIFIER_OPS, ProgOps(test_run=None),
                                 "struct pt_regs", "struct pt_regs"),
    ProgType.TRACEPOINT: ProgTypeDef(tracepoint.VERIFIER_OPS, ProgOps(test_run=None),
                                     "__u64", "u64"),
}
# Types a kernel built without them would lack: MAP_CREATE answers EINVAL.  (The reference
# kernel has all of them; tests/unit/fakekernel/test_bpf_types.py keeps this list exact.)
NOT_IMPLEMENTED_MAP_TYPES: frozenset = frozenset({
    MapType.DEVMAP,
    MapType.SOCKMAP, MapType.CPUMAP, MapType.XSKMAP, MapType.SOCKHASH,
    MapType.CGROUP_STORAGE_DEPRECATED, MapType.REUSEPORT_SOCKARRAY,
    MapType.PERCPU_CGROUP_STORAGE_DEPRECATED,
    MapType.SK_STORAGE, MapType.DEVMAP_HASH, MapType.STRUCT_OPS,
    MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.USER_RINGBUF,
    MapType.CGRP_STORAGE, MapType.ARENA,
})
NOT_IMPLEMENTED_PROG_TYPES: frozenset = frozenset()
