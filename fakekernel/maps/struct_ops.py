"""struct_ops maps — kernel/bpf/bpf_struct_ops.c (bpf_struct_ops_map_ops), with the two
struct_ops types a 6.18 vmlinux registers (net/ipv4/bpf_tcp_ca.c, net/bpf/bpf_dummy_struct_ops.c).

BPF_MAP_TYPE_STRUCT_OPS holds one value (key 0) of type ``struct bpf_struct_ops_<name>``
(``{struct bpf_struct_ops_common_value common; struct <name> data;}``) named by
``btf_vmlinux_value_type_id`` in the kernel's BTF; the kernel's table of registered struct_ops
(btf->struct_ops_tab) is, here, every such value type in ``kern.btf_vmlinux`` — by default the
host's /sys/kernel/btf/vmlinux, so type ids agree with the running kernel.  Creation: key 4,
max_entries 1, flags BPF_F_LINK / BPF_F_VTYPE_BTF_OBJ_FD only (EINVAL), an unknown value
type ENOTSUPP, a value_size other than the type's EINVAL; map_create() also requires a user
BTF fd (btf_fd) as for any BTF-described map.

Element commands: lookup answers zeros while the map is in state INIT, else the value as
given (program ids in the function slots) with the state and refcnt - usercnt; get_next_key
gives 0 (ENOENT after key 0); delete unregisters an INUSE map (ENOENT in INIT, EINPROGRESS in
TOBEFREE, EOPNOTSUPP for BPF_F_LINK maps); update walks the value as the kernel does — flags
EINVAL, key E2BIG, non-zero padding, state or refcnt EINVAL, EBUSY unless INIT, then every
member of the ops struct: the type's init_member, zero for non-function members, and for
function pointers a STRUCT_OPS program loaded for that member (fakekernel/progs/struct_ops.py)
— then the type's validate and reg (tcp_congestion_ops: a congestion control name not yet in
``kern.tcp_congestion_controls``, else EEXIST); BPF_F_LINK maps stop at READY.

Not modelled: trampolines (the programs never run), struct_ops links (LINK_CREATE with a
BPF_F_LINK map), registration of types other than tcp_congestion_ops, and module BTF
(BPF_F_VTYPE_BTF_OBJ_FD: EINVAL).
"""
from __future__ import annotations

import functools

import attrs

from fakekernel.bpf.map import BpfMap
from fakekernel.errors import Errno, KernelError
from fakekernel.maps.common import PAGE_SIZE, map_fields_from_attr
from uapi.btf import BtfKind, decode_btf
from uapi.bpf import MapFlags, ProgType
from uapi.ffi import ffi
from uapi.insn import s32, u32

__all__ = ["StructOpsMap", "StructOpsDesc", "struct_ops_table", "VALUE_PREFIX"]

VALUE_PREFIX = "bpf_struct_ops_"
BPF_STRUCT_OPS_STATE_INIT = 0                # enum bpf_struct_ops_state
BPF_STRUCT_OPS_STATE_INUSE = 1
BPF_STRUCT_OPS_STATE_TOBEFREE = 2
BPF_STRUCT_OPS_STATE_READY = 3
_U32 = ffi.sizeof("__u32")
_PTR = ffi.sizeof("void *")
# sizeof(struct bpf_struct_ops_map) and sizeof(struct bpf_struct_ops_value) on x86_64 6.18
# (both in vmlinux BTF; fdinfo memlock agrees)
BPF_STRUCT_OPS_MAP_SIZE = 512
BPF_STRUCT_OPS_VALUE_SIZE = 64
_MODIFIERS = (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG)
TCP_CONG_MASK = 0x3                 # TCP_CONG_NON_RESTRICTED | TCP_CONG_NEEDS_ECN
TCP_CA_NAME_MAX = 16


@attrs.frozen
class Member:
    name: str
    off: int                        # bytes into the ops struct
    size: int
    kind: str                       # "func" (pointer to a function), "module" (struct module *), "data"


@attrs.frozen
class StructOpsDesc:
    """struct bpf_struct_ops_desc: the ops struct and its value wrapper."""

    name: str                       # "tcp_congestion_ops"
    type_id: int
    value_id: int
    value_size: int
    common_size: int                # sizeof(struct bpf_struct_ops_common_value)
    data_off: int                   # offset of `data` in the value
    size: int                       # sizeof the ops struct
    members: tuple[Member, ...]

    @property
    def funcs_cnt(self) -> int:
        return sum(m.kind == "func" for m in self.members)


def _skip_mods(types, tid: int):
    t = types[tid] if 0 <= tid < len(types) else None
    while t is not None and t.kind in _MODIFIERS:
        t = types[t.type]
    return t


