// SPDX-License-Identifier: GPL-2.0
/* An XDP program with global data and a ring buffer, for the libbpf loader e2e test:
 * it counts UDP packets to port 47474 in .bss, remembers the last length in .data,
 * stamps events with a .rodata constant the loader sets before load. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PORT 47474

struct event {
	__u32 len;
	__u32 magic;
	__u64 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

const volatile __u32 magic = 0;
__u64 packets = 0;
__u32 last_len = 7;

SEC("xdp")
int on_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct event *e;

	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP ||
	    ip->ihl != 5 || udp->dest != bpf_htons(PORT))
		return XDP_PASS;
	packets++;
	last_len = data_end - data;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return XDP_PASS;
	e->len = last_len;
	e->magic = magic;
	e->seq = packets;
	bpf_ringbuf_submit(e, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
