"""Kernel-syntax disassembler and assembler — kernel/bpf/disasm.c (print_bpf_insn, func_id_name).

:func:`print_bpf_insn` produces exactly what the kernel prints into the verifier log for one
instruction, ``(b7) r0 = 0`` (the log adds the ``N: `` prefix), including its ``BUG_..`` lines for
encodings it has no text for. :func:`disasm` / :func:`disasm_prog` use it with a symbolic rendering
of LD_IMM64 pseudo sources in the style of bpftool's ``print_imm`` (``map[id:5]``,
``map[id:5][0]+16``) so that the text can be assembled back; :func:`assemble` parses that text
(optionally with the log's ``N: (xx) `` prefix and ``; comment``) and ``assemble(disasm(x)) == x``
for every valid encoding.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from uapi.bpf import (
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_ATOMIC,
    BPF_B,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_FUNC_MAX_ID,
    BPF_H,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JCOND,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LOAD_ACQ,
    BPF_LSH,
    BPF_MAY_GOTO,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_BTF_ID,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_MAP_VALUE,
    BPF_RSH,
    BPF_ST,
    BPF_STORE_REL,
    BPF_STX,
    BPF_SUB,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    FuncId,
)
from uapi.insn import (
    BPF_CLASS,
    BPF_MODE,
    BPF_OP,
    BPF_SIZE,
    BPF_SRC,
    Insn,
    decode_prog,
    encode_prog,
    s32,
    u32,
    u64,
)

__all__ = [
    "AsmError",
    "func_id_name",
    "print_bpf_insn",
    "symbolic_imm",
    "disasm",
    "disasm_prog",
    "assemble",
    "assemble_insns",
]

ImmName = Callable[[Insn, Insn, int], str]  # cb_imm(insn, next_insn, full_imm)
CallName = Callable[[Insn], "str | None"]  # cb_call(insn)

_BPF_NOSPEC = 0xC0  # BPF_ST | BPF_NOSPEC: kernel-internal mode, not in the UAPI (include/linux/filter.h)
_BPF_ADDR_SPACE_CAST = 1  # off of the arena cast mov (enum bpf_addr_space_cast in bpf.h)
_BPF_ADDR_PERCPU = -1  # off of the kernel-internal per-CPU address mov
_ADDR_SPACE_SHIFT = 16
_ADDR_SPACE_MASK = (1 << _ADDR_SPACE_SHIFT) - 1
_HI_SHIFT = 32

# --- the strings of kernel/bpf/disasm.c ------------------------------------------------------------

_CLASS_STR = {BPF_LD: "ld", BPF_LDX: "ldx", BPF_ST: "st", BPF_STX: "stx", BPF_ALU: "alu", BPF_JMP: "jmp",
              BPF_JMP32: "jmp32", BPF_ALU64: "alu64"}
_ALU_STR = {BPF_ADD: "+=", BPF_SUB: "-=", BPF_MUL: "*=", BPF_DIV: "/=", BPF_OR: "|=", BPF_AND: "&=",
            BPF_LSH: "<<=", BPF_RSH: ">>=", BPF_NEG: "neg", BPF_MOD: "%=", BPF_XOR: "^=", BPF_MOV: "=",
            BPF_ARSH: "s>>=", BPF_END: "endian"}
_ALU_SIGN_STR = {BPF_DIV: "s/=", BPF_MOD: "s%="}
_MOVSX_STR = {8: "(s8)", 16: "(s16)", 32: "(s32)"}
_ATOMIC_ALU_STR = {BPF_ADD: "add", BPF_AND: "and", BPF_OR: "or", BPF_XOR: "xor"}
_LDST_STR = {BPF_W: "u32", BPF_H: "u16", BPF_B: "u8", BPF_DW: "u64"}
_LDSX_STR = {BPF_W: "s32", BPF_H: "s16", BPF_B: "s8"}
_JMP_STR = {BPF_JA: "jmp", BPF_JEQ: "==", BPF_JGT: ">", BPF_JLT: "<", BPF_JGE: ">=", BPF_JLE: "<=",
            BPF_JSET: "&", BPF_JNE: "!=", BPF_JSGT: "s>", BPF_JSLT: "s<", BPF_JSGE: "s>=", BPF_JSLE: "s<=",
            BPF_CALL: "call", BPF_EXIT: "exit"}
_NULL = "(null)"  # what the kernel's printf makes of a missing table entry

_FUNC_NAMES: dict[int, str] = {int(m): "bpf_" + name for name, m in FuncId.__members__.items()
                               if 0 <= int(m) < BPF_FUNC_MAX_ID}
_FUNC_IDS: dict[str, int] = {name: fid for fid, name in _FUNC_NAMES.items()}
_ATOMIC_RMW = tuple(_ATOMIC_ALU_STR)
_PTR_SRCS = (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE,
             BPF_PSEUDO_BTF_ID)


def func_id_name(func_id: int) -> str:
    """``bpf_<name>`` of a helper id, ``unknown`` otherwise."""
    return _FUNC_NAMES.get(func_id, "unknown")


def _wr(cls: int) -> str:
    return "w" if cls in (BPF_ALU, BPF_JMP32) else "r"


def _mem(size: int, reg: int, off: int, table: dict[int, str] = _LDST_STR) -> str:
    return f"({table.get(size, _NULL)} *)(r{reg} {off:+d})"


def _func_get_name(insn: Insn, cb_call: CallName | None, fallback: str) -> str:
    if insn.src_reg == 0 and insn.imm in _FUNC_NAMES:
        return _FUNC_NAMES[insn.imm]
    if cb_call is not None:
        name = cb_call(insn)
        if name:
            return name
    if insn.src_reg == BPF_PSEUDO_CALL:
        return f"{insn.imm:+d}"
    if insn.src_reg == BPF_PSEUDO_KFUNC_CALL:
        return "kernel-function"
    return fallback


def _print_alu(insn: Insn) -> str:
    cls, op, d, s = BPF_CLASS(insn.code), BPF_OP(insn.code), insn.dst_reg, insn.src_reg
    w = _wr(cls)
    if op == BPF_END:
        if cls == BPF_ALU64:
            return f"r{d} = bswap{insn.imm} r{d}"
        return f"r{d} = {'be' if BPF_SRC(insn.code) == BPF_TO_BE else 'le'}{insn.imm} r{d}"
    if op == BPF_NEG:
        return f"{w}{d} = -{w}{d}"
    if insn.code == BPF_ALU64 | BPF_MOV | BPF_X and insn.off == _BPF_ADDR_SPACE_CAST:
        return f"r{d} = addr_space_cast(r{s}, {u32(insn.imm) >> _ADDR_SPACE_SHIFT}, {insn.imm & _ADDR_SPACE_MASK})"
    if insn.code == BPF_ALU64 | BPF_MOV | BPF_X and insn.off == _BPF_ADDR_PERCPU:
        return f"r{d} = &(void __percpu *)(r{s})"
    signed = op in _ALU_SIGN_STR and insn.off == 1
    opstr = _ALU_SIGN_STR[op] if signed else _ALU_STR.get(op, _NULL)
    if BPF_SRC(insn.code) == BPF_X:
        movsx = _MOVSX_STR.get(insn.off, _NULL) if op == BPF_MOV and insn.off in _MOVSX_STR else ""
        return f"{w}{d} {opstr} {movsx}{w}{s}"
    return f"{w}{d} {opstr} {insn.imm}"


def _print_stx(insn: Insn) -> str | None:
    size, d, s, off, imm = BPF_SIZE(insn.code), insn.dst_reg, insn.src_reg, insn.off, insn.imm
    mode = BPF_MODE(insn.code)
    if mode == BPF_MEM:
        return f"*{_mem(size, d, off)} = r{s}"
    if mode != BPF_ATOMIC:
        return None
    width = "64" if size == BPF_DW else ""
    if imm in _ATOMIC_RMW:
        return f"lock *{_mem(size, d, off)} {_ALU_STR[imm]} r{s}"
    if imm & ~BPF_FETCH in _ATOMIC_RMW and imm & BPF_FETCH:
        return f"r{s} = atomic{width}_fetch_{_ATOMIC_ALU_STR[imm & ~BPF_FETCH]}({_mem(size, d, off)}, r{s})"
    if imm == BPF_CMPXCHG:
        return f"r0 = atomic{width}_cmpxchg({_mem(size, d, off)}, r0, r{s})"
    if imm == BPF_XCHG:
        return f"r{s} = atomic{width}_xchg({_mem(size, d, off)}, r{s})"
    if imm == BPF_LOAD_ACQ:
        return f"r{d} = load_acquire({_mem(size, s, off)})"
    if imm == BPF_STORE_REL:
        return f"store_release({_mem(size, d, off)}, r{s})"
    return None


def _print_jmp(insn: Insn, cb_call: CallName | None) -> str:
    cls, op, code = BPF_CLASS(insn.code), BPF_OP(insn.code), insn.code
    if op == BPF_CALL:
        if insn.src_reg == BPF_PSEUDO_CALL:
            return f"call pc{_func_get_name(insn, cb_call, '')}"
        return f"call {_func_get_name(insn, cb_call, 'unknown')}#{insn.imm}"
    if code == BPF_JMP | BPF_JA:
        return f"goto pc{insn.off:+d}"
    if code == BPF_JMP | BPF_JCOND and insn.src_reg == BPF_MAY_GOTO:
        return f"may_goto pc{insn.off:+d}"
    if code == BPF_JMP32 | BPF_JA:
        return f"gotol pc{insn.imm:+d}"
    if code == BPF_JMP | BPF_EXIT:
        return "exit"
    w, opstr = _wr(cls), _JMP_STR.get(op, _NULL)
    if BPF_SRC(code) == BPF_X:
        return f"if {w}{insn.dst_reg} {opstr} {w}{insn.src_reg} goto pc{insn.off:+d}"
    return f"if {w}{insn.dst_reg} {opstr} 0x{u32(insn.imm):x} goto pc{insn.off:+d}"


def print_bpf_insn(
    insn: Insn,
    next_insn: Insn | None = None,
    *,
    allow_ptr_leaks: bool = True,
    cb_imm: ImmName | None = None,
    cb_call: CallName | None = None,
) -> str:
    """One line of kernel/bpf/disasm.c output, without the trailing newline.

    ``next_insn`` is the second half of an LD_IMM64. ``cb_imm``/``cb_call`` are the kernel's
    ``bpf_insn_cbs`` callbacks (the verifier passes a kfunc-name ``cb_call`` and no ``cb_imm``).
    """
    code = insn.code
    cls = BPF_CLASS(code)
    prefix = f"({code:02x}) "
    if cls in (BPF_ALU, BPF_ALU64):
        return prefix + _print_alu(insn)
    if cls == BPF_STX:
        text = _print_stx(insn)
        return prefix + text if text is not None else f"BUG_{code:02x}"
    if cls == BPF_ST:
        if BPF_MODE(code) == BPF_MEM:
            return prefix + f"*{_mem(BPF_SIZE(code), insn.dst_reg, insn.off)} = {insn.imm}"
        if BPF_MODE(code) == _BPF_NOSPEC:
            return prefix + "nospec"
        return f"BUG_st_{code:02x}"
    if cls == BPF_LDX:
        mode = BPF_MODE(code)
        if mode not in (BPF_MEM, BPF_MEMSX):
            return f"BUG_ldx_{code:02x}"
        table = _LDST_STR if mode == BPF_MEM else _LDSX_STR
        return prefix + f"r{insn.dst_reg} = *{_mem(BPF_SIZE(code), insn.src_reg, insn.off, table)}"
    if cls == BPF_LD:
        mode, size = BPF_MODE(code), _LDST_STR[BPF_SIZE(code)]
        if mode == BPF_ABS:
            return prefix + f"r0 = *({size} *)skb[{insn.imm}]"
        if mode == BPF_IND:
            return prefix + f"r0 = *({size} *)skb[r{insn.src_reg} + {insn.imm}]"
        if mode == BPF_IMM and BPF_SIZE(code) == BPF_DW:
            if next_insn is None:
                raise ValueError("ld_imm64 needs its second instruction")
            imm = u32(insn.imm) | (u32(next_insn.imm) << _HI_SHIFT)
            if insn.src_reg in _PTR_SRCS and not allow_ptr_leaks:
                imm = 0
            name = cb_imm(insn, next_insn, imm) if cb_imm is not None else f"0x{imm:x}"
            return prefix + f"r{insn.dst_reg} = {name}"
        return f"BUG_ld_{code:02x}"
    return prefix + _print_jmp(insn, cb_call)


def symbolic_imm(insn: Insn, next_insn: Insn, full_imm: int) -> str:
    """A ``cb_imm`` naming LD_IMM64 pseudo sources the way bpftool's print_imm does."""
    src, imm, imm2 = insn.src_reg, u32(insn.imm), u32(next_insn.imm)
    return {
        BPF_PSEUDO_MAP_FD: lambda: f"map[id:{imm}]",
        BPF_PSEUDO_MAP_VALUE: lambda: f"map[id:{imm}][0]+{imm2}",
        BPF_PSEUDO_MAP_IDX: lambda: f"map[idx:{imm}]",
        BPF_PSEUDO_MAP_IDX_VALUE: lambda: f"map[idx:{imm}][0]+{imm2}",
        BPF_PSEUDO_BTF_ID: lambda: f"btf_id[{imm}]" + (f"[fd:{imm2}]" if imm2 else ""),
        BPF_PSEUDO_FUNC: lambda: f"subprog[{insn.imm:+d}]",
    }.get(src, lambda: f"0x{full_imm:x}")()


