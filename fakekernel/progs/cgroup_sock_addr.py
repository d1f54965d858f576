"""BPF_PROG_TYPE_CGROUP_SOCK_ADDR — net/core/filter.c (cg_sock_addr_verifier_ops:
sock_addr_func_proto, sock_addr_is_valid_access) and kernel/bpf/verifier.c (the return ranges
check_return_code() gives the bind, recvmsg and get{peer,sock}name attach types).

The program reads a ``struct bpf_sock_addr``: the user's address (rewritable), the socket's
family, type and protocol, the source address of a UDP sendmsg (rewritable) and ``sk``.  An
address field only exists for the attach types of its family.  fakekernel runs it on the uapi
struct, filled by `fakekernel.cgroup_sock_addr`, which reads the rewritten address back.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import (BIND, CTX_ARG, EVENT_OUTPUT_DATA, NETNS_COOKIE_CTX,
                                            SOCK_ADDR_GETSOCKOPT, SOCK_ADDR_SETSOCKOPT,
                                            SOCK_ADDR_SK_LOOKUP_TCP, SOCK_ADDR_SK_LOOKUP_UDP,
                                            SOCK_ADDR_SKC_LOOKUP_TCP)
from fakekernel.helpers.net import bpf_sk_base_func_proto
from fakekernel.progs.ctx import BPF_READ, ctx_range, ctx_range_ptr, ctx_range_till, narrow_access_ok
from fakekernel.verifier.regs import RegType
from uapi.bpf import BPF_H, BPF_LDX, BPF_MEM, AttachType as A, FuncId
from uapi.ffi import ffi, offsetofend
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_SIZE, Insn

__all__ = ["VERIFIER_OPS", "SOCK_ADDR", "SOCK_ADDR_SIZE", "INET4_TYPES", "INET6_TYPES", "UNIX_TYPES",
           "NO_RETVAL_TYPES"]

SOCK_ADDR = "struct bpf_sock_addr"
SOCK_ADDR_SIZE = ffi.sizeof(SOCK_ADDR)
_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")

INET4_TYPES = frozenset({A.CGROUP_INET4_BIND, A.CGROUP_INET4_CONNECT, A.CGROUP_INET4_GETPEERNAME,
                         A.CGROUP_INET4_GETSOCKNAME, A.CGROUP_UDP4_SENDMSG, A.CGROUP_UDP4_RECVMSG})
INET6_TYPES = frozenset({A.CGROUP_INET6_BIND, A.CGROUP_INET6_CONNECT, A.CGROUP_INET6_GETPEERNAME,
                         A.CGROUP_INET6_GETSOCKNAME, A.CGROUP_UDP6_SENDMSG, A.CGROUP_UDP6_RECVMSG})
UNIX_TYPES = frozenset({A.CGROUP_UNIX_CONNECT, A.CGROUP_UNIX_SENDMSG, A.CGROUP_UNIX_RECVMSG,
                        A.CGROUP_UNIX_GETPEERNAME, A.CGROUP_UNIX_GETSOCKNAME})
#: check_return_code(): these hooks cannot refuse, the program must return 1
NO_RETVAL_TYPES = frozenset({A.CGROUP_UDP4_RECVMSG, A.CGROUP_UDP6_RECVMSG, A.CGROUP_UNIX_RECVMSG,
                             A.CGROUP_INET4_GETPEERNAME, A.CGROUP_INET6_GETPEERNAME,
                             A.CGROUP_UNIX_GETPEERNAME, A.CGROUP_INET4_GETSOCKNAME,
                             A.CGROUP_INET6_GETSOCKNAME, A.CGROUP_UNIX_GETSOCKNAME})
_BIND_TYPES = frozenset({A.CGROUP_INET4_BIND, A.CGROUP_INET6_BIND})
_BIND_RANGE = (0, 3)            # bit 1: BPF_RET_BIND_NO_CAP_NET_BIND_SERVICE

_USER_IP4 = ctx_range(SOCK_ADDR, "user_ip4")
_USER_IP6 = ctx_range_till(SOCK_ADDR, ("user_ip6", 0), ("user_ip6", 3))
_MSG_SRC_IP4 = ctx_range(SOCK_ADDR, "msg_src_ip4")
_MSG_SRC_IP6 = ctx_range_till(SOCK_ADDR, ("msg_src_ip6", 0), ("msg_src_ip6", 3))
_USER_PORT = ctx_range(SOCK_ADDR, "user_port")
_SK = ctx_range_ptr(SOCK_ADDR, "sk")
_READ_ONLY = (ctx_range(SOCK_ADDR, "user_family"), ctx_range(SOCK_ADDR, "family"),
              ctx_range(SOCK_ADDR, "type"), ctx_range(SOCK_ADDR, "protocol"))
_FAMILY_OF = ((_USER_IP4, INET4_TYPES), (_USER_IP6, INET6_TYPES),
              (_MSG_SRC_IP4, frozenset({A.CGROUP_UDP4_SENDMSG})),
              (_MSG_SRC_IP6, frozenset({A.CGROUP_UDP6_SENDMSG})))


def _wide_ok(off: int, size: int, field: str) -> bool:
    """bpf_ctx_wide_access_ok(): an aligned 8-byte access inside an array field."""
    start = ffi.offsetof(SOCK_ADDR, field)
    return size == _U64 and start <= off and off + _U64 <= offsetofend(SOCK_ADDR, field) and off % _U64 == 0


def sock_addr_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= SOCK_ADDR_SIZE or off % size:
        return False
    for rng, types in _FAMILY_OF:
        if off in rng and prog.expected_attach_type not in types:
            return False
    if any(off in r for r in (_USER_IP4, _USER_IP6, _MSG_SRC_IP4, _MSG_SRC_IP6, _USER_PORT)):
        if _wide_ok(off, size, "user_ip6") or _wide_ok(off, size, "msg_src_ip6"):
            if access == BPF_READ:
                info.ctx_field_size = _U32
            return True
        if access == BPF_READ:
            info.ctx_field_size = _U32
            return narrow_access_ok(off, size, _U32)
        return size == _U32
    if off in _SK:
        if access != BPF_READ or size != _U64:
            return False
        info.reg_type = RegType.PTR_TO_SOCKET
        return True
    if any(off in r for r in _READ_ONLY):
        return access == BPF_READ and size == _U32
    return False


_OWN = {
    FuncId.bind: lambda prog: BIND if prog.expected_attach_type in (A.CGROUP_INET4_CONNECT,
                                                                     A.CGROUP_INET6_CONNECT) else None,
    FuncId.get_socket_cookie: lambda prog: CTX_ARG,
    FuncId.get_netns_cookie: lambda prog: NETNS_COOKIE_CTX,
    FuncId.perf_event_output: lambda prog: EVENT_OUTPUT_DATA,
    FuncId.sk_lookup_tcp: lambda prog: SOCK_ADDR_SK_LOOKUP_TCP,
    FuncId.sk_lookup_udp: lambda prog: SOCK_ADDR_SK_LOOKUP_UDP,
    FuncId.skc_lookup_tcp: lambda prog: SOCK_ADDR_SKC_LOOKUP_TCP,
    FuncId.sk_release: lambda prog: _any(FuncId.sk_release),
    FuncId.sk_storage_get: lambda prog: _any(FuncId.sk_storage_get),
    FuncId.sk_storage_delete: lambda prog: _any(FuncId.sk_storage_delete),
    FuncId.setsockopt: lambda prog: SOCK_ADDR_SETSOCKOPT if _sockopt_ok(prog) else None,
    FuncId.getsockopt: lambda prog: SOCK_ADDR_GETSOCKOPT if _sockopt_ok(prog) else None,
}


def _sockopt_ok(prog) -> bool:
    """6.18 offers bpf_[gs]etsockopt to every sock_addr attach type (measured: the 6.12 list
    lacked the unix getpeername/getsockname ones)."""
    return prog.expected_attach_type in INET4_TYPES | INET6_TYPES | UNIX_TYPES


def _any(func_id: int):
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


def sock_addr_func_proto(func_id: int, prog):
    """sock_addr_func_proto(): the cgroup sets, its own, then bpf_sk_base_func_proto."""
    from fakekernel.helpers.cgroup_sock import cgroup_common_func_proto, cgroup_current_func_proto
    p = cgroup_common_func_proto(func_id, prog) or cgroup_current_func_proto(func_id, prog)
    if p is not None:
        return p
    if func_id in _OWN:
        return _OWN[func_id](prog)
    return bpf_sk_base_func_proto(func_id, prog)


_USER_PORT_OFF = ffi.offsetof(SOCK_ADDR, "user_port")
_PORT_SIZE = ffi.sizeof("__be16")


def sock_addr_convert_ctx_access(insn: Insn) -> list[Insn] | None:
    """sock_addr_convert_ctx_access() where the uapi struct differs: user_port is the 2-byte
    sin_port, so a 2-byte load of its upper half reads the port itself (the narrow-load
    rewrite shifts only loads narrower than the kernel field)."""
    if BPF_CLASS(insn.code) == BPF_LDX and BPF_MODE(insn.code) == BPF_MEM and BPF_SIZE(insn.code) == BPF_H \
            and insn.off == _USER_PORT_OFF + _PORT_SIZE:
        return [Insn(insn.code, insn.dst_reg, insn.src_reg, _USER_PORT_OFF, insn.imm)]
    return None


def sock_addr_ret_range(prog) -> tuple[int, int]:
    eat = prog.expected_attach_type
    if eat in NO_RETVAL_TYPES:
        return 1, 1
    if eat in _BIND_TYPES:
        return _BIND_RANGE
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=sock_addr_func_proto, is_valid_access=sock_addr_is_valid_access,
                           convert_ctx_access=sock_addr_convert_ctx_access, ctx_size=SOCK_ADDR_SIZE, kctx_size=SOCK_ADDR_SIZE, get_ret_range=sock_addr_ret_range)
