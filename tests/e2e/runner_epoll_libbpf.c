/* libbpf's ring_buffer__poll over a level-triggered epoll: the first poll's callback fails
 * on the first record, so ring_buffer__poll returns that error with the records left in the
 * ring; the next ring_buffer__poll must be woken again at once (the ring is still readable)
 * and consume them.  Then the ring is empty and a poll times out. */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

static int calls, fail_first = 1;

static int on_record(void *ctx, void *data, size_t size)
{
	calls++;
	if (fail_first) {
		fail_first = 0;
		return -7;
	}
	return 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	libbpf_set_print(NULL);
	int map = bpf_map_create(BPF_MAP_TYPE_RINGBUF, NULL, 0, 0, 4096, NULL);
	struct bpf_insn insns[] = {
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .imm = 0x55667788},
		{.imm = 0x11223344},
		{.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = 10, .src_reg = 1, .off = -8},
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map},
		{.imm = 0},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 2, .src_reg = 10},
		{.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 2, .imm = -8},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 3, .imm = 8},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 4, .imm = 0},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_ringbuf_output},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_PASS},
		{.code = BPF_JMP | BPF_EXIT},
	};
	int prog = bpf_prog_load(BPF_PROG_TYPE_XDP, NULL, "GPL", insns, sizeof insns / sizeof insns[0], NULL);
	struct ring_buffer *rb = ring_buffer__new(map, on_record, NULL, NULL);
	printf("map %s prog %s ring_buffer %s\n", map >= 0 ? "ok" : "failed", prog >= 0 ? "ok" : "failed",
	       rb ? "ok" : "failed");
	if (map < 0 || prog < 0 || !rb)
		return 1;
	unsigned char pkt[64] = {0};
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof pkt);
	for (int i = 0; i < 2; i++) {
		int err = bpf_prog_test_run_opts(prog, &opts);
		printf("run %d: %d retval %u\n", i, err, opts.retval);
	}
	int n = ring_buffer__poll(rb, 1000);
	printf("poll 1: %d calls %d\n", n, calls);
	struct epoll_event ev;
	printf("epoll fd still ready: %d\n", epoll_wait(ring_buffer__epoll_fd(rb), &ev, 1, 0));
	n = ring_buffer__poll(rb, 1000);
	printf("poll 2: %d calls %d\n", n, calls);
	n = ring_buffer__poll(rb, 100);
	printf("poll 3 (empty): %d calls %d\n", n, calls);
	ring_buffer__free(rb);
	return 0;
}
