"""ALU/ALU64/JMP/JMP32 semantics, executed through the interpreter, against an independent model.

The model below is written from the ISA description (RFC 9669 plus the Linux extensions) with
explicit masking, and deliberately computes things differently from fakekernel/interp/alu.py
(floor-then-correct division, bit-string byte swaps, table-free comparisons).
"""
from __future__ import annotations

import pytest
from hypothesis import example, given, strategies as st

from fakekernel.interp import AddressSpace, Interpreter, RunEnv
from fakekernel.interp import alu
from uapi.bpf import (
    BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ARSH, BPF_DIV, BPF_END, BPF_EXIT, BPF_JEQ, BPF_JGE,
    BPF_JGT, BPF_JLE, BPF_JLT, BPF_JMP, BPF_JMP32, BPF_JNE, BPF_JSET, BPF_JSGE, BPF_JSGT, BPF_JSLE,
    BPF_JSLT, BPF_K, BPF_LSH, BPF_MOD, BPF_MOV, BPF_MUL, BPF_NEG, BPF_OR, BPF_RSH, BPF_SUB, BPF_TO_BE,
    BPF_TO_LE, BPF_X, BPF_XOR,
)
from uapi.insn import BPF_EXIT_INSN, BPF_LD_IMM64, BPF_MOV64_IMM, BPF_MOV64_REG, Insn

M32, M64 = (1 << 32) - 1, (1 << 64) - 1


