"""BTF func_info / line_info of PROG_LOAD — kernel/bpf/verifier.c: check_btf_info_early(),
check_btf_func_early(), check_btf_info(), check_btf_func(), check_btf_line(),
check_abnormal_return().

`check_btf_info_early` runs before the subprograms are known: it takes the prog's BTF
(prog_btf_fd; EBADF / EINVAL, vmlinux BTF EACCES) when func_info or line_info is given and
checks each func_info record on its own (record size, increasing insn_off from 0, FUNC type
ids).  `check_btf_info` runs after check_subprogs: one func_info record per subprogram at its
first insn, then the line_info records (strictly increasing offsets inside the program, on
real insns, valid string offsets, one starting each subprogram).  Messages go to the
verifier log as the kernel words them (some without a newline, as in the kernel).
The checked records are kept in ``prog.aux.func_info`` / ``prog.aux.line_info`` (bytes in
the kernel's record layout) and ``prog.aux.btf`` holds a BTF reference.
CO-RE relocations (core_relo_cnt) are not applied here.
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from uapi.bpf import BPF_ABS, BPF_CALL, BPF_IND, BPF_JMP, BPF_LD, FuncId
from uapi.btf import BtfKind
from uapi.errno import Errno
from uapi.ffi import ffi, offsetofend
from uapi.insn import BPF_CLASS, BPF_MODE

__all__ = ["check_btf_info_early", "check_btf_info", "check_abnormal_return"]

_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_FUNC_INFO = "struct bpf_func_info"
_LINE_INFO = "struct bpf_line_info"
MIN_BPF_FUNCINFO_SIZE = ffi.sizeof(_FUNC_INFO)
MAX_FUNCINFO_REC_SIZE = 252
MIN_BPF_LINEINFO_SIZE = offsetofend(_LINE_INFO, "line_col")
MAX_LINEINFO_REC_SIZE = MAX_FUNCINFO_REC_SIZE
INT_MAX = (1 << 31) - 1
PAGE_SIZE = 4096
_MODIFIERS = (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT,
              BtfKind.TYPE_TAG)


def _fail(env, errno: int, msg: str = "", *, log: bool = True):
    """verbose(env, msg) (unless `log` is off) and the VerifierError to raise."""
    from fakekernel.verifier.env import VerifierError      # env -> helpers -> progs -> verifier
    if msg and log:
        env.verbose(msg)
    return VerifierError(errno, msg)


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def _subprog_flags(env, starts: list[int]) -> list[tuple[bool, bool]]:
    """(has_ld_abs, has_tail_call) of each subprogram, as check_subprogs() records them."""
    bounds = starts + [len(env.insns)]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        ld_abs = tail_call = False
        for insn in env.insns[lo:hi]:
            if BPF_CLASS(insn.code) == BPF_LD and BPF_MODE(insn.code) in (BPF_ABS, BPF_IND):
                ld_abs = True
            if insn.code == BPF_JMP | BPF_CALL and insn.src_reg == 0 and \
                    insn.imm == FuncId.tail_call:
                tail_call = True
        out.append((ld_abs, tail_call))
    return out


def check_abnormal_return(env, starts: list[int] | None) -> None:
    """check_abnormal_return(): without func_info, subprograms may not use LD_ABS or tail calls."""
    if not starts:
        return              # before add_subprog_and_kfunc() there are no subprograms yet
    for ld_abs, tail_call in _subprog_flags(env, starts)[1:]:
        if ld_abs:
            raise _fail(env, Errno.EINVAL, "LD_ABS is not allowed in subprogs without BTF\n")
        if tail_call:
            raise _fail(env, Errno.EINVAL, "tail_call is not allowed in subprogs without BTF\n")


def _uarg_tail_zero(task, addr: int, expected: int, actual: int) -> bool:
    """bpf_check_uarg_tail_zero() on one record: False for non-zero bytes past `expected`."""
    if actual > PAGE_SIZE:
        return False
    if actual <= expected:
        return True
    return task.mm.check_zeroed_user(addr + expected, actual - expected)


def _btf_get_by_fd(task, fd: int):
    """btf_get_by_fd(): EBADF / EINVAL; the caller owns the new reference."""
    from fakekernel.btf import BTF_FILE_KIND       # btf -> btf_env -> verifier: import late
    f = task.files.fdget(_s32(fd))
    if f.kind != BTF_FILE_KIND:
        raise KernelError(Errno.EINVAL, "prog_btf_fd is not a BTF object")
    return f.private_data.get()


def check_btf_info_early(env, attr, ctx) -> None:
    """check_btf_info_early() + check_btf_func_early()."""
    if not attr.func_info_cnt and not attr.line_info_cnt:
        return check_abnormal_return(env, None)
    try:
        btf = _btf_get_by_fd(env.task, attr.prog_btf_fd)
    except KernelError as e:
        raise _fail(env, e.errno, "prog_btf_fd", log=False) from None
    if btf.kernel_btf:
        btf.put()
        raise _fail(env, Errno.EACCES, "kernel BTF as prog BTF", log=False)
    env.prog.aux.btf = btf
    try:
        _check_btf_func_early(env, attr, ctx, btf)
    except KernelError as e:
        raise _fail(env, e.errno, "func_info", log=False) from None


def _check_btf_func_early(env, attr, ctx, btf) -> None:
    nfuncs = attr.func_info_cnt
    if not nfuncs:
        return check_abnormal_return(env, None)
    urec_size = attr.func_info_rec_size
    if urec_size < MIN_BPF_FUNCINFO_SIZE or urec_size > MAX_FUNCINFO_REC_SIZE or urec_size % _U32:
        raise _fail(env, Errno.EINVAL, f"invalid func info rec size {urec_size}\n")
    krec_size = ffi.sizeof(_FUNC_INFO)
    min_size = min(krec_size, urec_size)
    task, types = env.task, btf.env
    urecord = attr.func_info
    records = []
    prev_offset = 0
    for i in range(nfuncs):
        if not _uarg_tail_zero(task, urecord, krec_size, urec_size):
            env.verbose("nonzero tailing record in func info")
            ctx.put_attr_field("func_info_rec_size", min_size)
            raise _fail(env, Errno.E2BIG, "nonzero tailing record in func info", log=False)
        raw = task.mm.copy_from_user(urecord, min_size).ljust(krec_size, b"\0")
        rec = ffi.new(_FUNC_INFO + " *")
        ffi.memmove(rec, raw, krec_size)
        if i == 0:
            if rec.insn_off:
                raise _fail(env, Errno.EINVAL,
                            f"nonzero insn_off {rec.insn_off} for the first func info record")
        elif rec.insn_off <= prev_offset:
            raise _fail(env, Errno.EINVAL,
                        f"same or smaller insn offset ({rec.insn_off}) than previous func "
                        f"info record ({prev_offset})")
        t = types.type_by_id(rec.type_id)
        if t is None or rec.type_id == 0 or t.kind != BtfKind.FUNC:
            raise _fail(env, Errno.EINVAL, f"invalid type id {_s32(rec.type_id)} in func info")
        proto = types.type_by_id(t.type)
        if proto is None or t.type == 0 or proto.kind != BtfKind.FUNC_PROTO:
            raise _fail(env, Errno.EINVAL, "FUNC without FUNC_PROTO", log=False)
        prev_offset = rec.insn_off
        records.append(raw)
        urecord += urec_size
    env.prog.aux.func_info = env.prog.aux.orig_func_info = b"".join(records)


def _skip_modifiers(types, type_id: int):
    t = types.type_by_id(type_id)
    while type_id and t is not None and t.kind in _MODIFIERS:
        type_id = t.type
        t = types.type_by_id(type_id)
    return t if type_id else None


def check_btf_info(env, attr, ctx, starts: list[int]) -> None:
    """check_btf_info(): check_btf_func() then check_btf_line() (CO-RE relocations: not applied)."""
    if not attr.func_info_cnt and not attr.line_info_cnt:
        return check_abnormal_return(env, starts)
    _check_btf_func(env, attr, starts)
    try:
        _check_btf_line(env, attr, ctx, starts)
    except KernelError as e:
        raise _fail(env, e.errno, "line_info", log=False) from None


def _check_btf_func(env, attr, starts: list[int]) -> None:
    nfuncs = attr.func_info_cnt
    if not nfuncs:
        return check_abnormal_return(env, starts)
    if nfuncs != len(starts):
        raise _fail(env, Errno.EINVAL,
                    "number of funcs in func_info doesn't match number of subprogs\n")
    types = env.prog.aux.btf.env
    rec_size = ffi.sizeof(_FUNC_INFO)
    blob = env.prog.aux.func_info
    flags = _subprog_flags(env, starts)
    for i in range(nfuncs):
        rec = ffi.new(_FUNC_INFO + " *")
        ffi.memmove(rec, blob[i * rec_size:(i + 1) * rec_size], rec_size)
        if starts[i] != rec.insn_off:
            raise _fail(env, Errno.EINVAL, "func_info BTF section doesn't match subprog layout "
                                           "in BPF program\n")
        proto = types.type_by_id(types.type_by_id(rec.type_id).type)
        ret = _skip_modifiers(types, proto.type)
        scalar_return = ret is not None and (
            (ret.kind == BtfKind.INT and ret.size <= _U64)
            or ret.kind in (BtfKind.ENUM, BtfKind.ENUM64))
        if i and not scalar_return and flags[i][0]:
            raise _fail(env, Errno.EINVAL,
                        "LD_ABS is only allowed in functions that return 'int'.\n")
        if i and not scalar_return and flags[i][1]:
            raise _fail(env, Errno.EINVAL,
                        "tail_call is only allowed in functions that return 'int'.\n")


def _check_btf_line(env, attr, ctx, starts: list[int]) -> None:
    nr_linfo = attr.line_info_cnt
    if not nr_linfo:
        return
    expected_size = ffi.sizeof(_LINE_INFO)
    if nr_linfo > INT_MAX // expected_size:
        raise _fail(env, Errno.EINVAL, "too many line_info records", log=False)
    rec_size = attr.line_info_rec_size
    if rec_size < MIN_BPF_LINEINFO_SIZE or rec_size > MAX_LINEINFO_REC_SIZE or rec_size % _U32:
        raise _fail(env, Errno.EINVAL, "invalid line_info_rec_size", log=False)
    task, types, prog = env.task, env.prog.aux.btf.env, env.prog
    ncopy = min(expected_size, rec_size)
    ulinfo = attr.line_info
    records = []
    prev_offset = 0
    s = 0
    for i in range(nr_linfo):
        if not _uarg_tail_zero(task, ulinfo, expected_size, rec_size):
            env.verbose("nonzero tailing record in line_info")
            ctx.put_attr_field("line_info_rec_size", expected_size)
            raise _fail(env, Errno.E2BIG, "nonzero tailing record in line_info", log=False)
        raw = task.mm.copy_from_user(ulinfo, ncopy).ljust(expected_size, b"\0")
        rec = ffi.new(_LINE_INFO + " *")
        ffi.memmove(rec, raw, expected_size)
        if (i and rec.insn_off <= prev_offset) or rec.insn_off >= prog.len:
            raise _fail(env, Errno.EINVAL,
                        f"Invalid line_info[{i}].insn_off:{rec.insn_off} (prev_offset:"
                        f"{prev_offset} prog->len:{prog.len})\n")
        if not env.insns[rec.insn_off].code:
            raise _fail(env, Errno.EINVAL, f"Invalid insn code at line_info[{i}].insn_off\n")
        if types.str_by_offset(rec.line_off) is None or \
                types.str_by_offset(rec.file_name_off) is None:
            raise _fail(env, Errno.EINVAL,
                        f"Invalid line_info[{i}].line_off or .file_name_off\n")
        if s != len(starts):
            if rec.insn_off == starts[s]:
                s += 1
            elif starts[s] < rec.insn_off:
                raise _fail(env, Errno.EINVAL, f"missing bpf_line_info for func#{s}\n")
        prev_offset = rec.insn_off
        records.append(raw)
        ulinfo += rec_size
    if s != len(starts):
        raise _fail(env, Errno.EINVAL, f"missing bpf_line_info for {len(starts) - s} funcs "
                                       f"starting from func#{s}\n")
    prog.aux.line_info = prog.aux.orig_line_info = b"".join(records)
