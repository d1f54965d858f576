"""bpf_perf_event_output and its networking forms — kernel/trace/bpf_trace.c (bpf_perf_event_output,
__bpf_perf_event_output, bpf_event_output), net/core/filter.c (bpf_skb_event_output,
bpf_xdp_event_output).

One helper id, three runtimes chosen by the program's type, as the prog types' get_func_proto
pick three protos: tracing programs send ``data`` alone (flags: the index only); skb and XDP
programs may append the first ``(flags & BPF_F_CTXLEN_MASK) >> 32`` packet bytes (-EFAULT
past the packet).  The target is the PERF_EVENT_ARRAY slot ``flags & BPF_F_INDEX_MASK``
(BPF_F_CURRENT_CPU: the running CPU's): -E2BIG past max_entries, -ENOENT for an empty slot,
-EINVAL unless the event is a PERF_COUNT_SW_BPF_OUTPUT software event, -EOPNOTSUPP unless it
is active on this CPU, -ENOSPC when it has no ring buffer or the buffer is full (a lost sample).
"""
from __future__ import annotations

from fakekernel.errors import Errno
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.net_xdp import _xdp_copy, xdp_get_buff_len
from fakekernel.perf.ring_buffer import perf_output_sample
from uapi.bpf import FuncId, PerfOutputFlags, ProgType
from uapi.perf_event import PerfSwId, PerfType

__all__ = ["PERF_OUTPUT_RUNTIME", "bpf_perf_event_output", "bpf_event_output"]

_INDEX_MASK = int(PerfOutputFlags.INDEX_MASK)
_CURRENT_CPU = int(PerfOutputFlags.CURRENT_CPU)
_CTXLEN_MASK = int(PerfOutputFlags.CTXLEN_MASK)
_CTXLEN_SHIFT = 32

_SKB_PROG_TYPES = frozenset({
    ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.CGROUP_SKB,
    ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT, ProgType.LWT_SEG6LOCAL,
    ProgType.SK_SKB,
})


def _skb_bytes(skb, n: int) -> bytes:
    """bpf_skb_copy(): the first `n` bytes from skb->data."""
    return bytes(skb.head[skb.data_off:skb.data_off + n])


def bpf_event_output(env, bpf_map, flags: int, frags: list[bytes]) -> int:
    """__bpf_perf_event_output(): 0 or -errno."""
    cpu = env.cpu
    index = flags & _INDEX_MASK
    if index == _CURRENT_CPU:
        index = cpu
    if index >= bpf_map.max_entries:
        return neg_errno(Errno.E2BIG)
    ee = bpf_map.fd_array_elem(index)
    if ee is None:
        return neg_errno(Errno.ENOENT)
    event = ee.event
    if event.attr.type != PerfType.SOFTWARE or event.attr.config != PerfSwId.BPF_OUTPUT:
        return neg_errno(Errno.EINVAL)
    if event.oncpu != cpu:
        return neg_errno(Errno.EOPNOTSUPP)
    kern = env.kernel
    task = kern.current
    ret = perf_output_sample(event, frags, pid=task.tgid, tid=task.pid, cpu=cpu,
                             time_ns=kern.ktime_get_ns())
    return neg_errno(-ret) if ret < 0 else 0


def bpf_perf_event_output(env, r1, r2, r3, r4, r5) -> int:
    """bpf_perf_event_output(ctx, map, flags, data, size) for the prog type that runs."""
    bpf_map = env.mem.object_at(r2)
    flags = r3
    data = env.mem.read(r4, r5) if r5 else b""
    ptype = env.prog.type
    if ptype in _SKB_PROG_TYPES or ptype == ProgType.XDP:
        ctx_size = (flags & _CTXLEN_MASK) >> _CTXLEN_SHIFT
        if flags & ~(_CTXLEN_MASK | _INDEX_MASK):
            return neg_errno(Errno.EINVAL)
        pkt = env.ctx
        if ptype == ProgType.XDP:
            if pkt is None or ctx_size > xdp_get_buff_len(pkt):
                return neg_errno(Errno.EFAULT)
            extra = _xdp_copy(pkt, 0, None, ctx_size) if ctx_size else b""
        else:
            if pkt is None or ctx_size > pkt.len:
                return neg_errno(Errno.EFAULT)
            extra = _skb_bytes(pkt, ctx_size) if ctx_size else b""
        return bpf_event_output(env, bpf_map, flags, [data, extra])
    if flags & ~_INDEX_MASK:
        return neg_errno(Errno.EINVAL)
    return bpf_event_output(env, bpf_map, flags, [data])


PERF_OUTPUT_RUNTIME = {
    FuncId.perf_event_output: bpf_perf_event_output,
}
