"""Callbacks — kernel/bpf/verifier.c: push_callback_call, set_loop_callback_state,
set_map_elem_callback_state / map_set_for_each_callback_args, the callback part of
prepare_func_exit, and btf_check_subprog_call for a callback's BTF arguments.

As in Linux 6.x a callback is verified as the body of a loop: at the helper call a copy of the
state is pushed that enters the callback in a new frame (``in_callback_fn``); when the callback
returns, the walk goes back to the helper call, which pushes the next iteration until the state
at the call converges (is_state_visited prunes it) or bpf_loop's iteration bound is reached.
"""
from __future__ import annotations

from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.func_call import setup_func_entry
from fakekernel.verifier.log import BPF_LOG_LEVEL2
from fakekernel.verifier.regs import S64_MAX, S64_MIN, Reg, RegType
from uapi.bpf import FuncId, MapType
from uapi.errno import Errno

__all__ = ["CALLBACK_FUNCS", "push_callback_calls", "check_callback_return", "widen_imprecise_scalars",
           "check_ld_pseudo_func", "btf_check_subprog_call"]

#: map types whose bpf_map_ops have map_set_for_each_callback_args / map_for_each_callback
_FOR_EACH_MAPS = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH, MapType.PERCPU_HASH,
                            MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})


def _set_loop_callback_state(env, state, caller, callee, callsite: int) -> None:
    """bpf_loop(nr, cb, ctx, flags) calls cb(u32 index, void *ctx)."""
    callee.regs[1] = Reg.unknown()
    callee.regs[2] = caller.regs[3].copy()
    callee.in_callback_fn = True
    callee.callback_ret_range = (0, 1)


def _set_map_elem_callback_state(env, state, caller, callee, callsite: int) -> None:
    """bpf_for_each_map_elem(map, cb, ctx, flags) calls cb(map, key, value, ctx)."""
    bpf_map = caller.regs[1].map
    if bpf_map is None or bpf_map.map_type not in _FOR_EACH_MAPS:
        raise env.fail(state, Errno.ENOTSUPP, "callback function not allowed for map\n")
    callee.regs[1] = caller.regs[1].copy()
    callee.regs[2] = Reg.ptr(RegType.PTR_TO_MAP_KEY, bpf_map=bpf_map)
    callee.regs[3] = Reg.ptr(RegType.PTR_TO_MAP_VALUE, bpf_map=bpf_map)
    callee.regs[4] = caller.regs[3].copy()
    callee.in_callback_fn = True
    callee.callback_ret_range = (0, 1)


#: the callback-calling helpers this pass walks, with their set_*_callback_state
CALLBACK_FUNCS = {
    FuncId.loop: _set_loop_callback_state,
    FuncId.for_each_map_elem: _set_map_elem_callback_state,
}
#: callback-calling helpers whose callbacks are not walked (the program is accepted unwalked)
_UNWALKED = frozenset({FuncId.timer_set_callback, FuncId.find_vma, FuncId.user_ringbuf_drain})


def check_ld_pseudo_func(env, state, insn, idx: int) -> Reg:
    """check_ld_imm() for BPF_PSEUDO_FUNC: a pointer to a static subprog."""
    from fakekernel.verifier.func_call import find_subprog
    subprog = find_subprog(env, idx + insn.imm + 1)
    if env.subprogs[subprog].is_global:
        raise env.fail(state, Errno.EINVAL, "callback function not static\n")
    r = Reg.ptr(RegType.PTR_TO_FUNC)
    r.subprogno = subprog
    return r


def btf_check_subprog_call(env, subprog: int, regs: list) -> bool:
    """btf_check_subprog_call() for scalar (int) parameters: a mismatch is logged once and
    marks the subprog's BTF unreliable.  Returns False on a mismatch."""
    sub = env.subprogs[subprog]
    if sub.struct_args and not sub.unreliable:
        raise GiveUp("struct pointer parameters (maybe the ctx) are not modelled")
    if sub.nargs is None or sub.unreliable:
        sub.unreliable = True
        return False
    for i in range(sub.nargs):
        reg = regs[i + 1]
        if reg.type == RegType.UNTRACKED:
            raise GiveUp("untracked register passed to a subprogram")
        if i in sub.ctx_args:
            if reg.type == RegType.PTR_TO_CTX and (reg.off or not reg.var_off.is_const() or reg.var_off.value):
                raise GiveUp("modified ctx pointer passed to a subprogram")
            if reg.type != RegType.PTR_TO_CTX:
                env.verbose(f"arg#{i} expects pointer to ctx\n")
                sub.unreliable = True
                return False
            continue
        if reg.type != RegType.SCALAR_VALUE:
            env.verbose(f"R{i + 1} is not a scalar\n")
            sub.unreliable = True
            return False
    return True


