"""Socket-map helper prototypes — net/core/sock_map.c (bpf_sk_redirect_map/hash,
bpf_msg_redirect_map/hash, bpf_sock_map_update, bpf_sock_hash_update) and net/core/filter.c
(bpf_msg_apply_bytes, bpf_msg_cork_bytes, bpf_msg_pull_data, bpf_msg_push_data,
bpf_msg_pop_data).

Only the prototypes: the SK_SKB / SK_MSG / SOCK_OPS programs that call these run on socket
traffic (strparser, sendmsg, TCP callbacks), which the simulated world does not carry, and
none of those types has a PROG_TEST_RUN.  The runtimes stay in UNIMPLEMENTED_AT_RUNTIME.
"""
from __future__ import annotations

from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from uapi.bpf import FuncId

__all__ = ["SOCK_MAP_PROTOS"]

_CTX, _MAP = ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR
_KEY, _ANY = ArgType.PTR_TO_MAP_KEY, ArgType.ANYTHING


def _proto(func, arg_types, **kw) -> FuncProto:
    return FuncProto(func=func, gpl_only=False, ret_type=RetType.INTEGER, arg_types=arg_types, **kw)


SOCK_MAP_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    _proto(FuncId.sk_redirect_map, (_CTX, _MAP, _ANY, _ANY)),
    _proto(FuncId.sk_redirect_hash, (_CTX, _MAP, _KEY, _ANY)),
    _proto(FuncId.msg_redirect_map, (_CTX, _MAP, _ANY, _ANY)),
    _proto(FuncId.msg_redirect_hash, (_CTX, _MAP, _KEY, _ANY)),
    _proto(FuncId.sock_map_update, (_CTX, _MAP, _KEY, _ANY), pkt_access=True),
    _proto(FuncId.sock_hash_update, (_CTX, _MAP, _KEY, _ANY), pkt_access=True),
    _proto(FuncId.msg_apply_bytes, (_CTX, _ANY)),
    _proto(FuncId.msg_cork_bytes, (_CTX, _ANY)),
    _proto(FuncId.msg_pull_data, (_CTX, _ANY, _ANY, _ANY)),
    _proto(FuncId.msg_push_data, (_CTX, _ANY, _ANY, _ANY)),
    _proto(FuncId.msg_pop_data, (_CTX, _ANY, _ANY, _ANY)),
)}
