"""Networking helpers — net/core/filter.c (and net/core/sock_map.c, bpf_sk_storage.c).

``NET_PROTOS`` holds the prototypes the verifier uses.  ``NET_RUNTIME`` holds the runtime
functions written so far: packet bytes (skb_load_bytes(_relative), skb_store_bytes,
xdp_load/store_bytes), checksums (csum_diff, l3/l4_csum_replace), the skb hash, skb_pull_data,
the XDP head/meta/tail adjustments (`fakekernel.helpers.net_xdp`), the skb geometry helpers
(`fakekernel.helpers.net_skb`) and bpf_redirect.  FIB lookups and MTU checks
(`fakekernel.helpers.fib`), socket lookups and casts (`sk_lookup_family`), socket cgroups
(`sk_cgroup`), SYN cookies (`syncookies`) and tunnel metadata (`tunnel`) have their own modules.
A networking helper without a runtime is listed in `fakekernel.helpers.UNIMPLEMENTED_AT_RUNTIME`
and calling it raises `HelperNotImplemented`.

Helpers reach the kernel-side packet as ``env.ctx`` (an `SkBuff` or an `XdpBuff`) and call its
``update_ctx()`` after changing what the program's ctx shows.
"""
from __future__ import annotations

from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from uapi.bpf import FuncId

__all__ = ["NET_PROTOS", "NET_RUNTIME", "bpf_sk_base_func_proto", "net_func_proto"]


def _proto(func, gpl_only, ret_type, arg_types, **kw) -> FuncProto:
    return FuncProto(func=func, gpl_only=gpl_only, ret_type=ret_type, arg_types=arg_types, **kw)


