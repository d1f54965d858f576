"""BPF_OBJ_GET_INFO_BY_FD per object kind — kernel/bpf/syscall.c: bpf_prog_get_info_by_fd(),
bpf_map_get_info_by_fd(), bpf_insn_prepare_dump(), set_info_rec_size().

`INFO_BY_FILE_KIND` maps a file kind to its filler ``fill(kern, task, file, obj, attr, ctx)``;
the BTF and link owners add their entries ("btf", "bpf-link") here.  Every filler follows
the same contract: tail-zero check of the user's struct beyond what this kernel knows
(E2BIG), read ``min(user, kernel)`` bytes of the user's struct (input fields such as
nr_map_ids and buffer pointers come from there; fields the kernel does not set keep the
user's value), fill, then write those bytes and ``info_len`` back.
"""
from __future__ import annotations

import hashlib

from fakekernel.btf import BTF_FILE_KIND, btf_get_info_by_fd
from fakekernel.errors import Errno, KernelError
from fakekernel.verifier.misc_fixups import call_imm_for_dump, map_at_calls
from fakekernel.syscall import fdget
from uapi.bpf import (BPF_CALL, BPF_DW, BPF_IMM, BPF_JMP, BPF_LD, BPF_LDX, BPF_MEM,
                      BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_ST, BPF_STX, FuncId)
from uapi.capability import Cap
from uapi.ffi import ffi, offsetofend
from fakekernel.interp.memory import InterpreterFault
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_SIZE, Insn, decode_prog, encode_prog, u32

__all__ = ["INFO_BY_FILE_KIND", "bpf_check_uarg_tail_zero", "bpf_prog_get_info_by_fd",
           "bpf_map_get_info_by_fd", "bpf_insn_prepare_dump"]

PAGE_SIZE = 4096
SHA256_DIGEST_SIZE = hashlib.sha256().digest_size

# kernel-internal opcodes (include/linux/filter.h), never seen in uapi programs
BPF_TAIL_CALL = 0xf0
BPF_CALL_ARGS = 0xe0
BPF_PROBE_MEM = 0x20
BPF_PROBE_MEM32 = 0xa0

_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_PROG_INFO = "struct bpf_prog_info"
_MAP_INFO = "struct bpf_map_info"
# bpf_prog_get_info_by_fd() only knows the struct up to attach_btf_id (the rest is padding)
_PROG_INFO_KNOWN = offsetofend(_PROG_INFO, "attach_btf_id")


def bpf_check_uarg_tail_zero(task, uaddr: int, expected: int, actual: int) -> None:
    """bpf_check_uarg_tail_zero(): bytes the kernel does not know must be zero (E2BIG)."""
    if actual > PAGE_SIZE:
        raise KernelError(Errno.E2BIG, "info_len larger than a page")
    if actual <= expected:
        return
    if not task.mm.check_zeroed_user(uaddr + expected, actual - expected):
        raise KernelError(Errno.E2BIG, "non-zero bytes past the known info struct")


def _read_user_info(task, ctype: str, uaddr: int, info_len: int):
    """memset + copy_from_user(min(sizeof, info_len)): returns (cdata, info_len)."""
    info_len = min(ffi.sizeof(ctype), info_len)
    info = ffi.new(ctype + " *")
    ffi.memmove(info, task.mm.copy_from_user(uaddr, info_len), info_len)
    return info, info_len


def _write_user_info(task, ctx, info, uaddr: int, info_len: int) -> int:
    task.mm.copy_to_user(uaddr, bytes(ffi.buffer(info))[:info_len])
    ctx.put_attr_field("info.info_len", info_len)
    return 0


def _put_u32s(task, uaddr: int, values) -> None:
    for i, v in enumerate(values):
        task.mm.copy_to_user(uaddr + i * _U32, int(v).to_bytes(_U32, "little"))


def _put_u64s(task, uaddr: int, values) -> None:
    for i, v in enumerate(values):
        task.mm.copy_to_user(uaddr + i * _U64, int(v).to_bytes(_U64, "little"))


# ---------------------------------------------------------------- programs

def bpf_dump_raw_ok(kern, creds) -> bool:
    """bpf_dump_raw_ok() = kallsyms_show_value(): may these creds see kernel addresses?"""
    restrict = kern.sysctls.get("kernel.kptr_restrict", 0)
    if restrict == 0 and kern.sysctls.get("kernel.perf_event_paranoid", 2) <= 1:
        return True
    return restrict <= 1 and creds.capable(Cap.SYSLOG)


