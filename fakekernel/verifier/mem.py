"""Memory access checks — kernel/bpf/verifier.c: check_mem_access and its per-type parts
(check_stack_read/write_fixed_off, check_ctx_access, check_map_access, check_packet_access),
check_ptr_alignment for the stack, and check_helper_mem_access for helper memory arguments.
"""
from __future__ import annotations

import attrs

from fakekernel.btf_fields import map_value_field_access
from fakekernel.helpers.proto import TypeFlag, base_type
from fakekernel.verifier.btf_access import check_ptr_to_btf_read
from fakekernel.verifier.env import (
    BPF_REG_SIZE, MAX_BPF_STACK, STACK_INVALID, STACK_MISC, STACK_SPILL, STACK_ZERO, GiveUp, StackSlot,
)
from fakekernel.verifier.regs import Reg, RegType, Tnum, reg_type_str
from fakekernel.progs.ctx import BPF_READ, BPF_WRITE
from uapi.bpf import MapFlags, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import s64

__all__ = ["AccessInfo", "check_mem_access", "check_helper_mem_access", "coerce_to_size", "mark_stack_raw_write"]

_PKT_TYPES = (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META)
_FLOW_KEYS_SIZE = ffi.sizeof("struct bpf_flow_keys")


def _insn_value_regno(env, insn_idx: int) -> int:
    """The register a store writes (its src_reg)."""
    return env.insns[insn_idx].src_reg
_SPILLABLE = (RegType.PTR_TO_MAP_VALUE, RegType.PTR_TO_STACK, RegType.PTR_TO_CTX, RegType.PTR_TO_PACKET,
              RegType.PTR_TO_PACKET_META, RegType.PTR_TO_PACKET_END, RegType.CONST_PTR_TO_MAP,
              RegType.PTR_TO_FLOW_KEYS, RegType.PTR_TO_SOCKET, RegType.PTR_TO_SOCK_COMMON,
              RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_XDP_SOCK, RegType.PTR_TO_BTF_ID, RegType.PTR_TO_BUF,
              RegType.PTR_TO_MEM, RegType.PTR_TO_FUNC, RegType.PTR_TO_MAP_KEY, RegType.PTR_TO_ARENA)
#: may_access_direct_pkt_data(): program types whose packet bytes are writable
_PKT_WRITABLE = frozenset({ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP, ProgType.LWT_XMIT,
                           ProgType.SK_SKB, ProgType.SK_MSG, ProgType.CGROUP_SOCKOPT})


@attrs.define
class AccessInfo:
    """struct bpf_insn_access_aux: what is_valid_access reports back."""

    reg_type: int = RegType.SCALAR_VALUE
    ctx_field_size: int = 0
    is_ldsx: bool = False
    verbose: object = None        # the verifier log (btf_ctx_access explains its refusals)
    btf: object = None            # PTR_TO_BTF_ID results: the pointed-to type (btf_access.BtfRef)


def coerce_to_size(reg: Reg, size: int, exact: bool = True) -> None:
    """coerce_reg_to_size(): zero-extend a scalar loaded with a narrow size."""
    if size >= BPF_REG_SIZE:
        return
    reg.var_off = reg.var_off.cast(size)
    if reg.var_off.is_const():
        reg.set_const_bounds(reg.var_off.value)
    else:
        reg.set_unknown_bounds_keep_tnum()
        reg.sync()
    reg.exact = reg.exact and exact


def _stack_idx(byte_off: int) -> tuple[int, int]:
    slot = -byte_off - 1
    return slot // BPF_REG_SIZE, slot % BPF_REG_SIZE


def _fixed_off(env, state, reg: Reg) -> int:
    if not reg.var_off.is_const() or reg.type == RegType.UNTRACKED:
        raise GiveUp("variable pointer offset")
    return reg.off + s64(reg.var_off.value)


def _check_stack_bounds(env, state, regno: int, off: int, size: int, what: str) -> None:
    if off < -MAX_BPF_STACK or off + size > 0:
        raise env.fail(state, Errno.EACCES, f"invalid{what} stack R{regno} off={off} size={size}\n")