def sx(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def trunc_div(a: int, b: int) -> int:
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


def model_alu(op: int, signed: bool, a: int, b: int, width: int) -> int:
    mask = (1 << width) - 1
    a, b = a & mask, b & mask
    sa, sb = sx(a, width), sx(b, width)
    if op == BPF_ADD:
        r = a + b
    elif op == BPF_SUB:
        r = a - b
    elif op == BPF_MUL:
        r = a * b
    elif op == BPF_DIV:
        r = 0 if b == 0 else (trunc_div(sa, sb) if signed else a // b)
    elif op == BPF_MOD:
        r = a if b == 0 else (sa - sb * trunc_div(sa, sb) if signed else a - b * (a // b))
    elif op == BPF_OR:
        r = a | b
    elif op == BPF_AND:
        r = a & b
    elif op == BPF_XOR:
        r = a ^ b
    elif op == BPF_LSH:
        r = a << (b % width)
    elif op == BPF_RSH:
        r = a >> (b % width)
    elif op == BPF_ARSH:
        r = sa >> (b % width)
    elif op == BPF_MOV:
        r = b
    else:
        raise AssertionError(op)
    return r & mask  # a 32-bit result is zero-extended into the 64-bit register


def model_cond(op: int, a: int, b: int, width: int) -> bool:
    mask = (1 << width) - 1
    a, b = a & mask, b & mask
    sa, sb = sx(a, width), sx(b, width)
    return {
        BPF_JEQ: a == b, BPF_JNE: a != b, BPF_JGT: a > b, BPF_JGE: a >= b, BPF_JLT: a < b, BPF_JLE: a <= b,
        BPF_JSET: bool(a & b), BPF_JSGT: sa > sb, BPF_JSGE: sa >= sb, BPF_JSLT: sa < sb, BPF_JSLE: sa <= sb,
    }[op]


def run(insns) -> int:
    flat = []
    for i in insns:
        flat.extend(i if isinstance(i, tuple) else [i])
    mem = AddressSpace()
    return Interpreter(flat).run(mem, 0, helpers={}, env=RunEnv(mem=mem))


ALU_OPS = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR,
           BPF_MOV, BPF_ARSH]
JMP_OPS = [BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSET, BPF_JSGT, BPF_JSGE, BPF_JSLT,
           BPF_JSLE]
EDGES = [0, 1, 2, 31, 32, 63, 64, M32, 1 << 31, (1 << 31) - 1, 1 << 63, (1 << 63) - 1, M64, M64 - 1]
u64s = st.one_of(st.sampled_from(EDGES), st.integers(0, M64))
s32s = st.one_of(st.sampled_from([0, 1, -1, 31, 32, 63, -(1 << 31), (1 << 31) - 1]),
                 st.integers(-(1 << 31), (1 << 31) - 1))


@pytest.mark.parametrize("op", ALU_OPS)
@pytest.mark.parametrize("cls", [BPF_ALU, BPF_ALU64])
@given(a=u64s, b=u64s)
@example(a=1 << 63, b=M64)
@example(a=1 << 31, b=M32)
@example(a=7, b=0)
def test_alu_reg(cls, op, a, b):
    width = 64 if cls == BPF_ALU64 else 32
    signed_variants = [False, True] if op in (BPF_DIV, BPF_MOD) else [False]
    for signed in signed_variants:
        prog = [BPF_LD_IMM64(0, a), BPF_LD_IMM64(2, b), Insn(cls | op | BPF_X, 0, 2, int(signed)), BPF_EXIT_INSN()]
        assert run(prog) == model_alu(op, signed, a, b, width), (signed, hex(a), hex(b))


@pytest.mark.parametrize("op", ALU_OPS)
@pytest.mark.parametrize("cls", [BPF_ALU, BPF_ALU64])
@given(a=u64s, imm=s32s)
def test_alu_imm(cls, op, a, imm):
    width = 64 if cls == BPF_ALU64 else 32
    if op in (BPF_LSH, BPF_RSH, BPF_ARSH):
        imm %= width  # the verifier only accepts in-range constant shifts
    signed_variants = [False, True] if op in (BPF_DIV, BPF_MOD) else [False]
    for signed in signed_variants:
        prog = [BPF_LD_IMM64(0, a), Insn(cls | op | BPF_K, 0, 0, int(signed), imm), BPF_EXIT_INSN()]
        # the immediate is sign-extended to 64 bits before a 64-bit op
        assert run(prog) == model_alu(op, signed, a, imm & M64, width), (signed, hex(a), imm)


@pytest.mark.parametrize("cls", [BPF_ALU, BPF_ALU64])
@given(a=u64s)
def test_neg(cls, a):
    width = 64 if cls == BPF_ALU64 else 32
    assert run([BPF_LD_IMM64(0, a), Insn(cls | BPF_NEG | BPF_K, 0), BPF_EXIT_INSN()]) == (-a) & ((1 << width) - 1)


@pytest.mark.parametrize("cls,off", [(BPF_ALU64, 8), (BPF_ALU64, 16), (BPF_ALU64, 32), (BPF_ALU, 8), (BPF_ALU, 16)])
@given(a=u64s)
def test_movsx(cls, off, a):
    width = 64 if cls == BPF_ALU64 else 32
    prog = [BPF_LD_IMM64(1, a), Insn(cls | BPF_MOV | BPF_X, 0, 1, off), BPF_EXIT_INSN()]
    assert run(prog) == sx(a, off) & ((1 << width) - 1)


def swap_bytes(v: int, bits: int) -> int:
    hexed = format(v & ((1 << bits) - 1), f"0{bits // 4}x")
    return int("".join(reversed([hexed[i:i + 2] for i in range(0, len(hexed), 2)])), 16)


@pytest.mark.parametrize("bits", [16, 32, 64])
@given(a=u64s)
def test_byte_order(bits, a):
    mask = (1 << bits) - 1
    le = run([BPF_LD_IMM64(0, a), Insn(BPF_ALU | BPF_END | BPF_TO_LE, 0, 0, 0, bits), BPF_EXIT_INSN()])
    be = run([BPF_LD_IMM64(0, a), Insn(BPF_ALU | BPF_END | BPF_TO_BE, 0, 0, 0, bits), BPF_EXIT_INSN()])
    bswap = run([BPF_LD_IMM64(0, a), Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, 0, 0, 0, bits), BPF_EXIT_INSN()])
    assert le == a & mask  # little-endian host: truncation only
    assert be == swap_bytes(a, bits) == bswap


def branch(cls, op, a, b_or_imm, use_reg):
    cmp = Insn(cls | op | BPF_X, 1, 2, 2) if use_reg else Insn(cls | op | BPF_K, 1, 0, 2, b_or_imm)
    return run([BPF_LD_IMM64(1, a), BPF_LD_IMM64(2, b_or_imm if use_reg else 0), cmp,
                BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])


@pytest.mark.parametrize("op", JMP_OPS)
@pytest.mark.parametrize("cls", [BPF_JMP, BPF_JMP32])
@given(a=u64s, b=u64s)
@example(a=1 << 32, b=0)
@example(a=M32, b=M64)
def test_jmp_reg(cls, op, a, b):
    width = 64 if cls == BPF_JMP else 32
    assert branch(cls, op, a, b, True) == int(model_cond(op, a, b, width))


@pytest.mark.parametrize("op", JMP_OPS)
@pytest.mark.parametrize("cls", [BPF_JMP, BPF_JMP32])
@given(a=u64s, imm=s32s)
def test_jmp_imm(cls, op, a, imm):
    width = 64 if cls == BPF_JMP else 32
    assert branch(cls, op, a, imm, False) == int(model_cond(op, a, imm & M64, width))


def test_division_by_zero_results():
    # eBPF: x / 0 == 0, x % 0 == x; the 32-bit forms zero-extend
    a = 0xDEADBEEF_CAFEBABE
    assert alu.ALU64_OPS[BPF_DIV](a, 0) == 0
    assert alu.ALU64_OPS[BPF_MOD](a, 0) == a
    assert alu.ALU32_OPS[BPF_DIV](a, 0) == 0
    assert alu.ALU32_OPS[BPF_MOD](a, 0) == 0xCAFEBABE
    assert alu.ALU32_OPS[BPF_MOD](a, 1 << 32) == 0xCAFEBABE  # only the low half of the divisor counts
    assert alu.ALU64_SIGNED_OPS[BPF_MOD](a, 0) == a
    assert alu.ALU32_SIGNED_OPS[BPF_MOD](a, 0) == 0xCAFEBABE


def test_signed_division_overflow_wraps():
    assert alu.ALU64_SIGNED_OPS[BPF_DIV](1 << 63, M64) == 1 << 63  # LLONG_MIN / -1
    assert alu.ALU64_SIGNED_OPS[BPF_MOD](1 << 63, M64) == 0
    assert alu.ALU32_SIGNED_OPS[BPF_DIV](1 << 31, M32) == 1 << 31
    assert alu.ALU64_SIGNED_OPS[BPF_DIV]((-7) & M64, 2) == (-3) & M64  # truncation toward zero
    assert alu.ALU64_SIGNED_OPS[BPF_MOD]((-7) & M64, 2) == (-1) & M64  # sign of the dividend


def test_shift_counts_are_masked():
    assert alu.ALU64_OPS[BPF_LSH](1, 65) == 2
    assert alu.ALU32_OPS[BPF_RSH](0x80000000, 33) == 0x40000000
    assert alu.ALU32_OPS[BPF_ARSH](0x80000000, 31) == M32


def test_alu32_results_clear_upper_half():
    prog = [BPF_LD_IMM64(0, M64), Insn(BPF_ALU | BPF_ADD | BPF_K, 0, 0, 0, 0), BPF_EXIT_INSN()]
    assert run(prog) == M32
    prog = [BPF_LD_IMM64(1, M64), Insn(BPF_ALU | BPF_MOV | BPF_X, 0, 1), BPF_EXIT_INSN()]
    assert run(prog) == M32
    assert run([BPF_LD_IMM64(1, 5), BPF_MOV64_REG(0, 1), BPF_EXIT_INSN()]) == 5
