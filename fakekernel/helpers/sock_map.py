"""Socket-map helper prototypes — net/core/sock_map.c (bpf_sk_redirect_map/hash,
bpf_msg_redirect_map/hash, bpf_sock_map_update, bpf_sock_hash_update) and net/core/filter.c
(bpf_msg_apply_bytes, bpf_msg_cork_bytes, bpf_msg_pull_data, bpf_msg_push_data,
bpf_msg_pop_data).

bpf_sock_map_update / bpf_sock_hash_update run in SOCK_OPS programs on the simulated TCP
callbacks (fakekernel.cgroup_sock_ops): the callback's socket goes into the map when the op is
an established or listen one, else -EOPNOTSUPP.  The redirect and msg helpers need the socket
data path (strparser, sendmsg), which the simulated world does not carry: they stay in
UNIMPLEMENTED_AT_RUNTIME.
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from uapi.bpf import FuncId, SockOpsOp
from uapi.errno import Errno

__all__ = ["SOCK_MAP_PROTOS", "SOCK_MAP_RUNTIME"]

#: sock_map_op_okay(): the callbacks whose socket may be added to a socket map
_OPS_OKAY = (SockOpsOp.PASSIVE_ESTABLISHED_CB, SockOpsOp.ACTIVE_ESTABLISHED_CB, SockOpsOp.TCP_LISTEN_CB)

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


def _sock_ops_update(env, r2, r3, r4, key_size) -> int:
    """bpf_sock_map_update / bpf_sock_hash_update(sops, map, key, flags)."""
    sops = env.ctx
    sk = getattr(sops, "sk", None)
    if sk is None or not getattr(sops, "fullsock", True) or getattr(sops, "op", None) not in _OPS_OKAY \
            or not (sk.sk_is_tcp() or sk.sk_is_udp() or sk.sk_is_stream_unix()):    # sock_map_sk_is_suitable()
        return neg_errno(Errno.EOPNOTSUPP)
    m = env.mem.object_at(r2)
    key = bytes(env.mem.read(r3, key_size(m)))
    try:
        m.update_common(key, sk, r4)
    except KernelError as e:
        return neg_errno(e.errno)
    return 0


def bpf_sock_map_update(env, r1, r2, r3, r4, r5) -> int:
    return _sock_ops_update(env, r2, r3, r4, lambda m: 4)


def bpf_sock_hash_update(env, r1, r2, r3, r4, r5) -> int:
    return _sock_ops_update(env, r2, r3, r4, lambda m: m.key_size)


SOCK_MAP_RUNTIME = {FuncId.sock_map_update: bpf_sock_map_update, FuncId.sock_hash_update: bpf_sock_hash_update}
