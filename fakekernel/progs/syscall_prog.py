"""BPF_PROG_TYPE_SYSCALL — kernel/bpf/syscall.c (bpf_syscall_verifier_ops, syscall_prog_func_proto,
syscall_prog_is_valid_access) on top of kernel/trace/bpf_trace.c tracing_prog_func_proto().

A syscall program always sleeps (the verifier refuses it otherwise) and runs only through
PROG_TEST_RUN, in the caller's context: its ctx is a kernel copy of ctx_in, up to U16_MAX
bytes, which it may read and write at any aligned offset (test_run checks ctx_size_in
against the highest byte reached).  Its helpers run bpf() commands, close fds and look up
kernel symbols and BTF ids.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.base import prog_loader
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.helpers.syscall import SYSCALL_PROTOS
from fakekernel.progs.raw_tp import raw_tp_prog_func_proto
from uapi.bpf import AttachType, FuncId

__all__ = ["VERIFIER_OPS", "SYSCALL_CTX_MAX", "syscall_prog_func_proto", "tracing_net_func_proto"]

SYSCALL_CTX_MAX = 0xFFFF            # U16_MAX


def _never(prog) -> bool:
    return False


# tracing_prog_func_proto()'s own protos (bpf_trace.c, net/core/filter.c, bpf_sk_storage.c):
# BTF-typed arguments; the ones with an `allowed` callback refuse every non-fentry/iter program
_TRACING_PROTOS = {p.func: p for p in (
    FuncProto(func=FuncId.skb_output, gpl_only=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_BTF_ID, ArgType.CONST_MAP_PTR, ArgType.ANYTHING,
                         ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO)),
    FuncProto(func=FuncId.xdp_output, gpl_only=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_BTF_ID, ArgType.CONST_MAP_PTR, ArgType.ANYTHING,
                         ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE_OR_ZERO)),
    FuncProto(func=FuncId.sock_from_file, ret_type=RetType.PTR_TO_BTF_ID_OR_NULL,
              arg_types=(ArgType.PTR_TO_BTF_ID,)),
    FuncProto(func=FuncId.d_path, ret_type=RetType.INTEGER, allowed=_never,
              arg_types=(ArgType.PTR_TO_BTF_ID, ArgType.PTR_TO_MEM, ArgType.CONST_SIZE_OR_ZERO)),
    FuncProto(func=FuncId.sk_storage_get, ret_type=RetType.PTR_TO_MAP_VALUE_OR_NULL,
              allowed=_never, arg_types=(ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_OR_NULL,
                                         ArgType.PTR_TO_MAP_VALUE_OR_NULL, ArgType.ANYTHING)),
    FuncProto(func=FuncId.sk_storage_delete, ret_type=RetType.INTEGER, allowed=_never,
              arg_types=(ArgType.CONST_MAP_PTR, ArgType.PTR_TO_BTF_ID_OR_NULL)),
    FuncProto(func=FuncId.get_socket_cookie, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_BTF_ID_SOCK_COMMON,)),
    FuncProto(func=FuncId.xdp_get_buff_len, ret_type=RetType.INTEGER, arg_types=(ArgType.PTR_TO_BTF_ID,)),
)}
_SKC_TO = frozenset({FuncId.skc_to_tcp6_sock, FuncId.skc_to_tcp_sock, FuncId.skc_to_tcp_timewait_sock,
                     FuncId.skc_to_tcp_request_sock, FuncId.skc_to_udp6_sock, FuncId.skc_to_unix_sock,
                     FuncId.skc_to_mptcp_sock})
# only for programs with a trampoline (fentry/fexit/fmod_ret) or iterators
_TRAMPOLINE_ONLY = frozenset({FuncId.get_func_arg, FuncId.get_func_ret, FuncId.get_func_arg_cnt,
                              FuncId.get_attach_cookie, FuncId.seq_printf, FuncId.seq_write,
                              FuncId.seq_printf_btf})


def tracing_net_func_proto(func_id: int, prog):
    """The part of tracing_prog_func_proto() a program without a trampoline sees."""
    if func_id in _TRACING_PROTOS:
        return _TRACING_PROTOS[func_id]
    if func_id in _SKC_TO:
        from fakekernel.helpers import PROTOS
        return PROTOS.get(func_id)
    if func_id in _TRAMPOLINE_ONLY and prog.expected_attach_type != AttachType.TRACE_ITER:
        return None
    return raw_tp_prog_func_proto(func_id, prog)


def syscall_prog_func_proto(func_id: int, prog):
    if func_id == FuncId.sys_bpf:
        return SYSCALL_PROTOS[func_id] if prog_loader(prog).perfmon_capable() else None
    if func_id in (FuncId.btf_find_by_name_kind, FuncId.sys_close, FuncId.kallsyms_lookup_name):
        return SYSCALL_PROTOS[func_id]
    return tracing_net_func_proto(func_id, prog)


def syscall_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    """Any aligned access inside the first U16_MAX bytes, read or write."""
    if off < 0 or off >= SYSCALL_CTX_MAX:
        return False
    return off % size == 0


VERIFIER_OPS = VerifierOps(get_func_proto=syscall_prog_func_proto,
                           is_valid_access=syscall_prog_is_valid_access,
                           ctx_size=SYSCALL_CTX_MAX, kctx_size=SYSCALL_CTX_MAX)
