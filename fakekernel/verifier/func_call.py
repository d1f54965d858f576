"""bpf-to-bpf calls — kernel/bpf/verifier.c: struct bpf_subprog_info, find_subprog,
check_func_call, setup_func_entry, set_callee_state, clear_caller_saved_regs,
prepare_func_exit and check_max_stack_depth.

A static subprogram is walked in a new frame (``state.frame``) pushed at the call and popped at
its exit; a global one (BTF FUNC linkage global) is assumed valid at the call and verified on
its own afterwards from its BTF-declared arguments (`verifier.global_func`).
"""
from __future__ import annotations

import attrs

from fakekernel.verifier.env import BPF_REG_FP, FuncState, GiveUp
from fakekernel.verifier.log import BPF_LOG_LEVEL, print_verifier_state
from fakekernel.verifier.regs import Reg, RegType
from uapi.bpf import ProgType
from uapi.btf import BtfKind
from uapi.errno import Errno

__all__ = ["SubprogInfo", "MAX_CALL_FRAMES", "init_subprogs", "find_subprog", "check_func_call",
           "setup_func_entry", "prepare_func_exit", "clear_caller_saved_regs", "check_max_stack_depth",
           "init_func_regs"]

MAX_CALL_FRAMES = 8
MAX_BPF_STACK = 512
CALLER_SAVED_REGS = (0, 1, 2, 3, 4, 5)


@attrs.define
class SubprogInfo:
    """struct bpf_subprog_info (the fields this pass uses)."""

    start: int
    stack_depth: int = 0
    is_global: bool = False
    name: str = ""
    type_id: int = 0
    is_cb: bool = False
    is_async_cb: bool = False
    called: bool = False
    nargs: int | None = None        # btf_prepare_func_args(): scalar or ctx parameters (None: not usable)
    ctx_args: tuple = ()            # which of them are ARG_PTR_TO_CTX
    struct_args: bool = False       # a parameter points to a struct (maybe the ctx): not modelled
    unreliable: bool = False        # func_info_aux.unreliable


def init_subprogs(env, starts: list[int]) -> None:
    """The subprog table add_subprog_and_kfunc() builds, with check_btf_func()'s linkage."""
    env.subprogs = [SubprogInfo(s) for s in starts]
    if not getattr(env.prog.aux, "func_info", None) or env.prog.aux.btf is None:
        return
    from fakekernel.verifier.attach_btf import BTF_FUNC_GLOBAL, _func_info_type_ids, btf_index
    ix = btf_index(env.prog.aux.btf)
    for sub, type_id in zip(env.subprogs, _func_info_type_ids(env.prog)):
        t = ix.type_by_id(type_id)
        if t is None:
            continue
        sub.type_id = type_id
        sub.name = ix.name_by_offset(t.name_off).decode(errors="replace")
        sub.is_global = t.vlen == BTF_FUNC_GLOBAL
        _prepare_func_args(ix, t, sub, _CTX_TYPE_NAMES.get(env.prog.type))


_SCALAR_KINDS = (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64)
#: find_canonical_prog_ctx_type(): the ctx struct a parameter must point to (prog types modelled)
_CTX_TYPE_NAMES = {ProgType.SOCKET_FILTER: b"__sk_buff", ProgType.SCHED_CLS: b"__sk_buff",
                   ProgType.SCHED_ACT: b"__sk_buff", ProgType.CGROUP_SKB: b"__sk_buff", ProgType.XDP: b"xdp_md"}


def _prepare_func_args(ix, fn_t, sub: SubprogInfo, ctx_name: bytes | None) -> None:
    """btf_prepare_func_args() for scalar parameters and a scalar return."""
    proto = ix.type_by_id(fn_t.type)
    if proto is None or proto.kind != BtfKind.FUNC_PROTO:
        return
    params = ix.params(fn_t.type)
    ret = ix.skip_modifiers(proto.type)[0]
    if len(params) > 5 or ret is None or ret.kind not in _SCALAR_KINDS:
        return
    ctx_args = []
    for i, (_name, tid) in enumerate(params):
        t = ix.skip_modifiers(tid)[0]
        if t is not None and t.kind == BtfKind.PTR:
            pointee = ix.skip_modifiers(t.type)[0]
            if pointee is not None and pointee.kind == BtfKind.STRUCT and ctx_name is not None and \
                    ix.name_by_offset(pointee.name_off) == ctx_name:
                ctx_args.append(i)          # btf_is_prog_ctx_type()
                continue
            if pointee is not None and pointee.kind in (BtfKind.STRUCT, BtfKind.UNION):
                sub.struct_args = True
            return
        if t is None or t.kind not in _SCALAR_KINDS:
            return
    sub.nargs = len(params)
    sub.ctx_args = tuple(ctx_args)


def find_subprog(env, insn_idx: int) -> int:
    for i, sub in enumerate(env.subprogs):
        if sub.start == insn_idx:
            return i
    return -1


def init_func_regs(fs: FuncState) -> None:
    """init_reg_state(): everything NOT_INIT but the frame pointer."""
    fs.regs = [Reg(RegType.NOT_INIT) for _ in fs.regs]
    fp = Reg.ptr(RegType.PTR_TO_STACK)
    fp.frameno = fs.frameno
    fs.regs[BPF_REG_FP] = fp


def clear_caller_saved_regs(env, regs: list) -> None:
    for regno in CALLER_SAVED_REGS:
        regs[regno] = Reg(RegType.NOT_INIT)
        env.mark_reg_scratched(regno)


def set_callee_state(env, state, caller: FuncState, callee: FuncState, callsite: int) -> None:
    """set_callee_state(): R1-R5 pass through."""
    for regno in range(1, 6):
        callee.regs[regno] = caller.regs[regno].copy()


