"""BPF_PROG_TYPE_RAW_TRACEPOINT(_WRITABLE) — kernel/trace/bpf_trace.c (raw_tracepoint_verifier_ops,
raw_tp_prog_func_proto, raw_tp_prog_is_valid_access, raw_tp_writable_prog_is_valid_access;
bpf_tracing_ctx_access() of include/linux/bpf.h).

The ctx is ``struct bpf_raw_tracepoint_args``: the tracepoint's arguments as an array of u64,
at most MAX_BPF_FUNC_ARGS of them, read-only.  The highest byte a program reads is kept in
``prog.aux.max_ctx_offset`` (by the verifier); attaching to a tracepoint with fewer
arguments, or test-running with a shorter ctx_in, is EINVAL.  The writable flavour's first
argument is a pointer to the tracepoint's writable buffer.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.ctx import BPF_READ
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "WRITABLE_VERIFIER_OPS", "MAX_BPF_FUNC_ARGS", "RAW_TP_CTX_MAX",
           "raw_tp_prog_func_proto", "bpf_tracing_ctx_access"]

MAX_BPF_FUNC_ARGS = 12              # include/linux/bpf.h
_U64 = ffi.sizeof("__u64")
RAW_TP_CTX_MAX = MAX_BPF_FUNC_ARGS * _U64

# the raw_tp flavours of the ctx-taking tracing helpers (the ctx is the args array, the
# helper builds its own pt_regs); bpf_get_stack_proto_raw_tp declares its buffer read-only
_RAW_TP_PROTOS = {p.func: p for p in (
    FuncProto(func=FuncId.perf_event_output, gpl_only=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING,
                         ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO)),
    FuncProto(func=FuncId.get_stackid, gpl_only=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING)),
    FuncProto(func=FuncId.get_stack, gpl_only=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                         ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),
    FuncProto(func=FuncId.get_attach_cookie, gpl_only=False, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_CTX,)),
)}


def raw_tp_prog_func_proto(func_id: int, prog):
    proto = _RAW_TP_PROTOS.get(func_id)
    if proto is not None:
        return proto
    return bpf_tracing_func_proto(func_id, prog)


def bpf_tracing_ctx_access(off: int, size: int, access: int) -> bool:
    """bpf_tracing_ctx_access(): aligned reads inside the u64 argument array."""
    if off < 0 or off >= RAW_TP_CTX_MAX:
        return False
    if access != BPF_READ:
        return False
    return off % size == 0


def raw_tp_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    return bpf_tracing_ctx_access(off, size, access)


def raw_tp_writable_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    """The first argument is the tracepoint's writable buffer: a full u64 read only."""
    if off == 0:
        if size != _U64 or access != BPF_READ:
            return False
        info.reg_type = RegType.PTR_TO_TP_BUFFER
    return raw_tp_prog_is_valid_access(off, size, access, prog, info)


VERIFIER_OPS = VerifierOps(get_func_proto=raw_tp_prog_func_proto,
                           is_valid_access=raw_tp_prog_is_valid_access,
                           ctx_size=RAW_TP_CTX_MAX, kctx_size=RAW_TP_CTX_MAX)
WRITABLE_VERIFIER_OPS = VerifierOps(get_func_proto=raw_tp_prog_func_proto,
                                    is_valid_access=raw_tp_writable_prog_is_valid_access,
                                    ctx_size=RAW_TP_CTX_MAX, kctx_size=RAW_TP_CTX_MAX)