def _as_slots(insn_or_pair) -> tuple[Insn, Insn | None]:
    if isinstance(insn_or_pair, Insn):
        return insn_or_pair, None
    if isinstance(insn_or_pair, (bytes, bytearray, memoryview)):
        insn_or_pair = decode_prog(insn_or_pair)
    items = list(insn_or_pair)
    return items[0], items[1] if len(items) > 1 else None


def disasm(insn_or_pair, idx: int | None = None, *, symbolic: bool = True) -> str:
    """Disassemble one instruction (an LD_IMM64 as its pair).

    Returns the text after the opcode, ``r0 = 0``; with ``idx``, the verifier-log line
    ``0: (b7) r0 = 0``. ``symbolic`` names LD_IMM64 pseudo sources (see :func:`symbolic_imm`).
    """
    insn, nxt = _as_slots(insn_or_pair)
    line = print_bpf_insn(insn, nxt, cb_imm=symbolic_imm if symbolic else None)
    if idx is not None:
        return f"{idx}: {line}"
    prefix = f"({insn.code:02x}) "
    return line[len(prefix) :] if line.startswith(prefix) else line


def disasm_prog(prog: bytes | Sequence[Insn], *, symbolic: bool = True) -> list[str]:
    """Verifier-log style lines ``N: (xx) text``; an LD_IMM64 is one line covering two slots."""
    insns = decode_prog(prog) if isinstance(prog, (bytes, bytearray, memoryview)) else list(prog)
    lines, i = [], 0
    while i < len(insns):
        wide = insns[i].code == BPF_LD | BPF_IMM | BPF_DW and i + 1 < len(insns)
        pair = insns[i : i + 2] if wide else [insns[i]]
        lines.append(disasm(pair, i, symbolic=symbolic))
        i += len(pair)
    return lines


