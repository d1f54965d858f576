"""Map references and helper calls — kernel/bpf/verifier.c: resolve_pseudo_ldimm64,
add_used_map_from_fd, check_helper_call, check_func_arg, check_reg_type.
"""
from __future__ import annotations

from fakekernel.bpf.prog import prog_tag
from fakekernel.errors import KernelError
from fakekernel.helpers.proto import ArgType, RetType, TypeFlag, base_type
from fakekernel.verifier.map_func import (bpf_cgroup_storage_assign, check_get_local_storage_flags,
                                          check_map_func_compatibility)
from fakekernel.verifier.cfg import bpf_opcode_in_insntable, is_ldimm64
from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.callbacks import push_callback_calls
from fakekernel.verifier.refs import CallArgMeta, check_resource_leak, check_release_arg_off, ret_ptr_reg, set_ret_ref
from fakekernel.verifier.reg_types import (MEM_TYPES as _MEM_TYPES, check_reg_type, compatible_reg_types,
                                           process_spin_lock, process_timer_func)
from fakekernel.verifier.regs import Reg, RegType
from uapi.asm import func_id_name
from uapi.bpf import (
    BPF_FUNC_MAX_ID, BPF_LDX, BPF_MEM, BPF_MEMSX, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE, BPF_PSEUDO_MAP_VALUE, AttachType, FuncId, MapFlags,
    MapType, ProgType,
)
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_MODE, Insn, encode_prog, s32, s64, u32

__all__ = ["resolve_pseudo_ldimm64", "check_helper_call", "MAX_USED_MAPS", "BPF_MAX_VAR_OFF",
           "CALLER_SAVED_REGS"]

MAX_USED_MAPS = 64
BPF_MAX_VAR_OFF = 1 << 29
BPF_MAX_VAR_SIZ = 1 << 29
CALLER_SAVED_REGS = (0, 1, 2, 3, 4, 5)

# helpers record_func_map() refuses on a BPF_F_RDONLY_PROG map
_MAP_WRITE_FUNCS = frozenset({FuncId.map_delete_elem, FuncId.map_update_elem,
                              FuncId.map_push_elem, FuncId.map_pop_elem})

#: bpf_helper_changes_pkt_data(): these invalidate every packet pointer
_CHANGES_PKT_DATA = frozenset({
    FuncId.skb_store_bytes, FuncId.skb_change_head, FuncId.skb_change_tail, FuncId.skb_pull_data,
    FuncId.skb_change_proto, FuncId.skb_vlan_push, FuncId.skb_vlan_pop, FuncId.skb_adjust_room,
    FuncId.l3_csum_replace, FuncId.l4_csum_replace, FuncId.xdp_adjust_head, FuncId.xdp_adjust_meta,
    FuncId.xdp_adjust_tail, FuncId.clone_redirect, FuncId.msg_pull_data, FuncId.msg_push_data,
    FuncId.msg_pop_data, FuncId.lwt_push_encap, FuncId.lwt_seg6_store_bytes,
    FuncId.lwt_seg6_adjust_srh, FuncId.lwt_seg6_action, FuncId.store_hdr_opt,
})
#: can_elide_value_nullness(): lookups with a constant in-range key never return NULL
_NONNULL_CONST_KEY_MAPS = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})


# ---------------------------------------------------------------- LD_IMM64 pseudo sources

def _tag_image(insns: list[Insn]) -> bytes:
    """bpf_prog_calc_tag()'s input: map fd / map value imms zeroed."""
    out, was_ld_map = [], False
    for insn in insns:
        if not was_ld_map and is_ldimm64(insn) and insn.src_reg in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
            was_ld_map = True
            insn = Insn(insn.code, insn.dst_reg, insn.src_reg, insn.off, 0)
        elif was_ld_map and insn.code == 0 and insn.dst_reg == 0 and insn.src_reg == 0 and insn.off == 0:
            was_ld_map = False
            insn = Insn(0, 0, 0, 0, 0)
        else:
            was_ld_map = False
        out.append(insn)
    return encode_prog(out)


