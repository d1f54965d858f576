"""BTF kinds — kernel/bpf/btf.c: the btf_kind_operations of every kind (check_meta,
resolve, check_member, check_kflag_member, log_details) and the `KIND_OPS` table.
The passes that drive them (btf_check_all_metas, btf_resolve, ...) are in `fakekernel.btf`.

Every failure writes the kernel's log line first, then raises `KernelError` with the
kernel's errno.  Arithmetic that the kernel does in u32 is wrapped the same way.
"""
from __future__ import annotations

import attrs

from fakekernel.btf_env import (BITS_PER_BYTE, BITS_PER_U128, BTF_MAX_TYPE, PTR_SIZE,
                                RESOLVE_TBD, U32_MAX, VOID, BtfEnv, BtfT, Member, fail, int_data,
                                int_is_regular, is_decl_tag_target, is_modifier,
                                is_resolve_source_only, is_struct, nosize_or_null)
from fakekernel.errors import Errno
from uapi.btf import BTF_INT_BOOL, BTF_INT_CHAR, BTF_INT_SIGNED, BtfKind
from uapi.ffi import ffi

__all__ = ["KIND_OPS", "KindOps", "reject_type"]

_INT_MASK = 0x0FFFFFFF
_INT_SIZE = ffi.sizeof("int")
BTF_FUNC_GLOBAL = 1                 # enum btf_func_linkage
BTF_VAR_STATIC, BTF_VAR_GLOBAL_ALLOCATED = 0, 1
_FLOAT_SIZES = (2, 4, 8, 12, 16)


def _u32(v: int) -> int:
    return v & U32_MAX


