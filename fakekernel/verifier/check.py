"""The main verification walk — kernel/bpf/verifier.c do_check, check_cond_jmp_op (with
try_match_pkt_pointers, mark_ptr_or_null_regs), check_ld_imm, check_ld_abs, check_atomic,
check_return_code, push/pop_stack.

Paths are explored depth first in the kernel's order (fall-through first, the taken branch
pushed), and the level-1 log is written with the kernel's resets, so a rejection's log is the
trace of the failing path exactly as Linux prints it.
"""
from __future__ import annotations

from fakekernel.helpers.proto import TypeFlag, base_type
from fakekernel.verifier.alu import check_alu_op
from fakekernel.verifier.calls import check_helper_call
from fakekernel.verifier.env import BPF_REG_FP, BPF_REG_SIZE, GiveUp, VerifierState
from fakekernel.verifier.log import BPF_LOG_LEVEL, BPF_LOG_LEVEL2
from fakekernel.verifier.mem import check_mem_access, coerce_to_size
from fakekernel.verifier.regs import Reg, RegType, reg_type_str
from fakekernel.verifier.scalar import FLIP, is_branch_taken, refine_const_branch, refine_const_branch32
from fakekernel.verifier.states import is_state_visited, update_branch_counts
from uapi.asm import print_bpf_insn
from uapi.bpf import (
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ATOMIC, BPF_CALL, BPF_CMPXCHG, BPF_DW, BPF_EXIT,
    BPF_FETCH, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT, BPF_JMP, BPF_JMP32,
    BPF_JNE, BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_MEM, BPF_MEMSX, BPF_OR, BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_ST, BPF_STX, BPF_W, BPF_X, BPF_XCHG,
    BPF_XOR, FuncId, MapType, ProgType,
)
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, BPF_SIZE_BYTES, BPF_SRC, u32, u64

__all__ = ["do_check"]

_ATOMIC_OPS = (BPF_ADD, BPF_ADD | BPF_FETCH, BPF_AND, BPF_AND | BPF_FETCH, BPF_OR, BPF_OR | BPF_FETCH,
               BPF_XOR, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG)
_PKT = (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META)
#: reg_not_null(): pointer types a comparison with NULL can decide
_NEVER_NULL = (RegType.PTR_TO_SOCKET, RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_MAP_VALUE, RegType.PTR_TO_MAP_KEY,
               RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_MEM)
#: may_access_skb(): LD_ABS/LD_IND users
_LD_ABS_TYPES = (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT)


# ---------------------------------------------------------------- logging

