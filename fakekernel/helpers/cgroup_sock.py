"""Helpers of the cgroup program family — kernel/bpf/cgroup.c (bpf_get_retval, bpf_set_retval,
cgroup_common_func_proto, cgroup_current_func_proto) and net/core/filter.c (bpf_bind, the
sock_addr / sock_ops [gs]etsockopt variants, bpf_sock_ops_cb_flags_set, the TCP header option
helpers, the socket and netns cookie variants).

The prototypes that differ from the skb ones of the same helper id (the kernel's
``*_sock_proto`` / ``*_sock_addr_proto`` / ``*_sock_ops_proto`` records) are module constants
the per-type get_func_proto functions return.  Runtimes are keyed by helper id; they find
what they act on in ``env.ctx`` — the hook's kernel ctx (`fakekernel.cgroup_run.CgCtx`:
``sk`` the socket, ``sock_ops`` the sock_ops state) — and the return code in the cgroup run
context (``current.bpf_ctx.retval``, struct bpf_cg_run_ctx).
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import bpf_base_func_proto, neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from uapi.bpf import AttachType, FuncId
from uapi.insn import s32, u64

__all__ = ["CGROUP_SOCK_PROTOS", "CGROUP_SOCK_RUNTIME", "cgroup_common_func_proto",
           "cgroup_current_func_proto", "EVENT_OUTPUT_DATA",
           "SOCK_ADDR_SETSOCKOPT", "SOCK_ADDR_GETSOCKOPT", "SOCK_OPS_SETSOCKOPT", "SOCK_OPS_GETSOCKOPT",
           "BIND", "SOCK_OPS_CB_FLAGS_SET", "LOAD_HDR_OPT", "STORE_HDR_OPT", "RESERVE_HDR_OPT",
           "CTX_ARG", "NETNS_COOKIE_CTX", "SK_STORAGE_GET_CG_SOCK", "GET_CGROUP_CLASSID_CURR",
           "SOCK_ADDR_SK_LOOKUP_TCP", "SOCK_ADDR_SK_LOOKUP_UDP", "SOCK_ADDR_SKC_LOOKUP_TCP"]


_RO_MEM = ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY


def _p(func, ret=RetType.INTEGER, *args, gpl_only=False) -> FuncProto:
    return FuncProto(func=func, gpl_only=gpl_only, ret_type=ret, arg_types=tuple(args))


GET_RETVAL = _p(FuncId.get_retval)                                        # bpf_get_retval_proto
SET_RETVAL = _p(FuncId.set_retval, RetType.INTEGER, ArgType.ANYTHING)     # bpf_set_retval_proto
BIND = _p(FuncId.bind, RetType.INTEGER, ArgType.PTR_TO_CTX, _RO_MEM, ArgType.CONST_SIZE)
SOCK_ADDR_SETSOCKOPT = _p(FuncId.setsockopt, RetType.INTEGER, ArgType.PTR_TO_CTX, ArgType.ANYTHING,
                          ArgType.ANYTHING, _RO_MEM, ArgType.CONST_SIZE)
SOCK_ADDR_GETSOCKOPT = _p(FuncId.getsockopt, RetType.INTEGER, ArgType.PTR_TO_CTX, ArgType.ANYTHING,
                          ArgType.ANYTHING, ArgType.PTR_TO_UNINIT_MEM, ArgType.CONST_SIZE)
SOCK_OPS_SETSOCKOPT = SOCK_ADDR_SETSOCKOPT        # same prototype, bpf_sock_ops_setsockopt_proto
SOCK_OPS_GETSOCKOPT = SOCK_ADDR_GETSOCKOPT
SOCK_OPS_CB_FLAGS_SET = _p(FuncId.sock_ops_cb_flags_set, RetType.INTEGER, ArgType.PTR_TO_CTX, ArgType.ANYTHING)
LOAD_HDR_OPT = _p(FuncId.load_hdr_opt, RetType.INTEGER, ArgType.PTR_TO_CTX,
                  ArgType.PTR_TO_MEM | TypeFlag.MEM_WRITE, ArgType.CONST_SIZE, ArgType.ANYTHING)
STORE_HDR_OPT = _p(FuncId.store_hdr_opt, RetType.INTEGER, ArgType.PTR_TO_CTX, _RO_MEM, ArgType.CONST_SIZE,
                   ArgType.ANYTHING)
RESERVE_HDR_OPT = _p(FuncId.reserve_hdr_opt, RetType.INTEGER, ArgType.PTR_TO_CTX, ArgType.ANYTHING,
                     ArgType.ANYTHING)
#: bpf_get_socket_cookie_sock{,_addr,_ops}_proto: the ctx is the only argument
CTX_ARG = _p(FuncId.get_socket_cookie, RetType.INTEGER, ArgType.PTR_TO_CTX)
NETNS_COOKIE_CTX = _p(FuncId.get_netns_cookie, RetType.INTEGER, ArgType.PTR_TO_CTX_OR_NULL)
SK_STORAGE_GET_CG_SOCK = _p(FuncId.sk_storage_get, RetType.PTR_TO_MAP_VALUE_OR_NULL, ArgType.CONST_MAP_PTR,
                            ArgType.PTR_TO_CTX, ArgType.PTR_TO_MAP_VALUE_OR_NULL, ArgType.ANYTHING)
GET_CGROUP_CLASSID_CURR = _p(FuncId.get_cgroup_classid)                  # bpf_get_cgroup_classid_curr_proto
EVENT_OUTPUT_DATA = _p(FuncId.perf_event_output, RetType.INTEGER, ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR,
                       ArgType.ANYTHING, _RO_MEM, ArgType.CONST_SIZE_OR_ZERO, gpl_only=True)
_LOOKUP_ARGS = (ArgType.PTR_TO_CTX, _RO_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING, ArgType.ANYTHING)
SOCK_ADDR_SK_LOOKUP_TCP = _p(FuncId.sk_lookup_tcp, RetType.PTR_TO_SOCKET_OR_NULL, *_LOOKUP_ARGS)
SOCK_ADDR_SK_LOOKUP_UDP = _p(FuncId.sk_lookup_udp, RetType.PTR_TO_SOCKET_OR_NULL, *_LOOKUP_ARGS)
SOCK_ADDR_SKC_LOOKUP_TCP = _p(FuncId.skc_lookup_tcp, RetType.PTR_TO_SOCK_COMMON_OR_NULL, *_LOOKUP_ARGS)

CGROUP_SOCK_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    GET_RETVAL, SET_RETVAL, BIND, SOCK_ADDR_SETSOCKOPT, SOCK_ADDR_GETSOCKOPT, SOCK_OPS_CB_FLAGS_SET,
    LOAD_HDR_OPT, STORE_HDR_OPT, RESERVE_HDR_OPT)}

# cgroup_common_func_proto(): attach types whose run has no return code to get or set
_NO_RETVAL = frozenset({
    AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS, AttachType.CGROUP_SOCK_OPS,
    AttachType.CGROUP_UDP4_RECVMSG, AttachType.CGROUP_UDP6_RECVMSG, AttachType.CGROUP_UNIX_RECVMSG,
    AttachType.CGROUP_INET4_GETPEERNAME, AttachType.CGROUP_INET6_GETPEERNAME,
    AttachType.CGROUP_UNIX_GETPEERNAME, AttachType.CGROUP_INET4_GETSOCKNAME,
    AttachType.CGROUP_INET6_GETSOCKNAME, AttachType.CGROUP_UNIX_GETSOCKNAME})


def cgroup_common_func_proto(func_id: int, prog) -> FuncProto | None:
    """cgroup_common_func_proto()."""
    if func_id == FuncId.get_local_storage:
        from fakekernel.helpers import PROTOS
        return PROTOS[FuncId.get_local_storage]
    if func_id in (FuncId.get_retval, FuncId.set_retval):
        if prog.expected_attach_type in _NO_RETVAL:
            return None
        return GET_RETVAL if func_id == FuncId.get_retval else SET_RETVAL
    return None


_CURRENT_FUNCS = frozenset({FuncId.get_current_uid_gid, FuncId.get_current_comm,
                            FuncId.current_task_under_cgroup})


def cgroup_current_func_proto(func_id: int, prog) -> FuncProto | None:
    """cgroup_current_func_proto(): the current task's identity, without CAP_PERFMON."""
    if func_id == FuncId.get_cgroup_classid:
        return GET_CGROUP_CLASSID_CURR
    if func_id in _CURRENT_FUNCS:
        from fakekernel.helpers import PROTOS
        return PROTOS[func_id]
    return None


