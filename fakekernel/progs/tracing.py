"""BPF_PROG_TYPE_TRACING — kernel/trace/bpf_trace.c (tracing_verifier_ops, tracing_prog_func_proto,
tracing_prog_is_valid_access) with kernel/bpf/btf.c btf_ctx_access() and get_ctx_arg_idx().

fentry/fexit/fmod_ret, tp_btf and iter programs see their ctx as an array of u64 arguments
laid out by the target's BTF prototype (``prog.aux.attach_target``, set by
`fakekernel.verifier.attach_btf`): scalars may be read at any size, pointers only as u64 and
they become PTR_TO_BTF_ID; fexit (and LSM) may read the return value in the slot after the
arguments.  Iterators additionally get the seq_file helpers.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.btf_env import BTF_KIND_STR
from fakekernel.helpers.trace import bpf_tracing_func_proto
from fakekernel.progs.ctx import BPF_READ
from fakekernel.verifier.btf_access import BtfRef
from fakekernel.verifier.regs import RegType, TypeFlag
from uapi.btf import BtfKind
from uapi.bpf import AttachType, FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "btf_ctx_access", "bpf_tracing_ctx_access", "get_ctx_arg_idx",
           "TRACING_CTX_SIZE", "MAX_BPF_FUNC_REG_ARGS"]

_U64 = ffi.sizeof("__u64")
MAX_BPF_FUNC_ARGS = 12
MAX_BPF_FUNC_REG_ARGS = 5
TRACING_CTX_SIZE = _U64 * MAX_BPF_FUNC_ARGS
_SMALL_INT_MAX = _U64
_SCALAR_KINDS = (BtfKind.ENUM, BtfKind.ENUM64, BtfKind.STRUCT, BtfKind.UNION)
# prog_args_trusted(): attach types whose pointer arguments are PTR_TRUSTED
_ARGS_TRUSTED = (AttachType.TRACE_RAW_TP, AttachType.TRACE_ITER, AttachType.LSM_MAC,
                 AttachType.LSM_CGROUP)


def bpf_tracing_ctx_access(off: int, size: int, access: int) -> bool:
    """bpf_tracing_ctx_access(): an u64 array of MAX_BPF_FUNC_ARGS, read-only, aligned."""
    if off < 0 or off >= TRACING_CTX_SIZE:
        return False
    if access != BPF_READ:
        return False
    return off % size == 0


def get_ctx_arg_idx(ix, proto_id: int, off: int) -> int:
    """get_ctx_arg_idx(): which argument (nr_args = the return value) the byte offset is in."""
    if not proto_id:
        return off // _U64
    params = ix.params(proto_id)
    offset = 0
    for i, (_name, tid) in enumerate(params):
        offset += _slot_size(ix, tid)
        if off < offset:
            return i
    offset += _slot_size(ix, ix.type_by_id(proto_id).type)
    if off < offset:
        return len(params)
    return len(params) + 1


def _slot_size(ix, tid: int) -> int:
    t, _ = ix.skip_modifiers(tid)
    if t is None:
        return 0
    if t.kind == BtfKind.PTR:
        return _U64
    return -(-t.size // _U64) * _U64


def _is_small_int(t) -> bool:
    return t is not None and t.kind == BtfKind.INT and t.size <= _SMALL_INT_MAX


def btf_ctx_access(off: int, size: int, access: int, prog, info) -> bool:
    """btf_ctx_access(): the BTF-typed argument rules (log lines as the kernel's)."""
    tgt = prog.aux.attach_target
    log = getattr(info, "verbose", None) or (lambda text: None)
    tname = tgt.name.decode(errors="replace")
    if off % _U64:
        log(f"func '{tname}' offset {off} is not multiple of 8\n")
        return False
    ix = tgt.btf
    proto_id = tgt.proto_id
    arg = get_ctx_arg_idx(ix, proto_id, off)
    params = ix.params(proto_id) if proto_id else []
    nr_args = len(params) if proto_id else MAX_BPF_FUNC_REG_ARGS
    if tgt.btf_trace:
        params = params[1:]
        nr_args -= 1
    if arg > nr_args:
        log(f"func '{tname}' doesn't have {arg + 1}-th argument\n")
        return False
    eat = prog.expected_attach_type
    if arg == nr_args:
        if eat in (AttachType.LSM_MAC, AttachType.LSM_CGROUP, AttachType.TRACE_FEXIT):
            if not proto_id:
                return True
            t, _ = ix.skip_modifiers(ix.type_by_id(proto_id).type)
        elif eat == AttachType.MODIFY_RETURN:
            if not proto_id:
                return False
            t, _ = ix.skip_modifiers(ix.type_by_id(proto_id).type)
            if not _is_small_int(t):
                log(f"ret type {_kind(t)} not allowed for fmod_ret\n")
                return False
        else:
            log(f"func '{tname}' doesn't have {arg + 1}-th argument\n")
            return False
    else:
        if not proto_id:
            return True
        t, _ = ix.skip_modifiers(params[arg][1])
    if t is None or _is_small_int(t) or t.kind in _SCALAR_KINDS:
        return True                      # a scalar (void return reads as one too)
    if t.kind != BtfKind.PTR:
        name = ix.name_by_offset(t.name_off).decode(errors="replace")
        log(f"func '{tname}' arg{arg} '{name}' has type {_kind(t)}. Only pointer access is allowed\n")
        return False
    if size != _U64:
        log(f"func '{tname}' size {size} must be 8\n")
        return False
    ctx_arg = None
    if eat == AttachType.TRACE_ITER:
        from fakekernel.iter import iter_ctx_arg
        ctx_arg = iter_ctx_arg(tgt, arg)
        if ctx_arg in ("buf", "rdonly_buf"):     # PTR_TO_BUF_OR_NULL (map element key/value)
            info.reg_type = RegType.PTR_TO_BUF | TypeFlag.PTR_MAYBE_NULL
            if ctx_arg == "rdonly_buf":
                info.reg_type |= TypeFlag.MEM_RDONLY
            return True
    pointee, pointee_id = ix.skip_modifiers(t.type)
    if not t.type or pointee is None or pointee.kind == BtfKind.INT:
        return True                      # void * and int * read as scalars
    name = ix.name_by_offset(pointee.name_off).decode(errors="replace")
    reg_type = RegType.PTR_TO_BTF_ID
    if ctx_arg is not None:                  # the iterator's ctx_arg_info type
        reg_type |= TypeFlag.PTR_MAYBE_NULL
        if ctx_arg == "trusted_or_null":
            reg_type |= TypeFlag.PTR_TRUSTED
        info.reg_type = reg_type
        info.btf = BtfRef(ix, pointee_id, name)
        return True
    if eat in _ARGS_TRUSTED:
        reg_type |= TypeFlag.PTR_TRUSTED
    if pointee.kind not in (BtfKind.STRUCT, BtfKind.UNION):
        log(f"func '{tname}' arg{arg} type {_kind(pointee)} is not a struct\n")
        return False
    info.reg_type = reg_type
    info.btf = BtfRef(ix, pointee_id, name)
    log(f"func '{tname}' arg{arg} has btf_id {pointee_id} type {_kind(pointee)} '{name}'\n")
    return True


def _kind(t) -> str:
    return BTF_KIND_STR[t.kind if t is not None else BtfKind.UNKN].decode()


def tracing_prog_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if not bpf_tracing_ctx_access(off, size, access):
        return False
    return btf_ctx_access(off, size, access, prog, info)


def tracing_prog_func_proto(func_id: int, prog):
    """tracing_prog_func_proto(): seq_file helpers for iterators, then the tracing set."""
    if prog.expected_attach_type == AttachType.TRACE_ITER and func_id in (
            FuncId.seq_printf, FuncId.seq_write):
        from fakekernel.helpers.seq import SEQ_PROTOS
        return SEQ_PROTOS[func_id]
    if func_id == FuncId.get_func_ip:
        from fakekernel.helpers.seq import GET_FUNC_IP_TRACING_PROTO
        return GET_FUNC_IP_TRACING_PROTO
    if func_id in (FuncId.get_func_arg, FuncId.get_func_ret, FuncId.get_func_arg_cnt):
        from fakekernel.helpers.func_args import trampoline_func_proto
        return trampoline_func_proto(func_id, prog)
    return bpf_tracing_func_proto(func_id, prog)


def tracing_ret_range(prog) -> tuple[int, int] | None:
    """check_return_code() for TRACING: fentry/fexit return 0, iterators 0 (next object) or
    1 (retry it), tp_btf and fmod_ret anything."""
    eat = prog.expected_attach_type
    if eat in (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT):
        return 0, 0
    if eat == AttachType.TRACE_ITER:
        return 0, 1
    return None


VERIFIER_OPS = VerifierOps(get_func_proto=tracing_prog_func_proto,
                           is_valid_access=tracing_prog_is_valid_access,
                           ctx_size=TRACING_CTX_SIZE, kctx_size=TRACING_CTX_SIZE,
                           get_ret_range=tracing_ret_range)
