"""Socket storage helpers — net/core/bpf_sk_storage.c (bpf_sk_storage_get, bpf_sk_storage_delete).

Runtime functions ``fn(env, r1..r5) -> int``; the map is ``env.mem.object_at(r1)``.  The
socket argument (ARG_PTR_TO_BTF_ID_SOCK_COMMON) is a pointer the program got from its
context: the "sock" region of the skb a test run or hook built (``skb->sk``), resolved to
that skb's sock, or an object handle of a socket.  A pointer that is neither is an emulator
gap (HelperNotImplemented), never a guess.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.interp.memory import InterpreterFault
from fakekernel.net.socket import TcpState
from uapi.bpf import BPF_LOCAL_STORAGE_GET_F_CREATE, FuncId
from uapi.errno import Errno

__all__ = ["SK_STORAGE_RUNTIME", "bpf_sk_storage_get", "bpf_sk_storage_delete"]

_CREATE = int(BPF_LOCAL_STORAGE_GET_F_CREATE)
_NOT_FULL = (TcpState.TIME_WAIT, TcpState.NEW_SYN_RECV)


def _sock_at(env, addr: int, func_id: int):
    """The socket a program passed as a sock_common pointer (None for NULL)."""
    if not addr:
        return None
    ctx = env.ctx
    for region in getattr(ctx, "mapped", None) or ():
        if region.kind == "sock" and region.base == addr:
            return env.kernel.world.net.socktab.resolve(ctx.sk)
    try:
        return env.mem.object_at(addr)
    except InterpreterFault:
        from fakekernel.helpers import HelperNotImplemented
        raise HelperNotImplemented(func_id) from None


def _sk_fullsock(sk) -> bool:
    return getattr(sk, "state", TcpState.CLOSE) not in _NOT_FULL


def bpf_sk_storage_get(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sk_storage_get(map, sk, value, flags): the value's address or NULL."""
    sk = _sock_at(env, r2, FuncId.sk_storage_get)
    if sk is None or not _sk_fullsock(sk) or r4 > _CREATE:
        return 0
    smap = env.mem.object_at(r1)
    init = env.mem.read(r3, smap.value_size) if r3 else None
    return smap.storage_get(sk, init, r4)


def bpf_sk_storage_delete(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sk_storage_delete(map, sk): 0, -ENOENT, or -EINVAL for no full socket."""
    sk = _sock_at(env, r2, FuncId.sk_storage_delete)
    if sk is None or not _sk_fullsock(sk):
        return neg_errno(Errno.EINVAL)
    ret = env.mem.object_at(r1).storage_delete(sk)
    return neg_errno(-ret) if ret else 0


SK_STORAGE_RUNTIME = {
    FuncId.sk_storage_get: bpf_sk_storage_get,
    FuncId.sk_storage_delete: bpf_sk_storage_delete,
}
