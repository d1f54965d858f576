"""Control-flow checks — kernel/bpf/verifier.c: add_subprog_and_kfunc, check_subprogs, check_cfg,
bpf_opcode_in_insntable (kernel/bpf/core.c), plus register liveness for state pruning.
"""
from __future__ import annotations

from fakekernel.verifier.env import MAX_BPF_REG, VerifierError
from fakekernel.verifier.kfunc import add_kfunc_call
from uapi.bpf import (
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ARSH, BPF_ATOMIC, BPF_B, BPF_CALL, BPF_DIV,
    BPF_DW, BPF_END, BPF_EXIT, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE,
    BPF_JLT, BPF_JMP, BPF_JMP32, BPF_JNE, BPF_JSET, BPF_JSGE, BPF_JSGT, BPF_JSLE, BPF_JSLT, BPF_K,
    BPF_LD, BPF_LDX, BPF_LSH, BPF_MEM, BPF_MEMSX, BPF_MOD, BPF_MOV, BPF_MUL, BPF_NEG, BPF_OR,
    BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL, BPF_RSH, BPF_ST, BPF_STX, BPF_SUB,
    BPF_TO_BE, BPF_TO_LE, BPF_W, BPF_X, BPF_XOR, FuncId,
)
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SRC

__all__ = ["INSN_TABLE", "bpf_opcode_in_insntable", "is_ldimm64", "add_subprogs", "check_subprogs",
           "check_cfg", "compute_live_regs", "pseudo_call_kind"]

BPF_JCOND = 0xE0          # include/uapi/linux/bpf.h: may_goto's opcode
LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW

_ALU_OPS = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR,
            BPF_MOV, BPF_ARSH)
_COND_OPS = (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE,
             BPF_JSLT, BPF_JSLE)
_SIZES = (BPF_B, BPF_H, BPF_W, BPF_DW)


def _insn_table() -> frozenset:
    """BPF_INSN_MAP: every opcode the interpreter knows (core.c)."""
    t = set()
    for cls in (BPF_ALU, BPF_ALU64):
        t.update(cls | op | src for op in _ALU_OPS for src in (BPF_K, BPF_X))
        t.add(cls | BPF_NEG)
    t.update({BPF_ALU | BPF_END | BPF_TO_LE, BPF_ALU | BPF_END | BPF_TO_BE, BPF_ALU64 | BPF_END | BPF_TO_LE})
    for cls in (BPF_JMP, BPF_JMP32):
        t.update(cls | op | src for op in _COND_OPS for src in (BPF_K, BPF_X))
        t.add(cls | BPF_JA)
    t.update({BPF_JMP | BPF_CALL, BPF_JMP | BPF_EXIT, BPF_JMP | BPF_JCOND})
    t.update(BPF_LD | mode | size for mode in (BPF_ABS, BPF_IND) for size in (BPF_B, BPF_H, BPF_W))
    t.add(LD_IMM64)
    t.update(BPF_LDX | BPF_MEM | size for size in _SIZES)
    t.update(BPF_LDX | BPF_MEMSX | size for size in (BPF_B, BPF_H, BPF_W))
    t.update(BPF_ST | BPF_MEM | size for size in _SIZES)
    t.update(BPF_STX | BPF_MEM | size for size in _SIZES)
    t.update(BPF_STX | BPF_ATOMIC | size for size in _SIZES)
    return frozenset(t)


INSN_TABLE = _insn_table()


def bpf_opcode_in_insntable(code: int) -> bool:
    return code in INSN_TABLE


def is_ldimm64(insn) -> bool:
    return insn.code == LD_IMM64


def _is_pseudo_call(insn) -> bool:
    return insn.code == BPF_JMP | BPF_CALL and insn.src_reg == BPF_PSEUDO_CALL


def _is_pseudo_func(insn) -> bool:
    return insn.code == LD_IMM64 and insn.src_reg == BPF_PSEUDO_FUNC


def _is_kfunc_call(insn) -> bool:
    return insn.code == BPF_JMP | BPF_CALL and insn.src_reg == BPF_PSEUDO_KFUNC_CALL


#: is_sync_callback_calling_function()
_SYNC_CALLBACK_FUNCS = frozenset({FuncId.loop, FuncId.for_each_map_elem, FuncId.find_vma,
                                  FuncId.user_ringbuf_drain})


def pseudo_call_kind(insn) -> str:
    """bpf_pseudo_call() / bpf_pseudo_func(): "call", "func" or ""."""
    return "call" if _is_pseudo_call(insn) else "func" if _is_pseudo_func(insn) else ""


