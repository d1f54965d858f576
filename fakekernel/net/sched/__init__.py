"""Traffic control — net/sched/ (sch_api.c, sch_ingress.c, cls_api.c, cls_bpf.c).

The ingress side of the packet scheduler as eBPF loaders use it: the clsact (and ingress)
qdisc with its ingress/egress filter blocks, chains of classifiers by priority and
protocol, the "bpf" classifier (cls_bpf), the rtnetlink messages that manage them
(tc_netlink.py) and the mini-qdisc hook that runs the filters on packets (tc_run).
"""