def _frame(state, reg: Reg):
    """The bpf_func_state a PTR_TO_STACK register points into (its frameno)."""
    return state.frame[reg.frameno]


def _stack_write(env, state, off: int, size: int, value: Reg | None, imm: int | None, fs=None) -> None:
    """check_stack_write_fixed_off() into frame ``fs`` (the current one by default).

    ``imm`` is the BPF_ST immediate; value and imm both None is a helper's raw write."""
    fs = fs if fs is not None else state.cur
    spi, idx = _stack_idx(off)
    env.mark_stack_slot_scratched(spi)
    fs.allocated_stack = max(fs.allocated_stack, (spi + 1) * BPF_REG_SIZE)
    slot = fs.stack.setdefault(spi, StackSlot())
    aligned = off % BPF_REG_SIZE == 0
    if value is not None and value.type == RegType.UNTRACKED:
        raise GiveUp("spill of an untracked value")
    if value is not None and aligned and value.type == RegType.SCALAR_VALUE and env.bpf_capable:
        if value.umax.bit_length() <= 8 * size and not value.id and not value.var_off.is_const() and \
                any(value is r for r in state.regs):
            value.id = env.new_id()     # assign_scalar_id_before_mov(): the spill and the register are linked
        spill = value.copy()
        if spill.umax.bit_length() > 8 * size:
            spill.id = 0
        _save_spill(slot, spill, size)
        return
    if value is None and imm is not None and aligned and env.bpf_capable:
        _save_spill(slot, Reg.const(imm), size)
        return
    if value is not None and base_type(value.type) in _SPILLABLE:
        if fs is not state.cur and value.type == RegType.PTR_TO_STACK:
            raise env.fail(state, Errno.EINVAL, "cannot spill pointers to stack into stack frame of the caller\n")
        if size != BPF_REG_SIZE:
            raise env.fail(state, Errno.EACCES, "invalid size of register spill\n")
        _save_spill(slot, value.copy(), size)
        return
    if slot.slot_type[BPF_REG_SIZE - 1] == STACK_SPILL or STACK_SPILL in slot.slot_type:
        slot.slot_type = [STACK_MISC if t == STACK_SPILL else t for t in slot.slot_type]
        slot.spilled = None
    zero = (value is not None and value.is_const() and value.const_value == 0) or (value is None and imm == 0)
    for i in range(size):
        slot.slot_type[(idx - i) % BPF_REG_SIZE] = STACK_ZERO if zero else STACK_MISC


def _save_spill(slot: StackSlot, reg: Reg, size: int) -> None:
    """save_register_state()."""
    slot.spilled = reg
    for i in range(BPF_REG_SIZE, BPF_REG_SIZE - size, -1):
        slot.slot_type[i - 1] = STACK_SPILL


def _stack_read(env, state, off: int, size: int, fs=None) -> Reg:
    """check_stack_read_fixed_off(): the value a load from frame ``fs``'s stack produces."""
    fs = fs if fs is not None else state.cur
    spi, idx = _stack_idx(off)
    env.mark_stack_slot_scratched(spi)
    slot = fs.stack.get(spi)
    stype = slot.slot_type if slot is not None else [STACK_INVALID] * BPF_REG_SIZE
    if stype[BPF_REG_SIZE - 1] == STACK_SPILL and slot.spilled is not None:
        spilled = slot.spilled
        spill_size = 1
        while spill_size < BPF_REG_SIZE and stype[BPF_REG_SIZE - 1 - spill_size] == STACK_SPILL:
            spill_size += 1
        if size == BPF_REG_SIZE and spill_size == BPF_REG_SIZE:
            return spilled.copy()
        if spilled.type != RegType.SCALAR_VALUE:
            raise env.fail(state, Errno.EACCES, "invalid size of register fill\n")
        if size <= spill_size and off % BPF_REG_SIZE == 0:
            r = spilled.copy()
            if r.umax.bit_length() > 8 * size:
                r.id = 0
            return r
    zero_cnt = spill_cnt = 0
    if slot is None and not env.allow_uninit_stack:
        raise env.fail(state, Errno.EACCES, f"invalid read from stack off {off}+0 size {size}\n")
    for i in range(size):
        t = stype[(idx - i) % BPF_REG_SIZE]
        if t == STACK_SPILL:
            spill_cnt += 1
        elif t == STACK_ZERO:
            zero_cnt += 1
        elif t == STACK_INVALID and not env.allow_uninit_stack:
            raise env.fail(state, Errno.EACCES, f"invalid read from stack off {off}+{i} size {size}\n")
    if zero_cnt == size:
        return Reg.const(0)
    if spill_cnt == size and slot.spilled is not None and slot.spilled.is_const() and slot.spilled.const_value == 0:
        return Reg.const(0)
    return Reg.unknown()


