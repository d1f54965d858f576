"""Which helpers a map may be passed to — kernel/bpf/verifier.c: check_map_func_compatibility(),
may_update_sockmap(), the get_local_storage() flags check of check_helper_call() and the
cgroup storage part of the map fd resolution (bpf_cgroup_storage_assign).

The kernel checks both ways: a map type that only works with some helpers (MAP_FUNCS) and a
helper that only takes some map types (FUNC_MAPS).  Either failing is EINVAL with
"cannot pass map_type N into func NAME#ID".
"""
from __future__ import annotations

from fakekernel.errors import Errno
from uapi.asm import func_id_name
from uapi.bpf import AttachType, FuncId, MapType, ProgType

__all__ = ["MAP_FUNCS", "FUNC_MAPS", "check_map_func_compatibility",
           "check_get_local_storage_flags", "bpf_cgroup_storage_assign"]

F, M = FuncId, MapType
_RINGBUF_FUNCS = {F.ringbuf_output, F.ringbuf_reserve, F.ringbuf_query, F.ringbuf_reserve_dynptr,
                  F.ringbuf_submit_dynptr, F.ringbuf_discard_dynptr}
_PERF_FUNCS = {F.perf_event_read, F.perf_event_output, F.skb_output, F.perf_event_read_value,
               F.xdp_output}
_CGROUP_STORAGES = {M.CGROUP_STORAGE, M.PERCPU_CGROUP_STORAGE}
_SOCKMAP_UPDATE = {F.map_update_elem, F.map_delete_elem}

# the map's side: the only helpers these map types can be passed to
MAP_FUNCS: dict = {
    M.PROG_ARRAY: {F.tail_call},
    M.PERF_EVENT_ARRAY: _PERF_FUNCS,
    M.RINGBUF: _RINGBUF_FUNCS,
    M.USER_RINGBUF: {F.user_ringbuf_drain},
    M.STACK_TRACE: {F.get_stackid},
    M.CGROUP_ARRAY: {F.skb_under_cgroup, F.current_task_under_cgroup},
    M.CGROUP_STORAGE: {F.get_local_storage},
    M.PERCPU_CGROUP_STORAGE: {F.get_local_storage},
    M.DEVMAP: {F.redirect_map, F.map_lookup_elem},
    M.DEVMAP_HASH: {F.redirect_map, F.map_lookup_elem},
    M.CPUMAP: {F.redirect_map},
    M.XSKMAP: {F.redirect_map, F.map_lookup_elem},
    M.ARRAY_OF_MAPS: {F.map_lookup_elem},
    M.HASH_OF_MAPS: {F.map_lookup_elem},
    M.SOCKMAP: {F.sk_redirect_map, F.sock_map_update, F.msg_redirect_map, F.sk_select_reuseport,
                F.map_lookup_elem},
    M.SOCKHASH: {F.sk_redirect_hash, F.sock_hash_update, F.msg_redirect_hash,
                 F.sk_select_reuseport, F.map_lookup_elem},
    M.REUSEPORT_SOCKARRAY: {F.sk_select_reuseport},
    M.QUEUE: {F.map_peek_elem, F.map_pop_elem, F.map_push_elem},
    M.STACK: {F.map_peek_elem, F.map_pop_elem, F.map_push_elem},
    M.SK_STORAGE: {F.sk_storage_get, F.sk_storage_delete, F.kptr_xchg},
    M.INODE_STORAGE: {F.inode_storage_get, F.inode_storage_delete, F.kptr_xchg},
    M.TASK_STORAGE: {F.task_storage_get, F.task_storage_delete, F.kptr_xchg},
    M.CGRP_STORAGE: {F.cgrp_storage_get, F.cgrp_storage_delete, F.kptr_xchg},
    M.BLOOM_FILTER: {F.map_peek_elem, F.map_push_elem},
}