def _add_used_map_from_fd(env, fd: int) -> int:
    from fakekernel.syscall.fdget import bpf_map_get
    try:
        _, bpf_map = bpf_map_get(env.task, fd)
    except KernelError as e:
        raise env.reject(e.errno, f"fd {fd} is not pointing to valid bpf_map\n") from None
    for i, m in enumerate(env.used_maps):
        if m is bpf_map:
            return i
    if len(env.used_maps) >= MAX_USED_MAPS:
        raise env.reject(Errno.E2BIG, f"The total number of maps per program has reached the limit of "
                                      f"{MAX_USED_MAPS}\n")
    env.used_maps.append(bpf_map.get())
    return len(env.used_maps) - 1


def check_pseudo_func_info(env) -> None:
    """check_ld_imm() for BPF_PSEUDO_FUNC: a callback pointer needs BTF func_info (the walk
    reaches it in the kernel; the first pass checks every such insn once the CFG is known)."""
    if getattr(env.prog.aux, "func_info", None):
        return
    for insn in env.insns:
        if is_ldimm64(insn) and insn.src_reg == BPF_PSEUDO_FUNC:
            raise env.reject(Errno.EINVAL, "missing btf func_info\n")


def _check_new_arena(env, bpf_map) -> None:
    """__add_used_map(): what a program using an arena needs (one arena, CAP_BPF + CAP_PERFMON,
    a JIT, and a user address fixed by map_extra or a first mmap) — before the direct value
    address is computed on 6.18."""
    if bpf_map.map_type != MapType.ARENA:
        return
    if any(m.map_type == MapType.ARENA for m in env.used_maps if m is not bpf_map):
        raise env.reject(Errno.EBUSY, "Only one arena per program\n")
    if not env.allow_ptr_leaks or not env.bpf_capable:
        raise env.reject(Errno.EPERM, "CAP_BPF and CAP_PERFMON are required to use arena\n")
    if not env.kern.sysctl("net.core.bpf_jit_enable"):
        raise env.reject(Errno.EOPNOTSUPP, "JIT is required to use arena\n")
    if not bpf_map.user_vm_start:
        raise env.reject(Errno.EINVAL, "arena's user address must be set via map_extra or mmap()\n")


def resolve_pseudo_ldimm64(env) -> None:
    """Tag the program, check LDX/LD_IMM64 fields and opcodes, and turn map fds into map pointers."""
    env.prog.tag = prog_tag(_tag_image(env.insns))
    insns, n, i = env.insns, len(env.insns), 0
    while i < n:
        insn = insns[i]
        if BPF_CLASS(insn.code) == BPF_LDX and (BPF_MODE(insn.code) not in (BPF_MEM, BPF_MEMSX) or insn.imm != 0):
            raise env.reject(Errno.EINVAL, "BPF_LDX uses reserved fields\n")
        if is_ldimm64(insn):
            nxt = insns[i + 1] if i + 1 < n else None
            if nxt is None or nxt.code != 0 or nxt.dst_reg != 0 or nxt.src_reg != 0 or nxt.off != 0:
                raise env.reject(Errno.EINVAL, "invalid bpf_ld_imm64 insn\n")
            src = insn.src_reg
            if src in (0, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC):
                if src == BPF_PSEUDO_BTF_ID:
                    raise GiveUp("ksym references are not modelled")
                i += 2
                continue
            if src in (BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX_VALUE) or \
                    (src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX) and nxt.imm == 0):
                pass
            else:
                raise env.reject(Errno.EINVAL, "unrecognized bpf_ld_imm64 insn\n")
            if src in (BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE):
                raise GiveUp("fd_array map references are not modelled")
            n_used = len(env.used_maps)
            idx = _add_used_map_from_fd(env, insn.imm)
            bpf_map = env.used_maps[idx]
            aux = env.aux[i]
            aux.map_index = idx
            if len(env.used_maps) > n_used:
                _check_new_arena(env, bpf_map)      # in __add_used_map() on 6.18 (measured)
            if src == BPF_PSEUDO_MAP_FD:
                addr = env.kern.mem.map_object(bpf_map)
            else:
                off = u32(nxt.imm)
                if off >= BPF_MAX_VAR_OFF:
                    raise env.reject(Errno.EINVAL, f"direct value offset of {off} is not allowed\n")
                direct = getattr(bpf_map, "map_direct_value_addr", None)
                if direct is None:
                    raise env.reject(Errno.EINVAL, "no direct value access support for this map type\n")
                try:
                    addr = direct(off) + off
                except KernelError as e:
                    raise env.reject(e.errno, f"invalid access to map value pointer, value_size="
                                              f"{bpf_map.value_size} off={off}\n") from None
                aux.map_off = off
            insns[i] = Insn(insn.code, insn.dst_reg, insn.src_reg, insn.off, s32(addr))
            insns[i + 1] = Insn(0, 0, 0, 0, s32(addr >> 32))
            if len(env.used_maps) > n_used:             # extra checks for a newly used map
                bpf_cgroup_storage_assign(env, bpf_map)
            i += 2
            continue
        if not bpf_opcode_in_insntable(insn.code):
            raise env.reject(Errno.EINVAL, f"unknown opcode {insn.code:02x}\n")
        i += 1