#: socket pointers a ctx field may hold (a NULL check makes them usable)
_SOCK_PTRS = (RegType.PTR_TO_SOCKET, RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_TCP_SOCK)


def check_mem_access(env, state, insn_idx: int, regno: int, off: int, size: int, write: bool,
                     value: Reg | None = None, imm: int | None = None, is_ldsx: bool = False) -> Reg | None:
    """check_mem_access(): validate ``*(size *)(R<regno> + off)``; a read returns the loaded value
    (a narrow scalar load zero-extended as coerce_reg_to_size() does)."""
    r = _check_mem_access(env, state, insn_idx, regno, off, size, write, value, imm, is_ldsx)
    if r is not None and r.type == RegType.SCALAR_VALUE and size < BPF_REG_SIZE:
        if is_ldsx:
            return Reg.unknown(exact=False)
        coerce_to_size(r, size, exact=r.exact)
    return r


def _check_mem_access(env, state, insn_idx, regno, off, size, write, value, imm, is_ldsx):
    reg = state.regs[regno]
    t = reg.type
    aux = env.aux[insn_idx]
    if t == RegType.UNTRACKED:
        raise GiveUp("access through an untracked pointer")
    if t == RegType.PTR_TO_STACK:
        total = _fixed_off(env, state, reg)
        ip = reg.var_off.add(Tnum.const(reg.off + off))
        if ip.value % size:
            raise env.fail(state, Errno.EACCES, f"misaligned stack access off {reg.var_off.strn()}+{reg.off}+{off} "
                                                f"size {size}\n")
        total += off
        _check_stack_bounds(env, state, regno, total, size, " write to" if write else " read from")
        env.update_stack_depth(state, reg.frameno, -total)
        if write:
            _stack_write(env, state, total, size, value, imm, _frame(state, reg))
            return None
        return _stack_read(env, state, total, size, _frame(state, reg))
    if t == RegType.PTR_TO_CTX:
        if reg.off or not reg.var_off.is_const() or reg.var_off.value:
            if not reg.var_off.is_const():
                raise GiveUp("variable ctx offset")
            raise env.fail(state, Errno.EACCES,
                           f"dereference of modified ctx ptr R{regno} off={reg.off + s64(reg.var_off.value)} disallowed\n")
        info = AccessInfo(is_ldsx=is_ldsx, verbose=env.verbose)
        ok = env.ops is not None and env.ops.is_valid_access(off, size, BPF_WRITE if write else BPF_READ,
                                                             env.prog, info)
        if not ok:
            raise env.fail(state, Errno.EACCES, f"invalid bpf_context access off={off} size={size}\n")
        aux.ptr_type = RegType.PTR_TO_CTX
        # check_ctx_access(): remember the last ctx byte reached (raw_tp attach / test-run check it)
        env.prog.aux.max_ctx_offset = max(env.prog.aux.max_ctx_offset, off + size)
        aux.ctx_field_size = info.ctx_field_size
        if write:
            return None
        if info.reg_type == RegType.SCALAR_VALUE:
            r = Reg.unknown()
            coerce_to_size(r, size)
            return r
        r = Reg.ptr(info.reg_type)
        if info.reg_type & TypeFlag.PTR_MAYBE_NULL:
            r.id = env.new_id()
        if base_type(info.reg_type) == RegType.PTR_TO_BTF_ID and info.btf is not None:
            r.btf = info.btf
        elif base_type(info.reg_type) not in (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META,
                                              RegType.PTR_TO_PACKET_END, RegType.PTR_TO_FLOW_KEYS,
                                              RegType.PTR_TO_TP_BUFFER, RegType.PTR_TO_BUF) \
                and not (info.reg_type & TypeFlag.PTR_MAYBE_NULL and base_type(info.reg_type) in _SOCK_PTRS):
            r.type = RegType.UNTRACKED      # a maybe-NULL socket pointer stays typed: it must be checked
        return r
    if t == RegType.PTR_TO_MAP_VALUE:
        total = _fixed_off(env, state, reg) + off
        m = reg.map
        if write and m.map_flags & MapFlags.RDONLY_PROG:
            raise env.fail(state, Errno.EACCES, f"write into map forbidden, value_size={m.value_size} "
                                                f"off={total} size={size}\n")
        if total < 0 or total + size > m.value_size:
            env.verbose(f"invalid access to map value, value_size={m.value_size} off={total} size={size}\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} min value is outside of the allowed memory range\n")
        bad = map_value_field_access(getattr(m, "record", None), total, size, direct=True)
        if bad is not None:
            raise env.fail(state, Errno.EACCES, bad)
        aux.ptr_type = RegType.PTR_TO_MAP_VALUE
        if write:
            return None
        frozen_ro = bool(m.map_flags & MapFlags.RDONLY_PROG) and getattr(m, "frozen", False)
        r = Reg.unknown(exact=not frozen_ro)
        coerce_to_size(r, size, exact=not frozen_ro)
        return r
    if t == RegType.PTR_TO_MAP_KEY:
        if write:
            raise env.fail(state, Errno.EACCES, f"write to change key R{regno} not allowed\n")
        total = _fixed_off(env, state, reg) + off
        if total < 0 or total + size > reg.map.key_size:
            env.verbose(f"invalid access to map key, key_size={reg.map.key_size} off={total} size={size}\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} min value is outside of the allowed memory range\n")
        aux.ptr_type = t
        r = Reg.unknown()
        coerce_to_size(r, size)
        return r
    if t == RegType.PTR_TO_MEM | TypeFlag.MEM_RINGBUF:
        # check_mem_region_access() for the memory a helper returned (its mem_size)
        if write and value is not None and value.type not in (RegType.SCALAR_VALUE, RegType.UNTRACKED) \
                and not env.allow_ptr_leaks:
            raise env.fail(state, Errno.EACCES, f"R{_insn_value_regno(env, insn_idx)} leaks addr into mem\n")
        total = _fixed_off(env, state, reg) + off
        if total < 0 or total + size > reg.mem_size:
            env.verbose(f"invalid access to memory, mem_size={reg.mem_size} off={total} size={size}\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} min value is outside of the allowed memory range\n")
        aux.ptr_type = RegType.PTR_TO_MEM
        if write:
            return None
        r = Reg.unknown()
        coerce_to_size(r, size)
        return r
    if t == RegType.PTR_TO_FLOW_KEYS:
        total = _fixed_off(env, state, reg) + off
        if write and value is not None and value.type not in (RegType.SCALAR_VALUE, RegType.UNTRACKED) \
                and not env.allow_ptr_leaks:
            raise env.fail(state, Errno.EACCES, f"R{_insn_value_regno(env, insn_idx)} leaks addr into flow keys\n")
        if total < 0 or total + size > _FLOW_KEYS_SIZE:
            raise env.fail(state, Errno.EACCES, f"invalid access to flow keys off={total} size={size}\n")
        aux.ptr_type = t
        if write:
            return None
        return Reg.unknown()
    if t == RegType.PTR_TO_TP_BUFFER:
        # check_tp_buffer_access(): constant offsets only; remember the last byte reached
        total = reg.off + off
        if total < 0:
            raise env.fail(state, Errno.EACCES, f"R{regno} invalid tracepoint buffer access: off={total}, "
                                                f"size={size}\n")
        if not reg.var_off.is_const() or reg.var_off.value:
            raise GiveUp("variable tracepoint buffer offset")
        env.prog.aux.max_tp_access = max(env.prog.aux.max_tp_access, total + size)
        aux.ptr_type = t
        return None if write else Reg.unknown()
    if t in _PKT_TYPES:
        if write and env.prog.type not in _PKT_WRITABLE:
            raise env.fail(state, Errno.EACCES, "cannot write into packet\n")
        total = _fixed_off(env, state, reg) + off
        if reg.range < 0:
            raise env.fail(state, Errno.EINVAL, f"R{regno} offset is outside of the packet\n")
        if total < 0 or total + size > reg.range:
            env.verbose(f"invalid access to packet, off={total} size={size}, R{regno}(id={reg.id},off={total},"
                        f"r={reg.range})\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} offset is outside of the packet\n")
        aux.ptr_type = t
        if write:
            return None
        r = Reg.unknown()
        coerce_to_size(r, size)
        return r
    if base_type(t) == RegType.PTR_TO_BTF_ID and not t & TypeFlag.PTR_MAYBE_NULL and reg.btf is not None:
        return check_ptr_to_btf_read(env, state, reg, regno, off, size, write)
    if t in (RegType.SCALAR_VALUE, RegType.PTR_TO_PACKET_END, RegType.CONST_PTR_TO_MAP) or \
            t & TypeFlag.PTR_MAYBE_NULL:
        if t & TypeFlag.PTR_MAYBE_NULL and reg.weak_null:
            raise GiveUp("the kernel may know this lookup cannot fail")
        raise env.fail(state, Errno.EACCES, f"R{regno} invalid mem access '{reg_type_str(t)}'\n")
    raise GiveUp(f"access through {reg_type_str(t)} is not modelled")


