"""BPF_PROG_TYPE_SK_REUSEPORT — net/core/filter.c (sk_reuseport_verifier_ops,
sk_reuseport_func_proto, sk_reuseport_is_valid_access, sk_reuseport_convert_ctx_access).

The program reads a ``struct sk_reuseport_md`` (read-only).  fakekernel runs it on the uapi
struct itself, filled the way convert_ctx_access presents ``struct sk_reuseport_kern``: data
and data_end are 8-byte packet pointers, eth_protocol the be16 skb->protocol as a load shows
it, sk / migrating_sk pointers to sock regions.  Expected attach types SK_REUSEPORT_SELECT
(the default) and SK_REUSEPORT_SELECT_OR_MIGRATE share these rules.  No test_run (ENOTSUPP).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.base import bpf_base_func_proto
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.helpers.reuseport import SK_SELECT_REUSEPORT_PROTO
from fakekernel.progs.ctx import BPF_READ, ctx_range, narrow_access_ok
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "SK_REUSEPORT_MD", "SK_REUSEPORT_MD_SIZE"]

SK_REUSEPORT_MD = "struct sk_reuseport_md"
SK_REUSEPORT_MD_SIZE = ffi.sizeof(SK_REUSEPORT_MD)
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_SKB_PROTOCOL_SIZE = ffi.sizeof("__be16")          # sizeof_field(struct sk_buff, protocol)


def _off(field: str) -> int:
    return ffi.offsetof(SK_REUSEPORT_MD, field)


_PTR_FIELDS = {
    _off("data"): RegType.PTR_TO_PACKET,
    _off("data_end"): RegType.PTR_TO_PACKET_END,
    _off("sk"): RegType.PTR_TO_SOCKET,
    _off("migrating_sk"): RegType.PTR_TO_SOCK_COMMON | TypeFlag.PTR_MAYBE_NULL,
}
_HASH = _off("hash")
_ETH_PROTOCOL = ctx_range(SK_REUSEPORT_MD, "eth_protocol")
_NARROW = (_ETH_PROTOCOL, ctx_range(SK_REUSEPORT_MD, "ip_protocol"),
           ctx_range(SK_REUSEPORT_MD, "bind_inany"), ctx_range(SK_REUSEPORT_MD, "len"))

_LOAD_BYTES = FuncProto(                    # sk_reuseport_load_bytes_proto
    func=FuncId.skb_load_bytes, gpl_only=False, ret_type=RetType.INTEGER,
    arg_types=(ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE))
_LOAD_BYTES_RELATIVE = FuncProto(           # sk_reuseport_load_bytes_relative_proto
    func=FuncId.skb_load_bytes_relative, gpl_only=False, ret_type=RetType.INTEGER,
    arg_types=(ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE,
               ArgType.ANYTHING))
_SOCKET_PTR_COOKIE = FuncProto(             # bpf_get_socket_ptr_cookie_proto
    func=FuncId.get_socket_cookie, gpl_only=False, ret_type=RetType.INTEGER,
    arg_types=(ArgType.PTR_TO_BTF_ID_SOCK_COMMON | TypeFlag.PTR_MAYBE_NULL,))
_OWN = {p.func: p for p in (SK_SELECT_REUSEPORT_PROTO, _LOAD_BYTES, _LOAD_BYTES_RELATIVE, _SOCKET_PTR_COOKIE)}


def sk_reuseport_func_proto(func_id: int, prog):
    if func_id == FuncId.perf_event_output:
        return None     # measured on 6.18: refused here, though bpf_base_func_proto offers it to root
    if func_id in _OWN:
        return _OWN[func_id]
    if func_id == FuncId.ktime_get_coarse_ns:
        from fakekernel.helpers import PROTOS
        return PROTOS[func_id]
    return bpf_base_func_proto(func_id, prog)


def sk_reuseport_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= SK_REUSEPORT_MD_SIZE or off % size or access != BPF_READ:
        return False
    if off in _PTR_FIELDS:
        info.reg_type = _PTR_FIELDS[off]
        return size == _U64
    if off == _HASH:
        return size == _U32
    if off in _ETH_PROTOCOL and size < _SKB_PROTOCOL_SIZE:
        return False
    if any(off in r for r in _NARROW):
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    return False


VERIFIER_OPS = VerifierOps(get_func_proto=sk_reuseport_func_proto,
                           is_valid_access=sk_reuseport_is_valid_access,
                           ctx_size=SK_REUSEPORT_MD_SIZE, kctx_size=SK_REUSEPORT_MD_SIZE)
