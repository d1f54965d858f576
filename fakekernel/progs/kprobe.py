"""BPF_PROG_TYPE_KPROBE — kernel/trace/bpf_trace.c (kprobe_verifier_ops, kprobe_prog_func_proto,
kprobe_prog_is_valid_access).  The ctx is the raw ``struct pt_regs``: no access conversion."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.ctx import BPF_READ
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "PT_REGS_SIZE"]

PT_REGS_SIZE = ffi.sizeof("struct pt_regs")


def kprobe_prog_func_proto(func_id: int, prog):
    return bpf_tracing_func_proto(func_id, prog)


def kprobe_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= PT_REGS_SIZE:
        return False
    if access != BPF_READ:
        return False
    if off % size != 0:
        return False
    return off + size <= PT_REGS_SIZE


VERIFIER_OPS = VerifierOps(get_func_proto=kprobe_prog_func_proto, is_valid_access=kprobe_prog_is_valid_access,
                           ctx_size=PT_REGS_SIZE, kctx_size=PT_REGS_SIZE)