# --- assembler ---------------------------------------------------------------------------------------


class AsmError(ValueError):
    """Text that is not an instruction in the kernel's disassembly syntax."""


_R = r"r(\d+)"
_RW = r"([rw])(\d+)"
_NUM = r"(-?\d+)"
_OFF = r"([+-]\d+)"
_SZ = r"(u8|u16|u32|u64)"
_SSZ = r"(s8|s16|s32)"
_SIZE_OF = {v: k for k, v in _LDST_STR.items()}
_SSIZE_OF = {v: k for k, v in _LDSX_STR.items()}
_ALU_OF = {v: k for k, v in _ALU_STR.items() if k not in (BPF_NEG, BPF_END)}
_ALU_SIGN_OF = {v: k for k, v in _ALU_SIGN_STR.items()}
_JMP_OF = {v: k for k, v in _JMP_STR.items() if k not in (BPF_JA, BPF_CALL, BPF_EXIT)}
_ATOMIC_OF = {v: k for k, v in _ATOMIC_ALU_STR.items()}
_MOVSX_OF = {v: k for k, v in _MOVSX_STR.items()}
_ALU_OPS_RE = "|".join(re.escape(s) for s in sorted({*_ALU_OF, *_ALU_SIGN_OF}, key=len, reverse=True))
_JMP_OPS_RE = "|".join(re.escape(s) for s in sorted(_JMP_OF, key=len, reverse=True))
_LOCK_OPS_RE = "|".join(re.escape(_ALU_STR[op]) for op in _ATOMIC_RMW)
_LINE_PREFIX = re.compile(r"^\s*(?:\d+:\s*)?(?:\(([0-9a-fA-F]{2})\)\s*)?")


