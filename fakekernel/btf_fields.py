"""Special fields of BTF-described values — kernel/bpf/btf.c: btf_parse_fields() and its
helpers (btf_find_field, btf_get_field_type, btf_find_kptr, btf_find_graph_root,
btf_repeat_fields, btf_parse_kptr, btf_parse_graph_root), struct btf_record / btf_field
of include/linux/bpf.h, and the value copies that respect them (copy_map_value,
copy_map_value_locked, check_and_init_map_value / bpf_obj_init).

A map value type may embed bpf_spin_lock, bpf_res_spin_lock, bpf_timer, bpf_wq,
bpf_task_work, kptrs (pointers tagged ``kptr`` / ``kptr_untrusted`` / ``percpu_kptr``
/ ``uptr``), bpf_list_head / bpf_rb_root (with a ``contains:TYPE:NODE`` decl tag) and
bpf_refcount, directly, in nested structs or in arrays.  The kernel matches them by the
*name* of the member's type (no typedef is looked through), silently ignores one that is
misaligned or of the wrong size, and reports the rest with its own errnos: a second
lock/timer/wq/refcount is E2BIG, overlapping fields EEXIST, more than BTF_FIELDS_MAX
E2BIG, a bad kptr tag EINVAL, a kptr to a vmlinux struct without a registered
destructor ENOENT.

`copy_map_value(rec, dst, src)` copies a value but leaves every special field of `dst`
as it was (the kernel never lets userspace or a program's update overwrite them);
`zero_special_fields(rec, buf)` is bpf_obj_init() for a fresh or looked-up value.
"""
from __future__ import annotations

import weakref

import attrs

from fakekernel.btf_find_field import (ALLOC_OBJ_FIELDS, BTF_FIELDS_MAX, F, GRAPH_ROOT,
                                       KPTR, KPTR_DTOR_TYPES, MAP_VALUE_FIELDS, BtfFieldType,
                                       FieldInfo, field_type_size, find_fields,
                                       find_kptr, is_struct, node_of_root)
from fakekernel.errors import Errno, KernelError
from fakekernel.interp.memory import DIRECT_MAP_BASE
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["BtfFieldType", "BtfField", "BtfRecord", "btf_parse_fields", "copy_map_value",
           "copy_map_value_locked", "zero_special_fields", "BTF_FIELDS_MAX", "MAP_VALUE_FIELDS",
           "btf_record_has_field", "bpf_obj_free_fields", "copy_value_out", "btf_parse_struct_metas",
           "map_value_field_access", "FIELD_TYPE_NAME"]

_BITS_PER_BYTE = 8
_BTF_MEMBER_BIT_OFFSET_MASK = 0xFFFFFF      # BTF_MEMBER_BIT_OFFSET() with kind_flag
_STRUCT_METAS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # BtfEnv -> metas
_PTR_SIZE = ffi.sizeof("void *")
# where a syscall lookup's copy of the value lives (kvmalloc'd in the kernel): an empty
# bpf_list_head in it points at itself there
SYSCALL_BOUNCE_BUF = DIRECT_MAP_BASE


@attrs.frozen
class BtfField:
    """struct btf_field."""

    offset: int
    size: int
    type: BtfFieldType
    kptr_btf_id: int = 0            # kptrs: the pointee (vmlinux id when kernel_btf)
    kptr_kernel_btf: bool = False
    graph_value_btf_id: int = 0     # graph roots: the contained struct and its node offset
    graph_node_offset: int = 0


@attrs.frozen
class BtfRecord:
    """struct btf_record: the fields sorted by offset, and the cached offsets."""

    fields: tuple
    field_mask: int
    cached: dict = attrs.field(factory=dict)    # field type -> offset (the last one found)

    def off(self, ft: int) -> int | None:
        return self.cached.get(ft)

    @property
    def spin_lock_off(self) -> int | None:
        return self.cached.get(F.SPIN_LOCK)

    @property
    def timer_off(self) -> int | None:
        return self.cached.get(F.TIMER)


def btf_record_has_field(rec: BtfRecord | None, ft: int) -> bool:
    return rec is not None and bool(rec.field_mask & ft)


