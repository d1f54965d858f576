#include "common.h"
SEC("socket") int sockfilter(struct __sk_buff *skb)
{
    __u8 hdr[14];
    if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
        return 0;
    if (hdr[12] == 0x08 && hdr[13] == 0x00)
        return skb->len;
    return skb->cb[1] > 3 ? 0 : -1;
}
char LICENSE[] SEC("license") = "GPL";