def _map_from_imm(kern, prog, addr: int):
    """bpf_map_from_imm(): (map, off, pseudo type) for a map pointer or a map-value pointer."""
    try:
        obj = kern.mem.object_at(addr)          # the opaque handle the verifier put there
    except InterpreterFault:
        obj = None
    for m in prog.aux.used_maps:
        if m is obj:
            return m, 0, BPF_PSEUDO_MAP_FD
        meta = getattr(m, "map_direct_value_meta", None)
        off = meta(addr) if meta is not None else None
        if off is not None:
            return m, off, BPF_PSEUDO_MAP_VALUE
    return None, 0, 0


def bpf_insn_prepare_dump(kern, prog, creds) -> bytes:
    """bpf_insn_prepare_dump(): the xlated insns as userspace may see them.

    Internal opcodes are turned back into their uapi forms, helper addresses hidden from
    callers who may not see kernel pointers, and map pointers replaced by map ids with
    src_reg = BPF_PSEUDO_MAP_FD / BPF_PSEUDO_MAP_VALUE (and the value offset in the
    second half).
    """
    raw_ok = bpf_dump_raw_ok(kern, creds)
    insns = decode_prog(prog.insns)
    maps_at = map_at_calls(insns, kern.mem) if raw_ok else {}
    for i, insn in enumerate(insns):
        code = insn.code
        if code == BPF_JMP | BPF_TAIL_CALL:
            insn = Insn(BPF_JMP | BPF_CALL, insn.dst_reg, insn.src_reg, insn.off,
                        FuncId.tail_call)
            code = insn.code
        elif code == BPF_JMP | BPF_CALL and insn.src_reg == 0 and insn.imm != FuncId.tail_call and raw_ok:
            # helpers run by id here; the kernel's imm is the function's address (BPF_CALL_IMM)
            insn = Insn(code, insn.dst_reg, 0, insn.off, call_imm_for_dump(kern, insns, maps_at, i))
        if code in (BPF_JMP | BPF_CALL, BPF_JMP | BPF_CALL_ARGS):
            insns[i] = Insn(BPF_JMP | BPF_CALL, insn.dst_reg, insn.src_reg, insn.off,
                            insn.imm if raw_ok else 0)
            continue
        cls, mode = BPF_CLASS(code), BPF_MODE(code)
        if cls == BPF_LDX and mode == BPF_PROBE_MEM:
            insns[i] = Insn(BPF_LDX | BPF_SIZE(code) | BPF_MEM, insn.dst_reg, insn.src_reg,
                            insn.off, insn.imm)
            continue
        if cls in (BPF_LDX, BPF_STX, BPF_ST) and mode == BPF_PROBE_MEM32:
            insns[i] = Insn(cls | BPF_SIZE(code) | BPF_MEM, insn.dst_reg, insn.src_reg,
                            insn.off, insn.imm)
            continue
        if code != BPF_LD | BPF_IMM | BPF_DW or i + 1 >= len(insns):
            continue
        addr = (u32(insns[i + 1].imm) << 32) | u32(insn.imm)
        m, off, pseudo = _map_from_imm(kern, prog, addr)
        if m is not None:
            insns[i] = Insn(code, insn.dst_reg, pseudo, insn.off, m.id)
            nxt = insns[i + 1]
            insns[i + 1] = Insn(nxt.code, nxt.dst_reg, nxt.src_reg, nxt.off, off)
    return encode_prog(insns)


def _set_info_rec_size(info) -> None:
    """set_info_rec_size(): record sizes must be the kernel's, or both count and size 0."""
    rec = (("nr_func_info", "func_info_rec_size", ffi.sizeof("struct bpf_func_info")),
           ("nr_line_info", "line_info_rec_size", ffi.sizeof("struct bpf_line_info")),
           ("nr_jited_line_info", "jited_line_info_rec_size", _U64))
    for nr, size_field, size in rec:
        if (getattr(info, nr) or getattr(info, size_field)) and getattr(info, size_field) != size:
            raise KernelError(Errno.EINVAL, f"{size_field} must be {size}")
    for _, size_field, size in rec:
        setattr(info, size_field, size)