def _reg(text: str) -> int:
    n = int(text)
    if n > 0xF:
        raise AsmError(f"no register r{n}")
    return n


def _cls_of(w: str, narrow: int, wide: int) -> int:
    return narrow if w == "w" else wide


def _same(*regs: str) -> str:
    if len(set(regs)) != 1:
        raise AsmError(f"operands must name the same register: {regs}")
    return regs[0]


def _imm(text: str) -> int:
    value = int(text, 0)
    if not -(1 << 31) <= value < (1 << 32):
        raise AsmError(f"immediate {text} does not fit in 32 bits")
    return s32(value)


def _a_neg(m):
    (w1, d1, w2, d2) = m.groups()
    _same(w1, w2)
    return Insn(_cls_of(w1, BPF_ALU, BPF_ALU64) | BPF_NEG | BPF_K, _reg(_same(d1, d2)))


def _a_end(m):
    d1, kind, bits, d2 = m.groups()
    return Insn(BPF_ALU | BPF_END | (BPF_TO_BE if kind == "be" else BPF_TO_LE), _reg(_same(d1, d2)), 0, 0, int(bits))


def _a_bswap(m):
    d1, bits, d2 = m.groups()
    return Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, _reg(_same(d1, d2)), 0, 0, int(bits))


def _a_cast(m):
    d, s, dst_as, src_as = m.groups()
    imm = (int(dst_as) << _ADDR_SPACE_SHIFT) | int(src_as)
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, _reg(d), _reg(s), _BPF_ADDR_SPACE_CAST, imm)