def _resolve_size(types, tid: int) -> int:
    """btf_resolve_size()."""
    t = _skip_mods(types, tid)
    if t is None:
        return 0
    if t.kind == BtfKind.ARRAY:
        elem, _, nelems = t.array
        return nelems * _resolve_size(types, elem)
    if t.kind == BtfKind.PTR:
        return _PTR
    return t.size


def _member_kind(types, tid: int) -> str:
    t = _skip_mods(types, tid)
    if t is not None and t.kind == BtfKind.PTR:
        target = _skip_mods(types, t.type)
        if target is not None and target.kind == BtfKind.FUNC_PROTO:
            return "func"
        if target is not None and target.kind == BtfKind.STRUCT and target.name == "module":
            return "module"
    return "data"


@functools.lru_cache(maxsize=4)
def struct_ops_table(data: bytes) -> dict[int, StructOpsDesc]:
    """btf->struct_ops_tab of a vmlinux BTF blob: value type id -> desc."""
    types = decode_btf(data)
    by_name = {t.name: t for t in types[1:] if t.kind == BtfKind.STRUCT and t.name}
    table = {}
    for vt in types[1:]:
        if vt.kind != BtfKind.STRUCT or not vt.name.startswith(VALUE_PREFIX):
            continue
        if [m.name for m in vt.members] != ["common", "data"]:
            continue
        st = by_name.get(vt.name[len(VALUE_PREFIX):])
        if st is None:
            continue
        members = tuple(Member(m.name, m.bit_offset // 8, _resolve_size(types, m.type),
                               _member_kind(types, m.type)) for m in st.members)
        table[vt.id] = StructOpsDesc(st.name, st.id, vt.id, vt.size,
                                     _resolve_size(types, vt.members[0].type),
                                     vt.members[1].bit_offset // 8, st.size, members)
    return table


def _check_zero_holes(data: bytes, members, size: int) -> None:
    """check_zero_holes(): bytes between and after members must be zero."""
    prev_end = 0
    for off, msize in members:
        if off > prev_end and any(data[prev_end:off]):
            raise KernelError(Errno.EINVAL, "non-zero padding in a struct_ops value")
        prev_end = off + msize
    if size > prev_end and any(data[prev_end:size]):
        raise KernelError(Errno.EINVAL, "non-zero padding in a struct_ops value")


# ---- the registered struct_ops types: init_member / validate / reg ----

def _tcp_ca_init_member(desc, member: Member, udata: bytes) -> int:
    """bpf_tcp_ca_init_member(): flags and name are the type's; 0 = not handled."""
    if member.name == "flags":
        if int.from_bytes(udata[member.off:member.off + _U32], "little") & ~TCP_CONG_MASK:
            raise KernelError(Errno.EINVAL, "unknown tcp congestion control flags")
        return 1
    if member.name == "name":
        from fakekernel.syscall.map_cmds import bpf_obj_name_cpy
        name = bpf_obj_name_cpy(bytes(udata[member.off:member.off + TCP_CA_NAME_MAX]))
        if not name:
            raise KernelError(Errno.EINVAL, "a congestion control needs a name")
        return 1
    return 0


def _tcp_ca_validate(funcs: dict) -> None:
    """tcp_validate_congestion_control()."""
    if not (funcs.get("ssthresh") and funcs.get("undo_cwnd")
            and (funcs.get("cong_avoid") or funcs.get("cong_control"))):
        raise KernelError(Errno.EINVAL, "ssthresh, undo_cwnd and cong_avoid/cong_control are required")


def _tcp_ca_name(desc, udata: bytes) -> str:
    off = next(m.off for m in desc.members if m.name == "name")
    return bytes(udata[off:off + TCP_CA_NAME_MAX]).split(b"\0", 1)[0].decode()


def _tcp_ca_reg(kern, desc, udata: bytes) -> None:
    """tcp_register_congestion_control(): a name no congestion control uses yet."""
    name = _tcp_ca_name(desc, udata)
    if name in kern.tcp_congestion_controls:
        raise KernelError(Errno.EEXIST, f"congestion control {name} already registered")
    kern.tcp_congestion_controls.append(name)


def _tcp_ca_unreg(kern, desc, udata: bytes) -> None:
    """tcp_unregister_congestion_control()."""
    kern.tcp_congestion_controls.remove(_tcp_ca_name(desc, udata))


def _dummy_init_member(desc, member: Member, udata: bytes) -> int:
    """bpf_dummy_init_member(): the dummy ops can only be test-run, never registered."""
    raise KernelError(Errno.EOPNOTSUPP, "bpf_dummy_ops cannot be registered")


@attrs.frozen
class _OpsModel:
    init_member: object
    validate: object = None
    reg: object = None
    unreg: object = None


_OPS = {
    "tcp_congestion_ops": _OpsModel(_tcp_ca_init_member, _tcp_ca_validate, _tcp_ca_reg, _tcp_ca_unreg),
    "bpf_dummy_ops": _OpsModel(_dummy_init_member),
}


@attrs.define(eq=False)
class StructOpsMap(BpfMap):
    """BPF_MAP_TYPE_STRUCT_OPS — bpf_struct_ops_map_ops."""

    desc: StructOpsDesc | None = None
    state: int = BPF_STRUCT_OPS_STATE_INIT      # kvalue.common.state
    uvalue: bytes = b""
    progs: dict = attrs.field(factory=dict)     # member name -> program (st_map->links)

    map_meta_equal = None                       # never an inner map

    @classmethod
    def map_alloc_check(cls, attr, task) -> None:
        """bpf_struct_ops_map_alloc_check()."""
        if (attr.key_size != _U32 or attr.max_entries != 1
                or attr.map_flags & ~int(MapFlags.LINK | MapFlags.VTYPE_BTF_OBJ_FD)
                or not attr.btf_vmlinux_value_type_id):
            raise KernelError(Errno.EINVAL, "struct_ops: key 4, one entry, a vmlinux value type")

    @classmethod
    def map_alloc(cls, kern, attr, task) -> "StructOpsMap":
        """bpf_struct_ops_map_alloc()."""
        if attr.map_flags & MapFlags.VTYPE_BTF_OBJ_FD:
            f = task.files.fdget(attr.value_type_btf_obj_fd)
            raise KernelError(Errno.EINVAL, "module BTF only" if f.kind == "btf" else "not a BTF fd")
        btf = kern.btf_vmlinux
        if btf is None:
            raise KernelError(Errno.ENOTSUPP, "kernel built without BTF")
        desc = struct_ops_table(btf.data).get(attr.btf_vmlinux_value_type_id)
        if desc is None:
            raise KernelError(Errno.ENOTSUPP, "no struct_ops with this value type")
        if attr.value_size != desc.value_size:
            raise KernelError(Errno.EINVAL, "value_size is not the struct_ops value's size")
        m = cls(**map_fields_from_attr(kern, attr), desc=desc, uvalue=bytes(desc.value_size))
        m.memlock = m.map_mem_usage()
        return m

    def map_mem_usage(self) -> int:
        """bpf_struct_ops_map_mem_usage()."""
        vsize = self.desc.value_size
        return (BPF_STRUCT_OPS_MAP_SIZE + vsize - BPF_STRUCT_OPS_VALUE_SIZE + vsize
                + 2 * self.desc.funcs_cnt * _PTR + PAGE_SIZE)

    def map_info_fill(self, info) -> None:
        """bpf_map_struct_ops_info_fill(): the id of the BTF the value type comes from."""
        info.btf_vmlinux_id = self.kern.btf_vmlinux.id

    # ---- element ops ----
    def map_lookup_elem(self, key) -> int:
        raise KernelError(Errno.EINVAL, "struct_ops maps are not looked up by programs")

    def sys_lookup(self, key: bytes, flags: int) -> bytes:
        """bpf_struct_ops_map_sys_lookup_elem(): zeros in state INIT, else the value as given
        (program ids in the function slots) with the state and refcnt - usercnt."""
        if int.from_bytes(key[:_U32], "little") != 0:
            raise KernelError(Errno.ENOENT, "struct_ops maps have key 0 only")
        if self.state == BPF_STRUCT_OPS_STATE_INIT:
            return bytes(self.value_size)
        users = max(self.refcnt - self.usercnt, 0)     # "how many sockets still use it"
        common = users.to_bytes(_U32, "little") + self.state.to_bytes(_U32, "little")
        return common + self.uvalue[len(common):]

    def map_get_next_key(self, key) -> bytes:
        """bpf_struct_ops_map_get_next_key()."""
        if key is not None and int.from_bytes(key[:_U32], "little") == 0:
            raise KernelError(Errno.ENOENT, "key 0 is the last")
        return bytes(_U32)

    def map_delete_elem(self, key) -> None:
        """bpf_struct_ops_map_delete_elem()."""
        if self.map_flags & MapFlags.LINK:
            raise KernelError(Errno.EOPNOTSUPP, "BPF_F_LINK struct_ops are detached through the link")
        if self.state == BPF_STRUCT_OPS_STATE_TOBEFREE:
            raise KernelError(Errno.EINPROGRESS, "struct_ops being unregistered")
        if self.state != BPF_STRUCT_OPS_STATE_INUSE:
            raise KernelError(Errno.ENOENT, "struct_ops not registered")
        model = _OPS[self.desc.name]
        model.unreg(self.kern, self.desc, self.uvalue[self.desc.data_off:])
        self.state = BPF_STRUCT_OPS_STATE_TOBEFREE
        self.put()                                  # the registration's reference

    def map_lookup_and_delete_elem(self, key, flags: int) -> bytes:
        raise KernelError(Errno.ENOTSUPP, "lookup_and_delete not supported")

    def map_update_elem(self, key: bytes, value: bytes, flags: int) -> int:
        """bpf_struct_ops_map_update_elem(); returns what the syscall returns."""
        if flags:
            raise KernelError(Errno.EINVAL, "struct_ops updates take no flags")
        if int.from_bytes(key[:_U32], "little") != 0:
            raise KernelError(Errno.E2BIG, "struct_ops maps have key 0 only")
        desc = self.desc
        common = desc.data_off
        _check_zero_holes(value, [(0, desc.common_size), (common, desc.size)], desc.value_size)
        udata = bytes(value[common:common + desc.size])
        _check_zero_holes(udata, [(mb.off, mb.size) for mb in desc.members], desc.size)
        state = int.from_bytes(value[_U32:2 * _U32], "little")
        refcnt = int.from_bytes(value[:_U32], "little")
        if state or refcnt:
            raise KernelError(Errno.EINVAL, "state and refcnt are the kernel's")
        if self.state != BPF_STRUCT_OPS_STATE_INIT:
            raise KernelError(Errno.EBUSY, "struct_ops already in use")
        model = _OPS.get(desc.name)
        progs: dict = {}                # member name -> the STRUCT_OPS program given for it
        udata = bytearray(udata)
        try:
            err = self._walk_members(model, udata, progs)
            if err is not None:
                self._release(progs)    # reset_unlock: nothing kept, state still INIT
                return err
            if model is not None and model.validate is not None:
                model.validate(progs)
            if self.map_flags & MapFlags.LINK:
                self.state = BPF_STRUCT_OPS_STATE_READY     # the link registers it
            else:
                if model is None or model.reg is None:
                    raise KernelError(Errno.ENOTSUPP, f"registering {desc.name} is not modelled")
                model.reg(self.kern, desc, udata)
                self.state = BPF_STRUCT_OPS_STATE_INUSE
                self.get()                                  # the registration's reference
        except KernelError:
            self._release(progs)
            raise
        self.progs = progs
        self.uvalue = bytes(value[:common]) + bytes(udata) + bytes(value[common + desc.size:])
        return 0

    def _walk_members(self, model, udata: bytearray, progs: dict) -> int | None:
        """The member loop of bpf_struct_ops_map_update_elem(): None when every member is
        accepted (`progs` filled, program ids written into `udata`), else the value the
        syscall returns after reset_unlock (a struct module * member that is set)."""
        from fakekernel.syscall.fdget import bpf_prog_get
        desc = self.desc
        err = 0
        for i, mb in enumerate(desc.members):
            raw = udata[mb.off:mb.off + mb.size]
            if mb.kind == "module":
                if any(raw):
                    return err          # `err` as the last init_member() left it (0 or 1)
                continue
            err = model.init_member(desc, mb, udata) if model is not None else 0
            if err:
                continue
            if mb.kind != "func":
                if any(raw):
                    raise KernelError(Errno.EINVAL, f"member {mb.name} must be zero")
                continue
            prog_fd = s32(u32(int.from_bytes(raw, "little")))            # (int)(unsigned long)
            if not prog_fd:
                continue
            prog = bpf_prog_get(self.kern.current, prog_fd)            # EBADF / EINVAL
            if (prog.type != ProgType.STRUCT_OPS or prog.aux.attach_btf_id != desc.type_id
                    or prog.expected_attach_type != i):
                raise KernelError(Errno.EINVAL, "not a STRUCT_OPS program for this member")
            progs[mb.name] = prog.get()                                 # the member's link
            udata[mb.off:mb.off + mb.size] = prog.aux.id.to_bytes(mb.size, "little")
        return None

    @staticmethod
    def _release(progs: dict) -> None:
        for prog in progs.values():
            prog.put()
        progs.clear()

    def map_free(self) -> None:
        """bpf_struct_ops_map_free(): the links (program references) go."""
        self._release(self.progs)

    def sys_update(self, key: bytes, value: bytes, flags: int) -> int:
        return self.map_update_elem(key, value, flags)