# ---------------------------------------------------------------- helper calls

def _const_stack_key(state, reg: Reg, key_size: int) -> int | None:
    """The key's value when the stack bytes holding it are known (get_constant_map_key)."""
    if reg.type != RegType.PTR_TO_STACK or not reg.var_off.is_const():
        return None
    off = reg.off + reg.const_value
    if off >= 0 or off + key_size > 0:
        return None
    value = 0
    for k in range(key_size):
        b = off + k
        spi, idx = (-b - 1) // 8, (-b - 1) % 8
        slot = state.frame[reg.frameno].stack.get(spi)
        if slot is None or slot.slot_type[idx] != "0":
            return None
    return value


def _check_mem_size_reg(env, state, fn, mem_regno: int, size_regno: int, zero_ok: bool):
    """check_mem_size_reg() for a (memory, size) argument pair with a constant size.

    Returns (regno, size) when the helper will write to a stack buffer (raw mode)."""
    from fakekernel.verifier.mem import check_helper_mem_access
    size_reg = state.regs[size_regno]
    mem_type = fn.arg(mem_regno - 1)
    if size_reg.type != RegType.SCALAR_VALUE or not size_reg.is_const():
        return None
    size = size_reg.const_value
    if s64(size) < 0:
        raise env.fail(state, Errno.EACCES, f"R{size_regno} min value is negative, either use unsigned or "
                                            f"'var &= const'\n")
    if size == 0 and not zero_ok:
        raise env.fail(state, Errno.EACCES, f"R{size_regno} invalid zero-sized read: u64=[0,0]\n")
    if size >= BPF_MAX_VAR_SIZ:
        raise env.fail(state, Errno.EACCES, f"R{size_regno} unbounded memory access, use 'var &= const' or "
                                            f"'if (var < const)'\n")
    mem = state.regs[mem_regno]
    if size == 0 or (mem.is_const() and mem.const_value == 0 and mem_type & TypeFlag.PTR_MAYBE_NULL):
        return None
    if mem.type == RegType.UNTRACKED:
        raise GiveUp("untracked helper memory argument")
    if mem.type not in _MEM_TYPES:
        return None
    writes = bool(mem_type & (TypeFlag.MEM_UNINIT | TypeFlag.MEM_WRITE))
    check_helper_mem_access(env, state, mem_regno, size, write=writes)
    if mem.type == RegType.PTR_TO_STACK and mem_type & TypeFlag.MEM_UNINIT:
        return (mem_regno, size)
    return None


_TRAMPOLINE_ATTACH = frozenset({AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN})


