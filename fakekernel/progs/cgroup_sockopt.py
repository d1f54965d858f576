"""BPF_PROG_TYPE_CGROUP_SOCKOPT — kernel/bpf/cgroup.c (cg_sockopt_verifier_ops:
cg_sockopt_func_proto, cg_sockopt_is_valid_access).

The program sees a ``struct bpf_sockopt``: ``sk``, the option buffer as packet-like pointers
(``optval``/``optval_end``, writable), ``level``/``optname`` (writable by setsockopt programs),
``optlen`` (writable) and, for getsockopt programs, ``retval`` (the kernel handler's result,
writable).  fakekernel runs it on the uapi struct, filled by `fakekernel.cgroup_sockopt`.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import (EVENT_OUTPUT_DATA, NETNS_COOKIE_CTX, cgroup_common_func_proto,
                                            cgroup_current_func_proto)
from fakekernel.helpers.base import bpf_base_func_proto
from fakekernel.helpers.sockopt import SK_GETSOCKOPT, SK_SETSOCKOPT
from fakekernel.progs.ctx import BPF_WRITE, ctx_range_ptr
from fakekernel.verifier.regs import RegType
from uapi.bpf import AttachType, FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "SOCKOPT", "SOCKOPT_SIZE"]

SOCKOPT = "struct bpf_sockopt"
SOCKOPT_SIZE = ffi.sizeof(SOCKOPT)
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_RETVAL = ffi.offsetof(SOCKOPT, "retval")
_LEVEL_OPTNAME = {ffi.offsetof(SOCKOPT, "level"), ffi.offsetof(SOCKOPT, "optname")}
_OPTLEN = ffi.offsetof(SOCKOPT, "optlen")
_PTRS = ((ctx_range_ptr(SOCKOPT, "sk"), RegType.PTR_TO_SOCKET),
         (ctx_range_ptr(SOCKOPT, "optval"), RegType.PTR_TO_PACKET),
         (ctx_range_ptr(SOCKOPT, "optval_end"), RegType.PTR_TO_PACKET_END))


def cg_sockopt_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= SOCKOPT_SIZE or off % size:
        return False
    eat = prog.expected_attach_type
    if access == BPF_WRITE:
        if off == _RETVAL:
            return size == _U32 and eat == AttachType.CGROUP_GETSOCKOPT
        if off in _LEVEL_OPTNAME:
            return size == _U32 and eat == AttachType.CGROUP_SETSOCKOPT
        if off == _OPTLEN:
            return size == _U32
        return False
    for rng, reg_type in _PTRS:
        if off in rng:
            if size != _U64:
                return False
            info.reg_type = reg_type
            return True
    if _RETVAL <= off < _RETVAL + _U32:
        return size == _U32 and eat == AttachType.CGROUP_GETSOCKOPT
    return size == _U32


def _any(func_id: int):
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


def cg_sockopt_func_proto(func_id: int, prog):
    """cg_sockopt_func_proto()."""
    p = cgroup_common_func_proto(func_id, prog) or cgroup_current_func_proto(func_id, prog)
    if p is not None:
        return p
    is_set = prog.expected_attach_type == AttachType.CGROUP_SETSOCKOPT
    if func_id == FuncId.get_netns_cookie:
        return NETNS_COOKIE_CTX
    if func_id in (FuncId.sk_storage_get, FuncId.sk_storage_delete, FuncId.tcp_sock):
        return _any(func_id)
    if func_id == FuncId.setsockopt:
        return SK_SETSOCKOPT if is_set else None
    if func_id == FuncId.getsockopt:
        return SK_GETSOCKOPT if is_set else None
    if func_id == FuncId.perf_event_output:
        return EVENT_OUTPUT_DATA
    return bpf_base_func_proto(func_id, prog)


def _ret_range(prog) -> tuple[int, int]:
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=cg_sockopt_func_proto, is_valid_access=cg_sockopt_is_valid_access,
                           ctx_size=SOCKOPT_SIZE, kctx_size=SOCKOPT_SIZE, get_ret_range=_ret_range)
