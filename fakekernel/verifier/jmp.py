"""Conditional jumps — kernel/bpf/verifier.c: check_cond_jmp_op, mark_ptr_or_null_regs,
try_match_pkt_pointers, find_good_pkt_pointers, sync_linked_regs.

Both outcomes that are possible are walked: the fall-through continues, the taken branch is
pushed (the kernel's order); each side learns what the comparison proves.
"""
from __future__ import annotations

from fakekernel.helpers.proto import TypeFlag, base_type
from fakekernel.verifier.env import VerifierState
from fakekernel.verifier.refs import release_reference_nomark
from fakekernel.verifier.regs import Reg, RegType
from fakekernel.verifier.scalar import FLIP, is_branch_taken, refine_const_branch, refine_const_branch32
from uapi.bpf import BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT, BPF_JMP32, BPF_JNE, BPF_JSET, BPF_X
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_OP, BPF_SRC, u32, u64

__all__ = ["check_cond_jmp_op"]

#: reg_not_null(): pointer types a comparison with NULL can decide
_NEVER_NULL = (RegType.PTR_TO_SOCKET, RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_MAP_VALUE, RegType.PTR_TO_MAP_KEY,
               RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_MEM)

def _mark_ptr_or_null(state, reg_id: int, is_null: bool, ref_obj_id: int = 0) -> None:
    """mark_ptr_or_null_regs(): every copy of the checked pointer becomes NULL or non-NULL."""
    def fix(r: Reg) -> Reg:
        if r.id != reg_id or not r.type & TypeFlag.PTR_MAYBE_NULL:
            return r
        if is_null:
            return Reg.const(0)
        n = r.copy()
        n.type = r.type & ~TypeFlag.PTR_MAYBE_NULL
        if not (n.type == RegType.PTR_TO_MAP_VALUE and getattr(n.map, "spin_lock_off", None) is not None):
            n.id = 0            # reg_may_point_to_spin_lock(): a lockable value keeps its id
        n.weak_null = False
        inner = getattr(r.map, "inner_map_meta", None) if n.type == RegType.PTR_TO_MAP_VALUE else None
        if inner is not None:       # a map-of-maps lookup yields the inner map (its template)
            n.type = RegType.CONST_PTR_TO_MAP
            n.map = inner
        return n
    if is_null and ref_obj_id and ref_obj_id == reg_id:
        release_reference_nomark(state, reg_id)     # the NULL branch holds no reference
    for f in state.frame:
        f.regs = [fix(r) for r in f.regs]
        for slot in f.stack.values():
            if slot.spilled is not None:
                slot.spilled = fix(slot.spilled)


MAX_PACKET_OFF = 0xFFFF
BEYOND_PKT_END = -1
AT_PKT_END = -2


def _find_good_pkt_pointers(state, dst: Reg, right_open: bool) -> None:
    """find_good_pkt_pointers(): packet pointers with dst's id may now be read up to dst.off."""
    if dst.off < 0 or (dst.off == 0 and right_open):
        return
    if dst.umax > MAX_PACKET_OFF or dst.umax + dst.off > MAX_PACKET_OFF:
        return
    rng = dst.off + (1 if right_open else 0)
    for r in list(state.regs) + [s.spilled for s in state.stack.values() if s.spilled is not None]:
        if r.type == dst.type and r.id == dst.id:
            r.range = max(r.range, rng)


def _mark_pkt_end(state, regno: int, beyond: bool) -> None:
    reg = state.regs[regno]
    if reg.type == RegType.PTR_TO_PACKET:
        reg.range = BEYOND_PKT_END if beyond else AT_PKT_END


def _sync_linked(state, reg: Reg) -> None:
    if not reg.id or reg.type != RegType.SCALAR_VALUE:
        return
    for i, r in enumerate(state.regs):
        if r is not reg and r.type == RegType.SCALAR_VALUE and r.id == reg.id:
            state.regs[i] = reg.copy()
    for slot in state.stack.values():
        if slot.spilled is not None and slot.spilled is not reg and slot.spilled.type == RegType.SCALAR_VALUE \
                and slot.spilled.id == reg.id:
            slot.spilled = reg.copy()


