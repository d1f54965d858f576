#include "common.h"
struct map_def stats SEC("maps") = { .type = 1, .key_size = 4, .value_size = 8, .max_entries = 64 };

SEC("tc") int tc_mark(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return 0;
    __u32 proto = eth->h_proto;
    skb->mark = proto + skb->len;
    skb->cb[0] = 7;
    __u64 *v = bpf_map_lookup_elem(&stats, &proto);
    if (!v) {
        __u64 init = skb->len;
        bpf_map_update_elem(&stats, &proto, &init, 0);
        return 0;
    }
    *v += skb->len;
    if (skb->len > 1000)
        eth->h_dest[0] = 0xff;
    return skb->priority & 1 ? 2 : 0;
}
char LICENSE[] SEC("license") = "GPL";
