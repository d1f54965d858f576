"""Loads through BTF-typed pointers — kernel/bpf/verifier.c check_ptr_to_btf_access() with
kernel/bpf/btf.c btf_struct_access() (the scalar-member part).

Tracing, LSM and iterator programs get PTR_TO_BTF_ID pointers from their ctx (the traced
function's arguments, the iterator's meta and object).  A read of a scalar member (an
integer, an enum, or bytes of an integer array such as a name) gives an unknown scalar, a
pointer member to a struct gives another PTR_TO_BTF_ID with the trust flags the kernel
gives it (BTF_TYPE_SAFE_TRUSTED fields stay trusted, other walks are plain or, in sleepable
programs, untrusted); stores, non-GPL programs, negative and variable offsets are refused
as the kernel refuses them.  RCU-protected, tagged (__rcu/__user/__percpu) and partial
pointer accesses end the walk (`GiveUp`): left to the run-time checks, never refused here.
"""
from __future__ import annotations

import attrs

from fakekernel.verifier.env import GiveUp
from uapi.btf import BtfKind

__all__ = ["BtfRef", "check_ptr_to_btf_read"]

_MAX_NESTING = 16
_MODIFIERS = (BtfKind.TYPEDEF, BtfKind.CONST, BtfKind.VOLATILE, BtfKind.RESTRICT, BtfKind.TYPE_TAG)


@attrs.frozen
class BtfRef:
    """reg->btf + reg->btf_id: the struct a PTR_TO_BTF_ID register points at."""

    btf: object = attrs.field(eq=False)          # BtfIndex (one per blob)
    btf_id: int = 0
    name: str = ""


# BTF_TYPE_SAFE_TRUSTED / _TRUSTED_OR_NULL of verifier.c: pointer fields that stay trusted
_SAFE_TRUSTED = frozenset({("bpf_iter_meta", b"seq"), ("bpf_iter__task", b"task"),
                           ("linux_binprm", b"file"), ("file", b"f_inode"), ("dentry", b"d_inode")})
_SAFE_TRUSTED_OR_NULL = frozenset({("socket", b"sk")})
# structs with BTF_TYPE_SAFE_RCU(_OR_NULL) fields: their pointer walks are not modelled
_RCU_STRUCTS = frozenset({"task_struct", "cgroup", "css_set", "mm_struct", "sk_buff", "request_sock"})


def _walk_flags(env, reg, struct_name: str, field: bytes) -> int:
    """The flags check_ptr_to_btf_access() gives a pointer loaded from a field of `reg`."""
    from fakekernel.helpers.proto import TypeFlag
    t = reg.type
    if t & TypeFlag.PTR_UNTRUSTED:
        return TypeFlag.PTR_UNTRUSTED
    if t & (TypeFlag.PTR_TRUSTED | TypeFlag.MEM_RCU):
        if (struct_name, field) in _SAFE_TRUSTED:
            return TypeFlag.PTR_TRUSTED
        if (struct_name, field) in _SAFE_TRUSTED_OR_NULL:
            return TypeFlag.PTR_TRUSTED | TypeFlag.PTR_MAYBE_NULL
        if struct_name in _RCU_STRUCTS:
            raise GiveUp("RCU-protected pointer fields are not modelled")
        if env.prog.aux.sleepable:
            return TypeFlag.PTR_UNTRUSTED          # outside an RCU section
        return 0                                   # walking unknown pointers: plain PTR_TO_BTF_ID
    return 0                                       # old compat: trusted flags cleared


def check_ptr_to_btf_read(env, state, reg, regno: int, off: int, size: int, write: bool):
    """check_ptr_to_btf_access() + btf_struct_access() for a non-NULL PTR_TO_BTF_ID: the
    kernel's refusals that are certain, an unknown scalar for scalar members, a PTR_TO_BTF_ID
    for a pointer to a struct; GiveUp for the rest."""
    from fakekernel.errors import Errno
    from fakekernel.helpers.proto import TypeFlag, base_type
    from fakekernel.verifier.regs import Reg, RegType
    tname = reg.btf.name
    if not env.allow_ptr_leaks:
        raise env.fail(state, Errno.EPERM, f"'struct {tname}' access is allowed only to CAP_PERFMON "
                                           f"and CAP_SYS_ADMIN\n")
    if not env.prog.gpl_compatible:
        raise env.fail(state, Errno.EINVAL, f"Cannot access kernel 'struct {tname}' from non-GPL "
                                            f"compatible program\n")
    total = reg.off + off
    if total < 0:
        raise env.fail(state, Errno.EACCES, f"R{regno} is ptr_{tname} invalid negative access: "
                                            f"off={total}\n")
    if not reg.var_off.is_const() or reg.var_off.value:
        raise env.fail(state, Errno.EACCES, f"R{regno} is ptr_{tname} invalid variable offset: "
                                            f"off={total}, var_off={reg.var_off.strn()}\n")
    if reg.type & (TypeFlag.MEM_USER | TypeFlag.MEM_PERCPU):
        raise GiveUp("user/percpu BTF memory")
    if write:      # tracing/LSM ops have no btf_struct_access: kernel objects are read-only
        raise env.fail(state, Errno.EACCES, "only read is supported\n")
    ix = reg.btf.btf
    walked = btf_struct_walk(ix, reg.btf.btf_id, total, size, bool(reg.type & TypeFlag.PTR_UNTRUSTED))
    if isinstance(walked, tuple) and walked[0] == "reject":
        raise env.fail(state, walked[1], walked[2])
    if walked == "scalar":
        return Reg.unknown()
    _kind, pointee_id, field, tagged = walked
    if tagged:
        raise GiveUp("__rcu/__user/__percpu pointers are not modelled")
    pointee = ix.type_by_id(pointee_id)
    flags = _walk_flags(env, reg, tname, field)
    r = Reg.ptr(RegType.PTR_TO_BTF_ID | flags)
    r.btf = BtfRef(ix, pointee_id, ix.name_by_offset(pointee.name_off).decode())
    if flags & TypeFlag.PTR_MAYBE_NULL:
        r.id = env.new_id()
    assert base_type(r.type) == RegType.PTR_TO_BTF_ID
    return r


