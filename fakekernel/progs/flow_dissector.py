"""BPF_PROG_TYPE_FLOW_DISSECTOR — net/core/filter.c (flow_dissector_verifier_ops,
flow_dissector_func_proto, flow_dissector_is_valid_access, flow_dissector_convert_ctx_access).

The program sees an ``__sk_buff`` of which it may only read ``data``, ``data_end`` (u32,
packet pointers) and ``flow_keys`` (u64, a ``struct bpf_flow_keys *`` it fills in).  The
kernel ctx is ``struct bpf_flow_dissector``; here it is the uapi struct with the flow_keys
pointer in place and the packet pointers in slots after it (`FD_PTR_SLOTS`).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import bpf_sk_base_func_proto
from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from fakekernel.progs.ctx import BPF_WRITE
from fakekernel.progs.skb import pointer_slot_load
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "FD_UAPI_SIZE", "FD_PTR_SLOTS", "FD_KCTX_SIZE", "FLOW_KEYS_OFF"]

_SKB = "struct __sk_buff"
FD_UAPI_SIZE = ffi.sizeof(_SKB)
_DATA = ffi.offsetof(_SKB, "data")
_DATA_END = ffi.offsetof(_SKB, "data_end")
FLOW_KEYS_OFF = ffi.offsetof(_SKB, "flow_keys")
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
FD_PTR_SLOTS = {_DATA: FD_UAPI_SIZE, _DATA_END: FD_UAPI_SIZE + _U64}
FD_KCTX_SIZE = FD_UAPI_SIZE + 2 * _U64

# bpf_flow_dissector_load_bytes_proto
_LOAD_BYTES = FuncProto(func=FuncId.skb_load_bytes, ret_type=RetType.INTEGER,
                        arg_types=(ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM,
                                   ArgType.CONST_SIZE))


def flow_dissector_func_proto(func_id: int, prog):
    if func_id == FuncId.skb_load_bytes:
        return _LOAD_BYTES
    if func_id == FuncId.perf_event_output:
        return None         # measured on 6.18: not in bpf_sk_base_func_proto (fakekernel's base lists it)
    return bpf_sk_base_func_proto(func_id, prog)


def flow_dissector_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= FD_UAPI_SIZE:
        return False
    if off % size != 0:
        return False
    if access == BPF_WRITE:
        return False
    if _DATA <= off < _DATA + _U32 or _DATA_END <= off < _DATA_END + _U32:
        if info.is_ldsx or size != _U32:
            return False
        info.reg_type = RegType.PTR_TO_PACKET if off < _DATA + _U32 else RegType.PTR_TO_PACKET_END
        return True
    if FLOW_KEYS_OFF <= off < FLOW_KEYS_OFF + _U64:
        if size != _U64:
            return False
        info.reg_type = RegType.PTR_TO_FLOW_KEYS
        return True
    return False


def flow_dissector_convert_ctx_access(insn):
    return pointer_slot_load(insn, FD_PTR_SLOTS)


VERIFIER_OPS = VerifierOps(get_func_proto=flow_dissector_func_proto,
                           is_valid_access=flow_dissector_is_valid_access,
                           convert_ctx_access=flow_dissector_convert_ctx_access,
                           ctx_size=FD_UAPI_SIZE, kctx_size=FD_KCTX_SIZE)
