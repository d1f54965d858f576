/* A tracepoint attach the way libbpf/bcc/lskel do it, plus the perf errno paths around it:
 * read <tracefs>/events/syscalls/sys_enter_openat/{id,format}, perf_event_open(TRACEPOINT),
 * PERF_EVENT_IOC_SET_BPF / ENABLE / QUERY_BPF / DISABLE, a perf link, a BPF output event in a
 * PERF_EVENT_ARRAY, and a real (cpu-clock) event next to the emulated ones.
 * Usage: runner_perf_client TRACEFS_DIR   (prints one line per step) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *err(long r) {
    static char buf[64];
    if (r >= 0) return "ok";
    snprintf(buf, sizeof buf, "-1 %s", strerrorname_np(errno));
    return buf;
}

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }

/* user_only: exclude_kernel, so that events the real kernel answers for an unprivileged
 * caller (under the runner) are judged on their type/config, not on perf_event_paranoid */
static long perf_open_x(uint32_t type, uint64_t config, int cpu, int sample_raw, int user_only) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = type;
    a.size = sizeof a;
    a.config = config;
    if (sample_raw) {
        a.sample_type = PERF_SAMPLE_RAW;
        a.sample_period = 1;
        a.wakeup_events = 1;
    }
    a.exclude_kernel = user_only;
    return syscall(__NR_perf_event_open, &a, user_only ? 0 : -1, user_only ? -1 : cpu, -1,
                   PERF_FLAG_FD_CLOEXEC);
}

static long perf_open(uint32_t type, uint64_t config, int cpu, int sample_raw) {
    return perf_open_x(type, config, cpu, sample_raw, 0);
}

static int load(uint32_t type) {
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = type;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = 2;
    a.license = (uint64_t)(uintptr_t)"GPL";
    return sys_bpf(BPF_PROG_LOAD, &a);
}

/* a TRACEPOINT program counting this process's openat calls in arr[0] */
static int load_counter(int arr, int pid) {
    struct bpf_insn insns[] = {
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_get_current_pid_tgid},
        {.code = BPF_ALU64 | BPF_RSH | BPF_K, .dst_reg = 0, .imm = 32},
        {.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = 0, .off = 11, .imm = pid},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 1, .imm = 0},
        {.code = BPF_STX | BPF_MEM | BPF_W, .dst_reg = 10, .src_reg = 1, .off = -4},
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 2, .src_reg = 10},
        {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 2, .imm = -4},
        {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = arr},
        {.imm = 0},
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_lookup_elem},
        {.code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = 0, .off = 3, .imm = 0},
        {.code = BPF_LDX | BPF_MEM | BPF_DW, .dst_reg = 1, .src_reg = 0},
        {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 1, .imm = 1},
        {.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = 0, .src_reg = 1},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_TRACEPOINT;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = sizeof insns / sizeof insns[0];
    a.license = (uint64_t)(uintptr_t)"GPL";
    return sys_bpf(BPF_PROG_LOAD, &a);
}

static void cat(const char *label, const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("%s: %s\n", label, err(fd));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("%s: %s", label, buf);
    close(fd);
}

