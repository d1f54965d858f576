"""BPF_PROG_TYPE_SCHED_CLS and SCHED_ACT — net/core/filter.c (tc_cls_act_verifier_ops,
tc_cls_act_func_proto, tc_cls_act_is_valid_access)."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, SKB_KCTX_SIZE, SKB_UAPI_SIZE
from fakekernel.progs.skb import F, bpf_skb_is_valid_access
from fakekernel.progs.skb_convert import tc_cls_act_convert_ctx_access
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "TC_CLS_ACT_FUNCS"]

TC_CLS_ACT_FUNCS = frozenset({
    FuncId.check_mtu, FuncId.clone_redirect, FuncId.csum_diff, FuncId.csum_level, FuncId.csum_update,
    FuncId.fib_lookup, FuncId.get_hash_recalc, FuncId.get_listener_sock, FuncId.get_netns_cookie,
    FuncId.get_route_realm, FuncId.get_socket_cookie, FuncId.get_socket_uid, FuncId.l3_csum_replace,
    FuncId.l4_csum_replace, FuncId.redirect, FuncId.redirect_neigh, FuncId.redirect_peer,
    FuncId.set_hash, FuncId.set_hash_invalid, FuncId.sk_assign, FuncId.sk_fullsock, FuncId.sk_lookup_tcp,
    FuncId.sk_lookup_udp, FuncId.sk_release, FuncId.sk_storage_delete, FuncId.sk_storage_get,
    FuncId.skb_adjust_room, FuncId.skb_ancestor_cgroup_id, FuncId.skb_cgroup_classid,
    FuncId.skb_cgroup_id, FuncId.skb_change_head, FuncId.skb_change_proto, FuncId.skb_change_tail,
    FuncId.skb_change_type, FuncId.skb_ecn_set_ce, FuncId.skb_get_tunnel_key, FuncId.skb_get_tunnel_opt,
    FuncId.skb_get_xfrm_state, FuncId.skb_load_bytes, FuncId.skb_load_bytes_relative,
    FuncId.skb_pull_data, FuncId.skb_set_tstamp, FuncId.skb_set_tunnel_key, FuncId.skb_set_tunnel_opt,
    FuncId.skb_store_bytes, FuncId.skb_under_cgroup, FuncId.skb_vlan_pop, FuncId.skb_vlan_push,
    FuncId.skc_lookup_tcp, FuncId.tcp_check_syncookie, FuncId.tcp_gen_syncookie,
    FuncId.tcp_raw_check_syncookie_ipv4, FuncId.tcp_raw_check_syncookie_ipv6,
    FuncId.tcp_raw_gen_syncookie_ipv4, FuncId.tcp_raw_gen_syncookie_ipv6, FuncId.tcp_sock,
    FuncId.perf_event_output,       # bpf_skb_event_output_proto
})
_WRITABLE = (F.mark, F.tc_index, F.priority, F.tc_classid, F.cb, F.tstamp, F.queue_mapping)
_U8 = ffi.sizeof("__u8")


def tc_cls_act_func_proto(func_id: int, prog):
    return net_func_proto(TC_CLS_ACT_FUNCS, func_id, prog)


def tc_cls_act_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if access == BPF_WRITE and not any(off in r for r in _WRITABLE):
        return False
    if off in F.data:
        info.reg_type = RegType.PTR_TO_PACKET
    elif off in F.data_meta:
        info.reg_type = RegType.PTR_TO_PACKET_META
    elif off in F.data_end:
        info.reg_type = RegType.PTR_TO_PACKET_END
    elif off in F.family_till_local_port:
        return False
    elif off == F.tstamp_type:
        return size == _U8
    return bpf_skb_is_valid_access(off, size, access, prog, info)


VERIFIER_OPS = VerifierOps(get_func_proto=tc_cls_act_func_proto, is_valid_access=tc_cls_act_is_valid_access,
                           convert_ctx_access=tc_cls_act_convert_ctx_access, ctx_size=SKB_UAPI_SIZE,
                           kctx_size=SKB_KCTX_SIZE)