def _print_verifier_state(env, state, print_all: bool) -> str:
    parts = []
    for i, reg in enumerate(state.regs):
        if reg.type == RegType.NOT_INIT:
            continue
        if not print_all and not env.all_scratched and i not in env.scratched_regs:
            continue
        parts.append(f" R{i}={reg.state_str()}")
    for spi in range(state.allocated_stack // BPF_REG_SIZE):
        if not print_all and not env.all_scratched and spi not in env.scratched_stack:
            continue
        slot = state.stack.get(spi)
        if slot is None or all(t == "?" for t in slot.slot_type):
            continue
        types = "".join(slot.slot_type)
        if slot.slot_type[BPF_REG_SIZE - 1] == "r" and slot.spilled is not None:
            parts.append(f" fp{(-spi - 1) * BPF_REG_SIZE}={types[:types.index('r')]}{slot.spilled.state_str()}")
        else:
            parts.append(f" fp{(-spi - 1) * BPF_REG_SIZE}={types}")
    if state.active_lock is not None and state.active_lock[1]:     # the lock is a reference
        parts.append(f" refs={state.active_lock[1]}")
    if not print_all:
        env.clean()
    return "".join(parts) + "\n"


def _print_insn_state(env, state) -> None:
    """print_insn_state(): annotate the previous insn line, or start a "N:" state line."""
    log = env.log
    if env.prev_log_pos and env.prev_log_pos == log.end_pos:
        log.reset(env.prev_log_pos - 1)
        env.verbose(" " * log.alignment(env.prev_insn_print_pos) + ";")
    else:
        env.verbose(f"{env.insn_idx}:")
    env.verbose(_print_verifier_state(env, state, False))


def _insn_text(env, idx: int) -> str:
    insns = env.insns
    nxt = insns[idx + 1] if idx + 1 < len(insns) else None
    return print_bpf_insn(insns[idx], nxt, allow_ptr_leaks=env.allow_ptr_leaks)


# ---------------------------------------------------------------- jumps

def _mark_ptr_or_null(state, reg_id: int, is_null: bool) -> None:
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
    state.regs = [fix(r) for r in state.regs]
    for slot in state.stack.values():
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


def _check_cond_jmp_op(env, state, insn) -> int | None:
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
            _mark_ptr_or_null(st, dst.id, is_null=(op == BPF_JEQ) == took)
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


# ---------------------------------------------------------------- other classes

def _check_ld_imm(env, state, insn, idx: int) -> None:
    if BPF_SIZE(insn.code) != BPF_DW:
        raise env.fail(state, Errno.EINVAL, "invalid BPF_LD_IMM insn\n")
    if insn.off != 0:
        raise env.fail(state, Errno.EINVAL, "BPF_LD_IMM64 uses reserved fields\n")
    env.check_reg_arg(state, insn.dst_reg, src=False)
    nxt = env.insns[idx + 1]
    imm = u32(insn.imm) | (u32(nxt.imm) << 32)
    if insn.src_reg == 0:
        state.regs[insn.dst_reg] = Reg.const(imm)
        return
    aux = env.aux[idx]
    bpf_map = env.used_maps[aux.map_index] if aux.map_index >= 0 else None
    if insn.src_reg == BPF_PSEUDO_MAP_FD and bpf_map is not None:
        state.regs[insn.dst_reg] = Reg.ptr(RegType.CONST_PTR_TO_MAP, bpf_map=bpf_map)
    elif insn.src_reg == BPF_PSEUDO_MAP_VALUE and bpf_map is not None and bpf_map.map_type == MapType.ARENA:
        state.regs[insn.dst_reg] = Reg.unknown()        # an arena's user address: a scalar
    elif insn.src_reg == BPF_PSEUDO_MAP_VALUE and bpf_map is not None:
        state.regs[insn.dst_reg] = Reg.ptr(RegType.PTR_TO_MAP_VALUE, off=aux.map_off, bpf_map=bpf_map)
    else:
        raise GiveUp("ld_imm64 source not modelled")


def _check_ld_abs(env, state, insn) -> None:
    if env.prog.type not in _LD_ABS_TYPES:
        raise env.fail(state, Errno.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type\n")
    mode = BPF_MODE(insn.code)
    if insn.dst_reg or insn.off or BPF_SIZE(insn.code) == BPF_DW or (mode == BPF_ABS and insn.src_reg):
        raise env.fail(state, Errno.EINVAL, "BPF_LD_[ABS|IND] uses reserved fields\n")
    env.check_reg_arg(state, 6, src=True)
    if mode == BPF_IND:
        env.check_reg_arg(state, insn.src_reg, src=True)
    if state.regs[6].type != RegType.PTR_TO_CTX:
        if state.regs[6].type == RegType.UNTRACKED:
            raise GiveUp("LD_ABS with an untracked R6")
        raise env.fail(state, Errno.EINVAL, "at the time of BPF_LD_ABS|IND R6 != pointer to skb\n")
    for regno in (0, 1, 2, 3, 4, 5):
        state.regs[regno] = Reg(RegType.NOT_INIT)
        env.mark_reg_scratched(regno)
    state.regs[0] = Reg.unknown()


def _check_atomic(env, state, insn, idx: int) -> None:
    if insn.imm not in _ATOMIC_OPS:
        raise GiveUp("atomic op not modelled")
    size = BPF_SIZE(insn.code)
    if size not in (BPF_W, BPF_DW):
        raise env.fail(state, Errno.EINVAL, "invalid atomic operand size\n")
    env.check_reg_arg(state, insn.src_reg, src=True)
    env.check_reg_arg(state, insn.dst_reg, src=True)
    if insn.imm == BPF_CMPXCHG:
        env.check_reg_arg(state, 0, src=True)
    dst = state.regs[insn.dst_reg]
    if base_type(dst.type) in (RegType.PTR_TO_CTX,) + _PKT:
        raise env.fail(state, Errno.EACCES, f"BPF_ATOMIC stores into R{insn.dst_reg} "
                                            f"{reg_type_str(dst.type)} is not allowed\n")
    nbytes = BPF_SIZE_BYTES[size]
    check_mem_access(env, state, idx, insn.dst_reg, insn.off, nbytes, write=False)
    check_mem_access(env, state, idx, insn.dst_reg, insn.off, nbytes, write=True, value=Reg.unknown())
    if insn.imm == BPF_CMPXCHG:
        state.regs[0] = Reg.unknown()
    elif insn.imm & BPF_FETCH:
        r = Reg.unknown()
        coerce_to_size(r, nbytes)
        state.regs[insn.src_reg] = r


def _check_return_code(env, state) -> None:
    env.check_reg_arg(state, 0, src=True)
    get_range = getattr(env.ops, "get_ret_range", None) if env.ops is not None else None
    if get_range is None:
        return
    rng = get_range(env.prog)
    if rng is None:                   # this attach type may return anything
        return
    lo, hi = rng
    r0 = state.regs[0]
    if r0.type == RegType.UNTRACKED or (r0.type == RegType.SCALAR_VALUE and not r0.exact):
        raise GiveUp("return value not modelled")
    if r0.type != RegType.SCALAR_VALUE:
        raise env.fail(state, Errno.EINVAL, f"At program exit the register R0 is not a known value "
                                            f"({reg_type_str(r0.type)})\n")
    if r0.smin < lo or r0.smax > hi:
        raise env.fail(state, Errno.EINVAL, f"At program exit the register R0 has smin={r0.smin} smax={r0.smax} "
                                            f"should have been in [{lo}, {hi}]\n")


# ---------------------------------------------------------------- do_check

def _init_state() -> VerifierState:
    st = VerifierState()
    st.regs[1] = Reg.ptr(RegType.PTR_TO_CTX)
    st.regs[BPF_REG_FP] = Reg.ptr(RegType.PTR_TO_STACK)
    return st


def do_check(env) -> None:
    """do_check_common() + do_check() for the main program."""
    level = env.log.level
    pop_log = not level & BPF_LOG_LEVEL2
    state = _init_state()
    env.mark_all_scratched()
    insns = env.insns
    do_print_state = False
    env.insn_idx, prev_idx = 0, -1
    while True:
        idx = env.insn_idx
        insn = insns[idx]
        cls = BPF_CLASS(insn.code)
        env.insn_processed += 1
        if env.insn_processed > env.budget:
            raise GiveUp("exploration budget exhausted")
        pruned = False
        if env.aux[idx].prune_point:
            pruned = is_state_visited(env, state, idx)
        if pruned:
            if level & BPF_LOG_LEVEL:
                if do_print_state:
                    env.verbose(f"\nfrom {prev_idx} to {idx}: safe\n")
                else:
                    env.verbose(f"{idx}: safe\n")
            nxt = _exit_path(env, state, pop_log)
        else:
            if level & BPF_LOG_LEVEL2 and do_print_state:
                env.verbose(f"\nfrom {prev_idx} to {idx}:")
                env.verbose(_print_verifier_state(env, state, True))
                do_print_state = False
            if level & BPF_LOG_LEVEL:
                if env.state_scratched():
                    _print_insn_state(env, state)
                env.prev_log_pos = env.log.end_pos
                env.verbose(f"{idx}: {_insn_text(env, idx)}\n")
                env.prev_insn_print_pos = env.log.end_pos - env.prev_log_pos
                env.prev_log_pos = env.log.end_pos
            env.aux[idx].seen = True
            prev_idx = idx
            nxt = _step(env, state, insn, cls, idx)
            if nxt == "exit":
                nxt = _exit_path(env, state, pop_log)
            else:
                env.insn_idx = nxt
                # 6.18 annotates an insn with the registers it touched right after it ran
                if level & BPF_LOG_LEVEL and env.state_scratched():
                    _print_insn_state(env, state)
                continue
        if nxt is None:
            return
        state, env.insn_idx, prev_idx = nxt
        do_print_state = True


def _exit_path(env, state, pop_log: bool):
    """process_bpf_exit: close the branch and pop the next pending one (None when done)."""
    env.mark_all_scratched()
    update_branch_counts(state)
    if not env.head:
        return None
    other, target, prev, log_pos = env.head.pop()
    if pop_log:
        env.log.reset(log_pos)
    return other, target, prev


def _step(env, state, insn, cls: int, idx: int):
    regs = state.regs
    if cls in (BPF_ALU, BPF_ALU64):
        check_alu_op(env, state, insn)
    elif cls == BPF_LDX:
        env.check_reg_arg(state, insn.src_reg, src=True)
        env.check_reg_arg(state, insn.dst_reg, src=False)
        size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
        is_ldsx = BPF_MODE(insn.code) == BPF_MEMSX
        val = check_mem_access(env, state, idx, insn.src_reg, insn.off, size, write=False, is_ldsx=is_ldsx)
        if is_ldsx and val.type == RegType.SCALAR_VALUE:
            val = Reg.unknown(exact=False)
        regs[insn.dst_reg] = val
    elif cls == BPF_STX:
        if BPF_MODE(insn.code) == BPF_ATOMIC:
            _check_atomic(env, state, insn, idx)
            return idx + 1
        if BPF_MODE(insn.code) != BPF_MEM or insn.imm != 0:
            raise env.fail(state, Errno.EINVAL, "BPF_STX uses reserved fields\n")
        env.check_reg_arg(state, insn.src_reg, src=True)
        env.check_reg_arg(state, insn.dst_reg, src=True)
        size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
        check_mem_access(env, state, idx, insn.dst_reg, insn.off, size, write=True, value=regs[insn.src_reg])
    elif cls == BPF_ST:
        if BPF_MODE(insn.code) != BPF_MEM or insn.src_reg != 0:
            raise env.fail(state, Errno.EINVAL, "BPF_ST uses reserved fields\n")
        env.check_reg_arg(state, insn.dst_reg, src=True)
        size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
        check_mem_access(env, state, idx, insn.dst_reg, insn.off, size, write=True, imm=insn.imm)
    elif cls in (BPF_JMP, BPF_JMP32):
        op = BPF_OP(insn.code)
        env.jmps_processed += 1
        if op == BPF_CALL:
            if BPF_SRC(insn.code) != BPF_K or (insn.src_reg != BPF_PSEUDO_KFUNC_CALL and insn.off != 0) or \
                    insn.src_reg not in (0, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL) or insn.dst_reg != 0 or \
                    cls == BPF_JMP32:
                raise env.fail(state, Errno.EINVAL, "BPF_CALL uses reserved fields\n")
            if state.active_lock is not None and insn.src_reg == 0 and insn.imm != FuncId.spin_unlock:
                raise env.fail(state, Errno.EINVAL, "function calls are not allowed while holding a lock\n")
            if insn.src_reg != 0:
                raise GiveUp("bpf-to-bpf and kfunc calls are not modelled")
            check_helper_call(env, state, insn)
            env.mark_reg_scratched(0)
        elif op == BPF_JA:
            if BPF_SRC(insn.code) != BPF_K or insn.src_reg or insn.dst_reg or \
                    (cls == BPF_JMP and insn.imm) or (cls == BPF_JMP32 and insn.off):
                raise env.fail(state, Errno.EINVAL, "BPF_JA uses reserved fields\n")
            return idx + (insn.off if cls == BPF_JMP else insn.imm) + 1
        elif op == BPF_EXIT:
            if BPF_SRC(insn.code) != BPF_K or insn.imm or insn.src_reg or insn.dst_reg or cls == BPF_JMP32:
                raise env.fail(state, Errno.EINVAL, "BPF_EXIT uses reserved fields\n")
            if state.active_lock is not None:       # check_resource_leak()
                raise env.fail(state, Errno.EINVAL, "BPF_EXIT instruction in main prog cannot be used "
                                                    "inside bpf_spin_lock-ed region\n")
            _check_return_code(env, state)
            return "exit"
        elif op == 0xE0:
            raise GiveUp("may_goto is not modelled")
        else:
            return _check_cond_jmp_op(env, state, insn)
    elif cls == BPF_LD:
        mode = BPF_MODE(insn.code)
        if mode in (BPF_ABS, BPF_IND):
            _check_ld_abs(env, state, insn)
        elif mode == BPF_IMM:
            _check_ld_imm(env, state, insn, idx)
            env.aux[idx + 1].seen = True
            return idx + 2
        else:
            raise env.fail(state, Errno.EINVAL, "invalid BPF_LD mode\n")
    else:
        raise env.fail(state, Errno.EINVAL, f"unknown insn class {cls}\n")
    return idx + 1