def add_subprogs(env) -> list[int]:
    """add_subprog_and_kfunc(): subprog start insns (sorted, main first)."""
    starts = {0}
    n = len(env.insns)
    for i, insn in enumerate(env.insns):
        if not (_is_pseudo_func(insn) or _is_pseudo_call(insn) or _is_kfunc_call(insn)):
            continue
        if not env.bpf_capable:
            raise env.reject(Errno.EPERM, "loading/calling other bpf or kernel functions are allowed for "
                                          "CAP_BPF and CAP_SYS_ADMIN\n")
        env.has_subprogs = True
        if _is_kfunc_call(insn):
            add_kfunc_call(env, insn.imm, insn.off)
            continue
        target = i + insn.imm + 1
        if target < 0 or target >= n:
            raise env.reject(Errno.EINVAL, "call to invalid destination\n")
        starts.add(target)
    return sorted(starts)


def check_subprogs(env, starts: list[int]) -> None:
    """check_subprogs(): jumps stay inside their subprog; each subprog ends in exit or ja."""
    insns = env.insns
    n = len(insns)
    bounds = starts + [n]
    cur = 0
    start, end = bounds[0], bounds[1]
    for i, insn in enumerate(insns):
        code = insn.code
        cls = BPF_CLASS(code)
        if cls in (BPF_JMP, BPF_JMP32) and BPF_OP(code) not in (BPF_EXIT, BPF_CALL):
            off = i + (insn.imm if code == BPF_JMP32 | BPF_JA else insn.off) + 1
            if off < start or off >= end:
                raise env.reject(Errno.EINVAL, f"jump out of range from insn {i} to {off}\n")
        if i == end - 1:
            if code not in (BPF_JMP | BPF_EXIT, BPF_JMP32 | BPF_JA, BPF_JMP | BPF_JA):
                raise env.reject(Errno.EINVAL, "last insn is not an exit or jmp\n")
            cur += 1
            if cur < len(starts):
                start, end = bounds[cur], bounds[cur + 1]


_DISCOVERED, _EXPLORED, _FALLTHROUGH, _BRANCH = 0x10, 0x20, 1, 2


def _successors(insns, t: int) -> list[tuple[int, int]]:
    """(target, edge kind) in the order visit_insn pushes them (a bpf-to-bpf call also reaches
    its callee, as visit_func_call_insn makes it)."""
    insn = insns[t]
    cls = BPF_CLASS(insn.code)
    if _is_pseudo_func(insn):
        return [(t + 2, _FALLTHROUGH), (t + insn.imm + 1, _BRANCH)]
    if cls not in (BPF_JMP, BPF_JMP32):
        return [(t + (2 if is_ldimm64(insn) else 1), _FALLTHROUGH)]
    op = BPF_OP(insn.code)
    if op == BPF_EXIT:
        return []
    if op == BPF_CALL:
        if insn.src_reg == BPF_PSEUDO_CALL:
            return [(t + 1, _FALLTHROUGH), (t + insn.imm + 1, _BRANCH)]
        return [(t + 1, _FALLTHROUGH)]
    if op == BPF_JA:
        off = insn.off if cls == BPF_JMP else insn.imm
        return [(t + off + 1, _FALLTHROUGH)]
    return [(t + 1, _FALLTHROUGH), (t + insn.off + 1, _BRANCH)]


