"""The main verification walk — kernel/bpf/verifier.c do_check, do_check_common, check_ld_imm,
check_ld_abs, check_atomic, check_return_code, push/pop_stack (conditional jumps: `jmp`).

Paths are explored depth first in the kernel's order (fall-through first, the taken branch
pushed), and the level-1 log is written with the kernel's resets, so a rejection's log is the
trace of the failing path exactly as Linux prints it.
"""
from __future__ import annotations

from fakekernel.helpers.proto import base_type
from fakekernel.verifier.alu import check_alu_op
from fakekernel.verifier.calls import check_helper_call
from fakekernel.verifier.env import BPF_REG_FP, GiveUp, VerifierState
from fakekernel.verifier.callbacks import check_ld_pseudo_func, invalid_scalar_text
from fakekernel.verifier.func_call import check_func_call, prepare_func_exit
from fakekernel.verifier.refs import check_resource_leak
from fakekernel.verifier.kfunc import check_kfunc_allowed
from fakekernel.verifier.jmp import check_cond_jmp_op
from fakekernel.verifier.log import BPF_LOG_LEVEL, BPF_LOG_LEVEL2, print_insn_state as _print_insn_state
from fakekernel.verifier.log import print_verifier_state as _print_verifier_state
from fakekernel.verifier.mem import check_mem_access, coerce_to_size
from fakekernel.verifier.regs import Reg, RegType, reg_type_str
from fakekernel.verifier.states import is_state_visited, update_branch_counts
from uapi.asm import print_bpf_insn
from uapi.bpf import (
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ATOMIC, BPF_CALL, BPF_CMPXCHG, BPF_DW, BPF_EXIT,
    BPF_FETCH, BPF_IMM, BPF_IND, BPF_JA, BPF_JMP, BPF_JMP32, BPF_K, BPF_LD, BPF_LDX, BPF_MEM, BPF_MEMSX,
    BPF_OR, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE,
    BPF_ST, BPF_STX, BPF_W, BPF_XCHG,
    BPF_XOR, FuncId, MapType, ProgType,
)
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, BPF_SIZE_BYTES, BPF_SRC, u32

__all__ = ["do_check"]

_ATOMIC_OPS = (BPF_ADD, BPF_ADD | BPF_FETCH, BPF_AND, BPF_AND | BPF_FETCH, BPF_OR, BPF_OR | BPF_FETCH,
               BPF_XOR, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG)
_PKT = (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META)
#: may_access_skb(): LD_ABS/LD_IND users
_LD_ABS_TYPES = (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT)


# ---------------------------------------------------------------- logging

def _insn_text(env, idx: int) -> str:
    insns = env.insns
    nxt = insns[idx + 1] if idx + 1 < len(insns) else None
    return print_bpf_insn(insns[idx], nxt, allow_ptr_leaks=env.allow_ptr_leaks)


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
    elif insn.src_reg == BPF_PSEUDO_FUNC:
        state.regs[insn.dst_reg] = check_ld_pseudo_func(env, state, insn, idx)
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
    if state.cur.subprogno:             # a global function returns a scalar
        r0 = state.regs[0]
        if r0.type == RegType.UNTRACKED:
            raise GiveUp("untracked value returned from a global function")
        if r0.type != RegType.SCALAR_VALUE:
            raise env.fail(state, Errno.EINVAL, f"At subprogram exit the register R0 is not a scalar value "
                                                f"({reg_type_str(r0.type)})\n")
        return
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
        raise env.fail(state, Errno.EINVAL, f"At program exit the register R0 has{invalid_scalar_text(r0)} "
                                            f"should have been in [{lo}, {hi}]\n")


# ---------------------------------------------------------------- do_check

def _init_state(env, subprog: int) -> VerifierState:
    """do_check_common()'s first state: the ctx in R1, or a global function's scalar arguments."""
    st = VerifierState()
    st.regs[BPF_REG_FP] = Reg.ptr(RegType.PTR_TO_STACK)
    if not subprog:
        st.regs[1] = Reg.ptr(RegType.PTR_TO_CTX)
        return st
    st.cur.subprogno = subprog
    sub = env.subprogs[subprog]
    for regno in range(1, sub.nargs + 1):
        st.regs[regno] = Reg.ptr(RegType.PTR_TO_CTX) if regno - 1 in sub.ctx_args else Reg.unknown()
    return st