def _roundup_bytes(bits: int) -> int:
    return -(-bits // BITS_PER_BYTE)


def _meta(env: BtfEnv, t: BtfT, meta_left: int, meta_needed: int) -> None:
    if meta_left < meta_needed:
        env.log_type(t, b"meta_left:%u meta_needed:%u" % (meta_left, meta_needed), details=False)
        fail(Errno.EINVAL, "type record truncated")


def reject_type(env: BtfEnv, t: BtfT, msg: bytes, errno: int = Errno.EINVAL, details: bool = True):
    """btf_verifier_log_type() (or _basic without details) with `msg`, then the errno."""
    env.log_type(t, msg, details=details)
    fail(errno, msg.decode(errors="replace"))


def _reject_member(env: BtfEnv, st: BtfT, m: Member, msg: bytes):
    env.log_member(st, m, msg)
    fail(Errno.EINVAL, msg.decode(errors="replace"))


def _members(t: BtfT) -> list[Member]:
    return [Member(*r) for r in t.records(3)]


def _member_bit_offset(st: BtfT, m: Member) -> int:
    return m.offset & 0xFFFFFF if st.kflag else m.offset


# ---------------------------------------------------------------- default ops

def _df_check_member(env, st, m, mt):
    reject_type(env, st, b"Unsupported check_member", details=False)


def _df_check_kflag_member(env, st, m, mt):
    reject_type(env, st, b"Unsupported check_kflag_member", details=False)


def _df_resolve(env, v):
    reject_type(env, v.t, b"Unsupported resolve", details=False)


def _generic_check_kflag_member(env, st, m, mt):
    if m.offset >> 24:
        _reject_member(env, st, m, b"Invalid member bitfield_size")
    KIND_OPS[mt.kind].check_member(env, st, m, mt)


# ---------------------------------------------------------------- INT

def _int_check_member(env, st, m, mt):
    _, ioff, bits = int_data(mt)
    off = m.offset
    if U32_MAX - off < ioff:
        _reject_member(env, st, m, b"bits_offset exceeds U32_MAX")
    off += ioff
    nr_copy_bits = bits + off % BITS_PER_BYTE
    if nr_copy_bits > BITS_PER_U128:
        _reject_member(env, st, m, b"nr_copy_bits exceeds 128")
    bytes_offset = off // BITS_PER_BYTE
    if st.size < bytes_offset or st.size - bytes_offset < _roundup_bytes(nr_copy_bits):
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _int_check_kflag_member(env, st, m, mt):
    if not int_is_regular(mt):
        _reject_member(env, st, m, b"Invalid member base type")
    nr_bits, off = m.offset >> 24, m.offset & 0xFFFFFF
    int_bits = int_data(mt)[2]
    if not nr_bits:
        if off % BITS_PER_BYTE:
            _reject_member(env, st, m, b"Invalid member offset")
        nr_bits = int_bits
    elif nr_bits > int_bits:
        _reject_member(env, st, m, b"Invalid member bitfield_size")
    nr_copy_bits = nr_bits + off % BITS_PER_BYTE
    if nr_copy_bits > BITS_PER_U128:
        _reject_member(env, st, m, b"nr_copy_bits exceeds 128")
    bytes_offset = off // BITS_PER_BYTE
    if st.size < bytes_offset or st.size - bytes_offset < _roundup_bytes(nr_copy_bits):
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _int_check_meta(env, t, meta_left):
    _meta(env, t, meta_left, 4)
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    word = t.word(0)
    if word & ~_INT_MASK:
        reject_type(env, t, b"Invalid int_data:%x" % word, details=False)
    encoding, ioff, bits = int_data(t)
    if bits + ioff > BITS_PER_U128:
        reject_type(env, t, b"nr_bits exceeds %u" % BITS_PER_U128)
    if _roundup_bytes(bits + ioff) > t.size:
        reject_type(env, t, b"nr_bits exceeds type_size")
    if encoding and encoding not in (BTF_INT_SIGNED, BTF_INT_CHAR, BTF_INT_BOOL):
        reject_type(env, t, b"Unsupported encoding", Errno.ENOTSUPP)
    env.log_type(t)
    return 4


_ENCODING_STR = {0: b"(none)", BTF_INT_SIGNED: b"SIGNED", BTF_INT_CHAR: b"CHAR", BTF_INT_BOOL: b"BOOL"}


def _int_log(env, t):
    encoding, ioff, bits = int_data(t)
    env.vlog(b"size=%u bits_offset=%u nr_bits=%u encoding=%s"
             % (t.size, ioff, bits, _ENCODING_STR.get(encoding, b"UNKN")))


# ---------------------------------------------------------------- PTR and modifiers

def _modifier_check_member(env, st, m, mt, kflag=False):
    r = env.type_id_size(m.type)
    if r is None:
        _reject_member(env, st, m, b"Invalid member")
    rt, rid, _ = r
    ops = KIND_OPS[rt.kind]
    (ops.check_kflag_member if kflag else ops.check_member)(env, st, attrs.evolve(m, type=rid), rt)


def _modifier_check_kflag_member(env, st, m, mt):
    _modifier_check_member(env, st, m, mt, kflag=True)


def _ptr_check_member(env, st, m, mt):
    if m.offset % BITS_PER_BYTE:
        _reject_member(env, st, m, b"Member is not byte aligned")
    if _u32(st.size - m.offset // BITS_PER_BYTE) < PTR_SIZE:
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _ref_type_check_meta(env, t, meta_left):
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.kflag and t.kind != BtfKind.TYPE_TAG:          # 6.13+: kind_flag marks attribute tags
        reject_type(env, t, b"Invalid btf_info kind_flag")
    if t.type > BTF_MAX_TYPE:
        reject_type(env, t, b"Invalid type_id")
    if t.kind == BtfKind.TYPEDEF:
        if not t.name_off or not env.name_valid_identifier(t.name_off):
            reject_type(env, t, b"Invalid name")
    elif t.kind == BtfKind.TYPE_TAG:
        if not env.str_by_offset(t.name_off):
            reject_type(env, t, b"Invalid name")
    elif t.name_off:
        reject_type(env, t, b"Invalid name")
    env.log_type(t)
    return 0


def _ref_resolve(env: BtfEnv, v, *, allow_nosize: bool, follow_ptr: bool):
    """btf_modifier_resolve() / btf_ptr_resolve() (follow_ptr) / btf_var_resolve()."""
    t = v.t
    next_id = t.type
    nt = env.type_by_id(next_id)
    if nt is None or is_resolve_source_only(nt):
        reject_type(env, t, b"Invalid type_id")
    if not env.is_resolve_sink(nt) and not env.is_resolved(next_id):
        env.push(nt, next_id)
        return
    if follow_ptr and is_modifier(nt):
        rt, rid = env.type_id_resolve(next_id)
        if rt is not None and rt.kind == BtfKind.PTR and rt is not VOID \
                and not env.is_resolve_sink(rt) and not env.is_resolved(rid):
            env.push(rt, rid)
            return
    r = env.type_id_size(next_id)
    if r is not None:
        next_id = r[1]
    elif not allow_nosize:
        reject_type(env, t, b"Invalid type_id")
    else:
        if env.is_resolved(next_id):
            nt, next_id = env.type_id_resolve(next_id)
        if not (nt is VOID or (nt is not None and nt.kind in (BtfKind.FWD, BtfKind.FUNC_PROTO))):
            reject_type(env, t, b"Invalid type_id")
    env.pop_resolved(next_id, 0)


def _modifier_resolve(env, v):
    _ref_resolve(env, v, allow_nosize=True, follow_ptr=False)


def _ptr_resolve(env, v):
    _ref_resolve(env, v, allow_nosize=True, follow_ptr=True)


def _var_resolve(env, v):
    _ref_resolve(env, v, allow_nosize=False, follow_ptr=True)


def _ref_type_log(env, t):
    env.vlog(b"type_id=%u" % t.type)


# ---------------------------------------------------------------- FWD

def _fwd_check_meta(env, t, meta_left):
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.type:
        reject_type(env, t, b"type != 0")
    if not t.name_off or not env.name_valid_identifier(t.name_off):
        reject_type(env, t, b"Invalid name")
    env.log_type(t)
    return 0


def _fwd_log(env, t):
    env.vlog(b"union" if t.kflag else b"struct")


# ---------------------------------------------------------------- ARRAY

def _array_check_member(env, st, m, mt):
    if m.offset % BITS_PER_BYTE:
        _reject_member(env, st, m, b"Member is not byte aligned")
    r = env.type_id_size(m.type)
    array_size = r[2] if r else 0
    if _u32(st.size - m.offset // BITS_PER_BYTE) < array_size:
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _array_check_meta(env, t, meta_left):
    _meta(env, t, meta_left, 12)
    elem, index, _ = t.word(0), t.word(1), t.word(2)
    if t.name_off:
        reject_type(env, t, b"Invalid name")
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    if t.size:
        reject_type(env, t, b"size != 0")
    if not elem or elem > BTF_MAX_TYPE:
        reject_type(env, t, b"Invalid elem")
    if not index or index > BTF_MAX_TYPE:
        reject_type(env, t, b"Invalid index")
    env.log_type(t)
    return 12


def _array_resolve(env, v):
    t = v.t
    elem_id, index_id, nelems = t.word(0), t.word(1), t.word(2)
    it = env.type_by_id(index_id)
    if nosize_or_null(it) or is_resolve_source_only(it):
        reject_type(env, t, b"Invalid index")
    if not env.is_resolve_sink(it) and not env.is_resolved(index_id):
        env.push(it, index_id)
        return
    r = env.type_id_size(index_id)
    if r is None or r[0].kind != BtfKind.INT or not int_is_regular(r[0]):
        reject_type(env, t, b"Invalid index")
    et = env.type_by_id(elem_id)
    if nosize_or_null(et) or is_resolve_source_only(et):
        reject_type(env, t, b"Invalid elem")
    if not env.is_resolve_sink(et) and not env.is_resolved(elem_id):
        env.push(et, elem_id)
        return
    r = env.type_id_size(elem_id)
    if r is None:
        reject_type(env, t, b"Invalid elem")
    et, elem_id, elem_size = r
    if et.kind == BtfKind.INT and not int_is_regular(et):
        reject_type(env, t, b"Invalid array of int")
    if nelems and elem_size > U32_MAX // nelems:
        reject_type(env, t, b"Array size overflows U32_MAX")
    env.pop_resolved(elem_id, elem_size * nelems)


def _array_log(env, t):
    env.vlog(b"type_id=%u index_type_id=%u nr_elems=%u" % (t.word(0), t.word(1), t.word(2)))


# ---------------------------------------------------------------- STRUCT / UNION

def _struct_check_member(env, st, m, mt):
    if m.offset % BITS_PER_BYTE:
        _reject_member(env, st, m, b"Member is not byte aligned")
    if _u32(st.size - m.offset // BITS_PER_BYTE) < mt.size:
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _struct_check_meta(env, t, meta_left):
    is_union = t.kind == BtfKind.UNION
    meta_needed = t.vlen * 12
    _meta(env, t, meta_left, meta_needed)
    if t.name_off and not env.name_valid_identifier(t.name_off):
        reject_type(env, t, b"Invalid name")
    env.log_type(t)
    last_offset = 0
    for m in _members(t):
        if not env.name_offset_valid(m.name_off):
            _reject_member(env, t, m, b"Invalid member name_offset:%u" % m.name_off)
        if m.name_off and not env.name_valid_identifier(m.name_off):
            _reject_member(env, t, m, b"Invalid name")
        if not m.type or m.type > BTF_MAX_TYPE:
            _reject_member(env, t, m, b"Invalid type_id")
        offset = _member_bit_offset(t, m)
        if (is_union and offset) or last_offset > offset:
            _reject_member(env, t, m, b"Invalid member bits_offset")
        if _roundup_bytes(offset) > t.size:
            _reject_member(env, t, m, b"Member bits_offset exceeds its struct size")
        env.log_member(t, m)
        last_offset = offset
    return meta_needed


def _check_one_member(env, st, m, mt):
    ops = KIND_OPS[mt.kind] if mt is not VOID else None
    if ops is None:
        _reject_member(env, st, m, b"Invalid member")
    (ops.check_kflag_member if st.kflag else ops.check_member)(env, st, m, mt)


def _struct_resolve(env, v):
    members = _members(v.t)
    if v.next_member:
        last = members[v.next_member - 1]
        _check_one_member(env, v.t, last, env.type_by_id(last.type))
    for i in range(v.next_member, len(members)):
        m = members[i]
        mt = env.type_by_id(m.type)
        if nosize_or_null(mt) or is_resolve_source_only(mt):
            _reject_member(env, v.t, m, b"Invalid member")
        if not env.is_resolve_sink(mt) and not env.is_resolved(m.type):
            v.next_member = i + 1
            env.push(mt, m.type)
            return
        _check_one_member(env, v.t, m, mt)
    env.pop_resolved(0, 0)


def _struct_log(env, t):
    env.vlog(b"size=%u vlen=%u" % (t.size, t.vlen))


# ---------------------------------------------------------------- ENUM / ENUM64

def _enum_check_member(env, st, m, mt):
    if m.offset % BITS_PER_BYTE:
        _reject_member(env, st, m, b"Member is not byte aligned")
    if _u32(st.size - m.offset // BITS_PER_BYTE) < mt.size:
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _enum_check_kflag_member(env, st, m, mt):
    nr_bits, off = m.offset >> 24, m.offset & 0xFFFFFF
    int_bitsize = _INT_SIZE * BITS_PER_BYTE
    if not nr_bits:
        if off % BITS_PER_BYTE:
            _reject_member(env, st, m, b"Member is not byte aligned")
        nr_bits = int_bitsize
    elif nr_bits > int_bitsize:
        _reject_member(env, st, m, b"Invalid member bitfield_size")
    if st.size < _roundup_bytes(off + nr_bits):
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _enum_check_meta_common(env, t, meta_left, rec_words, value_of, fmt_signed, fmt_unsigned):
    meta_needed = t.vlen * rec_words * 4
    _meta(env, t, meta_left, meta_needed)
    if t.size > 8 or t.size & (t.size - 1) or not t.size:
        reject_type(env, t, b"Unexpected size")
    if t.name_off and not env.name_valid_identifier(t.name_off):
        reject_type(env, t, b"Invalid name")
    env.log_type(t)
    for rec in t.records(rec_words):
        name_off = rec[0]
        if not env.name_offset_valid(name_off):
            env.vlog(b"\tInvalid name_offset:%u" % name_off)
            fail(Errno.EINVAL, "enum value name offset")
        if not name_off or not env.name_valid_identifier(name_off):
            reject_type(env, t, b"Invalid name")
        env.vlog((fmt_signed if t.kflag else fmt_unsigned)
                 % (env.name_by_offset(name_off), value_of(rec, t.kflag)))
    return meta_needed


def _s(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def _enum_check_meta(env, t, meta_left):
    return _enum_check_meta_common(env, t, meta_left, 2,
                                   lambda r, signed: _s(r[1], 32) if signed else r[1],
                                   b"\t%s val=%d\n", b"\t%s val=%u\n")


def _enum64_check_meta(env, t, meta_left):
    def value(r, signed):
        v = (r[2] << 32) | r[1]
        return _s(v, 64) if signed else v
    return _enum_check_meta_common(env, t, meta_left, 3, value, b"\t%s val=%d\n", b"\t%s val=%u\n")


# ---------------------------------------------------------------- FUNC_PROTO / FUNC

def _func_proto_check_meta(env, t, meta_left):
    meta_needed = t.vlen * 8
    _meta(env, t, meta_left, meta_needed)
    if t.name_off:
        reject_type(env, t, b"Invalid name")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    env.log_type(t)
    return meta_needed


def _func_proto_log(env, t):
    args = t.records(2)
    env.vlog(b"return=%u args=(" % t.type)
    if not args:
        env.vlog(b"void")
    elif len(args) == 1 and not args[0][1]:
        env.vlog(b"vararg")
    else:
        env.vlog(b"%u %s" % (args[0][1], env.name_by_offset(args[0][0])))
        for name_off, type_id in args[1:-1]:
            env.vlog(b", %u %s" % (type_id, env.name_by_offset(name_off)))
        if len(args) > 1:
            name_off, type_id = args[-1]
            env.vlog(b", %u %s" % (type_id, env.name_by_offset(name_off)) if type_id
                     else b", vararg")
    env.vlog(b")")


def _func_check_meta(env, t, meta_left):
    if not t.name_off or not env.name_valid_identifier(t.name_off):
        reject_type(env, t, b"Invalid name")
    if t.vlen > BTF_FUNC_GLOBAL:
        reject_type(env, t, b"Invalid func linkage")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    env.log_type(t)
    return 0


def _func_check(env, t):
    """btf_func_check(): a FUNC points at a FUNC_PROTO whose typed params are named."""
    proto = env.type_by_id(t.type)
    if proto is None or proto is VOID or proto.kind != BtfKind.FUNC_PROTO:
        reject_type(env, t, b"Invalid type_id")
    for i, (name_off, type_id) in enumerate(proto.records(2)):
        if not name_off and type_id:
            reject_type(env, t, b"Invalid arg#%u" % (i + 1))


def _func_resolve(env, v):
    _func_check(env, v.t)
    env.pop_resolved(v.t.type, 0)


# ---------------------------------------------------------------- VAR / DATASEC

def _var_check_meta(env, t, meta_left):
    _meta(env, t, meta_left, 4)
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    if not t.name_off or not env.name_valid_identifier(t.name_off):
        reject_type(env, t, b"Invalid name")
    if not t.type or t.type > BTF_MAX_TYPE:
        reject_type(env, t, b"Invalid type_id")
    if t.word(0) not in (BTF_VAR_STATIC, BTF_VAR_GLOBAL_ALLOCATED):
        reject_type(env, t, b"Linkage not supported")
    env.log_type(t)
    return 4


def _var_log(env, t):
    env.vlog(b"type_id=%u linkage=%u" % (t.type, t.word(0)))


def _datasec_check_meta(env, t, meta_left):
    meta_needed = t.vlen * 12
    _meta(env, t, meta_left, meta_needed)
    if not t.size:
        reject_type(env, t, b"size == 0")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    if not t.name_off or not env.name_valid_section(t.name_off):
        reject_type(env, t, b"Invalid name")
    env.log_type(t)
    last_end, total = 0, 0
    for vsi in t.records(3):
        type_id, offset, size = vsi
        msg = None
        if not type_id or type_id > BTF_MAX_TYPE:
            msg = b"Invalid type_id"
        elif offset < last_end or offset >= t.size:
            msg = b"Invalid offset"
        elif not size or size > t.size:
            msg = b"Invalid size"
        elif offset + size > t.size:
            msg = b"Invalid offset+size"
        if msg:
            env.log_vsi(t, vsi, msg)
            fail(Errno.EINVAL, msg.decode())
        last_end = offset + size
        env.log_vsi(t, vsi)
        total += size
    if t.size < total:
        reject_type(env, t, b"Invalid btf_info size")
    return meta_needed


def _datasec_resolve(env, v):
    env.resolve_mode = RESOLVE_TBD
    secinfo = v.t.records(3)
    for i in range(v.next_member, len(secinfo)):
        vsi = secinfo[i]
        var_id = vsi[0]
        vt = env.type_by_id(var_id)
        if vt is None or vt is VOID or vt.kind != BtfKind.VAR:
            env.log_vsi(v.t, vsi, b"Not a VAR kind member")
            fail(Errno.EINVAL, "datasec entry is not a VAR")
        if not env.is_resolve_sink(vt) and not env.is_resolved(var_id):
            v.next_member = i + 1
            env.push(vt, var_id)
            return
        r = env.type_id_size(vt.type)
        if r is None:
            env.log_vsi(v.t, vsi, b"Invalid type")
            fail(Errno.EINVAL, "datasec var type")
        if vsi[2] < r[2]:
            env.log_vsi(v.t, vsi, b"Invalid size")
            fail(Errno.EINVAL, "datasec var size")
    env.pop_resolved(0, 0)


# ---------------------------------------------------------------- FLOAT

def _float_check_meta(env, t, meta_left):
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    if t.kflag:
        reject_type(env, t, b"Invalid btf_info kind_flag")
    if t.size not in _FLOAT_SIZES:
        reject_type(env, t, b"Invalid type_size")
    env.log_type(t)
    return 0


def _float_check_member(env, st, m, mt):
    align_bits = min(PTR_SIZE, mt.size) * BITS_PER_BYTE
    if m.offset % align_bits:
        _reject_member(env, st, m, b"Member is not properly aligned")
    if m.offset // BITS_PER_BYTE + mt.size > st.size:
        _reject_member(env, st, m, b"Member exceeds struct_size")


def _size_log(env, t):
    env.vlog(b"size=%u" % t.size)


# ---------------------------------------------------------------- DECL_TAG

def _component_idx(t: BtfT) -> int:
    w = t.word(0)
    return w - (1 << 32) if w >> 31 else w


def _decl_tag_check_meta(env, t, meta_left):
    _meta(env, t, meta_left, 4)
    if not env.str_by_offset(t.name_off):
        reject_type(env, t, b"Invalid value")
    if t.vlen:
        reject_type(env, t, b"vlen != 0")
    # 6.13+: kind_flag marks __attribute__ tags and is accepted
    if _component_idx(t) < -1:
        reject_type(env, t, b"Invalid component_idx")
    env.log_type(t)
    return 4


def _decl_tag_resolve(env, v):
    t = v.t
    next_id = t.type
    nt = env.type_by_id(next_id)
    if nt is None or not is_decl_tag_target(nt):
        reject_type(env, t, b"Invalid type_id")
    if not env.is_resolve_sink(nt) and not env.is_resolved(next_id):
        env.push(nt, next_id)
        return
    idx = _component_idx(t)
    if idx != -1:
        if nt.kind in (BtfKind.VAR, BtfKind.TYPEDEF):
            reject_type(env, t, b"Invalid component_idx")
        vlen = nt.vlen if is_struct(nt) else env.type_by_id(nt.type).vlen
        if idx & U32_MAX >= vlen:
            reject_type(env, t, b"Invalid component_idx")
    env.pop_resolved(next_id, 0)


def _decl_tag_log(env, t):
    env.vlog(b"type=%u component_idx=%d" % (t.type, _component_idx(t)))


# ---------------------------------------------------------------- the table

@attrs.frozen
class KindOps:
    """struct btf_kind_operations (without the seq_file/snprintf show op)."""

    check_meta: object
    resolve: object
    check_member: object
    check_kflag_member: object
    log_details: object


_INT_OPS = KindOps(_int_check_meta, _df_resolve, _int_check_member, _int_check_kflag_member, _int_log)
_PTR_OPS = KindOps(_ref_type_check_meta, _ptr_resolve, _ptr_check_member,
                   _generic_check_kflag_member, _ref_type_log)
_MODIFIER_OPS = KindOps(_ref_type_check_meta, _modifier_resolve, _modifier_check_member,
                        _modifier_check_kflag_member, _ref_type_log)
_STRUCT_OPS = KindOps(_struct_check_meta, _struct_resolve, _struct_check_member,
                      _generic_check_kflag_member, _struct_log)
_ENUM_MEMBER = dict(resolve=_df_resolve, check_member=_enum_check_member,
                    check_kflag_member=_enum_check_kflag_member, log_details=_struct_log)
_DF_MEMBER = dict(check_member=_df_check_member, check_kflag_member=_df_check_kflag_member)

KIND_OPS = {
    BtfKind.INT: _INT_OPS,
    BtfKind.PTR: _PTR_OPS,
    BtfKind.ARRAY: KindOps(_array_check_meta, _array_resolve, _array_check_member,
                           _generic_check_kflag_member, _array_log),
    BtfKind.STRUCT: _STRUCT_OPS,
    BtfKind.UNION: _STRUCT_OPS,
    BtfKind.ENUM: KindOps(_enum_check_meta, **_ENUM_MEMBER),
    BtfKind.FWD: KindOps(_fwd_check_meta, _df_resolve, log_details=_fwd_log, **_DF_MEMBER),
    BtfKind.TYPEDEF: _MODIFIER_OPS,
    BtfKind.VOLATILE: _MODIFIER_OPS,
    BtfKind.CONST: _MODIFIER_OPS,
    BtfKind.RESTRICT: _MODIFIER_OPS,
    BtfKind.FUNC: KindOps(_func_check_meta, _func_resolve, log_details=_ref_type_log, **_DF_MEMBER),
    BtfKind.FUNC_PROTO: KindOps(_func_proto_check_meta, _df_resolve, log_details=_func_proto_log,
                                **_DF_MEMBER),
    BtfKind.VAR: KindOps(_var_check_meta, _var_resolve, log_details=_var_log, **_DF_MEMBER),
    BtfKind.DATASEC: KindOps(_datasec_check_meta, _datasec_resolve, log_details=_struct_log,
                             **_DF_MEMBER),
    BtfKind.FLOAT: KindOps(_float_check_meta, _df_resolve, _float_check_member,
                           _generic_check_kflag_member, _size_log),
    BtfKind.DECL_TAG: KindOps(_decl_tag_check_meta, _decl_tag_resolve, log_details=_decl_tag_log,
                              **_DF_MEMBER),
    BtfKind.TYPE_TAG: _MODIFIER_OPS,
    BtfKind.ENUM64: KindOps(_enum64_check_meta, **_ENUM_MEMBER),
}