def btf_struct_walk(ix, struct_id: int, off: int, size: int, untrusted: bool):
    """btf_struct_walk() + btf_struct_access()'s loop: "scalar", ("ptr", pointee struct id,
    field name, tagged) or ("reject", errno, log line); GiveUp where this pass stops."""
    from fakekernel.errors import Errno
    t = ix.type_by_id(struct_id)
    for _depth in range(_MAX_NESTING):
        t, struct_id = ix.skip_modifiers(struct_id) if t.kind in _MODIFIERS else (t, struct_id)
        tname = ix.name_by_offset(t.name_off).decode(errors="replace") if t.name_off else "(anon)"
        if t.kind not in (BtfKind.STRUCT, BtfKind.UNION):
            return "reject", Errno.EINVAL, f"Type '{tname}' is not a struct\n"
        if off + size > t.size:
            last = ix.members_full(struct_id)[-1:] if t.vlen else []
            if last:
                lt, _ = ix.skip_modifiers(last[0][1])
                if lt is not None and lt.kind == BtfKind.ARRAY and lt.word(2) == 0:
                    raise GiveUp("flexible array walks are not modelled")
            return "reject", Errno.EACCES, f"access beyond struct {tname} at off {off} size {size}\n"
        nxt = None
        for mname, tid, bit_off, bits in ix.members_full(struct_id):
            moff = bit_off // 8
            if off + size <= moff:
                break
            if bits:
                if off <= moff and -(-(bit_off + bits) // 8) <= off + size:
                    return "scalar"
                continue
            if off < moff:
                break
            mt, mt_id = ix.skip_modifiers(tid)
            msize = ix.type_size(tid)
            if mt is None or msize is None:
                raise GiveUp("member without a size")
            mtrue_end = moff + msize
            if off >= mtrue_end:
                continue
            name = mname.decode(errors="replace")
            if mt.kind == BtfKind.ARRAY:
                if moff == mtrue_end:
                    continue
                elem_t, elem_id, nelems = mt, mt_id, 1
                while elem_t is not None and elem_t.kind == BtfKind.ARRAY:
                    nelems *= elem_t.word(2)
                    elem_t, elem_id = ix.skip_modifiers(elem_t.word(0))
                esize = msize // nelems if nelems else 0
                if not esize:
                    raise GiveUp("zero-sized array element")
                moff += (off - moff) // esize * esize
                mt, mt_id, msize = elem_t, elem_id, esize
            if mt is not None and mt.kind in (BtfKind.STRUCT, BtfKind.UNION):
                nxt = (mt_id, off - moff)
                break
            if mt is not None and mt.kind == BtfKind.PTR:
                if msize != size or off != moff:
                    return ("reject", Errno.EACCES, f"cannot access ptr member {name} with moff {moff} in "
                                                    f"struct {tname} with off {off} size {size}\n")
                tagged = ix.type_by_id(mt.type) is not None and ix.type_by_id(mt.type).kind == BtfKind.TYPE_TAG
                st, st_id = ix.skip_modifiers(mt.type)
                if st is not None and st.kind in (BtfKind.STRUCT, BtfKind.UNION):
                    return "ptr", st_id, mname, tagged
                return "scalar"
            if off + size > mtrue_end and not untrusted:
                return ("reject", Errno.EACCES, f"access beyond the end of member {name} (mend:{mtrue_end}) "
                                                f"in struct {tname} with off {off} size {size}\n")
            return "scalar"
        if nxt is None:
            return "reject", Errno.EINVAL, f"struct {tname} doesn't have field at offset {off}\n"
        struct_id, off = nxt
        t = ix.type_by_id(struct_id)
    raise GiveUp("nesting too deep")