NET_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    _proto(FuncId.skb_store_bytes, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_store_bytes_proto
    _proto(FuncId.l3_csum_replace, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_l3_csum_replace_proto
    _proto(FuncId.l4_csum_replace, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_l4_csum_replace_proto
    _proto(FuncId.clone_redirect, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_clone_redirect_proto
    _proto(FuncId.get_cgroup_classid, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_cgroup_classid_proto
    _proto(FuncId.skb_vlan_push, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_vlan_push_proto
    _proto(FuncId.skb_vlan_pop, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_skb_vlan_pop_proto
    _proto(FuncId.skb_get_tunnel_key, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_get_tunnel_key_proto
    _proto(FuncId.skb_set_tunnel_key, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_set_tunnel_key_proto
    _proto(FuncId.redirect, False, RetType.INTEGER, (ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_redirect_proto
    _proto(FuncId.get_route_realm, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_route_realm_proto
    _proto(FuncId.skb_load_bytes, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)),  # bpf_skb_load_bytes_proto
    _proto(FuncId.csum_diff, False, RetType.INTEGER, (ArgType.PTR_TO_MEM | TypeFlag.PTR_MAYBE_NULL | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.PTR_TO_MEM | TypeFlag.PTR_MAYBE_NULL | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING), pkt_access=True),  # bpf_csum_diff_proto
    _proto(FuncId.skb_get_tunnel_opt, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)),  # bpf_skb_get_tunnel_opt_proto
    _proto(FuncId.skb_set_tunnel_opt, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE)),  # bpf_skb_set_tunnel_opt_proto
    _proto(FuncId.skb_change_proto, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_change_proto_proto
    _proto(FuncId.skb_change_type, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_skb_change_type_proto
    _proto(FuncId.skb_under_cgroup, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.ANYTHING)),  # bpf_skb_under_cgroup_proto
    _proto(FuncId.get_hash_recalc, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_hash_recalc_proto
    _proto(FuncId.skb_change_tail, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_change_tail_proto
    _proto(FuncId.skb_pull_data, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_skb_pull_data_proto
    _proto(FuncId.csum_update, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_csum_update_proto
    _proto(FuncId.set_hash_invalid, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_set_hash_invalid_proto
    _proto(FuncId.skb_change_head, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_change_head_proto
    _proto(FuncId.xdp_adjust_head, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_xdp_adjust_head_proto
    _proto(FuncId.get_socket_cookie, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_socket_cookie_proto
    _proto(FuncId.get_socket_uid, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_get_socket_uid_proto
    _proto(FuncId.set_hash, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_set_hash_proto
    _proto(FuncId.skb_adjust_room, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_adjust_room_proto
    _proto(FuncId.redirect_map, False, RetType.INTEGER, (ArgType.CONST_MAP_PTR, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_xdp_redirect_map_proto
    _proto(FuncId.xdp_adjust_meta, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_xdp_adjust_meta_proto
    _proto(FuncId.xdp_adjust_tail, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_xdp_adjust_tail_proto
    _proto(FuncId.skb_get_xfrm_state, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_get_xfrm_state_proto
    _proto(FuncId.skb_load_bytes_relative, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_load_bytes_relative_proto
    _proto(FuncId.fib_lookup, True, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM, ArgType.CONST_SIZE, ArgType.ANYTHING)),  # bpf_skb_fib_lookup_proto
    _proto(FuncId.skb_cgroup_id, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_skb_cgroup_id_proto
    _proto(FuncId.skb_ancestor_cgroup_id, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_skb_ancestor_cgroup_id_proto
    _proto(FuncId.sk_lookup_tcp, False, RetType.PTR_TO_SOCKET_OR_NULL, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING, ArgType.ANYTHING), pkt_access=True),  # bpf_sk_lookup_tcp_proto
    _proto(FuncId.sk_lookup_udp, False, RetType.PTR_TO_SOCKET_OR_NULL, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING, ArgType.ANYTHING), pkt_access=True),  # bpf_sk_lookup_udp_proto
    _proto(FuncId.sk_release, False, RetType.INTEGER, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON | TypeFlag.OBJ_RELEASE,)),  # bpf_sk_release_proto
    _proto(FuncId.sk_fullsock, False, RetType.PTR_TO_SOCKET_OR_NULL, (ArgType.PTR_TO_SOCK_COMMON,)),  # bpf_sk_fullsock_proto
    _proto(FuncId.tcp_sock, False, RetType.PTR_TO_TCP_SOCK_OR_NULL, (ArgType.PTR_TO_SOCK_COMMON,)),  # bpf_tcp_sock_proto
    _proto(FuncId.skb_ecn_set_ce, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_skb_ecn_set_ce_proto
    _proto(FuncId.get_listener_sock, False, RetType.PTR_TO_SOCKET_OR_NULL, (ArgType.PTR_TO_SOCK_COMMON,)),  # bpf_get_listener_sock_proto
    _proto(FuncId.skc_lookup_tcp, False, RetType.PTR_TO_SOCK_COMMON_OR_NULL, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING, ArgType.ANYTHING), pkt_access=True),  # bpf_skc_lookup_tcp_proto
    _proto(FuncId.tcp_check_syncookie, True, RetType.INTEGER, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE), pkt_access=True),  # bpf_tcp_check_syncookie_proto
    _proto(FuncId.tcp_gen_syncookie, True, RetType.INTEGER, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE), pkt_access=True),  # bpf_tcp_gen_syncookie_proto
    _proto(FuncId.get_netns_cookie, False, RetType.INTEGER, (ArgType.PTR_TO_CTX_OR_NULL,)),  # bpf_get_netns_cookie_sock_proto
    _proto(FuncId.sk_assign, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.ANYTHING)),  # bpf_sk_assign_proto
    _proto(FuncId.sk_cgroup_id, False, RetType.INTEGER, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_sk_cgroup_id_proto
    _proto(FuncId.sk_ancestor_cgroup_id, False, RetType.INTEGER, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.ANYTHING)),  # bpf_sk_ancestor_cgroup_id_proto
    _proto(FuncId.csum_level, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING)),  # bpf_csum_level_proto
    _proto(FuncId.skc_to_tcp6_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_tcp6_sock_proto
    _proto(FuncId.skc_to_tcp_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_tcp_sock_proto
    _proto(FuncId.skc_to_tcp_timewait_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_tcp_timewait_sock_proto
    _proto(FuncId.skc_to_tcp_request_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_tcp_request_sock_proto
    _proto(FuncId.skc_to_udp6_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_udp6_sock_proto
    _proto(FuncId.skb_cgroup_classid, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_skb_cgroup_classid_proto
    _proto(FuncId.redirect_neigh, False, RetType.INTEGER, (ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.PTR_MAYBE_NULL | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING)),  # bpf_redirect_neigh_proto
    _proto(FuncId.redirect_peer, False, RetType.INTEGER, (ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_redirect_peer_proto
    _proto(FuncId.check_mtu, True, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_FIXED_SIZE_MEM | TypeFlag.MEM_WRITE | TypeFlag.MEM_ALIGNED, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_check_mtu_proto
    _proto(FuncId.skc_to_unix_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),  # bpf_skc_to_unix_sock_proto
    _proto(FuncId.xdp_get_buff_len, False, RetType.INTEGER, (ArgType.PTR_TO_CTX,)),  # bpf_xdp_get_buff_len_proto
    _proto(FuncId.xdp_load_bytes, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)),  # bpf_xdp_load_bytes_proto
    _proto(FuncId.xdp_store_bytes, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE)),  # bpf_xdp_store_bytes_proto
    _proto(FuncId.skb_set_tstamp, False, RetType.INTEGER, (ArgType.PTR_TO_CTX, ArgType.ANYTHING, ArgType.ANYTHING)),  # bpf_skb_set_tstamp_proto
    _proto(FuncId.skc_to_mptcp_sock, False, RetType.PTR_TO_BTF_ID_OR_NULL, (ArgType.PTR_TO_SOCK_COMMON,)),  # bpf_skc_to_mptcp_sock_proto
    _proto(FuncId.tcp_raw_gen_syncookie_ipv4, True, RetType.INTEGER, (ArgType.PTR_TO_FIXED_SIZE_MEM, ArgType.PTR_TO_MEM, ArgType.CONST_SIZE_OR_ZERO), pkt_access=True),  # bpf_tcp_raw_gen_syncookie_ipv4_proto
    _proto(FuncId.tcp_raw_gen_syncookie_ipv6, True, RetType.INTEGER, (ArgType.PTR_TO_FIXED_SIZE_MEM, ArgType.PTR_TO_MEM, ArgType.CONST_SIZE_OR_ZERO), pkt_access=True),  # bpf_tcp_raw_gen_syncookie_ipv6_proto
    _proto(FuncId.tcp_raw_check_syncookie_ipv4, True, RetType.INTEGER, (ArgType.PTR_TO_FIXED_SIZE_MEM, ArgType.PTR_TO_FIXED_SIZE_MEM), pkt_access=True),  # bpf_tcp_raw_check_syncookie_ipv4_proto
    _proto(FuncId.tcp_raw_check_syncookie_ipv6, True, RetType.INTEGER, (ArgType.PTR_TO_FIXED_SIZE_MEM, ArgType.PTR_TO_FIXED_SIZE_MEM), pkt_access=True),  # bpf_tcp_raw_check_syncookie_ipv6_proto
    _proto(FuncId.sk_storage_get, False, RetType.PTR_TO_MAP_VALUE_OR_NULL, (ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_SOCK_COMMON, ArgType.PTR_TO_MAP_VALUE_OR_NULL, ArgType.ANYTHING)),  # bpf_sk_storage_get_proto
    _proto(FuncId.sk_storage_delete, False, RetType.INTEGER, (ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_SOCK_COMMON)),  # bpf_sk_storage_delete_proto
)}


# bpf_sk_base_func_proto(): what every socket-buffer program type adds to the base set
_SK_BASE_PERFMON_FUNCS = frozenset({
    FuncId.skc_to_tcp6_sock, FuncId.skc_to_tcp_sock, FuncId.skc_to_tcp_timewait_sock,
    FuncId.skc_to_tcp_request_sock, FuncId.skc_to_udp6_sock, FuncId.skc_to_unix_sock,
    FuncId.skc_to_mptcp_sock,
})


def bpf_sk_base_func_proto(func_id: int, prog) -> FuncProto | None:
    from fakekernel.helpers.base import bpf_base_func_proto, prog_loader
    if func_id == FuncId.ktime_get_coarse_ns:
        return NET_PROTOS.get(func_id) or _base(func_id)
    if func_id in _SK_BASE_PERFMON_FUNCS:
        return NET_PROTOS[func_id] if prog_loader(prog).perfmon_capable() else None
    return bpf_base_func_proto(func_id, prog)


def _base(func_id: int) -> FuncProto:
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


def net_func_proto(funcs: frozenset, func_id: int, prog) -> FuncProto | None:
    """A network prog type's get_func_proto: its own helpers, then bpf_sk_base_func_proto."""
    if func_id in funcs:
        return _base(func_id)
    return bpf_sk_base_func_proto(func_id, prog)



# The runtime functions need fakekernel.net, whose prog types import net_func_proto from here:
# import them once everything above exists.
from fakekernel.helpers.net_pkt import NET_RUNTIME  # noqa: E402
