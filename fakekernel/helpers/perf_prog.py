"""Helpers of PERF_EVENT programs — kernel/trace/bpf_trace.c (bpf_perf_prog_read_value,
bpf_read_branch_records and their prototypes) and kernel/bpf/stackmap.c
(bpf_get_stackid_proto_pe).

``PERF_PROG_PROTOS`` holds the two prototypes only PERF_EVENT programs may call;
``GET_STACKID_PROTO_PE`` is get_stackid's PERF_EVENT prototype, which unlike the tracing one is
not GPL-only.  The runtimes read the run's `fakekernel.perf.overflow.BpfPerfEventDataKern`:
perf_prog_read_value gives the event's count (enabled/running times are not modelled: 0);
read_branch_records answers as for a sample without a branch stack (the simulated PMUs take
none): -EINVAL for an unknown flag, else -ENOENT.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32

__all__ = ["PERF_PROG_PROTOS", "PERF_PROG_RUNTIME", "GET_STACKID_PROTO_PE", "BPF_F_GET_BRANCH_RECORDS_SIZE"]

BPF_F_GET_BRANCH_RECORDS_SIZE = 1 << 0      # include/uapi/linux/bpf.h (anonymous enum)
_VALUE = "struct bpf_perf_event_value"
_VALUE_SIZE = ffi.sizeof(_VALUE)

PERF_PROG_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.perf_prog_read_value, gpl_only=True, ret_type=RetType.INTEGER,   # bpf_perf_prog_read_value_proto
              arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)),
    FuncProto(func=FuncId.read_branch_records, gpl_only=True, ret_type=RetType.INTEGER,   # bpf_read_branch_records_proto
              arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM_OR_NULL,
                         ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),
)}
GET_STACKID_PROTO_PE = FuncProto(func=FuncId.get_stackid, gpl_only=False, ret_type=RetType.INTEGER,
                                 arg_types=(ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING))


def bpf_perf_prog_read_value(env, r1, r2, r3, r4, r5) -> int:
    """A zeroed buffer and -EINVAL unless size is exactly struct bpf_perf_event_value."""
    size = u32(r3)
    if size != _VALUE_SIZE:
        env.mem.write(r2, bytes(size))
        return neg_errno(Errno.EINVAL)
    value = ffi.new(_VALUE + " *")
    value.counter = env.ctx.event.count
    env.mem.write(r2, bytes(ffi.buffer(value)))
    return 0


def bpf_read_branch_records(env, r1, r2, r3, r4, r5) -> int:
    if r4 & ~BPF_F_GET_BRANCH_RECORDS_SIZE:
        return neg_errno(Errno.EINVAL)
    return neg_errno(Errno.ENOENT)


PERF_PROG_RUNTIME = {FuncId.perf_prog_read_value: bpf_perf_prog_read_value,
                     FuncId.read_branch_records: bpf_read_branch_records}
