"""Program analysis for the compiled tiers — the decode half of a BPF JIT (arch/x86/net/bpf_jit_comp.c
do_jit() walks the instructions once the same way).

:func:`analyze` decodes a verified program into one :class:`Op` per executed instruction and splits it
into basic blocks. Both back ends (:mod:`fakekernel.jit.cgen`, :mod:`fakekernel.jit.pygen`) emit code
from this and nothing else, so they agree on what is a valid encoding, which instructions start a block,
where each instruction's successors are and how instructions are counted.

Every encoding that the reference interpreter (:mod:`fakekernel.interp.run`) binds to a faulting op
becomes an :class:`Op` of kind ``"fault"`` carrying the interpreter's exact message.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from fakekernel.interp import alu
from fakekernel.interp.run import KFUNC_KEY_BASE
from uapi.bpf import (
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ABS,
    BPF_ADD,
    BPF_AND,
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JCOND,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LOAD_ACQ,
    BPF_MAY_GOTO,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_REG_10,
    BPF_ST,
    BPF_STORE_REL,
    BPF_STX,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    MAX_BPF_REG,
)
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, BPF_SIZE_BYTES, BPF_SRC, Insn, s32, u32, u64

__all__ = ["Op", "Program", "analyze", "ANALYSIS_VERSION"]

#: bump when the meaning of an Op changes (part of the native code cache key)
ANALYSIS_VERSION = 1

_LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW
_ATOMIC_RMW = (BPF_ADD, BPF_AND, BPF_OR, BPF_XOR)
_JMP_CONDS = frozenset(alu.JMP64_CONDS)
_ALU_BINOPS = frozenset(alu.ALU64_OPS)


class _BadEncoding(Exception):
    pass


@attrs.define
class Op:
    """One executable instruction slot.

    ``kind`` is one of: alu, neg, end, movsx, ld_imm64, jmp, ja, may_goto, exit, call, callx, pcall,
    ldx, st, stx, atomic, ld_pkt, fault. ``nxt`` is the fall-through successor, ``tgt`` a jump or call
    target; other fields depend on the kind.
    """

    idx: int
    kind: str
    nxt: int | None = None
    tgt: int | None = None
    is64: bool = True
    op: int = 0  # BPF_OP of alu/jmp, atomic imm
    dst: int = 0
    src: int | None = None  # None: the K operand
    k: int = 0  # u64 immediate (sign-extended imm), or the ld_imm64 value
    off: int = 0  # memory offset (signed) / movsx width / end width / signed-div flag
    size: int = 0  # memory access bytes
    signed: bool = False  # sdiv/smod, ldx memsx, bswap
    message: str = ""  # kind == "fault"


@attrs.define
class Program:
    insns: list[Insn]
    ops: dict[int, Op]  # slot -> op (second halves of ld_imm64 are absent unless jumped into)
    leaders: list[int]  # sorted block starts
    block_len: dict[int, int]  # leader -> ops executed when the block runs to its end
    rem: dict[int, int]  # slot -> ops from it to its block's end, itself included
    entries: list[int]  # where a run or a callback may start
    calls_helpers: bool
    has_pcalls: bool
    writes_r10: bool

    @property
    def end(self) -> int:
        return len(self.insns)


def _fault(idx: int, message: str) -> Op:
    return Op(idx, "fault", message=message)


def _target(n: int, idx: int, disp: int) -> int | None:
    t = idx + disp + 1
    return t if 0 <= t < n else None


def _reg(r: int) -> int:
    if r > MAX_BPF_REG:                 # MAX_BPF_REG itself is BPF_REG_AX (ctx rewrites)
        raise _BadEncoding(f"register r{r} does not exist")
    return r


def _decode(insns: Sequence[Insn], idx: int, callx: bool) -> Op:
    """One slot, decoded the way the interpreter's binders decode it."""
    insn = insns[idx]
    code = insn.code
    cls = BPF_CLASS(code)
    n = len(insns)
    bad = f"invalid encoding of opcode 0x{code:02x}: "
    unknown = _fault(idx, f"unknown opcode 0x{code:02x}")
    try:
        if cls in (BPF_ALU, BPF_ALU64):
            is64 = cls == BPF_ALU64
            opcode, use_reg = BPF_OP(code), BPF_SRC(code) == BPF_X
            if opcode == BPF_NEG:
                if use_reg:
                    return unknown
                return Op(idx, "neg", idx + 1, is64=is64, dst=_reg(insn.dst_reg))
            if opcode == BPF_END:
                if is64 and BPF_SRC(code) == BPF_TO_BE:
                    return unknown
                if insn.imm not in alu.ENDIAN_WIDTHS:
                    return _fault(idx, bad + f"byte-order width {insn.imm}")
                swap = is64 or BPF_SRC(code) == BPF_TO_BE
                return Op(idx, "end", idx + 1, dst=_reg(insn.dst_reg), off=insn.imm, signed=swap)
            if opcode not in _ALU_BINOPS:
                return unknown
            dst = _reg(insn.dst_reg)
            if opcode == BPF_MOV and insn.off != 0:
                widths = alu.MOVSX64_WIDTHS if is64 else alu.MOVSX32_WIDTHS
                if not use_reg or insn.off not in widths:
                    return _fault(idx, bad + f"mov with off={insn.off}")
                return Op(idx, "movsx", idx + 1, is64=is64, dst=dst, src=_reg(insn.src_reg), off=insn.off)
            if insn.off == 1 and opcode in (BPF_DIV, BPF_MOD):
                signed = True
            elif insn.off == 0:
                signed = False
            else:
                return _fault(idx, bad + f"off={insn.off}")
            src = _reg(insn.src_reg) if use_reg else None
            return Op(idx, "alu", idx + 1, is64=is64, op=opcode, dst=dst, src=src, k=u64(insn.imm), signed=signed)
        if cls in (BPF_JMP, BPF_JMP32):
            opcode = BPF_OP(code)
            if opcode == BPF_JA and BPF_SRC(code) == BPF_K:
                disp = insn.off if cls == BPF_JMP else insn.imm
                tgt = _target(n, idx, disp)
                if tgt is None:
                    return _fault(idx, bad + f"jump out of range ({disp:+d})")
                return Op(idx, "ja", tgt=tgt)
            if opcode in _JMP_CONDS:
                tgt = _target(n, idx, insn.off)
                if tgt is None:
                    return _fault(idx, bad + f"jump out of range (off={insn.off})")
                use_reg = BPF_SRC(code) == BPF_X
                return Op(idx, "jmp", idx + 1, tgt, is64=cls == BPF_JMP, op=opcode, dst=_reg(insn.dst_reg),
                          src=_reg(insn.src_reg) if use_reg else None, k=u64(insn.imm))
            if cls == BPF_JMP32:
                return unknown
            if code == BPF_JMP | BPF_JCOND:
                if insn.src_reg != BPF_MAY_GOTO:
                    return _fault(idx, bad + f"conditional pseudo-jump {insn.src_reg}")
                tgt = _target(n, idx, insn.off)
                if tgt is None:
                    return _fault(idx, bad + f"jump out of range (off={insn.off})")
                return Op(idx, "may_goto", idx + 1, tgt)
            if code == BPF_JMP | BPF_EXIT:
                return Op(idx, "exit")
            if code == BPF_JMP | BPF_CALL | BPF_X:
                if not callx:
                    return _fault(idx, bad + "callx is not part of the Linux ISA")
                return Op(idx, "callx", idx + 1, dst=_reg(insn.dst_reg))
            if code == BPF_JMP | BPF_CALL:
                if insn.src_reg == BPF_PSEUDO_CALL:
                    tgt = _target(n, idx, insn.imm)
                    if tgt is None:
                        return _fault(idx, bad + f"call target out of range ({insn.imm:+d})")
                    return Op(idx, "pcall", idx + 1, tgt)
                if insn.src_reg == BPF_PSEUDO_KFUNC_CALL:   # kfuncs sit in the helper table by kfunc_key
                    return Op(idx, "call", idx + 1, k=KFUNC_KEY_BASE + insn.imm)
                if insn.src_reg != 0:
                    return _fault(idx, bad + f"call with src_reg={insn.src_reg}")
                return Op(idx, "call", idx + 1, k=insn.imm)
            return unknown
        size_code = BPF_SIZE(code)
        size = BPF_SIZE_BYTES[size_code]
        mode = BPF_MODE(code)
        if code == _LD_IMM64:
            if idx + 1 >= n:
                return _fault(idx, bad + "ld_imm64 without its second half")
            value = u32(insn.imm) | (u32(insns[idx + 1].imm) << 32)
            if insn.src_reg == BPF_PSEUDO_FUNC:     # a callback: its insn index, as the interpreter
                value = idx + 1 + s32(insn.imm)
            return Op(idx, "ld_imm64", idx + 2, dst=_reg(insn.dst_reg), k=value)
        if cls == BPF_LD and mode in (BPF_ABS, BPF_IND) and size_code != BPF_DW:
            src = _reg(insn.src_reg) if mode == BPF_IND else None
            return Op(idx, "ld_pkt", idx + 1, src=src, k=u64(insn.imm), size=size)
        if cls == BPF_LDX and (mode == BPF_MEM or (mode == BPF_MEMSX and size_code != BPF_DW)):
            return Op(idx, "ldx", idx + 1, dst=_reg(insn.dst_reg), src=_reg(insn.src_reg), off=insn.off, size=size,
                      signed=mode == BPF_MEMSX)
        if cls == BPF_ST and mode == BPF_MEM:
            return Op(idx, "st", idx + 1, dst=_reg(insn.dst_reg), k=u64(insn.imm), off=insn.off, size=size)
        if cls == BPF_STX and mode == BPF_MEM:
            return Op(idx, "stx", idx + 1, dst=_reg(insn.dst_reg), src=_reg(insn.src_reg), off=insn.off, size=size)
        if cls == BPF_STX and mode == BPF_ATOMIC:
            imm = insn.imm
            if imm not in (BPF_LOAD_ACQ, BPF_STORE_REL):
                if size_code not in (BPF_W, BPF_DW):
                    return _fault(idx, bad + "read-modify-write atomics are 32 or 64 bit only")
                rmw = imm & ~BPF_FETCH
                if imm not in (BPF_XCHG, BPF_CMPXCHG) and (rmw not in _ATOMIC_RMW or imm & ~(rmw | BPF_FETCH)):
                    return _fault(idx, bad + f"atomic op imm=0x{u32(imm):x}")
            return Op(idx, "atomic", idx + 1, op=imm, dst=_reg(insn.dst_reg), src=_reg(insn.src_reg), off=insn.off,
                      size=size)
        return unknown
    except _BadEncoding as exc:
        return _fault(idx, bad + str(exc))


