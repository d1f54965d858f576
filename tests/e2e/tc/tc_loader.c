/* libbpf's tc API (bpf_tc_hook_create / bpf_tc_attach / bpf_tc_query / bpf_tc_detach /
 * bpf_tc_hook_destroy) on lo, as a loader uses it.  Prints what libbpf reports: return
 * codes, the handle/priority it picked and which program a filter runs (by load order). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>

static __u32 ids[3];

static int load(int ret)
{
	struct bpf_insn insns[] = {
		{ .code = 0xb7, .dst_reg = 0, .imm = ret },	/* r0 = ret */
		{ .code = 0x95 },				/* exit */
	};
	return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "tc_fk", "GPL", insns, 2, NULL);
}

static const char *which(__u32 id)
{
	for (int i = 0; i < 3; i++)
		if (ids[i] && ids[i] == id)
			return i == 0 ? "prog0" : i == 1 ? "prog1" : "prog2";
	return id ? "other" : "none";
}

static void show(const char *what, int err, const struct bpf_tc_opts *o)
{
	printf("%s: %d", what, err);
	if (o)
		printf(" handle %u priority %u prog %s", o->handle, o->priority, which(o->prog_id));
	printf("\n");
}

int main(void)
{
	int fds[3];
	for (int i = 0; i < 3; i++) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		fds[i] = load(i == 2 ? TC_ACT_SHOT : TC_ACT_OK);
		if (fds[i] < 0 || bpf_obj_get_info_by_fd(fds[i], &info, &len)) {
			printf("load failed: %d\n", -errno);
			return 1;
		}
		ids[i] = info.id;
	}
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = 1, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_hook, egress, .ifindex = 1, .attach_point = BPF_TC_EGRESS);
	LIBBPF_OPTS(bpf_tc_hook, bad, .ifindex = 9999, .attach_point = BPF_TC_INGRESS);
	show("hook_create", bpf_tc_hook_create(&hook), NULL);
	show("hook_create again", bpf_tc_hook_create(&hook), NULL);
	show("hook_create egress", bpf_tc_hook_create(&egress), NULL);
	show("hook_create bad dev", bpf_tc_hook_create(&bad), NULL);

	LIBBPF_OPTS(bpf_tc_opts, a, .handle = 1, .priority = 1, .prog_fd = fds[0]);
	show("attach", bpf_tc_attach(&hook, &a), &a);
	LIBBPF_OPTS(bpf_tc_opts, a2, .handle = 1, .priority = 1, .prog_fd = fds[1]);
	show("attach again", bpf_tc_attach(&hook, &a2), NULL);
	a2.flags = BPF_TC_F_REPLACE;
	show("attach replace", bpf_tc_attach(&hook, &a2), &a2);
	LIBBPF_OPTS(bpf_tc_opts, a3, .prog_fd = fds[2]);
	show("attach auto", bpf_tc_attach(&hook, &a3), &a3);
	LIBBPF_OPTS(bpf_tc_opts, a4, .prog_fd = fds[0]);
	show("attach auto 2", bpf_tc_attach(&hook, &a4), &a4);
	LIBBPF_OPTS(bpf_tc_opts, e, .handle = 7, .priority = 3, .prog_fd = fds[2]);
	show("attach egress", bpf_tc_attach(&egress, &e), &e);

	LIBBPF_OPTS(bpf_tc_opts, q, .handle = 1, .priority = 1);
	show("query", bpf_tc_query(&hook, &q), &q);
	LIBBPF_OPTS(bpf_tc_opts, q2, .handle = 2, .priority = 1);
	show("query missing handle", bpf_tc_query(&hook, &q2), NULL);
	LIBBPF_OPTS(bpf_tc_opts, q3, .handle = 1, .priority = 9);
	show("query missing prio", bpf_tc_query(&hook, &q3), NULL);
	LIBBPF_OPTS(bpf_tc_opts, q4, .handle = 1, .priority = 49152);
	show("query auto", bpf_tc_query(&hook, &q4), &q4);
	LIBBPF_OPTS(bpf_tc_opts, q5, .handle = 7, .priority = 3);
	show("query egress", bpf_tc_query(&egress, &q5), &q5);

	LIBBPF_OPTS(bpf_tc_opts, d, .handle = 1, .priority = 1);
	show("detach", bpf_tc_detach(&hook, &d), NULL);
	show("detach again", bpf_tc_detach(&hook, &d), NULL);
	show("query detached", bpf_tc_query(&hook, &q), NULL);
	LIBBPF_OPTS(bpf_tc_hook, both, .ifindex = 1,
		    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
	show("hook_destroy", bpf_tc_hook_destroy(&both), NULL);
	show("query after destroy", bpf_tc_query(&hook, &q4), NULL);
	show("hook_destroy again", bpf_tc_hook_destroy(&both), NULL);
	return 0;
}
