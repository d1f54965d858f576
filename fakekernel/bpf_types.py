"""THE registry of map, prog and link types — include/linux/bpf_types.h.

What is supported is readable here and only here.  A map or prog type that is absent
behaves as in a kernel built without it: MAP_CREATE / PROG_LOAD answer EINVAL.
Entries are added with explicit imports; nothing registers itself.
"""
from __future__ import annotations

from fakekernel import test_run, test_run_net, test_run_trace
from fakekernel.bpf.ops import ProgOps, ProgTypeDef, VerifierOps
from fakekernel.maps import (arraymap, bloom_filter, cgroup_array, hashtab, lpm_trie, map_in_map,
                             perf_event_array, prog_array, queue_stack_maps, stackmap)
from fakekernel.maps import ringbuf
from fakekernel.maps import cpumap, devmap, xskmap
from fakekernel.maps import arena, struct_ops, user_ringbuf
from fakekernel.progs import struct_ops as struct_ops_prog
from fakekernel.maps import reuseport_array, sk_storage, sock_map
from fakekernel.maps import cgrp_storage, cgroup_storage, inode_storage, task_storage
from fakekernel.progs import cgroup_skb, kprobe, sched_cls, socket_filter, tracepoint, xdp
from fakekernel.progs import flow_dissector, netfilter, raw_tp, sk_lookup, syscall_prog
from fakekernel.progs import ext, lsm, tracing
from fakekernel.progs import sk_skb
from fakekernel.progs import (cgroup_device, cgroup_sock, cgroup_sock_addr, cgroup_sockopt,
                             cgroup_sysctl, sock_ops)