def check_cfg(env) -> None:
    """check_cfg(): iterative DFS; out-of-range jumps, back-edges (unprivileged), unreachable insns.

    Also marks prune points and jump points as visit_insn does.
    """
    insns, aux = env.insns, env.aux
    n = len(insns)
    state = [0] * n
    state[0] = _DISCOVERED
    stack = [0]
    for t, insn in enumerate(insns):
        cls = BPF_CLASS(insn.code)
        if _is_pseudo_func(insn) and t + 2 < n:
            aux[t + 2].prune_point = aux[t + 2].jmp_point = True
        if _is_pseudo_func(insn) or _is_pseudo_call(insn):     # push_insn(BRANCH) to the callee
            tgt = t + insn.imm + 1
            if 0 <= tgt < n:
                aux[tgt].prune_point = aux[tgt].jmp_point = True
        if cls in (BPF_JMP, BPF_JMP32):
            op = BPF_OP(insn.code)
            if op == BPF_CALL:          # visit_func_call_insn()
                if t + 1 < n:
                    aux[t + 1].prune_point = aux[t + 1].jmp_point = True
                if insn.src_reg == BPF_PSEUDO_CALL or (insn.src_reg == 0 and insn.imm == FuncId.timer_set_callback):
                    aux[t].prune_point = True
                if insn.src_reg == 0 and insn.imm in _SYNC_CALLBACK_FUNCS:    # mark_calls_callback()
                    aux[t].calls_callback = aux[t].force_checkpoint = True
                    aux[t].prune_point = aux[t].jmp_point = True
            elif op == BPF_JA:
                if BPF_SRC(insn.code) != BPF_K:
                    raise VerifierError(Errno.EINVAL)
                tgt = t + (insn.off if cls == BPF_JMP else insn.imm) + 1
                if 0 <= tgt < n:
                    aux[tgt].prune_point = aux[tgt].jmp_point = True
            elif op != BPF_EXIT:
                aux[t].prune_point = True
                tgt = t + insn.off + 1
                if 0 <= tgt < n:
                    aux[tgt].prune_point = aux[tgt].jmp_point = True
    while stack:
        t = stack[-1]
        insn = insns[t]
        if BPF_CLASS(insn.code) in (BPF_JMP, BPF_JMP32) and BPF_OP(insn.code) == BPF_JA \
                and BPF_SRC(insn.code) != BPF_K:
            raise VerifierError(Errno.EINVAL)
        pushed = False
        for w, e in _successors(insns, t):
            if state[t] >= (_DISCOVERED | e):
                continue
            if w < 0 or w >= n:
                raise env.reject(Errno.EINVAL, f"jump out of range from insn {t} to {w}\n")
            if state[w] == 0:
                state[t] = _DISCOVERED | e
                state[w] = _DISCOVERED
                stack.append(w)
                pushed = True
                break
            if state[w] & 0xF0 == _DISCOVERED:
                if not env.bpf_capable:
                    raise env.reject(Errno.EINVAL, f"back-edge from insn {t} to {w}\n")
            state[t] = _DISCOVERED | e
        if not pushed:
            state[t] = _EXPLORED
            stack.pop()
    i = 0
    while i < n:
        if state[i] != _EXPLORED:
            raise env.reject(Errno.EINVAL, f"unreachable insn {i}\n")
        if is_ldimm64(insns[i]):
            if i + 1 < n and state[i + 1] != 0:
                raise env.reject(Errno.EINVAL, f"jump into the middle of ldimm64 insn {i}\n")
            i += 1
        i += 1


def _uses_defs(insn) -> tuple[set, set]:
    """Registers an insn reads and writes (conservative: unknown shapes read everything)."""
    cls, op, mode = BPF_CLASS(insn.code), BPF_OP(insn.code), BPF_MODE(insn.code)
    d, s = insn.dst_reg, insn.src_reg
    if cls in (BPF_ALU, BPF_ALU64):
        src = {s} if BPF_SRC(insn.code) == BPF_X and op != BPF_END and op != BPF_NEG else set()
        if op == BPF_MOV:
            return src, {d}
        return src | {d}, {d}
    if cls == BPF_LDX:
        return {s}, {d}
    if cls == BPF_ST:
        return {d}, set()
    if cls == BPF_STX:
        if mode == BPF_ATOMIC:
            return {d, s, 0}, {s, 0}
        return {d, s}, set()
    if cls == BPF_LD:
        if mode == BPF_IMM:
            return set(), {d}
        return {1, 6, s}, {0, 1, 2, 3, 4, 5}
    if cls in (BPF_JMP, BPF_JMP32):
        if op == BPF_CALL:
            return {1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5}
        if op == BPF_EXIT:
            return {0}, set()
        if op == BPF_JA:
            return set(), set()
        return ({d, s} if BPF_SRC(insn.code) == BPF_X else {d}), set()
    return set(range(MAX_BPF_REG)), set()


def compute_live_regs(env) -> None:
    """Registers live before each insn, and whether the stack may still be read (backward dataflow)."""
    insns = env.insns
    n = len(insns)
    ud = [_uses_defs(i) for i in insns]
    succ = [[w for w, _ in _successors(insns, t) if 0 <= w < n] for t in range(n)]
    live = [frozenset()] * n
    stack = [False] * n
    reads_stack = [BPF_CLASS(i.code) == BPF_LDX or (BPF_CLASS(i.code) == BPF_STX and BPF_MODE(i.code) == BPF_ATOMIC)
                   or (BPF_CLASS(i.code) == BPF_JMP and BPF_OP(i.code) == BPF_CALL) for i in insns]
    changed = True
    while changed:
        changed = False
        for t in range(n - 1, -1, -1):
            out = set()
            st = reads_stack[t]
            for w in succ[t]:
                out |= live[w]
                st = st or stack[w]
            uses, defs = ud[t]
            new = frozenset((out - defs) | uses)
            if new != live[t] or st != stack[t]:
                live[t], stack[t] = new, st
                changed = True
    env.live_in = live
    env.stack_live_in = stack