def _a_percpu(m):
    d, s = m.groups()
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, _reg(d), _reg(s), _BPF_ADDR_PERCPU, 0)


def _alu_op(opstr: str) -> tuple[int, int]:
    if opstr in _ALU_SIGN_OF:
        return _ALU_SIGN_OF[opstr], 1
    return _ALU_OF[opstr], 0


def _a_alu_x(m):
    w1, d, opstr, movsx, w2, s = m.groups()
    _same(w1, w2)
    op, off = _alu_op(opstr)
    if movsx:
        if op != BPF_MOV:
            raise AsmError(f"{movsx} only applies to '='")
        off = _MOVSX_OF[movsx]
    return Insn(_cls_of(w1, BPF_ALU, BPF_ALU64) | op | BPF_X, _reg(d), _reg(s), off, 0)


def _a_alu_k(m):
    w, d, opstr, imm = m.groups()
    op, off = _alu_op(opstr)
    return Insn(_cls_of(w, BPF_ALU, BPF_ALU64) | op | BPF_K, _reg(d), 0, off, _imm(imm))


def _ld_imm64(dst: str, src: int, lo: int, hi: int) -> list[Insn]:
    return [Insn(BPF_LD | BPF_IMM | BPF_DW, _reg(dst), src, 0, s32(lo)), Insn(0, 0, 0, 0, s32(hi))]


def _a_lddw(m):
    d, value, _ll = m.groups()
    v = int(value, 16)
    if v != u64(v):
        raise AsmError(f"{value} does not fit in 64 bits")
    return _ld_imm64(d, 0, u32(v), v >> _HI_SHIFT)


def _a_map(m):
    d, kind, ref, value_off = m.groups()
    if kind == "id":
        src = BPF_PSEUDO_MAP_FD if value_off is None else BPF_PSEUDO_MAP_VALUE
    else:
        src = BPF_PSEUDO_MAP_IDX if value_off is None else BPF_PSEUDO_MAP_IDX_VALUE
    return _ld_imm64(d, src, int(ref), int(value_off or 0))


def _a_btf_id(m):
    d, btf_id, fd = m.groups()
    return _ld_imm64(d, BPF_PSEUDO_BTF_ID, int(btf_id), int(fd or 0))


def _a_subprog(m):
    d, rel = m.groups()
    return _ld_imm64(d, BPF_PSEUDO_FUNC, u32(int(rel)), 0)


def _a_ldx(m):
    d, size, s, off = m.groups()
    if size in _SSIZE_OF:
        return Insn(BPF_LDX | BPF_MEMSX | _SSIZE_OF[size], _reg(d), _reg(s), int(off), 0)
    return Insn(BPF_LDX | BPF_MEM | _SIZE_OF[size], _reg(d), _reg(s), int(off), 0)


