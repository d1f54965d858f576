"""Finding the special fields of a BTF type — kernel/bpf/btf.c: btf_find_field() and what
it calls (btf_find_struct_field, btf_find_datasec_var, btf_find_field_one,
btf_find_nested_struct, btf_get_field_type, btf_find_struct, btf_find_kptr,
btf_find_graph_root, btf_repeat_fields), plus enum btf_field_type and the UAPI layouts of
the special structs.

The result is a list of struct btf_field_info in discovery order; fakekernel/btf_fields.py
turns it into a struct btf_record.  Fields are matched by the *name* of a member's type
(no typedef is looked through); a misaligned or wrongly sized one is silently ignored.
Measured on 6.18: bpf_spin_lock / bpf_res_spin_lock / bpf_timer / bpf_wq / bpf_task_work
may appear once among one struct's own members (E2BIG for a second), but a nested struct
starts afresh; bpf_refcount may repeat.
"""
from __future__ import annotations

import enum

import attrs

from fakekernel.errors import Errno, KernelError
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["BtfFieldType", "F", "KPTR", "GRAPH_ROOT", "MAP_VALUE_FIELDS", "BTF_FIELDS_MAX",
           "FieldInfo", "find_fields", "field_type_size", "field_type_align", "is_struct",
           "find_kptr", "find_by_name_kind", "node_of_root", "KPTR_DTOR_TYPES", "ALLOC_OBJ_FIELDS"]

BTF_FIELDS_MAX = 11                         # include/linux/bpf.h
MAX_RESOLVE_DEPTH = 32                      # kernel/bpf/btf.c
_BITS_PER_BYTE = 8
_BTF_MEMBER_BIT_OFFSET_MASK = 0xFFFFFF      # BTF_MEMBER_BIT_OFFSET() with kind_flag
_U32_MASK = 0xFFFFFFFF


class BtfFieldType(enum.IntFlag):
    """enum btf_field_type (6.18 values)."""

    SPIN_LOCK = 1 << 0
    TIMER = 1 << 1
    KPTR_UNREF = 1 << 2
    KPTR_REF = 1 << 3
    KPTR_PERCPU = 1 << 4
    LIST_HEAD = 1 << 5
    LIST_NODE = 1 << 6
    RB_ROOT = 1 << 7
    RB_NODE = 1 << 8
    REFCOUNT = 1 << 9
    WORKQUEUE = 1 << 10
    UPTR = 1 << 11
    RES_SPIN_LOCK = 1 << 12
    TASK_WORK = 1 << 13


F = BtfFieldType
KPTR = F.KPTR_UNREF | F.KPTR_REF | F.KPTR_PERCPU
GRAPH_ROOT = F.LIST_HEAD | F.RB_ROOT
# map_check_btf(): what a map value may hold
MAP_VALUE_FIELDS = (F.SPIN_LOCK | F.RES_SPIN_LOCK | F.TIMER | KPTR | F.LIST_HEAD | F.RB_ROOT
                    | F.REFCOUNT | F.WORKQUEUE | F.UPTR | F.TASK_WORK)

_PTR = ffi.sizeof("__u64")                  # a kptr field is one 8-byte pointer


def _layout(ctype: str) -> tuple[int, int]:
    """(size, alignment) of the UAPI struct behind a field (generated from 6.18's BTF)."""
    return ffi.sizeof(ctype), ffi.alignof(ctype)


# btf_get_field_type(): the names matched, in the kernel's order; unique ones may appear once
_NAMED = [(F.SPIN_LOCK, b"bpf_spin_lock", True), (F.RES_SPIN_LOCK, b"bpf_res_spin_lock", True),
          (F.TIMER, b"bpf_timer", True), (F.WORKQUEUE, b"bpf_wq", True),
          (F.TASK_WORK, b"bpf_task_work", True),
          (F.LIST_HEAD, b"bpf_list_head", False), (F.LIST_NODE, b"bpf_list_node", False),
          (F.RB_ROOT, b"bpf_rb_root", False), (F.RB_NODE, b"bpf_rb_node", False),
          (F.REFCOUNT, b"bpf_refcount", False)]
