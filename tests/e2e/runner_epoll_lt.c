/* epoll on a BPF ring buffer, level- and edge-triggered, the way libbpf's ring_buffer__poll
 * uses it: mmap the consumer page (RW) and the producer page + data (RO), put the map fd in
 * an epoll set, fill the ring with an XDP program's bpf_ringbuf_output during
 * BPF_PROG_TEST_RUN, and poll twice WITHOUT consuming (level-triggered: still ready;
 * EPOLLET: not again until the next wakeup), then consume and poll again. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }

static int load(int map_fd, uint64_t flags)
{
	struct bpf_insn insns[] = {
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .imm = 0x55667788},
		{.imm = 0x11223344},
		{.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = 10, .src_reg = 1, .off = -8},
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map_fd},
		{.imm = 0},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 2, .src_reg = 10},
		{.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 2, .imm = -8},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 3, .imm = 8},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 4, .imm = (int32_t)flags},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_ringbuf_output},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_PASS},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.prog_type = BPF_PROG_TYPE_XDP;
	a.insns = (uint64_t)(uintptr_t)insns;
	a.insn_cnt = sizeof insns / sizeof insns[0];
	a.license = (uint64_t)(uintptr_t)"GPL";
	return sys_bpf(BPF_PROG_LOAD, &a);
}

static long run(int prog)
{
	unsigned char pkt[64] = {0};
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.test.prog_fd = prog;
	a.test.data_in = (uint64_t)(uintptr_t)pkt;
	a.test.data_size_in = sizeof pkt;
	long r = sys_bpf(BPF_PROG_TEST_RUN, &a);
	return r < 0 ? -errno : (long)a.test.retval;
}

static int wait0(int ep)
{
	struct epoll_event got[4];
	int n = epoll_wait(ep, got, 4, 0);
	return n > 0 && got[0].data.u64 != 0xabc ? -100 : n;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_RINGBUF;
	a.max_entries = 4096;
	int rb = sys_bpf(BPF_MAP_CREATE, &a);
	volatile uint64_t *cons = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rb, 0);
	volatile uint64_t *prod = mmap(NULL, 4096 + 2 * 4096, PROT_READ, MAP_SHARED, rb, 4096);
	printf("ringbuf %s mmap %s %s\n", rb >= 0 ? "ok" : strerrorname_np(errno),
	       cons != MAP_FAILED ? "ok" : "failed", prod != MAP_FAILED ? "ok" : "failed");
	int prog = load(rb, 0), forced = load(rb, BPF_RB_FORCE_WAKEUP);
	printf("progs %s %s\n", prog >= 0 ? "ok" : strerrorname_np(errno),
	       forced >= 0 ? "ok" : strerrorname_np(errno));
	int lt = epoll_create1(EPOLL_CLOEXEC), et = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0xabc};
	printf("ctl lt: %d\n", epoll_ctl(lt, EPOLL_CTL_ADD, rb, &e));
	e.events = EPOLLIN | EPOLLET;
	printf("ctl et: %d\n", epoll_ctl(et, EPOLL_CTL_ADD, rb, &e));
	printf("empty: lt %d et %d\n", wait0(lt), wait0(et));
	printf("run: %ld\n", run(prog));
	printf("after run: lt %d et %d\n", wait0(lt), wait0(et));
	printf("again, unconsumed: lt %d et %d\n", wait0(lt), wait0(et));
	printf("third time: lt %d et %d\n", wait0(lt), wait0(et));
	printf("run (no wakeup: consumer behind): %ld\n", run(prog));
	printf("after: lt %d et %d\n", wait0(lt), wait0(et));
	printf("run forced wakeup: %ld\n", run(forced));
	printf("after: lt %d et %d\n", wait0(lt), wait0(et));
	printf("pending %llu\n", (unsigned long long)(prod[0] - cons[0]));
	cons[0] = prod[0];
	printf("consumed: lt %d et %d\n", wait0(lt), wait0(et));
	printf("run: %ld\n", run(prog));
	printf("after: lt %d et %d\n", wait0(lt), wait0(et));
	e.events = EPOLLIN;
	printf("mod et->lt: %d\n", epoll_ctl(et, EPOLL_CTL_MOD, rb, &e));
	printf("after mod: lt %d et %d\n", wait0(lt), wait0(et));
	printf("twice: lt %d et %d\n", wait0(lt), wait0(et));
	cons[0] = prod[0];
	printf("consumed: lt %d et %d\n", wait0(lt), wait0(et));
	struct epoll_event got[4];
	printf("blocking 50ms, empty: %d\n", epoll_wait(lt, got, 4, 50));
	return 0;
}
