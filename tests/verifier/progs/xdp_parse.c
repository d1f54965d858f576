#include "common.h"
struct map_def counters SEC("maps") = { .type = 2 /* ARRAY */, .key_size = 4, .value_size = 8, .max_entries = 256 };
struct map_def ports SEC("maps") = { .type = 1 /* HASH */, .key_size = 2, .value_size = 8, .max_entries = 1024 };

SEC("xdp") int xdp_parse(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return 2;
    if (eth->h_proto != 0x0008)             /* htons(ETH_P_IP) */
        return 2;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return 1;
    __u32 key = ip->protocol;
    __u64 *cnt = bpf_map_lookup_elem(&counters, &key);
    if (cnt)
        __sync_fetch_and_add(cnt, 1);
    if (ip->protocol == 17) {
        struct udphdr *udp = (void *)(ip + 1);
        if ((void *)(udp + 1) > data_end)
            return 1;
        __u16 port = udp->dest;
        __u64 *seen = bpf_map_lookup_elem(&ports, &port);
        if (seen)
            *seen += 1;
        else {
            __u64 one = 1;
            bpf_map_update_elem(&ports, &port, &one, 0);
        }
        if (port == 0x3500)
            return 1;                         /* XDP_DROP dns */
    }
    return 2;
}
char LICENSE[] SEC("license") = "GPL";
