/* Map values with special fields as clang emits them (BTF decl/type tags from the
 * attributes libbpf's bpf_helpers.h / bpf_experimental.h spell), for
 * tests/differential/test_map_btf_fields_clang.py.  The graph-node structs are declared
 * here because the distribution's linux/bpf.h predates them. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct bpf_list_head { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct bpf_list_node { __u64 __opaque[3]; } __attribute__((aligned(8)));
struct bpf_rb_root { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct bpf_rb_node { __u64 __opaque[4]; } __attribute__((aligned(8)));
struct bpf_refcount { __u32 __opaque[1]; } __attribute__((aligned(4)));
#define __contains(name, node) __attribute__((btf_decl_tag("contains:" #name ":" #node)))
struct node_data { long key; struct bpf_list_node node; };
struct rnode { long key; struct bpf_rb_node rb; struct bpf_refcount ref; };
struct val { struct bpf_spin_lock lock; int x; struct bpf_timer t; long task; };
struct lval { struct bpf_spin_lock lock; struct bpf_list_head head __contains(node_data, node); };
struct rval { struct bpf_spin_lock lock; struct bpf_rb_root root __contains(rnode, rb); };
struct uval { long x; long skb; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct val); } m SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1); __type(key, int); __type(value, struct lval); } ml SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct rval); } mr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct uval); } mu SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct node_data); } mn SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct rnode); } mrn SEC(".maps");
SEC("tc") int prog(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