def bpf_prog_get_info_by_fd(kern, task, file, prog, attr, ctx) -> int:
    uinfo = attr.info.info
    bpf_check_uarg_tail_zero(task, uinfo, _PROG_INFO_KNOWN, attr.info.info_len)
    info, info_len = _read_user_info(task, _PROG_INFO, uinfo, attr.info.info_len)
    aux = prog.aux

    info.type = prog.type
    info.id = aux.id
    info.load_time = aux.load_time
    info.created_by_uid = aux.uid
    info.gpl_compatible = int(bool(prog.gpl_compatible))
    ffi.memmove(info.tag, prog.tag.ljust(ffi.sizeof(info.tag), b"\0"), ffi.sizeof(info.tag))
    ffi.memmove(info.name, aux.name.ljust(ffi.sizeof(info.name), b"\0")[:ffi.sizeof(info.name)],
                ffi.sizeof(info.name))

    ulen = info.nr_map_ids
    info.nr_map_ids = len(aux.used_maps)
    ulen = min(ulen, info.nr_map_ids)
    if ulen:
        _put_u32s(task, info.map_ids, [m.id for m in aux.used_maps[:ulen]])

    _set_info_rec_size(info)

    info.run_time_ns = aux.run_time_ns
    info.run_cnt = aux.run_cnt
    info.recursion_misses = aux.recursion_misses
    info.verified_insns = aux.verified_insns
    if aux.btf is not None:
        info.btf_id = aux.btf.id

    if not task.bpf_capable():
        for field in ("jited_prog_len", "xlated_prog_len", "nr_jited_ksyms", "nr_jited_func_lens",
                      "nr_func_info", "nr_line_info", "nr_jited_line_info"):
            setattr(info, field, 0)
        return _write_user_info(task, ctx, info, uinfo, info_len)

    raw_ok = bpf_dump_raw_ok(kern, task.creds)
    ulen = info.xlated_prog_len
    info.xlated_prog_len = len(prog.insns)
    if info.xlated_prog_len and ulen:
        dump = bpf_insn_prepare_dump(kern, prog, task.creds)
        task.mm.copy_to_user(info.xlated_prog_insns, dump[:min(info.xlated_prog_len, ulen)])

    # Subprograms (aux.func: list of BpfProg with .tag/.jited_len/.bpf_func) once bpf-to-bpf
    # calls are split; a single function otherwise.  fakekernel does not JIT: jited_len is 0.
    funcs = list(getattr(aux, "func", None) or []) or [prog]
    ulen = info.jited_prog_len
    info.jited_prog_len = sum(getattr(f, "jited_len", 0) for f in funcs)
    if info.jited_prog_len and ulen:
        if raw_ok:
            image = b"".join(getattr(f, "jited_image", b"") for f in funcs)
            task.mm.copy_to_user(info.jited_prog_insns, image[:min(ulen, info.jited_prog_len)])
        else:
            info.jited_prog_insns = 0

    ulen = info.nr_jited_ksyms
    info.nr_jited_ksyms = len(funcs)
    if ulen:
        if raw_ok:
            _put_u64s(task, info.jited_ksyms,
                      [getattr(f, "bpf_func", 0) for f in funcs[:min(ulen, len(funcs))]])
        else:
            info.jited_ksyms = 0

    ulen = info.nr_jited_func_lens
    info.nr_jited_func_lens = len(funcs)
    if ulen:
        if raw_ok:
            _put_u32s(task, info.jited_func_lens,
                      [getattr(f, "jited_len", 0) for f in funcs[:min(ulen, len(funcs))]])
        else:
            info.jited_func_lens = 0

    info.attach_btf_id = aux.attach_btf_id
    if aux.attach_btf is not None:
        info.attach_btf_obj_id = aux.attach_btf.id

    for nr, ptr, blob, rec_size in (("nr_func_info", "func_info", aux.func_info,
                                     info.func_info_rec_size),
                                    ("nr_line_info", "line_info", aux.line_info,
                                     info.line_info_rec_size)):
        ulen = getattr(info, nr)
        setattr(info, nr, len(blob) // rec_size)
        n = min(ulen, getattr(info, nr))
        if n:
            task.mm.copy_to_user(getattr(info, ptr), blob[:rec_size * n])

    # no JIT, no jited line info: nr_jited_line_info = 0 and nothing is copied
    info.nr_jited_line_info = 0

    ulen = info.nr_prog_tags
    info.nr_prog_tags = len(funcs)
    if ulen:
        tags = b"".join(f.tag for f in funcs[:min(ulen, len(funcs))])
        task.mm.copy_to_user(info.prog_tags, tags)

    return _write_user_info(task, ctx, info, uinfo, info_len)


# ---------------------------------------------------------------- maps

def bpf_map_get_info_by_fd(kern, task, file, bpf_map, attr, ctx) -> int:
    uinfo = attr.info.info
    bpf_check_uarg_tail_zero(task, uinfo, ffi.sizeof(_MAP_INFO), attr.info.info_len)
    info, info_len = _read_user_info(task, _MAP_INFO, uinfo, attr.info.info_len)

    info.type = bpf_map.map_type
    info.id = bpf_map.id
    info.key_size = bpf_map.key_size
    info.value_size = bpf_map.value_size
    info.max_entries = bpf_map.max_entries
    info.map_flags = bpf_map.map_flags
    info.map_extra = bpf_map.map_extra
    name = bpf_map.name.ljust(ffi.sizeof(info.name), b"\0")[:ffi.sizeof(info.name)]
    ffi.memmove(info.name, name, ffi.sizeof(info.name))
    if bpf_map.btf is not None:
        info.btf_id = bpf_map.btf.id
        info.btf_key_type_id = bpf_map.btf_key_type_id
        info.btf_value_type_id = bpf_map.btf_value_type_id
    info.btf_vmlinux_value_type_id = bpf_map.btf_vmlinux_value_type_id
    fill = getattr(bpf_map, "map_info_fill", None)
    if fill is not None:            # bpf_map_struct_ops_info_fill()
        fill(info)

    # exclusive-map hashes (6.18): the SHA-256 of a frozen map's contents
    if info.hash:
        get_hash = getattr(bpf_map, "map_get_hash", None)
        if get_hash is None:
            raise KernelError(Errno.EINVAL, "this map type has no hash")
        if info.hash_size != SHA256_DIGEST_SIZE:
            raise KernelError(Errno.EINVAL, "hash_size must be the SHA-256 digest size")
        if not bpf_map.frozen:
            raise KernelError(Errno.EPERM, "hash of a map that is not frozen")
        task.mm.copy_to_user(info.hash, get_hash())
    elif info.hash_size:
        raise KernelError(Errno.EINVAL, "hash_size without hash")

    return _write_user_info(task, ctx, info, uinfo, info_len)


# ---------------------------------------------------------------- links

_LINK_INFO = "struct bpf_link_info"


def bpf_link_get_info_by_fd(kern, task, file, link, attr, ctx) -> int:
    """bpf_link_get_info_by_fd(): type, id, prog_id, then the link kind's fill_link_info."""
    uinfo = attr.info.info
    bpf_check_uarg_tail_zero(task, uinfo, ffi.sizeof(_LINK_INFO), attr.info.info_len)
    info, info_len = _read_user_info(task, _LINK_INFO, uinfo, attr.info.info_len)
    info.type = link.type
    info.id = link.id
    if link.prog is not None:
        info.prog_id = link.prog.aux.id
    fill = getattr(link, "fill_link_info", None)
    if fill is not None:
        fill(info, task)
    return _write_user_info(task, ctx, info, uinfo, info_len)


# ---------------------------------------------------------------- BTF

def bpf_btf_get_info_by_fd(kern, task, file, btf, attr, ctx) -> int:
    """bpf_btf_get_info_by_fd(): the tail-zero rule, then btf.c's btf_get_info_by_fd()."""
    bpf_check_uarg_tail_zero(task, attr.info.info, ffi.sizeof("struct bpf_btf_info"),
                             attr.info.info_len)
    return btf_get_info_by_fd(kern, task, btf, attr, ctx)


# file kind -> filler
INFO_BY_FILE_KIND = {
    fdget.PROG_FILE_KIND: bpf_prog_get_info_by_fd,
    fdget.MAP_FILE_KIND: bpf_map_get_info_by_fd,
    fdget.LINK_FILE_KIND: bpf_link_get_info_by_fd,
    BTF_FILE_KIND: bpf_btf_get_info_by_fd,
}