def _writes(op: Op) -> Iterable[int]:
    """Registers an op may write (for the r10-is-constant check)."""
    if op.kind in ("alu", "neg", "end", "movsx", "ld_imm64", "ldx"):
        yield op.dst
    elif op.kind == "atomic" and op.op not in (BPF_STORE_REL,):
        yield op.dst if op.op == BPF_LOAD_ACQ else op.src


def analyze(insns: Sequence[Insn], extra_entries: Iterable[int] = (), *, callx: bool = False) -> Program:
    insns = list(insns)
    n = len(insns)
    ops: dict[int, Op] = {}
    second_half = False
    for idx in range(n):
        if second_half:
            second_half = False
            continue
        op = _decode(insns, idx, callx)
        ops[idx] = op
        second_half = op.kind == "ld_imm64"
    entries = {0, *extra_entries}
    for op in ops.values():
        if op.kind == "pcall":
            entries.add(op.tgt)
        elif op.kind == "ld_imm64" and insns[op.idx].src_reg == BPF_PSEUDO_FUNC and 0 <= op.k < n:
            entries.add(op.k)
    entries = {e for e in entries if 0 <= e <= n}
    leaders = set(entries)
    for op in ops.values():
        if op.tgt is not None:
            leaders.add(op.tgt)
        if op.kind in ("ja", "jmp", "may_goto", "exit", "call", "callx", "pcall", "fault") and op.idx + 1 <= n:
            leaders.add(op.idx + 1)
    # a jump into the second half of an ld_imm64 executes the interpreter's fault op there
    for t in sorted(leaders):
        if t < n and t not in ops:
            ops[t] = _fault(t, "executed the second half of an ld_imm64")
            ld = ops.get(t - 1)
            if ld is not None and ld.kind == "ld_imm64" and ld.nxt <= n:
                leaders.add(ld.nxt)
    # falling off the end
    reaches_end = any(op.nxt == n for op in ops.values() if op.nxt is not None) or n in leaders or n == 0
    if reaches_end:
        ops[n] = _fault(n, "fell off the end of the program")
        leaders.add(n)
    leaders_sorted = sorted(t for t in leaders if t in ops)
    block_len: dict[int, int] = {}
    rem: dict[int, int] = {}
    leader_set = set(leaders_sorted)
    for start in leaders_sorted:
        chain = [start]
        cur = ops[start]
        while cur.kind not in ("ja", "jmp", "may_goto", "exit", "call", "callx", "pcall", "fault"):
            nxt = cur.nxt
            if nxt is None or nxt in leader_set or nxt not in ops:
                break
            chain.append(nxt)
            cur = ops[nxt]
        block_len[start] = len(chain)
        for i, slot in enumerate(chain):
            rem[slot] = len(chain) - i
    # slots never reached by straight-line flow from a leader stay dead; drop them
    ops = {idx: op for idx, op in ops.items() if idx in rem}
    return Program(
        insns=insns,
        ops=ops,
        leaders=leaders_sorted,
        block_len=block_len,
        rem=rem,
        entries=sorted(e for e in entries if e in ops),
        calls_helpers=any(op.kind in ("call", "callx") for op in ops.values()),
        has_pcalls=any(op.kind == "pcall" for op in ops.values()),
        writes_r10=any(r == BPF_REG_10 for op in ops.values() for r in _writes(op)),
    )
