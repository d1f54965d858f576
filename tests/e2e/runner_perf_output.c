/* A perf buffer the way bcc/libbpf's perf_buffer read one: a BPF_OUTPUT event on CPU 0,
 * mmap of 1+2 pages, the fd in a PERF_EVENT_ARRAY and in an epoll set; an XDP program run with
 * BPF_PROG_TEST_RUN sends 5 bytes + 14 packet bytes; print what epoll says and the ring's bytes. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }

static int load(int map_fd, uint64_t flags) {
    struct bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 6, .src_reg = 1},
        {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .imm = 0x55667788},
        {.imm = 0x11223344},
        {.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = 10, .src_reg = 1, .off = -8},
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 1, .src_reg = 6},
        {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 2, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map_fd},
        {.imm = 0},
        {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 3, .imm = (int32_t)(uint32_t)flags},
        {.imm = (int32_t)(flags >> 32)},
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 4, .src_reg = 10},
        {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 4, .imm = -8},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 5, .imm = 5},
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_perf_event_output},
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

static long run(int prog) {
    unsigned char pkt[64];
    for (int i = 0; i < 64; i++) pkt[i] = i;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.test.prog_fd = prog;
    a.test.data_in = (uint64_t)(uintptr_t)pkt;
    a.test.data_size_in = sizeof pkt;
    long r = sys_bpf(BPF_PROG_TEST_RUN, &a);
    return r < 0 ? -errno : (long)(int32_t)a.test.retval;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof set, &set);

    struct perf_event_attr pa;
    memset(&pa, 0, sizeof pa);
    pa.type = PERF_TYPE_SOFTWARE;
    pa.size = sizeof pa;
    pa.config = PERF_COUNT_SW_BPF_OUTPUT;
    pa.sample_type = PERF_SAMPLE_RAW;
    pa.sample_period = 1;
    pa.wakeup_events = 1;
    int ev = syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
    size_t len = 3 * 4096;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, ev, 0);
    printf("event %s mmap %s\n", ev >= 0 ? "ok" : strerrorname_np(errno),
           m != MAP_FAILED ? "ok" : strerrorname_np(errno));
    if (ev < 0 || m == MAP_FAILED) return 1;
    volatile struct perf_event_mmap_page *pg = m;

    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_PERF_EVENT_ARRAY;
    a.key_size = a.value_size = 4;
    a.max_entries = 2;
    int arr = sys_bpf(BPF_MAP_CREATE, &a);
    uint32_t key = 0, val = ev;
    memset(&a, 0, sizeof a);
    a.map_fd = arr;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&val;
    printf("update: %ld\n", sys_bpf(BPF_MAP_UPDATE_ELEM, &a));

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0xabc};
    printf("epoll_ctl: %d\n", epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e));
    struct epoll_event got[4];
    printf("epoll_wait before: %d\n", epoll_wait(ep, got, 4, 0));

    int prog = load(arr, (14ULL << 32) | 0xffffffffULL);
    int prog_empty = load(arr, 1);
    printf("progs: %s %s\n", prog >= 0 ? "ok" : strerrorname_np(errno),
           prog_empty >= 0 ? "ok" : strerrorname_np(errno));
    printf("run: %ld\n", run(prog));
    int n = epoll_wait(ep, got, 4, 2000);
    printf("epoll_wait after: %d data %#llx\n", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
    printf("run empty slot: %ld\n", run(prog_empty));
    uint64_t head = pg->data_head;
    printf("data_head %llu data_offset %llu data_size %llu\n", (unsigned long long)head,
           (unsigned long long)pg->data_offset, (unsigned long long)pg->data_size);
    const unsigned char *data = (const unsigned char *)m + 4096;
    printf("ring:");
    for (uint64_t i = 0; i < head && i < 256; i++) printf("%02x", data[i]);
    printf("\n");
    pg->data_tail = head;
    printf("run again: %ld\n", run(prog));
    printf("data_head %llu\n", (unsigned long long)pg->data_head);
    return 0;
}