def push_callback_calls(env, state, func_id: int, subprog: int, idx: int) -> None:
    """The callback part of check_helper_call(): push the state entering the callback."""
    if func_id in _UNWALKED:
        raise GiveUp("this helper's callbacks are not walked")
    set_state = CALLBACK_FUNCS.get(func_id)
    if set_state is None:
        return
    caller = state.cur
    if func_id == FuncId.loop:
        r1 = caller.regs[1]
        if r1.type != RegType.SCALAR_VALUE or not r1.exact:
            raise GiveUp("bpf_loop bound not modelled")
        if caller.callback_depth >= r1.umax:
            caller.callback_depth = 0
            if env.log.level & BPF_LOG_LEVEL2:
                env.verbose(f"frame{state.curframe} bpf_loop iteration limit reached\n")
            return
    btf_check_subprog_call(env, subprog, caller.regs)
    env.subprogs[subprog].is_cb = True
    cb_state = state.copy()
    if state.parent is not None:
        state.parent.branches += 1
    setup_func_entry(env, cb_state, subprog, idx, set_state)
    cb_state.callback_unroll_depth += 1
    cb_state.frame[-2].callback_depth += 1
    caller.callback_depth = 0
    env.head.append((cb_state, env.subprogs[subprog].start, idx, env.log.end_pos))


def check_callback_return(env, state, callee) -> None:
    """prepare_func_exit() for a callback: R0 a scalar within callback_ret_range."""
    r0 = callee.regs[0]
    if r0.type == RegType.UNTRACKED:
        raise GiveUp("untracked callback return value")
    if r0.type != RegType.SCALAR_VALUE:
        raise env.fail(state, Errno.EACCES, "R0 not a scalar value\n")
    lo, hi = callee.callback_ret_range
    if r0.smin >= lo and r0.smax <= hi:
        return
    if not r0.exact:
        raise GiveUp("callback return value not modelled")
    raise env.fail(state, Errno.EINVAL, f"At callback return the register R0 has{invalid_scalar_text(r0)} "
                                        f"should have been in [{lo}, {hi}]\n")


def invalid_scalar_text(r0) -> str:
    """verbose_invalid_scalar(): the bounds it knows, or "unknown scalar value"."""
    return "".join(([f" smin={r0.smin}"] if r0.smin > S64_MIN else []) +
                   ([f" smax={r0.smax}"] if r0.smax < S64_MAX else [])) or " unknown scalar value"


def _find_prev_entry(env, state, insn_idx: int):
    """find_prev_entry(): the newest checkpoint at ``insn_idx`` on the current path."""
    for cp in reversed(env.aux[insn_idx].states):
        st = cp.state
        if cp.branches and len(st.frame) == len(state.frame) and \
                all(a.callsite == b.callsite for a, b in zip(st.frame, state.frame)):
            return st
    return None


def _maybe_widen(old: Reg, cur: Reg) -> Reg:
    if old.type != RegType.SCALAR_VALUE or cur.type != RegType.SCALAR_VALUE or old.key() == cur.key():
        return cur
    return Reg.unknown(exact=False)     # the kernel keeps precise scalars: never decide on this one


def widen_imprecise_scalars(env, state, callsite: int) -> None:
    """widen_imprecise_scalars() after a callback returned: scalars that changed since the
    previous iteration become unknown, so the callback's loop converges."""
    prev = _find_prev_entry(env, state, callsite)
    if prev is None:
        return
    for fo, fc in zip(prev.frame, state.frame):
        fc.regs = [_maybe_widen(o, c) for o, c in zip(fo.regs, fc.regs)]
        for spi, cslot in fc.stack.items():
            oslot = fo.stack.get(spi)
            if oslot is not None and oslot.spilled is not None and cslot.spilled is not None and \
                    oslot.slot_type[-1] == cslot.slot_type[-1] == "r":
                cslot.spilled = _maybe_widen(oslot.spilled, cslot.spilled)