def do_check(env, subprog: int = 0) -> None:
    """do_check_common() + do_check() for the main program or a global function."""
    level = env.log.level
    pop_log = not level & BPF_LOG_LEVEL2
    state = _init_state(env, subprog)
    env.mark_all_scratched()
    insns = env.insns
    do_print_state = False
    env.insn_idx, prev_idx = (env.subprogs[subprog].start if subprog else 0), -1
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
            if type(nxt) is tuple:                  # returned from a subprogram
                env.insn_idx = nxt[1]
                do_print_state = True
                continue
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


#: reg_type_mismatch_ok(): pointer types an insn may not share with another type
_NO_MISMATCH = (RegType.PTR_TO_CTX, RegType.PTR_TO_SOCKET, RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_TCP_SOCK,
                RegType.PTR_TO_XDP_SOCK, RegType.PTR_TO_BTF_ID, RegType.PTR_TO_ARENA)


def _save_aux_ptr_type(env, state, idx: int, t: int) -> None:
    """save_aux_ptr_type(): an insn reached with a ctx (or socket) pointer on one path and
    another pointer type on another cannot be rewritten for both."""
    aux = env.aux[idx]
    prev = aux.seen_ptr_type
    if t == RegType.UNTRACKED or prev == RegType.UNTRACKED:
        if prev != t and (prev or t in _NO_MISMATCH):
            raise GiveUp("untracked pointer type at a memory access")
    if not prev:
        aux.seen_ptr_type = t
    elif t != prev and (base_type(t) in _NO_MISMATCH or base_type(prev) in _NO_MISMATCH):
        if base_type(t) == base_type(prev) == RegType.PTR_TO_BTF_ID:
            raise GiveUp("BTF pointer trust mismatch not modelled")
        raise env.fail(state, Errno.EINVAL, "same insn cannot be used with different pointers\n")


def _step(env, state, insn, cls: int, idx: int):
    regs = state.regs
    if cls in (BPF_ALU, BPF_ALU64):
        check_alu_op(env, state, insn)
    elif cls == BPF_LDX:
        env.check_reg_arg(state, insn.src_reg, src=True)
        env.check_reg_arg(state, insn.dst_reg, src=False)
        size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
        is_ldsx = BPF_MODE(insn.code) == BPF_MEMSX
        src_type = regs[insn.src_reg].type
        val = check_mem_access(env, state, idx, insn.src_reg, insn.off, size, write=False, is_ldsx=is_ldsx)
        _save_aux_ptr_type(env, state, idx, src_type)
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
        dst_type = regs[insn.dst_reg].type
        check_mem_access(env, state, idx, insn.dst_reg, insn.off, size, write=True, value=regs[insn.src_reg])
        _save_aux_ptr_type(env, state, idx, dst_type)
    elif cls == BPF_ST:
        if BPF_MODE(insn.code) != BPF_MEM or insn.src_reg != 0:
            raise env.fail(state, Errno.EINVAL, "BPF_ST uses reserved fields\n")
        env.check_reg_arg(state, insn.dst_reg, src=True)
        size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
        dst_type = regs[insn.dst_reg].type
        check_mem_access(env, state, idx, insn.dst_reg, insn.off, size, write=True, imm=insn.imm)
        _save_aux_ptr_type(env, state, idx, dst_type)
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
            if insn.src_reg == BPF_PSEUDO_CALL:
                return check_func_call(env, state, insn, idx)
            if insn.src_reg != 0:
                if not insn.imm:                 # refused at fixup unless dead code elimination drops it
                    return idx + 1
                check_kfunc_allowed(env, state, insn)
                raise GiveUp("kfunc argument checks are not modelled")
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
            check_resource_leak(env, state, not state.curframe, "BPF_EXIT instruction in main prog")
            if state.curframe:
                return ("ret", prepare_func_exit(env, state))
            _check_return_code(env, state)
            return "exit"
        elif op == 0xE0:
            raise GiveUp("may_goto is not modelled")
        else:
            return check_cond_jmp_op(env, state, insn)
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
