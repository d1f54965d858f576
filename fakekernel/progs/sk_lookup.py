"""BPF_PROG_TYPE_SK_LOOKUP — net/core/filter.c (sk_lookup_verifier_ops, sk_lookup_func_proto,
sk_lookup_is_valid_access, bpf_sk_lookup_assign) and kernel/bpf/verifier.c (its [SK_DROP, SK_PASS]
return range).

The program reads a ``struct bpf_sk_lookup`` (read-only; narrow loads allowed, a 4-byte load of
``remote_port`` and loads of the padding after it for compatibility; ``sk`` is the selected
socket or NULL).  fakekernel runs it on the uapi struct itself, filled the way
convert_ctx_access would present the kernel's ``struct bpf_sk_lookup_kern`` (u16 family,
protocol and local port, zero padding, the other family's addresses reading as 0).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import bpf_sk_base_func_proto
from fakekernel.helpers.sk_lookup import SkLookupKern, bpf_sk_lookup_assign
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.progs.ctx import BPF_READ, ctx_range, ctx_range_till, narrow_access_ok
from fakekernel.verifier.regs import RegType
from uapi.bpf import SK_DROP, SK_PASS, FuncId
from uapi.ffi import ffi, offsetofend

__all__ = ["VERIFIER_OPS", "SK_LOOKUP_CTX", "SK_LOOKUP_CTX_SIZE", "SkLookupKern", "bpf_sk_lookup_assign"]

SK_LOOKUP_CTX = "struct bpf_sk_lookup"
SK_LOOKUP_CTX_SIZE = ffi.sizeof(SK_LOOKUP_CTX)
_U16 = ffi.sizeof("__u16")
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_SK = ctx_range(SK_LOOKUP_CTX, "sk")
_U32_FIELDS = (ctx_range(SK_LOOKUP_CTX, "family"), ctx_range(SK_LOOKUP_CTX, "protocol"),
               ctx_range(SK_LOOKUP_CTX, "remote_ip4"), ctx_range(SK_LOOKUP_CTX, "local_ip4"),
               ctx_range_till(SK_LOOKUP_CTX, ("remote_ip6", 0), ("remote_ip6", 3)),
               ctx_range_till(SK_LOOKUP_CTX, ("local_ip6", 0), ("local_ip6", 3)),
               ctx_range(SK_LOOKUP_CTX, "local_port"), ctx_range(SK_LOOKUP_CTX, "ingress_ifindex"))
_REMOTE_PORT = ctx_range(SK_LOOKUP_CTX, "remote_port")
_PADDING = range(offsetofend(SK_LOOKUP_CTX, "remote_port"), ffi.offsetof(SK_LOOKUP_CTX, "local_ip4"))

_ASSIGN = FuncProto(func=FuncId.sk_assign, ret_type=RetType.INTEGER,      # bpf_sk_lookup_assign_proto
                    arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_SOCKET_OR_NULL, ArgType.ANYTHING))
_EVENT_OUTPUT_DATA = FuncProto(func=FuncId.perf_event_output, gpl_only=True,   # bpf_event_output_data_proto
                               ret_type=RetType.INTEGER,
                               arg_types=(ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING,
                                          ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                                          ArgType.CONST_SIZE_OR_ZERO))


def sk_lookup_func_proto(func_id: int, prog):
    if func_id == FuncId.perf_event_output:
        return _EVENT_OUTPUT_DATA
    if func_id == FuncId.sk_assign:
        return _ASSIGN
    if func_id == FuncId.sk_release:
        from fakekernel.helpers import PROTOS
        return PROTOS[FuncId.sk_release]
    return bpf_sk_base_func_proto(func_id, prog)


def sk_lookup_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= SK_LOOKUP_CTX_SIZE:
        return False
    if off % size != 0:
        return False
    if access != BPF_READ:
        return False
    if off in _SK:
        info.reg_type = RegType.PTR_TO_SOCKET | TypeFlag.PTR_MAYBE_NULL
        return size == _U64
    if any(off in r for r in _U32_FIELDS):
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    if off in _REMOTE_PORT:
        if size == _U32:          # a 4-byte load of the 2-byte port, for old programs
            return True
        info.ctx_field_size = _U16
        return narrow_access_ok(off, size, _U16)
    if off in _PADDING:
        info.ctx_field_size = _U16
        return narrow_access_ok(off, size, _U16)
    return False


def sk_lookup_ret_range(prog) -> tuple[int, int]:
    return SK_DROP, SK_PASS


VERIFIER_OPS = VerifierOps(get_func_proto=sk_lookup_func_proto, is_valid_access=sk_lookup_is_valid_access,
                           ctx_size=SK_LOOKUP_CTX_SIZE, kctx_size=SK_LOOKUP_CTX_SIZE,
                           get_ret_range=sk_lookup_ret_range)
