/* A libbpf loader (skeleton), run under `fakekernel run` and as root on the real kernel:
 * open, set .rodata, load, read .bss/.data through the skeleton's mmap()ed pointers,
 * attach XDP to lo by bpf_link, wait for the test to send a packet, consume ring buffer
 * events through epoll (ring_buffer__poll), test-run the program once more, print all.
 * Both runs must print the same lines. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "xdp_events.skel.h"

struct event {
	unsigned int len;
	unsigned int magic;
	unsigned long long seq;
};

static int on_event(void *ctx, void *data, size_t size)
{
	const struct event *e = data;

	printf("event size=%zu len=%u magic=%#x seq=%llu\n", size, e->len, e->magic, e->seq);
	return 0;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

int main(void)
{
	struct xdp_events_bpf *skel;
	struct ring_buffer *rb;
	struct bpf_link *link;
	char line[16], frame[64];
	int n, err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(quiet);
	skel = xdp_events_bpf__open();
	if (!skel)
		return printf("open failed: %d\n", -errno), 1;
	skel->rodata->magic = 0xfeed;
	err = xdp_events_bpf__load(skel);
	if (err)
		return printf("load failed: %d\n", err), 1;
	printf("loaded: packets=%llu last_len=%u magic=%#x\n", skel->bss->packets,
	       skel->data->last_len, skel->rodata->magic);
	skel->data->last_len = 9;	/* written through the mapping, read by the program below */
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);
	if (!rb)
		return printf("ring_buffer__new failed: %d\n", -errno), 1;
	link = bpf_program__attach_xdp(skel->progs.on_xdp, 1);
	if (!link)
		return printf("attach_xdp failed: %d\n", -errno), 1;
	printf("ready\n");
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	n = ring_buffer__poll(rb, 5000);
	printf("poll: %d\n", n);
	printf("after packet: packets=%llu last_len=%u\n", skel->bss->packets, skel->data->last_len);

	/* one more run through PROG_TEST_RUN: a 60-byte UDP/IPv4 frame to the port */
	memset(frame, 0, sizeof(frame));
	frame[12] = 0x08;				/* ETH_P_IP */
	frame[14] = 0x45;				/* IPv4, ihl 5 */
	frame[17] = 46;					/* tot_len */
	frame[23] = 17;					/* UDP */
	frame[36] = 0xb9; frame[37] = 0x72;		/* dport 47474 */
	LIBBPF_OPTS(bpf_test_run_opts, topts, .data_in = frame, .data_size_in = 60, .repeat = 1);
	err = bpf_prog_test_run_opts(bpf_program__fd(skel->progs.on_xdp), &topts);
	printf("test_run: %d retval=%u\n", err, topts.retval);
	n = ring_buffer__consume(rb);
	printf("consume: %d\n", n);
	printf("after test_run: packets=%llu last_len=%u\n", skel->bss->packets, skel->data->last_len);
	printf("detach: %d\n", bpf_link__destroy(link));
	ring_buffer__free(rb);
	xdp_events_bpf__destroy(skel);
	return 0;
}