def _a_ld_abs(m):
    d, size, imm = m.groups()
    if d != "0":
        raise AsmError("LD_ABS always loads r0")
    return Insn(BPF_LD | BPF_ABS | _SIZE_OF[size], 0, 0, 0, _imm(imm))


def _a_ld_ind(m):
    d, size, s, imm = m.groups()
    if d != "0":
        raise AsmError("LD_IND always loads r0")
    return Insn(BPF_LD | BPF_IND | _SIZE_OF[size], 0, _reg(s), 0, _imm(imm))


def _a_stx(m):
    size, d, off, s = m.groups()
    return Insn(BPF_STX | BPF_MEM | _SIZE_OF[size], _reg(d), _reg(s), int(off), 0)


def _a_st(m):
    size, d, off, imm = m.groups()
    return Insn(BPF_ST | BPF_MEM | _SIZE_OF[size], _reg(d), 0, int(off), _imm(imm))


def _atomic(size: str, d: str, off: str, s: str, imm: int, width: str | None = None) -> Insn:
    code_size = _SIZE_OF[size]
    if width is not None and (width == "64") != (code_size == BPF_DW):
        raise AsmError(f"atomic{width} does not match ({size} *)")
    return Insn(BPF_STX | BPF_ATOMIC | code_size, _reg(d), _reg(s), int(off), imm)


def _a_lock(m):
    size, d, off, opstr, s = m.groups()
    return _atomic(size, d, off, s, _ALU_OF[opstr])


def _a_fetch(m):
    r, width, opname, size, d, off, s = m.groups()
    return _atomic(size, d, off, _same(r, s), _ATOMIC_OF[opname] | BPF_FETCH, width or "")


def _a_cmpxchg(m):
    width, size, d, off, s = m.groups()
    return _atomic(size, d, off, s, BPF_CMPXCHG, width or "")


def _a_xchg(m):
    r, width, size, d, off, s = m.groups()
    return _atomic(size, d, off, _same(r, s), BPF_XCHG, width or "")


def _a_load_acq(m):
    d, size, s, off = m.groups()
    return Insn(BPF_STX | BPF_ATOMIC | _SIZE_OF[size], _reg(d), _reg(s), int(off), BPF_LOAD_ACQ)


def _a_store_rel(m):
    size, d, off, s = m.groups()
    return Insn(BPF_STX | BPF_ATOMIC | _SIZE_OF[size], _reg(d), _reg(s), int(off), BPF_STORE_REL)


def _a_nospec(m):
    return Insn(BPF_ST | _BPF_NOSPEC)


def _a_call_pc(m):
    return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, _imm(m.group(1)))


def _a_call(m):
    name, num = m.groups()
    if name == "kernel-function":
        if num is None:
            raise AsmError("kernel-function needs #<btf id>")
        return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, _imm(num))
    if num is None:
        if name not in _FUNC_IDS:
            raise AsmError(f"unknown helper {name}")
        return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, _FUNC_IDS[name])
    imm = _imm(num)
    if func_id_name(imm) != name:
        raise AsmError(f"helper #{imm} is {func_id_name(imm)}, not {name}")
    return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, imm)


def _a_goto(m):
    return Insn(BPF_JMP | BPF_JA, 0, 0, int(m.group(1)), 0)


def _a_gotol(m):
    return Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, _imm(m.group(1)))


def _a_may_goto(m):
    return Insn(BPF_JMP | BPF_JCOND, 0, BPF_MAY_GOTO, int(m.group(1)), 0)


def _a_exit(m):
    return Insn(BPF_JMP | BPF_EXIT)


def _a_jmp_x(m):
    w1, d, opstr, w2, s, off = m.groups()
    _same(w1, w2)
    return Insn(_cls_of(w1, BPF_JMP32, BPF_JMP) | _JMP_OF[opstr] | BPF_X, _reg(d), _reg(s), int(off), 0)


def _a_jmp_k(m):
    w, d, opstr, imm, off = m.groups()
    return Insn(_cls_of(w, BPF_JMP32, BPF_JMP) | _JMP_OF[opstr] | BPF_K, _reg(d), 0, int(off), _imm(imm))


