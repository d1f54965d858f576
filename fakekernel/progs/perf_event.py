"""BPF_PROG_TYPE_PERF_EVENT — kernel/trace/bpf_trace.c (perf_event_verifier_ops,
pe_prog_func_proto, pe_prog_is_valid_access, pe_prog_convert_ctx_access).

The program reads a ``struct bpf_perf_event_data`` (read-only): the sampled ``pt_regs``
(whole 8-byte words only), and ``sample_period`` / ``addr`` of the sample (narrow loads
allowed).  fakekernel runs it on the uapi struct itself, filled as convert_ctx_access would
present ``struct bpf_perf_event_data_kern``.  No test_run (ENOTSUPP); attach is
PERF_EVENT_IOC_SET_BPF or a perf link on a software/hardware event (`fakekernel.perf.bpf_event`),
and `fakekernel.perf.overflow.perf_event_overflow` runs it.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.perf_prog import GET_STACKID_PROTO_PE, PERF_PROG_PROTOS
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.ctx import BPF_READ, ctx_range, narrow_access_ok
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "PERF_EVENT_DATA", "PERF_EVENT_DATA_SIZE"]

PERF_EVENT_DATA = "struct bpf_perf_event_data"
PERF_EVENT_DATA_SIZE = ffi.sizeof(PERF_EVENT_DATA)
_U64 = ffi.sizeof("__u64")
_LONG = ffi.sizeof("long")
_NARROW = (ctx_range(PERF_EVENT_DATA, "sample_period"), ctx_range(PERF_EVENT_DATA, "addr"))


def pe_prog_func_proto(func_id: int, prog):
    """perf_event_output, get_stack and get_attach_cookie have _tp/_pe prototypes of the same
    shape as the tracing ones; get_stackid's is not GPL-only; perf_prog_read_value and
    read_branch_records are PERF_EVENT's own."""
    if func_id == FuncId.get_stackid:
        return GET_STACKID_PROTO_PE
    if func_id in PERF_PROG_PROTOS:
        return PERF_PROG_PROTOS[func_id]
    return bpf_tracing_func_proto(func_id, prog)


def pe_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= PERF_EVENT_DATA_SIZE:
        return False
    if access != BPF_READ:
        return False
    if off % size != 0:
        return False       # a 64-bit kernel: no 4-byte-offset halves of a long
    if any(off in r for r in _NARROW):
        info.ctx_field_size = _U64
        return narrow_access_ok(off, size, _U64)
    return size == _LONG


VERIFIER_OPS = VerifierOps(get_func_proto=pe_prog_func_proto, is_valid_access=pe_prog_is_valid_access,
                           ctx_size=PERF_EVENT_DATA_SIZE, kctx_size=PERF_EVENT_DATA_SIZE)