def _check_get_func_ip(env) -> None:
    """check_get_func_ip(): kprobes, and tracing programs with a trampoline."""
    prog = env.prog
    dst = getattr(prog.aux, "dst_prog", None)
    ptype = dst.type if prog.type == ProgType.EXT and dst is not None else prog.type   # resolve_prog_type()
    name = f"{func_id_name(FuncId.get_func_ip)}#{int(FuncId.get_func_ip)}"
    if ptype == ProgType.TRACING:
        if prog.expected_attach_type not in _TRAMPOLINE_ATTACH:
            raise env.reject(Errno.ENOTSUPP, f"func {name} supported only for fentry/fexit/fmod_ret programs\n")
        return
    if ptype != ProgType.KPROBE:
        raise env.reject(Errno.ENOTSUPP, f"func {name} not supported for program type {int(ptype)}\n")


def check_helper_call(env, state, insn) -> None:
    """check_helper_call(): proto lookup, licence, argument checks, R0 and clobbers."""
    from fakekernel.verifier.mem import check_helper_mem_access
    func_id = insn.imm
    name = func_id_name(func_id)
    if func_id < 0 or func_id >= BPF_FUNC_MAX_ID:
        raise env.reject(Errno.EINVAL, f"invalid func {name}#{func_id}\n")
    fn = env.ops.get_func_proto(func_id, env.prog) if env.ops is not None else None
    if fn is None:
        raise env.reject(Errno.EINVAL, f"program of this type cannot use helper {name}#{func_id}\n")
    if not env.prog.gpl_compatible and fn.gpl_only:
        raise env.reject(Errno.EINVAL, "cannot call GPL-restricted function from non-GPL compatible program\n")
    if fn.allowed is not None and not fn.allowed(env.prog):
        raise env.reject(Errno.EINVAL, "helper call is not allowed in probe\n")
    if fn.might_sleep and not env.prog.aux.sleepable:
        raise env.reject(Errno.EINVAL, "helper call might sleep in a non-sleepable prog\n")
    bpf_map = None
    const_key = None
    mem_regno, raw_write = 0, None
    timer_map = None
    meta = CallArgMeta()
    callback_subprog = None
    for i in range(5):
        arg_type = fn.arg(i)
        regno = i + 1
        if arg_type == ArgType.DONTCARE:
            continue
        env.check_reg_arg(state, regno, src=True)
        reg = state.regs[regno]
        bt = base_type(arg_type)
        is_null = reg.is_const() and reg.const_value == 0
        if compatible_reg_types(bt) is not None:
            if not (arg_type & TypeFlag.PTR_MAYBE_NULL and is_null):
                check_reg_type(env, state, regno, arg_type)
                if arg_type & TypeFlag.OBJ_RELEASE:
                    check_release_arg_off(env, state, regno)
        if bt != ArgType.ANYTHING:
            meta.note_arg(env, state, regno, arg_type, is_null)
        if bt == ArgType.PTR_TO_CTX and reg.off != 0:
            raise env.fail(state, Errno.EACCES,
                           f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed\n")
        if bt == ArgType.PTR_TO_SPIN_LOCK:
            process_spin_lock(env, state, regno, func_id == FuncId.spin_lock)
        elif bt == ArgType.PTR_TO_TIMER:
            timer_map = process_timer_func(env, state, regno)
        if bt == ArgType.CONST_MAP_PTR:
            if timer_map is not None and reg.map is not timer_map:
                raise env.fail(state, Errno.EINVAL, f"timer pointer in R1 map_uid=0 doesn't match map "
                                                    f"pointer in R{regno} map_uid=0\n")
            bpf_map = reg.map
        elif bt in (ArgType.PTR_TO_MAP_KEY, ArgType.PTR_TO_MAP_VALUE):
            if bpf_map is None:
                raise env.fail(state, Errno.EACCES, "invalid map_ptr to access map->key\n"
                               if bt == ArgType.PTR_TO_MAP_KEY else "invalid map_ptr to access map->value\n")
            size = bpf_map.key_size if bt == ArgType.PTR_TO_MAP_KEY else bpf_map.value_size
            check_helper_mem_access(env, state, regno, size,
                                    write=bool(arg_type & TypeFlag.MEM_UNINIT))
            if bt == ArgType.PTR_TO_MAP_KEY:
                const_key = _const_stack_key(state, reg, bpf_map.key_size)
        elif bt == ArgType.PTR_TO_FUNC:
            callback_subprog = reg.subprogno
        elif bt == ArgType.PTR_TO_CONST_STR:
            from fakekernel.helpers.printf import check_reg_const_str
            check_reg_const_str(env, state, regno)
        elif bt == ArgType.PTR_TO_MEM and not arg_type & TypeFlag.MEM_FIXED_SIZE:
            mem_regno = regno
        elif bt in (ArgType.CONST_SIZE, ArgType.CONST_SIZE_OR_ZERO) and mem_regno:
            raw_write = _check_mem_size_reg(env, state, fn, mem_regno, regno, bt == ArgType.CONST_SIZE_OR_ZERO) \
                or raw_write
            mem_regno = 0
    if bpf_map is not None and func_id in _MAP_WRITE_FUNCS and \
            bpf_map.map_flags & MapFlags.RDONLY_PROG:               # record_func_map()
        raise env.fail(state, Errno.EACCES, "write into map forbidden\n")
    check_get_local_storage_flags(env, state, func_id)
    if raw_write is not None:
        from fakekernel.verifier.mem import mark_stack_raw_write
        mark_stack_raw_write(env, state, *raw_write)
    if func_id == FuncId.snprintf:
        from fakekernel.helpers.printf import check_bpf_snprintf_call
        check_bpf_snprintf_call(env, state)
    if meta.release_regno:
        meta.release(env, state, func_id)
    if func_id == FuncId.tail_call:
        check_resource_leak(env, state, False, "tail_call")
    if callback_subprog is not None:
        push_callback_calls(env, state, func_id, callback_subprog, env.insn_idx)
    if func_id in _CHANGES_PKT_DATA:
        for r in state.regs:
            if base_type(r.type) in (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META, RegType.PTR_TO_PACKET_END):
                r.__init__(RegType.SCALAR_VALUE)
        for slot in state.stack.values():
            if slot.spilled is not None and base_type(slot.spilled.type) in (
                    RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META, RegType.PTR_TO_PACKET_END):
                slot.spilled.__init__(RegType.SCALAR_VALUE)
    for regno in CALLER_SAVED_REGS:
        state.regs[regno] = Reg(RegType.NOT_INIT)
        env.mark_reg_scratched(regno)
    ret = fn.ret_type
    r0 = state.regs[0]
    if ret == RetType.INTEGER:
        state.regs[0] = Reg.unknown()
    elif ret == RetType.VOID:
        pass
    elif base_type(ret) == RetType.PTR_TO_MAP_VALUE and bpf_map is not None:
        nonnull = not ret & TypeFlag.PTR_MAYBE_NULL
        weak = False
        if func_id == FuncId.map_lookup_elem and bpf_map.map_type in _NONNULL_CONST_KEY_MAPS:
            if const_key is not None and const_key < bpf_map.max_entries:
                nonnull = True
            else:
                weak = True
        if nonnull:
            r0 = Reg.ptr(RegType.PTR_TO_MAP_VALUE, bpf_map=bpf_map)
            if getattr(bpf_map, "spin_lock_off", None) is not None:
                r0.id = env.new_id()        # a lockable value: bpf_spin_unlock matches the id
        else:
            r0 = Reg.ptr(RegType.PTR_TO_MAP_VALUE | TypeFlag.PTR_MAYBE_NULL, bpf_map=bpf_map, id_=env.new_id())
            r0.weak_null = weak
        state.regs[0] = r0
    else:
        state.regs[0] = ret_ptr_reg(env, ret, meta)
    set_ret_ref(env, state, func_id, bpf_map, meta)
    env.mark_reg_scratched(0)
    check_map_func_compatibility(env, bpf_map, func_id)
    if func_id == FuncId.get_func_ip:
        _check_get_func_ip(env)
