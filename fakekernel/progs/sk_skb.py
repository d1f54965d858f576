"""BPF_PROG_TYPE_SK_SKB and BPF_PROG_TYPE_SK_MSG — net/core/filter.c (sk_skb_verifier_ops,
sk_skb_func_proto, sk_skb_is_valid_access; sk_msg_verifier_ops, sk_msg_func_proto,
sk_msg_is_valid_access).

Programs of these types attach to a SOCKMAP/SOCKHASH (fakekernel/maps/sock_map_progs.py)
and run on socket traffic, which the simulated world does not carry; neither type has a
PROG_TEST_RUN (their bpf_prog_ops are empty).  What is modelled is loading them: the helper
sets and the context access rules.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, SKB_KCTX_SIZE, SKB_UAPI_SIZE, ctx_range, ctx_range_ptr
from fakekernel.progs.ctx import ctx_range_till
from fakekernel.progs.skb import F, bpf_skb_is_valid_access
from fakekernel.progs.skb_convert import sk_skb_convert_ctx_access
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["SK_SKB_VERIFIER_OPS", "SK_MSG_VERIFIER_OPS", "SK_SKB_FUNCS", "SK_MSG_FUNCS",
           "SK_MSG_UAPI_SIZE"]

SK_SKB_FUNCS = frozenset({
    FuncId.skb_store_bytes, FuncId.skb_load_bytes, FuncId.skb_pull_data, FuncId.skb_change_tail,
    FuncId.skb_change_head, FuncId.skb_adjust_room, FuncId.get_socket_cookie,
    FuncId.get_socket_uid, FuncId.sk_redirect_map, FuncId.sk_redirect_hash,
    FuncId.perf_event_output, FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp, FuncId.sk_release,
    FuncId.skc_lookup_tcp,
})
SK_MSG_FUNCS = frozenset({
    FuncId.msg_redirect_map, FuncId.msg_redirect_hash, FuncId.msg_apply_bytes,
    FuncId.msg_cork_bytes, FuncId.msg_pull_data, FuncId.msg_push_data, FuncId.msg_pop_data,
    FuncId.perf_event_output, FuncId.get_current_uid_gid, FuncId.sk_storage_get,
    FuncId.sk_storage_delete, FuncId.get_netns_cookie, FuncId.get_cgroup_classid,
})
_SK_SKB_NEVER = (F.tc_classid, F.data_meta, F.tstamp, F.wire_len, F.hwtstamp)
_SK_SKB_WRITABLE = (F.tc_index, F.priority)

_MSG = "struct sk_msg_md"
SK_MSG_UAPI_SIZE = ffi.sizeof(_MSG)
_U32, _U64 = ffi.sizeof("__u32"), ffi.sizeof("__u64")
_MSG_PTRS = {ctx_range_ptr(_MSG, "data").start: RegType.PTR_TO_PACKET,
             ctx_range_ptr(_MSG, "data_end").start: RegType.PTR_TO_PACKET_END,
             ctx_range_ptr(_MSG, "sk").start: RegType.PTR_TO_SOCKET}
_MSG_U32 = (ctx_range(_MSG, "family"), ctx_range(_MSG, "remote_ip4"), ctx_range(_MSG, "local_ip4"),
            ctx_range_till(_MSG, ("remote_ip6", 0), ("remote_ip6", 3)),
            ctx_range_till(_MSG, ("local_ip6", 0), ("local_ip6", 3)),
            ctx_range(_MSG, "remote_port"), ctx_range(_MSG, "local_port"), ctx_range(_MSG, "size"))


def sk_skb_func_proto(func_id: int, prog):
    return net_func_proto(SK_SKB_FUNCS, func_id, prog)


def sk_skb_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if any(off in r for r in _SK_SKB_NEVER):
        return False
    if access == BPF_WRITE and not any(off in r for r in _SK_SKB_WRITABLE):
        return False
    if off in F.mark:
        return False
    if off in F.data:
        info.reg_type = RegType.PTR_TO_PACKET
    elif off in F.data_end:
        info.reg_type = RegType.PTR_TO_PACKET_END
    return bpf_skb_is_valid_access(off, size, access, prog, info)


def sk_msg_func_proto(func_id: int, prog):
    return net_func_proto(SK_MSG_FUNCS, func_id, prog)


def sk_msg_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if access == BPF_WRITE or off < 0 or off >= SK_MSG_UAPI_SIZE or off % size:
        return False
    if off in _MSG_PTRS:
        if size != _U64:
            return False
        info.reg_type = _MSG_PTRS[off]
        return True
    return size == _U32 and any(off in r for r in _MSG_U32)


def sk_msg_convert_ctx_access(insn):
    """Programs of this type never run here: their loads stay as written."""
    return None


SK_SKB_VERIFIER_OPS = VerifierOps(get_func_proto=sk_skb_func_proto,
                                  is_valid_access=sk_skb_is_valid_access,
                                  convert_ctx_access=sk_skb_convert_ctx_access,
                                  ctx_size=SKB_UAPI_SIZE, kctx_size=SKB_KCTX_SIZE)
SK_MSG_VERIFIER_OPS = VerifierOps(get_func_proto=sk_msg_func_proto,
                                  is_valid_access=sk_msg_is_valid_access,
                                  convert_ctx_access=sk_msg_convert_ctx_access,
                                  ctx_size=SK_MSG_UAPI_SIZE, kctx_size=SK_MSG_UAPI_SIZE)
