"""Program types — the bpf_verifier_ops of each type this kernel supports (≈ filter.c, bpf_trace.c).

``VERIFIER_OPS_BY_TYPE`` is read by the verifier until `fakekernel.bpf_types.PROG_TYPES` carries
these records (the lead merges them there).
"""
from __future__ import annotations

from fakekernel.progs import cgroup_skb, kprobe, sched_cls, socket_filter, tracepoint, xdp
from uapi.bpf import ProgType

__all__ = ["VERIFIER_OPS_BY_TYPE"]

VERIFIER_OPS_BY_TYPE = {
    ProgType.SOCKET_FILTER: socket_filter.VERIFIER_OPS,
    ProgType.SCHED_CLS: sched_cls.VERIFIER_OPS,
    ProgType.SCHED_ACT: sched_cls.VERIFIER_OPS,
    ProgType.XDP: xdp.VERIFIER_OPS,
    ProgType.CGROUP_SKB: cgroup_skb.VERIFIER_OPS,
    ProgType.KPROBE: kprobe.VERIFIER_OPS,
    ProgType.TRACEPOINT: tracepoint.VERIFIER_OPS,
}