_SYNTAX: tuple[tuple[re.Pattern, Callable], ...] = tuple(
    (re.compile(pattern), build)
    for pattern, build in (
        (rf"{_RW} = -{_RW}", _a_neg),
        (rf"{_R} = (be|le)(\d+) {_R}", _a_end),
        (rf"{_R} = bswap(\d+) {_R}", _a_bswap),
        (rf"{_R} = addr_space_cast\({_R}, (\d+), (\d+)\)", _a_cast),
        (rf"{_R} = &\(void __percpu \*\)\({_R}\)", _a_percpu),
        (rf"{_R} = (0x[0-9a-fA-F]+)( ll)?", _a_lddw),
        (rf"{_R} = map\[(id|idx):(\d+)\](?:\[0\]\+(\d+))?", _a_map),
        (rf"{_R} = btf_id\[(\d+)\](?:\[fd:(\d+)\])?", _a_btf_id),
        (rf"{_R} = subprog\[([+-]\d+)\]", _a_subprog),
        (rf"{_R} = \*\({_SZ} \*\)skb\[{_NUM}\]", _a_ld_abs),
        (rf"{_R} = \*\({_SZ} \*\)skb\[{_R} \+ {_NUM}\]", _a_ld_ind),
        (rf"{_R} = \*\((u8|u16|u32|u64|s8|s16|s32) \*\)\({_R} {_OFF}\)", _a_ldx),
        (rf"\*\({_SZ} \*\)\({_R} {_OFF}\) = {_R}", _a_stx),
        (rf"\*\({_SZ} \*\)\({_R} {_OFF}\) = {_NUM}", _a_st),
        (rf"lock \*\({_SZ} \*\)\({_R} {_OFF}\) ({_LOCK_OPS_RE}) {_R}", _a_lock),
        (rf"{_R} = atomic(64)?_fetch_(add|and|or|xor)\(\({_SZ} \*\)\({_R} {_OFF}\), {_R}\)", _a_fetch),
        (rf"r0 = atomic(64)?_cmpxchg\(\({_SZ} \*\)\({_R} {_OFF}\), r0, {_R}\)", _a_cmpxchg),
        (rf"{_R} = atomic(64)?_xchg\(\({_SZ} \*\)\({_R} {_OFF}\), {_R}\)", _a_xchg),
        (rf"{_R} = load_acquire\(\({_SZ} \*\)\({_R} {_OFF}\)\)", _a_load_acq),
        (rf"store_release\(\({_SZ} \*\)\({_R} {_OFF}\), {_R}\)", _a_store_rel),
        (r"nospec", _a_nospec),
        (r"call pc([+-]\d+)", _a_call_pc),
        (r"call ([A-Za-z_][\w-]*)(?:#(-?\d+))?", _a_call),
        (r"goto pc([+-]\d+)", _a_goto),
        (r"gotol pc([+-]\d+)", _a_gotol),
        (r"may_goto pc([+-]\d+)", _a_may_goto),
        (r"exit", _a_exit),
        (rf"if {_RW} ({_JMP_OPS_RE}) {_RW} goto pc{_OFF}", _a_jmp_x),
        (rf"if {_RW} ({_JMP_OPS_RE}) (0x[0-9a-fA-F]+|-?\d+) goto pc{_OFF}", _a_jmp_k),
        (rf"{_RW} ({_ALU_OPS_RE}) (\(s(?:8|16|32)\))?{_RW}", _a_alu_x),
        (rf"{_RW} ({_ALU_OPS_RE}) {_NUM}", _a_alu_k),
    )
)


def _assemble_line(text: str) -> list[Insn]:
    for pattern, build in _SYNTAX:
        m = pattern.fullmatch(text)
        if m:
            out = build(m)
            return out if isinstance(out, list) else [out]
    raise AsmError(f"cannot assemble {text!r}")


def assemble_insns(text: str) -> list[Insn]:
    """Parse kernel-syntax lines (``N: (xx) `` prefixes and ``; comments`` allowed)."""
    out: list[Insn] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = _LINE_PREFIX.match(line)
        body = line[m.end() :].strip()
        try:
            insns = _assemble_line(body)
        except (AsmError, ValueError) as exc:
            raise AsmError(f"line {lineno}: {exc}") from None
        if m.group(1) is not None and int(m.group(1), 16) != insns[0].code:
            raise AsmError(f"line {lineno}: opcode ({m.group(1)}) does not match {body!r} ({insns[0].code:02x})")
        out.extend(insns)
    return out


def assemble(text: str) -> bytes:
    return encode_prog(assemble_insns(text))