_FIELD_LAYOUT = {ft: _layout("struct " + name.decode()) for ft, name, _ in _NAMED}
for _ft in (F.KPTR_UNREF, F.KPTR_REF, F.KPTR_PERCPU, F.UPTR):
    _FIELD_LAYOUT[_ft] = (_PTR, _PTR)
_KPTR_TAGS = {b"kptr_untrusted": F.KPTR_UNREF, b"kptr": F.KPTR_REF, b"percpu_kptr": F.KPTR_PERCPU,
              b"uptr": F.UPTR}
_REPEATABLE = KPTR | F.UPTR | F.LIST_HEAD | F.RB_ROOT
_NODE_OF_ROOT = {F.LIST_HEAD: (b"bpf_list_node", F.LIST_NODE), F.RB_ROOT: (b"bpf_rb_node", F.RB_NODE)}
# alloc_obj_fields[]: a struct with a member of one of these types has a btf_struct_meta
ALLOC_OBJ_FIELDS = (b"bpf_spin_lock", b"bpf_list_head", b"bpf_list_node", b"bpf_rb_root",
                     b"bpf_rb_node", b"bpf_refcount")
# the vmlinux structs a referenced kptr may point to: those with a destructor kfunc
# registered by register_btf_id_dtor_kfuncs() (measured on 6.18: the *_release_dtor FUNCs)
KPTR_DTOR_TYPES = frozenset({b"task_struct", b"cgroup", b"bpf_cpumask", b"bpf_crypto_ctx",
                             b"prog_test_ref_kfunc", b"prog_test_member"})
_CONTAINS = b"contains:"


class _Void:
    """btf_void: what a missing type id stands for (kind UNKN, no size)."""

    kind = BtfKind.UNKN
    kflag = False
    type = size = name_off = 0


VOID = _Void()


def is_struct(t) -> bool:
    """__btf_type_is_struct(): STRUCT or UNION."""
    return t is not None and t.kind in (BtfKind.STRUCT, BtfKind.UNION)


def field_type_size(ft: int) -> int:
    return _FIELD_LAYOUT[ft][0]


def field_type_align(ft: int) -> int:
    return _FIELD_LAYOUT[ft][1]


def node_of_root(ft: int) -> tuple[bytes, int]:
    """(node struct name, its alignment) of a graph root field type."""
    name, node_ft = _NODE_OF_ROOT[ft]
    return name, _FIELD_LAYOUT[node_ft][1]


@attrs.define
class FieldInfo:
    """struct btf_field_info."""

    type: int
    off: int
    type_id: int = 0                # kptr pointee
    value_btf_id: int = 0           # graph root
    node_name: bytes = b""


# ---------------------------------------------------------------- finding fields

