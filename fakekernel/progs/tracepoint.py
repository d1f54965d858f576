"""BPF_PROG_TYPE_TRACEPOINT — kernel/trace/bpf_trace.c (tracepoint_verifier_ops, tp_prog_func_proto,
tp_prog_is_valid_access).  The ctx is the raw trace record; its first 8 bytes (the common
fields) are off limits, and nothing past PERF_MAX_TRACE_SIZE."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.ctx import BPF_READ
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "PERF_MAX_TRACE_SIZE"]

PERF_MAX_TRACE_SIZE = 8192          # include/linux/trace_events.h
_COMMON_FIELDS = ffi.sizeof("void *")


def tp_prog_func_proto(func_id: int, prog):
    return bpf_tracing_func_proto(func_id, prog)


def tp_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < _COMMON_FIELDS or off >= PERF_MAX_TRACE_SIZE:
        return False
    if access != BPF_READ:
        return False
    return off % size == 0


VERIFIER_OPS = VerifierOps(get_func_proto=tp_prog_func_proto, is_valid_access=tp_prog_is_valid_access,
                           ctx_size=PERF_MAX_TRACE_SIZE, kctx_size=PERF_MAX_TRACE_SIZE)