# the helper's side: the only map types these helpers take
FUNC_MAPS: dict = {
    F.tail_call: {M.PROG_ARRAY},
    **{f: {M.PERF_EVENT_ARRAY} for f in _PERF_FUNCS},
    **{f: {M.RINGBUF} for f in _RINGBUF_FUNCS},
    F.user_ringbuf_drain: {M.USER_RINGBUF},
    F.get_stackid: {M.STACK_TRACE},
    F.current_task_under_cgroup: {M.CGROUP_ARRAY},
    F.skb_under_cgroup: {M.CGROUP_ARRAY},
    F.redirect_map: {M.DEVMAP, M.DEVMAP_HASH, M.CPUMAP, M.XSKMAP},
    F.sk_redirect_map: {M.SOCKMAP}, F.msg_redirect_map: {M.SOCKMAP}, F.sock_map_update: {M.SOCKMAP},
    F.sk_redirect_hash: {M.SOCKHASH}, F.msg_redirect_hash: {M.SOCKHASH},
    F.sock_hash_update: {M.SOCKHASH},
    F.get_local_storage: _CGROUP_STORAGES,
    F.sk_select_reuseport: {M.REUSEPORT_SOCKARRAY, M.SOCKMAP, M.SOCKHASH},
    F.map_pop_elem: {M.QUEUE, M.STACK},
    F.map_peek_elem: {M.QUEUE, M.STACK, M.BLOOM_FILTER},
    F.map_push_elem: {M.QUEUE, M.STACK, M.BLOOM_FILTER},
    F.map_lookup_percpu_elem: {M.PERCPU_ARRAY, M.PERCPU_HASH, M.LRU_PERCPU_HASH},
    F.sk_storage_get: {M.SK_STORAGE}, F.sk_storage_delete: {M.SK_STORAGE},
    F.inode_storage_get: {M.INODE_STORAGE}, F.inode_storage_delete: {M.INODE_STORAGE},
    F.task_storage_get: {M.TASK_STORAGE}, F.task_storage_delete: {M.TASK_STORAGE},
    F.cgrp_storage_get: {M.CGRP_STORAGE}, F.cgrp_storage_delete: {M.CGRP_STORAGE},
}

# may_update_sockmap(): prog types where map_update/delete_elem on a sockmap is safe
_SOCKMAP_UPDATERS = {ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP,
                     ProgType.SK_REUSEPORT, ProgType.FLOW_DISSECTOR, ProgType.SK_LOOKUP}


def _may_update_sockmap(env, func_id: int) -> bool:
    """may_update_sockmap() (its log line is printed even when another rule then fails)."""
    if func_id not in _SOCKMAP_UPDATE:
        return False
    prog = env.prog
    ptype = getattr(prog, "type", None)
    if ptype == ProgType.TRACING and prog.expected_attach_type == AttachType.TRACE_ITER:
        return True
    if ptype == ProgType.SOCK_OPS and func_id == F.map_delete_elem:
        return True
    if ptype in _SOCKMAP_UPDATERS:
        return True
    env.verbose("cannot update sockmap in this context\n")
    return False


def check_map_func_compatibility(env, bpf_map, func_id: int) -> None:
    """check_map_func_compatibility(): EINVAL when the map and the helper do not go together."""
    if bpf_map is None:
        return
    mt = bpf_map.map_type
    allowed = MAP_FUNCS.get(mt)
    ok = allowed is None or func_id in allowed
    if not ok and mt in (M.SOCKMAP, M.SOCKHASH):
        ok = _may_update_sockmap(env, func_id)
    if ok:
        types = FUNC_MAPS.get(func_id)
        ok = types is None or mt in types
    if not ok:
        raise env.reject(Errno.EINVAL, f"cannot pass map_type {int(mt)} into func "
                                       f"{func_id_name(func_id)}#{func_id}\n")


def check_get_local_storage_flags(env, state, func_id: int) -> None:
    """check_helper_call(): get_local_storage() cannot fail, so its flags must be 0."""
    if func_id != F.get_local_storage:
        return
    r2 = state.regs[2]
    if not (r2.is_const() and r2.const_value == 0):
        raise env.reject(Errno.EINVAL, "get_local_storage() doesn't support non-zero flags\n")


def bpf_cgroup_storage_assign(env, bpf_map) -> None:
    """A program may use one cgroup storage map of each kind (shared, per-CPU): EBUSY."""
    if bpf_map.map_type not in _CGROUP_STORAGES:
        return
    for m in env.used_maps:
        if m is not bpf_map and m.map_type == bpf_map.map_type:
            raise env.reject(Errno.EBUSY, "only one cgroup storage of each type is allowed\n")
