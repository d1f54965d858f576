"""Post-verification rewrites — kernel/bpf/verifier.c convert_ctx_accesses, convert_pseudo_ld_imm64.

ctx accesses are rewritten through the prog type's ``convert_ctx_access`` (the uapi packet-pointer
fields become 64-bit loads of the kernel ctx slots, fields the kernel keeps narrower are accessed
at their kernel width; see `fakekernel.progs.skb`), with jumps fixed up around longer rewrites.  Which loads go
through the ctx comes from the verifier's walk; when the walk gave up part way, a plain dataflow
over the CFG finds them instead (a register or stack slot holding R1's entry value).
"""
from __future__ import annotations

from fakekernel.verifier.cfg import _BRANCH, _successors, is_ldimm64
from fakekernel.verifier.regs import RegType
from uapi.bpf import (
    BPF_ALU64, BPF_CALL, BPF_DW, BPF_EXIT, BPF_JA, BPF_JMP, BPF_JMP32, BPF_LD, BPF_LDX, BPF_MEM, BPF_MOV,
    BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_ST, BPF_STX, BPF_X,
)
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, Insn

__all__ = ["convert_ctx_accesses", "convert_pseudo_ld_imm64", "ctx_load_sites", "patch_insn"]

_FP = 10
_CALL_CLOBBERS = frozenset(range(6))
_ARG_REGS = frozenset(range(1, 6))


def _transfer(insn, facts: frozenset) -> frozenset:
    """Which registers / ('fp', off) slots still hold the ctx pointer after ``insn``."""
    cls = BPF_CLASS(insn.code)
    f = set(facts)
    if cls in (0x04, BPF_ALU64):
        if insn.code == BPF_ALU64 | BPF_MOV | BPF_X and insn.off == 0:
            (f.add if insn.src_reg in facts else f.discard)(insn.dst_reg)
        else:
            f.discard(insn.dst_reg)
    elif cls == BPF_LDX:
        slot = ("fp", insn.off) if insn.src_reg == _FP else None
        (f.add if slot in facts and BPF_SIZE(insn.code) == BPF_DW else f.discard)(insn.dst_reg)
    elif cls in (BPF_STX, BPF_ST) and insn.dst_reg == _FP:
        slot = ("fp", insn.off)
        if cls == BPF_STX and BPF_MODE(insn.code) == BPF_MEM and BPF_SIZE(insn.code) == BPF_DW \
                and insn.src_reg in facts:
            f.add(slot)
        else:
            f = {x for x in f if not (isinstance(x, tuple) and abs(x[1] - insn.off) < 8)}
    elif cls == BPF_LD:
        f.discard(insn.dst_reg)
        if BPF_MODE(insn.code) != 0x00:
            f -= _CALL_CLOBBERS
    elif cls == BPF_JMP and BPF_OP(insn.code) == BPF_CALL:
        f -= _CALL_CLOBBERS
    return frozenset(f)


def ctx_load_sites(insns: list[Insn]) -> set[int]:
    """Indices of loads/stores whose base register may hold the ctx pointer (forward may-analysis)."""
    n = len(insns)
    facts: list[frozenset | None] = [None] * n
    facts[0] = frozenset({1})
    work = [0]
    while work:
        t = work.pop()
        out = _transfer(insns[t], facts[t])
        for w, edge in _successors(insns, t):
            if 0 <= w < n:
                flow = out
                if edge == _BRANCH and insns[t].code == BPF_JMP | BPF_CALL:
                    flow = frozenset(r for r in facts[t] if r in _ARG_REGS)    # a subprog's arguments
                new = flow if facts[w] is None else facts[w] | flow
                if new != facts[w]:
                    facts[w] = new
                    work.append(w)
    sites = set()
    for i, insn in enumerate(insns):
        if facts[i] is None:
            continue
        cls = BPF_CLASS(insn.code)
        base = insn.src_reg if cls == BPF_LDX else insn.dst_reg if cls in (BPF_ST, BPF_STX) else None
        if base is not None and base in facts[i]:
            sites.add(i)
    return sites


def _jump_target_fields(insn) -> str | None:
    """Which field of ``insn`` holds a pc-relative target (None: not a jump)."""
    cls, op = BPF_CLASS(insn.code), BPF_OP(insn.code)
    if is_ldimm64(insn) and insn.src_reg == BPF_PSEUDO_FUNC:
        return "imm"
    if cls not in (BPF_JMP, BPF_JMP32) or op == BPF_EXIT:
        return None
    if op == BPF_CALL:
        return "imm" if insn.src_reg == BPF_PSEUDO_CALL else None
    if cls == BPF_JMP32 and op == BPF_JA:
        return "imm"
    return "off"


def patch_insn(insns: list[Insn], aux: list, idx: int, new: list[Insn]) -> None:
    """bpf_patch_insn_data(): replace insns[idx] by ``new`` and fix every jump across it."""
    delta = len(new) - 1
    if delta:
        for i, insn in enumerate(insns):
            field = _jump_target_fields(insn)
            if field is None or i == idx:
                continue
            rel = getattr(insn, field)
            target = i + rel + 1
            if i < idx < target:
                rel += delta
            elif target <= idx < i:
                rel -= delta
            else:
                continue
            insns[i] = Insn(insn.code, insn.dst_reg, insn.src_reg, rel if field == "off" else insn.off,
                            rel if field == "imm" else insn.imm)
    insns[idx:idx + 1] = new
    aux[idx:idx + 1] = [aux[idx]] + [type(aux[idx])() for _ in range(delta)]


def convert_ctx_accesses(env, complete: bool) -> None:
    """Rewrite ctx accesses through the prog type's convert_ctx_access (last site first, so the
    indices still to patch stay valid)."""
    convert = getattr(env.ops, "convert_ctx_access", None) if env.ops is not None else None
    if convert is None:
        return
    if complete:
        sites = {i for i, a in enumerate(env.aux) if a.ptr_type == RegType.PTR_TO_CTX}
    else:
        sites = ctx_load_sites(env.insns)
    for i in sorted(sites, reverse=True):
        new = convert(env.insns[i])
        if new is not None:
            patch_insn(env.insns, env.aux, i, new)


def convert_pseudo_ld_imm64(env) -> None:
    """Map references are plain 64-bit immediates (the object handle / value address) from now on."""
    for i, insn in enumerate(env.insns):
        if is_ldimm64(insn) and insn.src_reg and insn.src_reg != BPF_PSEUDO_FUNC:
            env.insns[i] = Insn(insn.code, insn.dst_reg, 0, insn.off, insn.imm)