int main(int argc, char **argv) {
    const char *tracefs = argc > 1 ? argv[1] : "/sys/kernel/tracing";
    char path[512], idbuf[32] = {0};
    setvbuf(stdout, NULL, _IONBF, 0);

    snprintf(path, sizeof path, "%s/events/syscalls/sys_enter_openat/id", tracefs);
    int idfd = open(path, O_RDONLY);
    if (idfd < 0 || read(idfd, idbuf, sizeof idbuf - 1) <= 0) {
        printf("id file: %s\n", err(-1));
        return 1;
    }
    close(idfd);
    long id = strtol(idbuf, NULL, 10);
    printf("id: %ld\n", id);
    snprintf(path, sizeof path, "%s/events/syscalls/sys_enter_openat/format", tracefs);
    cat("format", path);
    snprintf(path, sizeof path, "%s/events/sched/sched_process_exec/format", tracefs);
    cat("format", path);
    cat("uprobe type", "/sys/bus/event_source/devices/uprobe/type");
    cat("uprobe retprobe", "/sys/bus/event_source/devices/uprobe/format/retprobe");
    cat("tracepoint type", "/sys/bus/event_source/devices/tracepoint/type");

    int tp_prog = load(BPF_PROG_TYPE_TRACEPOINT), sf_prog = load(BPF_PROG_TYPE_SOCKET_FILTER);
    int tp_prog2 = load(BPF_PROG_TYPE_TRACEPOINT);
    printf("progs: %s %s %s\n", err(tp_prog), err(sf_prog), err(tp_prog2));

    long ev = perf_open(PERF_TYPE_TRACEPOINT, id, 0, 0);
    printf("perf_event_open tracepoint: %s\n", err(ev));
    printf("perf_event_open bad tracepoint id: %s\n", err(perf_open_x(PERF_TYPE_TRACEPOINT, 999999, 0, 0, 1)));
    printf("perf_event_open type 999: %s\n", err(perf_open_x(999, 0, 0, 0, 1)));
    printf("perf_event_open cpu 4096: %s\n", err(perf_open(PERF_TYPE_TRACEPOINT, id, 4096, 0)));
    int fdflags = fcntl(ev, F_GETFD);
    printf("cloexec: %d\n", fdflags & FD_CLOEXEC);
    printf("SET_BPF socket filter: %s\n", err(ioctl(ev, PERF_EVENT_IOC_SET_BPF, sf_prog)));
    printf("SET_BPF closed fd: %s\n", err(ioctl(ev, PERF_EVENT_IOC_SET_BPF, 999)));
    printf("SET_BPF tracepoint prog: %s\n", err(ioctl(ev, PERF_EVENT_IOC_SET_BPF, tp_prog)));
    printf("SET_BPF again: %s\n", err(ioctl(ev, PERF_EVENT_IOC_SET_BPF, tp_prog)));
    printf("ENABLE: %s\n", err(ioctl(ev, PERF_EVENT_IOC_ENABLE, 0)));
    uint64_t evid = 0;
    long r = ioctl(ev, PERF_EVENT_IOC_ID, &evid);
    printf("ID: %s nonzero %d\n", err(r), evid != 0);
    struct { uint32_t ids_len, prog_cnt, ids[4]; } q = {.ids_len = 4};
    r = ioctl(ev, PERF_EVENT_IOC_QUERY_BPF, &q);
    printf("QUERY_BPF: %s prog_cnt %u ids[1] %u\n", err(r), q.prog_cnt, q.ids[1]);
    printf("unknown perf ioctl: %s\n", err(ioctl(ev, _IO('$', 0x99), 0)));
    printf("DISABLE: %s\n", err(ioctl(ev, PERF_EVENT_IOC_DISABLE, 0)));

    long ev2 = perf_open(PERF_TYPE_TRACEPOINT, id, 1, 0);
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.link_create.prog_fd = tp_prog;
    a.link_create.target_fd = ev2;
    a.link_create.attach_type = BPF_PERF_EVENT;
    printf("perf link, prog already on the trace event: %s\n", err(sys_bpf(BPF_LINK_CREATE, &a)));
    a.link_create.prog_fd = tp_prog2;
    long link = sys_bpf(BPF_LINK_CREATE, &a);
    printf("perf link: %s\n", err(link));
    printf("SET_BPF on linked event: %s\n", err(ioctl(ev2, PERF_EVENT_IOC_SET_BPF, tp_prog2)));
    a.link_create.target_fd = -1;
    printf("perf link probe (target -1): %s\n", err(sys_bpf(BPF_LINK_CREATE, &a)));

    long out = perf_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT, 0, 1);
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_PERF_EVENT_ARRAY;
    a.key_size = a.value_size = 4;
    a.max_entries = 2;
    long arr = sys_bpf(BPF_MAP_CREATE, &a);
    uint32_t key = 0, val = (uint32_t)out;
    memset(&a, 0, sizeof a);
    a.map_fd = arr;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&val;
    printf("bpf output event: %s, in perf array: %s\n", err(out), err(sys_bpf(BPF_MAP_UPDATE_ELEM, &a)));
    val = (uint32_t)tp_prog;
    printf("prog fd in perf array: %s\n", err(sys_bpf(BPF_MAP_UPDATE_ELEM, &a)));

    long clk = perf_open_x(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, -1, 0, 1);
    printf("cpu-clock: %s, ENABLE %s\n", err(clk), err(ioctl(clk, PERF_EVENT_IOC_ENABLE, 0)));
    printf("perf ioctl on stdin: %s\n", err(ioctl(0, PERF_EVENT_IOC_ENABLE, 0)));
    close(link);
    printf("SET_BPF after link close: %s\n", err(ioctl(ev2, PERF_EVENT_IOC_SET_BPF, tp_prog2)));

    /* the tracepoint fires: count this process's openat calls */
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4;
    a.value_size = 8;
    a.max_entries = 1;
    long cnt_map = sys_bpf(BPF_MAP_CREATE, &a);
    int counter = load_counter(cnt_map, getpid());
    long ev3 = perf_open(PERF_TYPE_TRACEPOINT, id, 0, 0);
    printf("counter: %s %s\n", err(counter), err(ioctl(ev3, PERF_EVENT_IOC_SET_BPF, counter)));
    ioctl(ev3, PERF_EVENT_IOC_ENABLE, 0);
    for (int i = 0; i < 3; i++) close(open("/dev/null", O_RDONLY | O_CLOEXEC));
    ioctl(ev3, PERF_EVENT_IOC_DISABLE, 0);
    uint64_t count = 0;
    memset(&a, 0, sizeof a);
    a.map_fd = cnt_map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&count;
    key = 0;
    r = sys_bpf(BPF_MAP_LOOKUP_ELEM, &a);
    printf("openat count: %s %llu\n", err(r), (unsigned long long)count);
    return 0;
}