class _Finder:
    """btf_find_field() over one BTF (`env`: fakekernel.btf_env.BtfEnv)."""

    def __init__(self, env, field_mask: int):
        self.env = env
        self.field_mask = field_mask
        self.seen = 0

    def t(self, type_id: int):
        t = self.env.type_by_id(type_id)
        return VOID if t is None or not type_id else t

    def name(self, t) -> bytes:
        return self.env.name_by_offset(t.name_off)

    def skip_modifiers(self, type_id: int):
        t = self.t(type_id)
        while t is not VOID and t.kind in (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST,
                                           BtfKind.RESTRICT, BtfKind.TYPE_TAG):
            type_id = t.type
            t = self.t(type_id)
        return t, type_id

    def get_field_type(self, var_type) -> int:
        """btf_get_field_type(): 0, a field type, or raise (E2BIG for a second unique one)."""
        mask, name = self.field_mask, self.name(var_type)
        for ft, fname, unique in _NAMED:
            if not mask & ft or name != fname:
                continue
            if unique:
                if self.seen & ft:
                    raise KernelError(Errno.E2BIG, f"second {fname.decode()}")
                self.seen |= ft
            return ft
        if mask & (KPTR | F.UPTR) and not is_struct(var_type):
            return F.KPTR_REF
        return 0

    def find_kptr(self, t, off: int) -> FieldInfo | None:
        """btf_find_kptr()."""
        if t.kind == BtfKind.VOLATILE:
            t = self.t(t.type)
        if t.kind != BtfKind.PTR:
            return None
        t = self.t(t.type)
        if t.kind != BtfKind.TYPE_TAG or t.kflag:
            return None
        if self.t(t.type).kind == BtfKind.TYPE_TAG:
            raise KernelError(Errno.EINVAL, "a kptr with more than one type tag")
        ft = _KPTR_TAGS.get(self.name(t))
        if ft is None:
            raise KernelError(Errno.EINVAL, "unknown kptr type tag")
        if not ft & self.field_mask:
            return None
        target, res_id = self.skip_modifiers(t.type)
        if not is_struct(target):
            raise KernelError(Errno.EINVAL, "a kptr must point to a struct")
        return FieldInfo(ft, off, type_id=res_id)

    def decl_tag_value(self, pt_id: int, comp_idx: int, key: bytes) -> bytes:
        """btf_find_decl_tag_value(): ENOENT if absent, EEXIST if twice."""
        found = None
        for tid in range(1, self.env.nr_types):
            t = self.env.types[tid]
            if t.kind != BtfKind.DECL_TAG or t.type != pt_id:
                continue
            idx = t.word(0)
            if (idx - (1 << 32) if idx >> 31 else idx) != comp_idx:
                continue
            name = self.env.str_by_offset(t.name_off) or b""
            if not name.startswith(key):
                continue
            if found is not None:
                raise KernelError(Errno.EEXIST, "duplicate decl tag")
            found = name[len(key):]
        if found is None:
            raise KernelError(Errno.ENOENT, "no decl tag")
        return found

    def find_by_name_kind(self, name: bytes, kind: int) -> int:
        for tid in range(1, self.env.nr_types):
            t = self.env.types[tid]
            if t.kind == kind and self.env.str_by_offset(t.name_off) == name:
                return tid
        return -1

    def find_graph_root(self, pt_id: int, t, comp_idx: int, off: int, sz: int, ft) -> FieldInfo | None:
        """btf_find_graph_root(): the ``contains:TYPE:NODE`` decl tag on the member."""
        if not is_struct(t) or t.size != sz:
            return None
        try:
            value = self.decl_tag_value(pt_id, comp_idx, _CONTAINS)
        except KernelError:
            raise KernelError(Errno.EINVAL, "graph root without one contains: tag") from None
        type_name, sep, node = value.partition(b":")
        if not sep:
            raise KernelError(Errno.EINVAL, "contains: tag without a node name")
        vid = self.find_by_name_kind(type_name, BtfKind.STRUCT)
        if vid < 0:
            raise KernelError(Errno.ENOENT, "contained struct not in this BTF")
        if not node:
            raise KernelError(Errno.EINVAL, "empty node name")
        return FieldInfo(ft, off, value_btf_id=vid, node_name=node)

    def repeat(self, infos: list, cnt: int, repeat_cnt: int, elem_size: int, room: int) -> None:
        """btf_repeat_fields()."""
        for info in infos[:cnt]:
            if not info.type & _REPEATABLE:
                raise KernelError(Errno.EINVAL, "this field type cannot be in an array")
        total = cnt * (repeat_cnt + 1)
        if repeat_cnt + 1 > _U32_MASK or total > room:
            raise KernelError(Errno.E2BIG, "too many special fields")
        for i in range(repeat_cnt):
            for j in range(cnt):
                src = infos[j]
                infos.append(attrs.evolve(src, off=(src.off + (i + 1) * elem_size) & _U32_MASK))

    def find_field_one(self, pt_id: int, var_type_id: int, var_idx: int, off: int,
                       expected_size: int, room: int, level: int) -> list:
        """btf_find_field_one(): the fields of one member / variable."""
        var_type = self.t(var_type_id)
        nelems = 1
        i = 0
        while i < MAX_RESOLVE_DEPTH and var_type.kind == BtfKind.ARRAY:
            nelems = (nelems * var_type.word(2)) & _U32_MASK
            var_type_id = var_type.word(0)
            var_type = self.t(var_type_id)
            i += 1
        if i == MAX_RESOLVE_DEPTH:
            raise KernelError(Errno.E2BIG, "array nesting too deep")
        if nelems == 0:
            return []
        ft = self.get_field_type(var_type)
        if not ft and is_struct(var_type):
            sz = var_type.size
            if expected_size and expected_size != sz * nelems:
                return []
            level += 1
            if level >= MAX_RESOLVE_DEPTH:
                raise KernelError(Errno.E2BIG, "struct nesting too deep")
            # measured on 6.18: uniqueness holds among one struct's own members only
            seen, self.seen = self.seen, 0
            try:
                infos = self.find_struct_field(var_type_id, var_type, room, level)
            finally:
                self.seen = seen
            if not infos:
                return infos
            for info in infos:
                info.off = (info.off + off) & _U32_MASK
            if nelems > 1:
                self.repeat(infos, len(infos), nelems - 1, sz, room)
            return infos
        if not ft:
            return []
        sz, align = _FIELD_LAYOUT[ft]
        if expected_size and expected_size != sz * nelems:
            return []
        if off % align:
            return []
        if ft & KPTR:
            info = self.find_kptr(var_type, off)
        elif ft & GRAPH_ROOT:
            info = self.find_graph_root(pt_id, var_type, var_idx, off, sz, ft)
        else:                               # btf_find_struct()
            info = FieldInfo(ft, off) if is_struct(var_type) and var_type.size == sz else None
        if info is None:
            return []
        if not room:
            raise KernelError(Errno.E2BIG, "more than BTF_FIELDS_MAX special fields")
        infos = [info]
        if nelems > 1:
            self.repeat(infos, 1, nelems - 1, sz, room)
        return infos

    def find_struct_field(self, t_id: int, t, room: int, level: int) -> list:
        """btf_find_struct_field()."""
        out = []
        for i, (_, mtype, moff) in enumerate(t.records(3)):
            bit_off = moff & _BTF_MEMBER_BIT_OFFSET_MASK if t.kflag else moff
            if bit_off % _BITS_PER_BYTE:
                raise KernelError(Errno.EINVAL, "special-field search in a bitfield offset")
            out += self.find_field_one(t_id, mtype, i, bit_off // _BITS_PER_BYTE, 0,
                                       room - len(out), level)
        return out

    def find_datasec_var(self, t, room: int) -> list:
        """btf_find_datasec_var()."""
        out = []
        for vtype, voff, vsize in t.records(3):
            var = self.t(vtype)
            out += self.find_field_one(vtype, var.type, -1, voff, vsize, room - len(out), 0)
        return out


def find_fields(env, t, t_id: int, field_mask: int) -> list:
    finder = _Finder(env, field_mask)
    if is_struct(t):
        return finder.find_struct_field(t_id, t, BTF_FIELDS_MAX, 0)
    if t.kind == BtfKind.DATASEC:
        return finder.find_datasec_var(t, BTF_FIELDS_MAX)
    raise KernelError(Errno.EINVAL, "special fields live in a struct or a DATASEC")


def find_kptr(env, t, field_mask: int = KPTR | F.UPTR):
    """btf_find_kptr() at offset 0 (btf_parse_struct_metas() probes every type with it)."""
    return _Finder(env, field_mask).find_kptr(t, 0)


def find_by_name_kind(env, name: bytes, kind: int) -> int:
    """btf_find_by_name_kind() over a program BTF: the first id, or -1."""
    return _Finder(env, 0).find_by_name_kind(name, kind)

