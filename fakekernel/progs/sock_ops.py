"""BPF_PROG_TYPE_SOCK_OPS — net/core/filter.c (sock_ops_verifier_ops: sock_ops_func_proto,
sock_ops_is_valid_access).

The program reads a ``struct bpf_sock_ops``: the operation (``op``), its arguments, the
connection's addresses and ports, TCP state and counters (0 unless ``is_fullsock``), ``sk``,
and during the header-option callbacks the segment (``skb_data``/``skb_data_end`` packet
pointers, ``skb_len``, ``skb_tcp_flags``).  It writes ``reply`` (what the op asks back) and
``sk_txhash``.  fakekernel runs it on the uapi struct, filled by `fakekernel.cgroup_sock_ops`.
Return range [0, 1].
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import (CTX_ARG, EVENT_OUTPUT_DATA, LOAD_HDR_OPT, NETNS_COOKIE_CTX,
                                            RESERVE_HDR_OPT, SOCK_OPS_CB_FLAGS_SET, SOCK_OPS_GETSOCKOPT,
                                            SOCK_OPS_SETSOCKOPT, STORE_HDR_OPT, cgroup_common_func_proto)
from fakekernel.helpers.net import bpf_sk_base_func_proto
from fakekernel.helpers.proto import TypeFlag
from fakekernel.progs.ctx import BPF_WRITE, ctx_range, ctx_range_ptr, ctx_range_till, narrow_access_ok
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "SOCK_OPS", "SOCK_OPS_SIZE"]

SOCK_OPS = "struct bpf_sock_ops"
SOCK_OPS_SIZE = ffi.sizeof(SOCK_OPS)
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")

_WRITABLE = {ffi.offsetof(SOCK_OPS, "reply"), ffi.offsetof(SOCK_OPS, "sk_txhash")}
_U64_FIELDS = (ctx_range_till(SOCK_OPS, "bytes_received", "bytes_acked"),
               ctx_range(SOCK_OPS, "skb_hwtstamp"))
_SK = ctx_range_ptr(SOCK_OPS, "sk")
_SKB_DATA = ctx_range_ptr(SOCK_OPS, "skb_data")
_SKB_DATA_END = ctx_range_ptr(SOCK_OPS, "skb_data_end")
_SKB_TCP_FLAGS = ffi.offsetof(SOCK_OPS, "skb_tcp_flags")


def sock_ops_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= SOCK_OPS_SIZE or off % size:
        return False
    if access == BPF_WRITE:
        return off in _WRITABLE and size == _U32
    if any(off in r for r in _U64_FIELDS):
        return size == _U64
    for rng, reg_type in ((_SK, RegType.PTR_TO_SOCKET | TypeFlag.PTR_MAYBE_NULL),
                          (_SKB_DATA, RegType.PTR_TO_PACKET), (_SKB_DATA_END, RegType.PTR_TO_PACKET_END)):
        if off in rng:
            if size != _U64:
                return False
            info.reg_type = reg_type
            return True
    if off == _SKB_TCP_FLAGS:
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    return size == _U32


def _any(func_id: int):
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


_OWN = {
    FuncId.setsockopt: SOCK_OPS_SETSOCKOPT, FuncId.getsockopt: SOCK_OPS_GETSOCKOPT,
    FuncId.sock_ops_cb_flags_set: SOCK_OPS_CB_FLAGS_SET, FuncId.get_socket_cookie: CTX_ARG,
    FuncId.perf_event_output: EVENT_OUTPUT_DATA, FuncId.get_netns_cookie: NETNS_COOKIE_CTX,
    FuncId.load_hdr_opt: LOAD_HDR_OPT, FuncId.store_hdr_opt: STORE_HDR_OPT,
    FuncId.reserve_hdr_opt: RESERVE_HDR_OPT,
}
_SHARED = frozenset({FuncId.sock_map_update, FuncId.sock_hash_update, FuncId.sk_storage_get,
                     FuncId.sk_storage_delete, FuncId.tcp_sock})


def sock_ops_func_proto(func_id: int, prog):
    """sock_ops_func_proto(): no cgroup_current_func_proto here (sock_ops runs in softirq)."""
    p = cgroup_common_func_proto(func_id, prog)
    if p is not None:
        return p
    if func_id in _OWN:
        return _OWN[func_id]
    if func_id in _SHARED:
        return _any(func_id)
    return bpf_sk_base_func_proto(func_id, prog)


def _ret_range(prog) -> tuple[int, int]:
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=sock_ops_func_proto, is_valid_access=sock_ops_is_valid_access,
                           ctx_size=SOCK_OPS_SIZE, kctx_size=SOCK_OPS_SIZE, get_ret_range=_ret_range)