def setup_func_entry(env, state, subprog: int, callsite: int, set_state) -> FuncState:
    """setup_func_entry(): push a frame for ``subprog`` whose registers ``set_state`` fills."""
    if state.curframe + 1 >= MAX_CALL_FRAMES:
        raise env.fail(state, Errno.E2BIG, f"the call stack of {state.curframe + 2} frames is too deep\n")
    caller = state.cur
    callee = FuncState(frameno=state.curframe + 1, callsite=callsite, subprogno=subprog)
    init_func_regs(callee)
    env.mark_all_scratched()            # init_func_state()
    set_state(env, state, caller, callee, callsite)
    state.frame.append(callee)
    return callee


def check_func_call(env, state, insn, idx: int) -> int:
    """check_func_call(): returns the next insn to walk."""
    target = idx + insn.imm + 1
    subprog = find_subprog(env, target)
    if subprog < 0:
        raise env.fail(state, Errno.EFAULT, f"verifier bug. No program starts at insn {target}\n")
    caller = state.cur
    args_ok = False
    if getattr(env.prog.aux, "func_info", None):
        from fakekernel.verifier.callbacks import btf_check_subprog_call
        args_ok = btf_check_subprog_call(env, subprog, caller.regs)
    if env.subprogs[subprog].is_global:
        from fakekernel.verifier.global_func import call_global_func
        call_global_func(env, state, subprog, args_ok)
        return idx + 1
    setup_func_entry(env, state, subprog, idx, set_callee_state)
    clear_caller_saved_regs(env, caller.regs)
    if env.log.level & BPF_LOG_LEVEL:
        env.verbose("caller:\n")
        env.verbose(print_verifier_state(env, state, True, caller))
        env.verbose("callee:\n")
        env.verbose(print_verifier_state(env, state, True, state.cur))
    return env.subprogs[subprog].start


def prepare_func_exit(env, state) -> int:
    """prepare_func_exit(): pop the callee's frame; returns the insn to continue at."""
    callee = state.cur
    r0 = callee.regs[0]
    if r0.type == RegType.PTR_TO_STACK:
        raise env.fail(state, Errno.EINVAL, "cannot return stack pointer to the caller\n")
    caller = state.frame[-2]
    if callee.in_callback_fn:
        from fakekernel.verifier.callbacks import check_callback_return
        check_callback_return(env, state, callee)
        nxt = callee.callsite
    else:
        if r0.type == RegType.UNTRACKED:
            raise GiveUp("untracked value returned from a subprogram")
        caller.regs[0] = r0.copy()
        nxt = callee.callsite + 1
    if env.log.level & BPF_LOG_LEVEL:
        env.verbose("returning from callee:\n")
        env.verbose(print_verifier_state(env, state, True, callee))
        env.verbose(f"to caller at {nxt}:\n")
        env.verbose(print_verifier_state(env, state, True, caller))
    state.frame.pop()
    if callee.in_callback_fn:
        from fakekernel.verifier.callbacks import widen_imprecise_scalars
        widen_imprecise_scalars(env, state, nxt)
    return nxt


def _round_up_stack_depth(env, depth: int) -> int:
    """round_up_stack_depth(): 16 with the JIT on, else 32 (and at least one unit)."""
    if env.kern.sysctl("net.core.bpf_jit_enable"):
        return -(-depth // 16) * 16
    return -(-max(depth, 1) // 32) * 32


def check_max_stack_depth(env) -> None:
    """check_max_stack_depth(): every chain of calls (and callback references) from the main
    program and from each async callback may use 512 bytes of stack in all."""
    if len(env.subprogs) < 2:
        return
    from fakekernel.verifier.cfg import pseudo_call_kind
    for i in range(len(env.subprogs) - 1, -1, -1):
        if not i or env.subprogs[i].is_async_cb:
            _check_max_stack_depth_subprog(env, i, pseudo_call_kind)


def _check_max_stack_depth_subprog(env, idx: int, is_call) -> None:
    subs, insns = env.subprogs, env.insns
    ends = [s.start for s in subs[1:]] + [len(insns)]
    depth, frame = 0, 0
    ret_insn, ret_prog = [], []
    i = subs[idx].start
    while True:
        # process_func
        depth += _round_up_stack_depth(env, subs[idx].stack_depth)
        if depth > MAX_BPF_STACK and env.prog.type in _PRIV_STACK_TYPES:
            raise GiveUp("private stacks of tracing programs are not modelled")
        if depth > MAX_BPF_STACK:
            raise env.reject(Errno.EACCES, f"combined stack size of {frame + 1} calls is {depth}. Too large\n")
        while True:
            # continue_func
            called = False
            while i < ends[idx]:
                kind = is_call(insns[i])
                if kind:
                    sidx = find_subprog(env, i + insns[i].imm + 1)
                    if not (subs[sidx].is_async_cb and kind != "call"):
                        ret_insn.append(i + 1)
                        ret_prog.append(idx)
                        i, idx = subs[sidx].start, sidx
                        frame += 1
                        if frame >= MAX_CALL_FRAMES:
                            raise env.reject(Errno.E2BIG, f"the call stack of {frame} frames is too deep !\n")
                        called = True
                        break
                i += 1
            if called:
                break
            if frame == 0:
                return
            depth -= _round_up_stack_depth(env, subs[idx].stack_depth)
            frame -= 1
            i, idx = ret_insn.pop(), ret_prog.pop()


#: bpf_enable_priv_stack(): these may get a private stack on x86-64 (no combined limit then)
_PRIV_STACK_TYPES = frozenset({ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT,
                               ProgType.RAW_TRACEPOINT, ProgType.TRACING, ProgType.LSM, ProgType.STRUCT_OPS})