def check_helper_mem_access(env, state, regno: int, size: int, write: bool) -> None:
    """check_helper_mem_access() for a fixed size (map keys and values)."""
    reg = state.regs[regno]
    t = reg.type
    if t == RegType.PTR_TO_STACK:
        start = _fixed_off(env, state, reg)
        if start < -MAX_BPF_STACK or start + size > 0:
            raise env.fail(state, Errno.EACCES, f"invalid indirect access to stack R{regno} off={start} "
                                                f"size={size}\n")
        env.update_stack_depth(state, reg.frameno, -start)
        if write:
            return
        for b in range(start, start + size):
            spi, idx = _stack_idx(b)
            slot = _frame(state, reg).stack.get(spi)
            if (slot is None or slot.slot_type[idx] == STACK_INVALID) and not env.allow_uninit_stack:
                raise env.fail(state, Errno.EACCES, f"invalid indirect read from stack R{regno} off "
                                                    f"{start}+{b - start} size {size}\n")
        return
    if t == RegType.PTR_TO_MAP_VALUE:
        total = _fixed_off(env, state, reg)
        if total < 0 or total + size > reg.map.value_size:
            env.verbose(f"invalid access to map value, value_size={reg.map.value_size} off={total} size={size}\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} min value is outside of the allowed memory range\n")
        bad = map_value_field_access(getattr(reg.map, "record", None), total, size, direct=False)
        if bad is not None:
            raise env.fail(state, Errno.EACCES, bad)
        return
    if t in _PKT_TYPES:
        total = _fixed_off(env, state, reg)
        if total < 0 or total + size > reg.range:
            env.verbose(f"invalid access to packet, off={total} size={size}, R{regno}(id={reg.id},off={total},"
                        f"r={reg.range})\n")
            raise env.fail(state, Errno.EACCES, f"R{regno} offset is outside of the packet\n")
        return
    raise GiveUp("helper memory argument not modelled")


def mark_stack_raw_write(env, state, regno: int, size: int) -> None:
    """After a helper wrote ``size`` bytes at a stack pointer: those bytes are STACK_MISC."""
    reg = state.regs[regno]
    start = _fixed_off(env, state, reg)
    for i in range(size):
        _stack_write(env, state, start + i, 1, None, None, _frame(state, reg))
