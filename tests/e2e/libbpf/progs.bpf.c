// SPDX-License-Identifier: GPL-2.0
/* XDP, tc, socket-filter and cgroup_skb programs sharing a hash map and global data,
 * for the bpftool prog load/loadall e2e test. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } hits SEC(".maps");
volatile const __u32 limit = 3;
__u32 seen = 0;
static __always_inline void bump(__u32 k) { __u64 one = 1, *v = bpf_map_lookup_elem(&hits, &k); if (v) __sync_fetch_and_add(v, 1); else bpf_map_update_elem(&hits, &k, &one, BPF_NOEXIST); }
SEC("xdp") int xdp_pass(struct xdp_md *ctx) { bump(1); seen++; return seen > limit ? XDP_DROP : XDP_PASS; }
SEC("tc") int tc_ok(struct __sk_buff *skb) { bump(2); return skb->len > 100 ? TC_ACT_SHOT : TC_ACT_OK; }
SEC("socket") int sock_all(struct __sk_buff *skb) { bump(3); return skb->len; }
SEC("cgroup_skb/ingress") int cg_in(struct __sk_buff *skb) { bump(4); return 1; }
char LICENSE[] SEC("license") = "GPL";
