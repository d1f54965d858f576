#include "common.h"
struct map_def bytes SEC("maps") = { .type = 2, .key_size = 4, .value_size = 8, .max_entries = 1 };
SEC("cgroup_skb/egress") int cgroup_egress(struct __sk_buff *skb)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&bytes, &k);
    if (v)
        __sync_fetch_and_add(v, skb->len);
    return skb->len > 9000 ? 0 : 1;
}
char LICENSE[] SEC("license") = "GPL";
