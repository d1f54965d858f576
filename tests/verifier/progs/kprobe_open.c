#include "common.h"
struct map_def calls SEC("maps") = { .type = 1, .key_size = 4, .value_size = 8, .max_entries = 1024 };
SEC("kprobe/do_sys_openat2") int kprobe_open(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    char path[16];
    bpf_probe_read_kernel(path, sizeof(path), (void *)ctx->si);
    __u64 *n = bpf_map_lookup_elem(&calls, &pid);
    if (n) { *n += 1; return 0; }
    __u64 one = 1;
    bpf_map_update_elem(&calls, &pid, &one, 0);
    char fmt[] = "open %s by %d\n";
    bpf_trace_printk(fmt, sizeof(fmt), path, pid);
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