# ---------------------------------------------------------------- parsing the record

def _parse_kptr(kern, env, info: FieldInfo) -> BtfField:
    """btf_parse_kptr(): a vmlinux pointee needs a destructor kfunc when referenced."""
    ft = info.type
    size = field_type_size(ft)
    t = env.type_by_id(info.type_id)
    name = env.str_by_offset(t.name_off) or b""
    vmlinux = getattr(kern, "btf_vmlinux", None) if kern is not None else None
    kid = -1
    if vmlinux is not None and name:
        from fakekernel.btf_vmlinux import btf_index      # the ~6 MB index: built on first use
        kid = btf_index(vmlinux).find_by_name_kind(name, t.kind)
    if kid < 0:             # a program-BTF type: a bpf_obj_new() object
        return BtfField(info.off, size, ft, kptr_btf_id=info.type_id)
    if ft == F.KPTR_REF and name not in KPTR_DTOR_TYPES:
        raise KernelError(Errno.ENOENT, "no destructor kfunc for this kernel type")
    return BtfField(info.off, size, ft, kptr_btf_id=kid, kptr_kernel_btf=True)


def _parse_graph_root(env, info: FieldInfo) -> BtfField:
    """btf_parse_graph_root(): the node member of the contained struct."""
    node_type, node_align = node_of_root(info.type)
    t = env.type_by_id(info.value_btf_id)
    found = None
    for mname, mtype, moff in t.records(3):
        if (env.str_by_offset(mname) if mname else b"(anon)") != info.node_name:
            continue
        if found is not None:
            raise KernelError(Errno.EINVAL, "two members with the node's name")
        n = env.type_by_id(mtype)
        if not is_struct(n) or env.name_by_offset(n.name_off) != node_type:
            raise KernelError(Errno.EINVAL, "the node member is not a " + node_type.decode())
        bit_off = moff & _BTF_MEMBER_BIT_OFFSET_MASK if n.kflag else moff
        if bit_off % _BITS_PER_BYTE or (bit_off // _BITS_PER_BYTE) % node_align:
            raise KernelError(Errno.EINVAL, "misaligned graph node")
        found = bit_off // _BITS_PER_BYTE
    if found is None:
        raise KernelError(Errno.ENOENT, "no member with the node's name")
    return BtfField(info.off, field_type_size(info.type), info.type,
                    graph_value_btf_id=info.value_btf_id, graph_node_offset=found)


def btf_parse_fields(kern, env, t, t_id: int, field_mask: int, value_size: int) -> BtfRecord | None:
    """btf_parse_fields(): the record of type `t` (id `t_id` in `env`), or None."""
    infos = find_fields(env, t, t_id, field_mask)
    if not infos:
        return None
    fields, mask, next_off = [], 0, 0
    for info in infos:
        size = field_type_size(info.type)
        if info.off + size > value_size:
            raise KernelError(Errno.EFAULT, "special field past the value")
        if info.off < next_off:
            raise KernelError(Errno.EEXIST, "special fields overlap")
        next_off = info.off + size
        mask |= info.type
        if info.type & (KPTR | F.UPTR):
            fields.append(_parse_kptr(kern, env, info))
        elif info.type & GRAPH_ROOT:
            fields.append(_parse_graph_root(env, info))
        else:
            fields.append(BtfField(info.off, size, info.type))
    if mask & F.SPIN_LOCK and mask & F.RES_SPIN_LOCK:
        raise KernelError(Errno.EINVAL, "bpf_spin_lock and bpf_res_spin_lock together")
    if mask & GRAPH_ROOT and not mask & F.SPIN_LOCK:
        raise KernelError(Errno.EINVAL, "bpf_list_head / bpf_rb_root need a bpf_spin_lock")
    if not mask & F.REFCOUNT and mask & F.LIST_NODE and mask & F.RB_NODE:
        raise KernelError(Errno.EINVAL, "list and rbtree node without bpf_refcount")
    cached = {f.type: f.offset for f in fields
              if f.type & (F.SPIN_LOCK | F.RES_SPIN_LOCK | F.TIMER | F.WORKQUEUE | F.REFCOUNT
                           | F.TASK_WORK)}
    return BtfRecord(tuple(sorted(fields, key=lambda f: f.offset)), mask, cached)


_META_FIELDS = (F.SPIN_LOCK | F.RES_SPIN_LOCK | F.LIST_HEAD | F.LIST_NODE | F.RB_ROOT | F.RB_NODE
                | F.REFCOUNT | KPTR)


def _alloc_obj_ids(env) -> set:
    """The ids btf_parse_struct_metas() looks for among struct members."""
    first: dict = {}                        # btf_find_by_name_kind(): the first id of each name
    aof = set()
    for tid in range(1, env.nr_types):
        t = env.types[tid]
        kind = t.kind
        if kind == BtfKind.STRUCT:
            name = env.str_by_offset(t.name_off) if t.name_off else b""
            if name in ALLOC_OBJ_FIELDS and name not in first:
                first[name] = tid
        elif kind in (BtfKind.PTR, BtfKind.VOLATILE):
            try:
                if find_kptr(env, t, KPTR) is not None:
                    aof.add(tid)
            except KernelError:
                pass
    return aof | set(first.values())


def btf_parse_struct_metas(kern, env) -> dict:
    """btf_parse_struct_metas() at BTF_LOAD: every struct with a member of an alloc-obj
    type (or a kptr) gets its record; a struct whose record fails (or is empty) fails the
    load with that errno (EFAULT for an empty one).  Returns {struct id: record}."""
    aof = _alloc_obj_ids(env)
    metas = {}
    if not aof:
        _STRUCT_METAS[env] = metas
        return metas
    for tid in range(1, env.nr_types):
        t = env.types[tid]
        if not is_struct(t) or not any(m[1] in aof for m in t.records(3)):
            continue
        rec = btf_parse_fields(kern, env, t, tid, _META_FIELDS, t.size)
        if rec is None:
            raise KernelError(Errno.EFAULT, "struct meta without special fields")
        metas[tid] = rec
    for rec in metas.values():
        _check_graph_roots(metas, rec)
    _STRUCT_METAS[env] = metas
    return metas


def btf_find_struct_meta(env, btf_id: int) -> bool:
    """Whether BTF_LOAD gave struct `btf_id` a btf_struct_meta."""
    metas = _STRUCT_METAS.get(env)
    if metas is None:
        metas = _STRUCT_METAS[env] = btf_parse_struct_metas(None, env)
    return btf_id in metas


def _check_graph_roots(metas: dict, rec: BtfRecord) -> None:
    for f in rec.fields:
        if f.type & GRAPH_ROOT and f.graph_value_btf_id not in metas:
            raise KernelError(Errno.EFAULT, "graph root value type without struct meta")


def btf_check_and_fixup_fields(env, rec: BtfRecord | None) -> None:
    """btf_check_and_fixup_fields(): a graph root's value type must have its struct meta."""
    if rec is None or not rec.field_mask & GRAPH_ROOT:
        return
    for f in rec.fields:
        if f.type & GRAPH_ROOT and not btf_find_struct_meta(env, f.graph_value_btf_id):
            raise KernelError(Errno.EFAULT, "graph root value type without struct meta")


# ---------------------------------------------------------------- value copies

def _special_ranges(rec: BtfRecord | None):
    return [] if rec is None else [(f.offset, f.offset + f.size) for f in rec.fields]


def copy_map_value(rec: BtfRecord | None, dst, src, size: int | None = None) -> None:
    """copy_map_value(): `src` into `dst` except the special fields (dst keeps its own)."""
    n = len(dst) if size is None else size
    start = 0
    for lo, hi in _special_ranges(rec):
        if lo >= n:
            break
        dst[start:lo] = src[start:lo]
        start = hi
    if start < n:
        dst[start:n] = src[start:n]


def copy_map_value_locked(rec: BtfRecord | None, dst, src, size: int | None = None) -> None:
    """copy_map_value_locked(): the same copy taken under the value's bpf_spin_lock (the
    simulator is single-threaded, so the lock word is untouched)."""
    copy_map_value(rec, dst, src, size)


def zero_special_fields(rec: BtfRecord | None, buf, base: int = 0, addr: int | None = None) -> None:
    """bpf_obj_init() / check_and_init_map_value(): zero the special fields of a value (a
    bpf_refcount starts at 1; a bpf_list_head is an empty list, both of its pointers at
    itself, when the value's kernel address `addr` is given)."""
    if rec is None:
        return
    for f in rec.fields:
        init = bytes(f.size)
        if f.type == F.REFCOUNT:
            init = (1).to_bytes(f.size, "little")
        elif f.type == F.LIST_HEAD and addr is not None:
            init = ((addr + f.offset).to_bytes(_PTR_SIZE, "little") * 2).ljust(f.size, b"\0")
        buf[base + f.offset:base + f.offset + f.size] = init


_KEPT_ON_FREE = F.SPIN_LOCK | F.RES_SPIN_LOCK | F.LIST_NODE | F.RB_NODE | F.REFCOUNT


def bpf_obj_free_fields(rec: BtfRecord | None, buf, base: int = 0, kern=None, addr: int = 0) -> None:
    """bpf_obj_free_fields(): drop what the special fields own (kptrs, timers, graph roots);
    locks stay.  `kern` / `addr` (the value's kernel address, 0 if no program ever saw it)
    find the value's timer (fakekernel/helpers/timer.py)."""
    if rec is None:
        return
    for f in rec.fields:
        if f.type & _KEPT_ON_FREE:
            continue
        if f.type == F.TIMER and kern is not None and addr:
            from fakekernel.helpers.timer import bpf_timer_cancel_and_free   # helpers import maps
            bpf_timer_cancel_and_free(kern, addr + f.offset)
        buf[base + f.offset:base + f.offset + f.size] = bytes(f.size)


def copy_value_out(rec: BtfRecord | None, src, stride: int = 0, count: int = 1) -> bytes:
    """bpf_map_copy_value()'s copy_map_value + check_and_init_map_value: what a syscall
    lookup returns (every special field zeroed); `count` slots of `stride` bytes for per-CPU
    values."""
    out = bytearray(src)
    if rec is not None:
        for i in range(count):      # the kernel's bounce buffer: a direct-map address
            zero_special_fields(rec, out, i * stride, addr=SYSCALL_BOUNCE_BUF + i * stride)
    return bytes(out)


# btf_field_type_name(): how the verifier names a field in its messages
FIELD_TYPE_NAME = {F.SPIN_LOCK: "bpf_spin_lock", F.RES_SPIN_LOCK: "bpf_res_spin_lock",
                   F.TIMER: "bpf_timer", F.WORKQUEUE: "bpf_wq", F.KPTR_UNREF: "kptr",
                   F.KPTR_REF: "kptr", F.KPTR_PERCPU: "percpu_kptr", F.UPTR: "uptr",
                   F.LIST_HEAD: "bpf_list_head", F.LIST_NODE: "bpf_list_node",
                   F.RB_ROOT: "bpf_rb_root", F.RB_NODE: "bpf_rb_node", F.REFCOUNT: "bpf_refcount",
                   F.TASK_WORK: "bpf_task_work"}


def map_value_field_access(rec: BtfRecord | None, off: int, size: int, direct: bool) -> str | None:
    """check_map_access()'s special-field rule for an access of `size` bytes at constant
    offset `off` of a map value: None if allowed, else the verifier's message."""
    if rec is None:
        return None
    for f in rec.fields:
        if not (off < f.offset + f.size and f.offset < off + size):
            continue
        if f.type & (KPTR | F.UPTR):
            if not direct:
                return "kptr cannot be accessed indirectly by helper\n"
            if f.offset != off:
                return f"kptr access misaligned expected={f.offset} off={off}\n"
            if size != f.size:
                return "kptr access size must be BPF_DW\n"
            continue
        return f"{FIELD_TYPE_NAME[f.type]} cannot be accessed directly by load/store\n"
    return None