def check_cond_jmp_op(env, state, insn) -> int | None:
    """Returns the next insn index; pushes the other branch when both are possible."""
    cls, op = BPF_CLASS(insn.code), BPF_OP(insn.code)
    jmp32 = cls == BPF_JMP32
    if op not in FLIP:
        raise env.fail(state, Errno.EINVAL, f"invalid BPF_JMP/JMP32 opcode {op:x}\n")
    if BPF_SRC(insn.code) == BPF_X:
        if insn.imm:
            raise env.fail(state, Errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields\n")
        env.check_reg_arg(state, insn.src_reg, src=True)
        src = state.regs[insn.src_reg]
    else:
        if insn.src_reg:
            raise env.fail(state, Errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields\n")
        src = Reg.const(u64(insn.imm) if not jmp32 else u32(insn.imm))
    env.check_reg_arg(state, insn.dst_reg, src=True)
    dst = state.regs[insn.dst_reg]
    idx = env.insn_idx
    target = idx + insn.off + 1
    if dst.type == RegType.UNTRACKED or src.type == RegType.UNTRACKED:
        sure, taken = False, -1
    elif dst.type == RegType.SCALAR_VALUE and src.type == RegType.SCALAR_VALUE:
        taken = is_branch_taken(op, dst, src, jmp32)
        sure = dst.exact and src.exact
        if taken == -1 and not (src.is_const() or dst.is_const()):
            sure = False
        if taken == -1 and op == BPF_JSET:
            sure = False
    else:
        sure, taken = True, -1
        ptr, other = (dst, src) if dst.type != RegType.SCALAR_VALUE else (src, dst)
        if other.type == RegType.SCALAR_VALUE and other.is_const() and other.const_value == 0 \
                and op in (BPF_JEQ, BPF_JNE) and not jmp32 and not ptr.type & TypeFlag.PTR_MAYBE_NULL \
                and (base_type(ptr.type) in _NEVER_NULL or (base_type(ptr.type) == RegType.PTR_TO_BTF_ID
                                                           and ptr.type & TypeFlag.PTR_TRUSTED)):
            taken = 0 if op == BPF_JEQ else 1
    if taken == 1:
        state.sure = state.sure and sure
        return target
    if taken == 0:
        state.sure = state.sure and sure
        return idx + 1
    other = state.copy()
    other.sure = state.sure = state.sure and sure
    if state.parent is not None:
        state.parent.branches += 1
    env.head.append((other, target, idx, env.log.end_pos))
    _refine_branches(env, insn, op, jmp32, state, other)
    return idx + 1


def _refine_branches(env, insn, op: int, jmp32: bool, fall: VerifierState, taken: VerifierState) -> None:
    d, s = insn.dst_reg, insn.src_reg
    is_x = BPF_SRC(insn.code) == BPF_X
    if is_x and not jmp32 and _try_match_pkt_pointers(insn, op, fall, taken):
        return
    for st, took in ((fall, False), (taken, True)):
        dst = st.regs[d]
        src = st.regs[s] if is_x else Reg.const(u64(insn.imm))
        if dst.type & TypeFlag.PTR_MAYBE_NULL and not jmp32 and op in (BPF_JEQ, BPF_JNE) \
                and src.type == RegType.SCALAR_VALUE and src.is_const() and src.const_value == 0:
            _mark_ptr_or_null(st, dst.id, (op == BPF_JEQ) == took, dst.ref_obj_id)
            continue
        if dst.type != RegType.SCALAR_VALUE:
            continue
        if src.type == RegType.SCALAR_VALUE and src.is_const() and not dst.is_const():
            r = dst.copy()
            refine = refine_const_branch32 if jmp32 else refine_const_branch
            if refine(r, op, src.const_value, took):
                st.regs[d] = r
                _sync_linked(st, r)
            else:
                st.sure = False


def _is_init_pkt(reg: Reg) -> bool:
    return reg.type == RegType.PTR_TO_PACKET and reg.off == 0 and reg.var_off == (0, 0)


def _try_match_pkt_pointers(insn, op: int, fall: VerifierState, taken: VerifierState) -> bool:
    """try_match_pkt_pointers(): what a pkt vs pkt_end (or meta vs data) test proves on each side."""
    d, s = insn.dst_reg, insn.src_reg
    dst, src = fall.regs[d], fall.regs[s]
    fwd = (dst.type == RegType.PTR_TO_PACKET and src.type == RegType.PTR_TO_PACKET_END) or \
        (dst.type == RegType.PTR_TO_PACKET_META and _is_init_pkt(src))
    rev = (dst.type == RegType.PTR_TO_PACKET_END and src.type == RegType.PTR_TO_PACKET) or \
        (_is_init_pkt(dst) and src.type == RegType.PTR_TO_PACKET_META)
    if not (fwd or rev) or op not in (BPF_JGT, BPF_JLT, BPF_JGE, BPF_JLE):
        return False
    # (state proven in-range, the pointer, right-open range, state to mark, regno, beyond end)
    plan = {
        (BPF_JGT, True): (fall, d, False, taken, d, True),
        (BPF_JGT, False): (taken, s, True, fall, s, False),
        (BPF_JLT, True): (taken, d, True, fall, d, False),
        (BPF_JLT, False): (fall, s, False, taken, s, True),
        (BPF_JGE, True): (fall, d, True, taken, d, False),
        (BPF_JGE, False): (taken, s, False, fall, s, True),
        (BPF_JLE, True): (taken, d, False, fall, d, True),
        (BPF_JLE, False): (fall, s, True, taken, s, False),
    }[(op, fwd)]
    good_state, good_reg, right_open, end_state, end_reg, beyond = plan
    _find_good_pkt_pointers(good_state, good_state.regs[good_reg].copy(), right_open)
    _mark_pkt_end(end_state, end_reg, beyond)
    return True
