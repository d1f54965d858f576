"""Post-verification rewrites — kernel/bpf/verifier.c convert_ctx_accesses, convert_pseudo_ld_imm64.

ctx accesses are rewritten through the prog type's ``convert_ctx_access`` (for skb and XDP
programs the kernel's own rewrites into struct sk_buff / xdp_buff loads, narrow loads widened
then shifted and masked as the kernel does; see `fakekernel.progs.skb_convert`), with jumps
fixed up around longer rewrites.  Which loads go
through the ctx comes from the verifier's walk; when the walk gave up part way, a plain dataflow
over the CFG finds them instead (a register or stack slot holding R1's entry value).
"""
from __future__ import annotations

from fakekernel.progs.ctx import BPF_READ, BPF_WRITE
from fakekernel.verifier.cfg import _BRANCH, _successors, is_ldimm64
from fakekernel.verifier.regs import RegType
from uapi.bpf import (
    BPF_ALU64, BPF_AND, BPF_B, BPF_CALL, BPF_DW, BPF_EXIT, BPF_H, BPF_JA, BPF_JMP, BPF_JMP32, BPF_LD, BPF_LDX,
    BPF_MEM, BPF_MEMSX, BPF_MOV, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_RSH, BPF_ST, BPF_STX, BPF_W, BPF_X,
    ProgType,
)
from uapi.ffi import ffi
from uapi.insn import BPF_ALU32_IMM, BPF_ALU64_IMM, BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, Insn

_BYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
_SIZE_CODE = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}

__all__ = ["convert_ctx_accesses", "convert_ctx_insns", "convert_pseudo_ld_imm64", "ctx_load_sites",
           "patch_insn"]

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


def _adjust_insn_offs(records: bytes, ctype: str, idx: int, delta: int) -> bytes:
    """bpf_adjust_linfo() / adjust_subprog_starts(): records after `idx` move by `delta`."""
    buf = bytearray(records)
    recs = ffi.cast(ctype + " *", ffi.from_buffer(buf))
    for i in range(len(buf) // ffi.sizeof(ctype)):
        if recs[i].insn_off > idx:
            recs[i].insn_off += delta
    return bytes(buf)


def patch_insn(insns: list[Insn], aux: list, idx: int, new: list[Insn], prog=None) -> None:
    """bpf_patch_insn_data(): replace insns[idx] by ``new`` and fix every jump across it (and
    the prog's line_info / func_info offsets after it)."""
    delta = len(new) - 1
    if delta and prog is not None:
        paux = prog.aux
        if getattr(paux, "line_info", b""):
            paux.line_info = _adjust_insn_offs(paux.line_info, "struct bpf_line_info", idx, delta)
        if getattr(paux, "func_info", b""):
            paux.func_info = _adjust_insn_offs(paux.func_info, "struct bpf_func_info", idx, delta)
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


def _ctx_field_size(env, insn) -> int | None:
    """is_valid_access's ctx_field_size for a site the walk did not reach (None: not valid)."""
    from fakekernel.verifier.mem import AccessInfo
    cls = BPF_CLASS(insn.code)
    info = AccessInfo(is_ldsx=BPF_MODE(insn.code) == BPF_MEMSX, verbose=lambda *a: None)
    access = BPF_READ if cls == BPF_LDX else BPF_WRITE
    if not env.ops.is_valid_access(insn.off, _BYTES[BPF_SIZE(insn.code)], access, env.prog, info):
        return None
    return info.ctx_field_size


class _ConvertProg:
    """What a kernel-convention converter reads of the prog: the prog itself plus
    prog->tstamp_type_access (set when the prog reads __sk_buff.tstamp_type, which only
    tc_cls_act_is_valid_access allows)."""

    def __init__(self, prog, insns, sites):
        self.prog = prog
        tt = ffi.offsetof("struct __sk_buff", "tstamp_type")
        self.tstamp_type_access = any(BPF_CLASS(insns[i].code) == BPF_LDX and insns[i].off == tt
                                      for i in sites) and prog.type in (ProgType.SCHED_CLS, ProgType.SCHED_ACT)

    def __getattr__(self, name):
        return getattr(self.prog, name)


def _convert_kernel(convert, insn, field_size: int, prog) -> list[Insn] | None:
    """One site the way convert_ctx_accesses() does it: widen a narrow load to the field,
    convert, then shift and mask the result (and sign-extend an LDSX)."""
    cls, mode = BPF_CLASS(insn.code), BPF_MODE(insn.code)
    access = BPF_READ if cls == BPF_LDX else BPF_WRITE
    size = _BYTES[BPF_SIZE(insn.code)]
    narrow = size < field_size
    off = insn.off
    si = insn
    if narrow:
        if access == BPF_WRITE:
            return None
        si = Insn(BPF_LDX | BPF_MEM | _SIZE_CODE[field_size], insn.dst_reg, insn.src_reg,
                  off & ~(field_size - 1), insn.imm)
    done = convert(access, si, prog)
    if done is None:
        return None
    out, target_size = list(done[0]), done[1]
    if narrow and size < target_size:
        shift = (off & (field_size - 1)) * 8          # bpf_ctx_narrow_access_offset(), little endian
        alu = BPF_ALU32_IMM if field_size <= 4 else BPF_ALU64_IMM
        if shift:
            out.append(alu(BPF_RSH, insn.dst_reg, shift))
        out.append(BPF_ALU32_IMM(BPF_AND, insn.dst_reg, (1 << size * 8) - 1))
    if mode == BPF_MEMSX:
        out.append(Insn(BPF_ALU64 | BPF_MOV | BPF_X, insn.dst_reg, insn.dst_reg, size * 8, 0))
    return out


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
    kernel = getattr(convert, "kernel_convention", False)
    prog = _ConvertProg(env.prog, env.insns, sites) if kernel else None
    for i in sorted(sites, reverse=True):
        insn = env.insns[i]
        if not kernel:
            new = convert(insn)
        else:
            field_size = env.aux[i].ctx_field_size if complete else _ctx_field_size(env, insn)
            new = None if field_size is None else _convert_kernel(convert, insn, field_size, prog)
        if new is not None:
            patch_insn(env.insns, env.aux, i, new, env.prog)


def convert_ctx_insns(prog, verifier_ops, insns: list[Insn]) -> list[Insn]:
    """The ctx rewrites alone, for programs installed without PROG_LOAD (hook tests): the ctx
    loads are found by dataflow, as when the verifier's walk gave up."""
    import types
    env = types.SimpleNamespace(ops=verifier_ops, prog=prog, insns=list(insns),
                                aux=[_SiteAux() for _ in insns])
    convert_ctx_accesses(env, complete=False)
    return env.insns


class _SiteAux:
    ctx_field_size = 0


def convert_pseudo_ld_imm64(env) -> None:
    """Map references are plain 64-bit immediates (the object handle / value address) from now on;
    then do_misc_fixups() inlines the map lookups it can (fakekernel/verifier/misc_fixups.py; the
    kernel runs it before this step, on the map pointers it recorded)."""
    for i, insn in enumerate(env.insns):
        if is_ldimm64(insn) and insn.src_reg and insn.src_reg != BPF_PSEUDO_FUNC:
            env.insns[i] = Insn(insn.code, insn.dst_reg, 0, insn.off, insn.imm)
    from fakekernel.verifier.misc_fixups import do_misc_fixups
    do_misc_fixups(env)
