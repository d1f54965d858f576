"""Explored states and pruning — kernel/bpf/verifier.c is_state_visited, states_equal,
update_branch_counts (the 2026 split's states.c).

A state reaching a prune point is dropped when an explored state at that insn subsumes it on
the registers still live there (and on the stack while anything may read it).  The kernel's
precision marks are approximated: only an exit with no return-value rule ignores R0's value.
"""
from __future__ import annotations

from fakekernel.verifier.env import BPF_REG_FP, MAX_BPF_REG, Checkpoint, GiveUp, VerifierState
from fakekernel.verifier.regs import Reg, RegType
from fakekernel.verifier.log import BPF_LOG_LEVEL2
from uapi.bpf import BPF_EXIT, BPF_JMP, FuncId

__all__ = ["is_state_visited", "update_branch_counts"]



def _reg_subsumes(old: Reg, new: Reg, idmap: dict) -> bool:
    if old.type == RegType.NOT_INIT:
        return True
    if old.type != new.type:
        return False
    if old.type == RegType.UNTRACKED:
        return False
    if old.id or new.id:
        if idmap.setdefault(old.id, new.id) != new.id:
            return False
    if old.type == RegType.SCALAR_VALUE:
        if not old.exact and new.exact:
            pass
        return (old.umin <= new.umin and old.umax >= new.umax and old.smin <= new.smin and old.smax >= new.smax
                and old.u32_min <= new.u32_min and old.u32_max >= new.u32_max and old.s32_min <= new.s32_min
                and old.s32_max >= new.s32_max
                and (new.var_off.value & ~old.var_off.mask) == old.var_off.value
                and (new.var_off.mask & ~old.var_off.mask) == 0
                and (old.exact or not new.exact))
    if old.ref_obj_id or new.ref_obj_id:
        if idmap.setdefault(("ref", old.ref_obj_id), new.ref_obj_id) != new.ref_obj_id:
            return False
    return (old.off == new.off and old.map is new.map and old.var_off == new.var_off and new.range >= old.range
            and old.weak_null == new.weak_null and old.btf == new.btf and old.frameno == new.frameno
            and old.mem_size == new.mem_size and old.subprogno == new.subprogno)


def _stack_subsumes(old, new, idmap: dict) -> bool:
    for spi, oslot in old.stack.items():
        nslot = new.stack.get(spi)
        for k, t in enumerate(oslot.slot_type):
            if t == "?":
                continue
            nt = nslot.slot_type[k] if nslot is not None else "?"
            if t == "m" and nt in ("m", "0", "r"):
                continue
            if t != nt:
                return False
        if oslot.spilled is not None:
            if nslot is None or nslot.spilled is None or not _reg_subsumes(oslot.spilled, nslot.spilled, idmap):
                return False
    return True


def _frame_live(env, state, i: int, insn_idx: int):
    """The registers of frame ``i`` that may still be read (callee-saved ones of a caller)."""
    if i == state.curframe:
        return env.live_in[insn_idx] if env.live_in else range(MAX_BPF_REG)
    callee = state.frame[i + 1]
    if callee.in_callback_fn:           # the caller goes back to the helper call
        return env.live_in[callee.callsite] if env.live_in else range(MAX_BPF_REG)
    ret = callee.callsite + 1
    live = env.live_in[ret] if env.live_in else range(MAX_BPF_REG)
    return [r for r in live if r > 5]


def _states_subsume(env, old: VerifierState, new: VerifierState, insn_idx: int) -> bool:
    idmap: dict = {}
    if (old.active_lock is None) != (new.active_lock is None) or \
            (old.active_lock is not None and old.active_lock[0] is not new.active_lock[0]):
        return False                    # refsafe(): the same lock held (or none)
    if len(old.frame) != len(new.frame) or len(old.refs) != len(new.refs):
        return False
    for (oid, _), (nid, _) in zip(old.refs, new.refs):
        if idmap.setdefault(("ref", oid), nid) != nid:
            return False
    # an exit with no return-value rule never marks R0 precise: any scalar is as good as another
    imprecise_r0 = env.insns[insn_idx].code == BPF_JMP | BPF_EXIT and \
        getattr(env.ops, "get_ret_range", None) is None and not new.curframe
    for fi, (of, nf) in enumerate(zip(old.frame, new.frame)):
        if of.callsite != nf.callsite or of.in_callback_fn != nf.in_callback_fn:
            return False
        for i in _frame_live(env, new, fi, insn_idx):
            if i == 0 and imprecise_r0 and of.regs[0].type == nf.regs[0].type == RegType.SCALAR_VALUE:
                continue
            if not _reg_subsumes(of.regs[i], nf.regs[i], idmap):
                return False
        if of.regs[BPF_REG_FP].type != nf.regs[BPF_REG_FP].type:
            return False
        if fi == new.curframe and env.stack_live_in and not env.stack_live_in[insn_idx] and not new.curframe:
            continue            # nothing reads the stack from here on
        if not _stack_subsumes(of, nf, idmap):
            return False
    return True


def _propagate_precision(env, old, insn_idx: int) -> None:
    """propagate_precision()'s log: bpf_loop made its count (and a zero flags) precise."""
    if env.insns[insn_idx].imm != FuncId.loop:
        return
    regs = old.cur.regs
    text = "\n"
    if env.log.level & BPF_LOG_LEVEL2:
        r4 = regs[4]
        text = f"frame {old.curframe}: propagating r1" + (",r4" if r4.is_const() and not r4.const_value else "") + "\n"
    env.verbose(text)


def is_state_visited(env, state, insn_idx: int) -> bool:
    aux = env.aux[insn_idx]
    add_new = env.jmps_processed - env.prev_jmps_processed >= 2 and \
        env.insn_processed - env.prev_insn_processed >= 8
    n = 0
    for cp in aux.states:
        n += 1
        if cp.branches:
            if aux.calls_callback:      # a callback's loop converged (RANGE_WITHIN)
                if _states_subsume(env, cp.state, state, insn_idx):
                    _propagate_precision(env, cp.state, insn_idx)
                    return True
                continue
            if _states_subsume(env, cp.state, state, insn_idx) and \
                    _states_subsume(env, state, cp.state, insn_idx):
                raise GiveUp("possible infinite loop")
            continue
        if state.sure and not cp.state.sure:
            continue
        if _states_subsume(env, cp.state, state, insn_idx):
            return True
    env.max_states_per_insn = max(env.max_states_per_insn, n)
    if not add_new and not aux.force_checkpoint:
        return False
    env.total_states += 1
    env.cur_states += 1
    env.peak_states = max(env.peak_states, env.cur_states)
    env.prev_jmps_processed = env.jmps_processed
    env.prev_insn_processed = env.insn_processed
    cp = Checkpoint(state.copy(), state.parent)
    aux.states.append(cp)
    state.parent = cp
    return False


def update_branch_counts(state) -> None:
    cp = state.parent
    while cp is not None:
        cp.branches -= 1
        if cp.branches:
            break
        cp = cp.parent