def cgroup_base_func_proto(func_id: int, prog, own: dict) -> FuncProto | None:
    """The shape every cgroup type's get_func_proto has: common, current, its own, base."""
    return (cgroup_common_func_proto(func_id, prog) or cgroup_current_func_proto(func_id, prog)
            or (own[func_id](prog) if func_id in own else bpf_base_func_proto(func_id, prog)))


# ---------------------------------------------------------------- runtime

def _run_ctx(env):
    return env.kernel.current.bpf_ctx


def bpf_get_retval(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_retval(): the return code the hook will give (0 or -errno so far)."""
    rc = _run_ctx(env)
    return u64(rc.retval) if rc is not None else 0


def bpf_set_retval(env, r1, r2, r3, r4, r5) -> int:
    """bpf_set_retval(retval): the hook's return code from now on."""
    rc = _run_ctx(env)
    if rc is not None:
        rc.retval = s32(r1)
    return 0


def _ctx_op(env, name: str, *args) -> int:
    """Call the hook ctx's implementation of a helper; -errno from a KernelError."""
    fn = getattr(env.ctx, name, None)
    if fn is None:
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(_NAME_IDS[name])
    try:
        return fn(env, *args)
    except KernelError as e:
        return neg_errno(e.errno)


_NAME_IDS = {"bpf_bind": FuncId.bind, "bpf_setsockopt": FuncId.setsockopt,
             "bpf_getsockopt": FuncId.getsockopt, "cb_flags_set": FuncId.sock_ops_cb_flags_set,
             "load_hdr_opt": FuncId.load_hdr_opt, "store_hdr_opt": FuncId.store_hdr_opt,
             "reserve_hdr_opt": FuncId.reserve_hdr_opt}


def bpf_bind(env, r1, r2, r3, r4, r5) -> int:
    """bpf_bind(ctx, addr, addr_len) from a connect4/6 program."""
    return _ctx_op(env, "bpf_bind", r2, r3)


def bpf_setsockopt(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "bpf_setsockopt", r2, r3, r4, r5)


def bpf_getsockopt(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "bpf_getsockopt", r2, r3, r4, r5)


def bpf_sock_ops_cb_flags_set(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "cb_flags_set", r2)


def bpf_sock_ops_load_hdr_opt(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "load_hdr_opt", r2, r3, r4)


def bpf_sock_ops_store_hdr_opt(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "store_hdr_opt", r2, r3, r4)


def bpf_sock_ops_reserve_hdr_opt(env, r1, r2, r3, r4, r5) -> int:
    return _ctx_op(env, "reserve_hdr_opt", r2, r3)


def bpf_get_netns_cookie(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_netns_cookie(ctx or NULL): the socket's namespace (NULL: init_net's); the
    simulated kernel has the one namespace."""
    return env.kernel.world.net.net_cookie


CGROUP_SOCK_RUNTIME = {
    FuncId.get_retval: bpf_get_retval,
    FuncId.set_retval: bpf_set_retval,
    FuncId.bind: bpf_bind,
    FuncId.setsockopt: bpf_setsockopt,
    FuncId.getsockopt: bpf_getsockopt,
    FuncId.sock_ops_cb_flags_set: bpf_sock_ops_cb_flags_set,
    FuncId.load_hdr_opt: bpf_sock_ops_load_hdr_opt,
    FuncId.store_hdr_opt: bpf_sock_ops_store_hdr_opt,
    FuncId.reserve_hdr_opt: bpf_sock_ops_reserve_hdr_opt,
    FuncId.get_netns_cookie: bpf_get_netns_cookie,
}