from fakekernel.progs import lwt, perf_event, sk_reuseport
from fakekernel import test_run_tracing
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
    MapType.USER_RINGBUF: user_ringbuf.UserRingbufMap,
    MapType.ARENA: arena.ArenaMap,
    MapType.STRUCT_OPS: struct_ops.StructOpsMap,
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
    MapType.DEVMAP: devmap.DevMap,
    MapType.DEVMAP_HASH: devmap.DevMapHash,
    MapType.CPUMAP: cpumap.CpuMap,
    MapType.XSKMAP: xskmap.XskMap,
    MapType.TASK_STORAGE: task_storage.TaskStorageMap,
    MapType.SOCKMAP: sock_map.SockMap,
    MapType.SOCKHASH: sock_map.SockHash,
    MapType.REUSEPORT_SOCKARRAY: reuseport_array.ReuseportArrayMap,
    MapType.SK_STORAGE: sk_storage.SkStorageMap,
    MapType.INODE_STORAGE: inode_storage.InodeStorageMap,
    MapType.CGRP_STORAGE: cgrp_storage.CgrpStorageMap,
    MapType.CGROUP_STORAGE: cgroup_storage.CgroupStorageMap,
    MapType.PERCPU_CGROUP_STORAGE: cgroup_storage.PercpuCgroupStorageMap,
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
    ProgType.RAW_TRACEPOINT: ProgTypeDef(raw_tp.VERIFIER_OPS,
                                         ProgOps(test_run=test_run_trace.bpf_prog_test_run_raw_tp),
                                         "struct bpf_raw_tracepoint_args", "u64"),
    ProgType.RAW_TRACEPOINT_WRITABLE: ProgTypeDef(raw_tp.WRITABLE_VERIFIER_OPS, ProgOps(test_run=None),
                                                  "struct bpf_raw_tracepoint_args", "u64"),
    ProgType.FLOW_DISSECTOR: ProgTypeDef(flow_dissector.VERIFIER_OPS,
                                         ProgOps(test_run=test_run_net.bpf_prog_test_run_flow_dissector),
                                         "struct __sk_buff", "struct bpf_flow_dissector"),
    ProgType.SK_SKB: ProgTypeDef(sk_skb.SK_SKB_VERIFIER_OPS, ProgOps(test_run=None),
                                 "struct __sk_buff", "struct sk_buff"),
    ProgType.SK_MSG: ProgTypeDef(sk_skb.SK_MSG_VERIFIER_OPS, ProgOps(test_run=None),
                                 "struct sk_msg_md", "struct sk_msg"),
    ProgType.SK_LOOKUP: ProgTypeDef(sk_lookup.VERIFIER_OPS,
                                    ProgOps(test_run=test_run_net.bpf_prog_test_run_sk_lookup),
                                    "struct bpf_sk_lookup", "struct bpf_sk_lookup_kern"),
    ProgType.NETFILTER: ProgTypeDef(netfilter.VERIFIER_OPS,
                                    ProgOps(test_run=test_run_net.bpf_prog_test_run_nf),
                                    "struct bpf_nf_ctx", "struct bpf_nf_ctx"),
    ProgType.SYSCALL: ProgTypeDef(syscall_prog.VERIFIER_OPS,
                                  ProgOps(test_run=test_run_trace.bpf_prog_test_run_syscall), "void *", "void *"),
    ProgType.STRUCT_OPS: ProgTypeDef(struct_ops_prog.VERIFIER_OPS,
                                     ProgOps(test_run=struct_ops_prog.bpf_struct_ops_test_run), "void *", "void *"),
    ProgType.TRACING: ProgTypeDef(tracing.VERIFIER_OPS,
                                  ProgOps(test_run=test_run_tracing.bpf_prog_test_run_tracing),
                                  "void *", "void *"),
    ProgType.LSM: ProgTypeDef(lsm.VERIFIER_OPS, ProgOps(test_run=None), "void *", "void *"),
    ProgType.LWT_IN: ProgTypeDef(lwt.LWT_IN_VERIFIER_OPS, ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                 "struct __sk_buff", "struct sk_buff"),
    ProgType.LWT_OUT: ProgTypeDef(lwt.LWT_OUT_VERIFIER_OPS, ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                  "struct __sk_buff", "struct sk_buff"),
    ProgType.LWT_XMIT: ProgTypeDef(lwt.LWT_XMIT_VERIFIER_OPS, ProgOps(test_run=test_run.bpf_prog_test_run_skb),
                                   "struct __sk_buff", "struct sk_buff"),
    ProgType.LWT_SEG6LOCAL: ProgTypeDef(lwt.LWT_SEG6LOCAL_VERIFIER_OPS, ProgOps(test_run=None),
                                        "struct __sk_buff", "struct sk_buff"),
    ProgType.SK_REUSEPORT: ProgTypeDef(sk_reuseport.VERIFIER_OPS, ProgOps(test_run=None),
                                       "struct sk_reuseport_md", "struct sk_reuseport_kern"),
    ProgType.PERF_EVENT: ProgTypeDef(perf_event.VERIFIER_OPS, ProgOps(test_run=None),
                                     "struct bpf_perf_event_data", "struct bpf_perf_event_data_kern"),
    ProgType.EXT: ProgTypeDef(ext.VERIFIER_OPS, ProgOps(test_run=None), "void *", "void *"),
    ProgType.CGROUP_SOCK: ProgTypeDef(cgroup_sock.VERIFIER_OPS, ProgOps(test_run=None),
                                      "struct bpf_sock", "struct sock"),
    ProgType.CGROUP_SOCK_ADDR: ProgTypeDef(cgroup_sock_addr.VERIFIER_OPS, ProgOps(test_run=None),
                                           "struct bpf_sock_addr", "struct bpf_sock_addr_kern"),
    ProgType.SOCK_OPS: ProgTypeDef(sock_ops.VERIFIER_OPS, ProgOps(test_run=None),
                                   "struct bpf_sock_ops", "struct bpf_sock_ops_kern"),
    ProgType.CGROUP_SOCKOPT: ProgTypeDef(cgroup_sockopt.VERIFIER_OPS, ProgOps(test_run=None),
                                         "struct bpf_sockopt", "struct bpf_sockopt_kern"),
    ProgType.CGROUP_SYSCTL: ProgTypeDef(cgroup_sysctl.VERIFIER_OPS, ProgOps(test_run=None),
                                        "struct bpf_sysctl", "struct bpf_sysctl_kern"),
    ProgType.CGROUP_DEVICE: ProgTypeDef(cgroup_device.VERIFIER_OPS, ProgOps(test_run=None),
                                        "struct bpf_cgroup_dev_ctx", "struct bpf_cgroup_dev_ctx"),
}
# Types a kernel built without them would lack: MAP_CREATE answers EINVAL.  (The reference
# kernel has all of them; tests/unit/fakekernel/test_bpf_types.py keeps this list exact.)
NOT_IMPLEMENTED_MAP_TYPES: frozenset = frozenset()
NOT_IMPLEMENTED_PROG_TYPES: frozenset = frozenset()
