"""uapi/insn.py: struct bpf_insn codec, field macros, width helpers, filter.h builders."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from uapi.bpf import (
    BPF_ADD, BPF_ALU, BPF_ALU64, BPF_ATOMIC, BPF_B, BPF_CALL, BPF_DW, BPF_END, BPF_EXIT, BPF_FETCH,
    BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_JMP32, BPF_K, BPF_LD, BPF_LDX, BPF_MEM,
    BPF_MEMSX, BPF_MOV, BPF_PSEUDO_CALL, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_ST, BPF_STX,
    BPF_SUB, BPF_TO_BE, BPF_TO_LE, BPF_W, BPF_X, BPF_ABS, FuncId,
)
from uapi.ffi import ffi
from uapi.insn import (
    BPF_ALU32_IMM, BPF_ALU32_REG, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP, BPF_BSWAP,
    BPF_CALL_HELPER, BPF_CALL_REL, BPF_CLASS, BPF_EMIT_CALL, BPF_ENDIAN, BPF_EXIT_INSN, BPF_JMP32_A,
    BPF_JMP32_IMM, BPF_JMP32_REG, BPF_JMP_A, BPF_JMP_IMM, BPF_JMP_REG, BPF_LD_ABS, BPF_LD_IMM64,
    BPF_LD_IND, BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM, BPF_LDX_MEMSX, BPF_MODE,
    BPF_MOV32_IMM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_MOVSX64_REG, BPF_OP, BPF_RAW_INSN, BPF_SIZE,
    BPF_SIZE_BYTES, BPF_SRC, BPF_ST_MEM, BPF_STX_MEM, INSN_SIZE, Insn, assemble_insns, decode_prog,
    encode_prog, s16, s32, s64, s8, u16, u32, u64, u8,
)

insns = st.builds(
    Insn,
    code=st.integers(0, 0xFF),
    dst_reg=st.integers(0, 15),
    src_reg=st.integers(0, 15),
    off=st.integers(-(1 << 15), (1 << 15) - 1),
    imm=st.integers(-(1 << 31), (1 << 31) - 1),
)


def _cffi_bytes(insn: Insn) -> bytes:
    p = ffi.new("struct bpf_insn *")
    p.code, p.dst_reg, p.src_reg, p.off, p.imm = insn.code, insn.dst_reg, insn.src_reg, insn.off, insn.imm
    return bytes(ffi.buffer(p))


def test_insn_size_matches_uapi():
    assert INSN_SIZE == ffi.sizeof("struct bpf_insn") == 8


def test_encode_known_bytes_dst_in_low_nibble():
    assert BPF_MOV64_IMM(1, -1).encode() == bytes.fromhex("b7010000ffffffff")
    assert Insn(BPF_ALU64 | BPF_ADD | BPF_X, dst_reg=1, src_reg=2).encode() == bytes.fromhex("0f21000000000000")
    assert BPF_JMP_IMM(BPF_JEQ, 3, 7, -2).encode() == bytes.fromhex("1503feff07000000")


@given(insns)
def test_encode_matches_cffi_struct_layout(insn):
    assert insn.encode() == _cffi_bytes(insn)


@given(insns)
def test_decode_encode_round_trip(insn):
    assert Insn.decode(insn.encode()) == insn


@given(st.lists(insns, max_size=20))
def test_prog_round_trip(prog):
    data = encode_prog(prog)
    assert len(data) == INSN_SIZE * len(prog)
    assert decode_prog(data) == prog


def test_decode_rejects_bad_lengths():
    with pytest.raises(ValueError):
        Insn.decode(b"\0" * 7)
    with pytest.raises(ValueError):
        decode_prog(b"\0" * 12)


@pytest.mark.parametrize("kwargs", [
    dict(code=256), dict(code=-1), dict(code=0, dst_reg=16), dict(code=0, src_reg=-1),
    dict(code=0, off=1 << 16), dict(code=0, off=-(1 << 15) - 1), dict(code=0, imm=1 << 32),
    dict(code=0, imm=-(1 << 31) - 1),
])
def test_insn_fields_out_of_range(kwargs):
    with pytest.raises(ValueError):
        Insn(**kwargs)


def test_unsigned_literals_are_stored_signed_like_c():
    insn = Insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0xFFFF, 0xFFFFFFFF)
    assert (insn.off, insn.imm) == (-1, -1)
    assert insn.encode() == bytes.fromhex("1501ffffffffffff")


def test_field_macros():
    code = BPF_LDX | BPF_MEM | BPF_H
    assert (BPF_CLASS(code), BPF_SIZE(code), BPF_MODE(code)) == (BPF_LDX, BPF_H, BPF_MEM)
    code = BPF_JMP32 | BPF_JEQ | BPF_X
    assert (BPF_CLASS(code), BPF_OP(code), BPF_SRC(code)) == (BPF_JMP32, BPF_JEQ, BPF_X)
    assert {BPF_SIZE_BYTES[s] for s in (BPF_B, BPF_H, BPF_W, BPF_DW)} == {1, 2, 4, 8}
    assert BPF_SIZE_BYTES[BPF_DW] == ffi.sizeof("__u64")


def test_width_helpers():
    assert (u8(0x1FF), u16(-1), u32(-1), u64(-1)) == (0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1)
    assert (s8(0x80), s16(0x7FFF), s32(0xFFFFFFFF), s64(1 << 63)) == (-128, 32767, -1, -(1 << 63))
    assert s32(0x1_0000_0005) == 5 and s64(-1) == -1


def test_alu_and_mov_builders():
    assert BPF_ALU64_IMM(BPF_ADD, 2, -4) == Insn(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4)
    assert BPF_ALU64_REG(BPF_SUB, 1, 2) == Insn(BPF_ALU64 | BPF_SUB | BPF_X, 1, 2)
    assert BPF_ALU32_IMM(BPF_ADD, 3, 1).code == BPF_ALU | BPF_ADD | BPF_K
    assert BPF_ALU32_REG(BPF_ADD, 3, 1).code == BPF_ALU | BPF_ADD | BPF_X
    assert BPF_MOV64_REG(1, 10) == Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 10)
    assert BPF_MOV32_IMM(0, 7) == Insn(BPF_ALU | BPF_MOV | BPF_K, 0, 0, 0, 7)
    assert BPF_MOVSX64_REG(1, 2, 16) == Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 2, 16)
    assert BPF_ENDIAN(BPF_TO_BE, 1, 16) == Insn(BPF_ALU | BPF_END | BPF_TO_BE, 1, 0, 0, 16)
    assert BPF_BSWAP(1, 64) == Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, 1, 0, 0, 64)


def test_ld_imm64_builders_return_pairs():
    lo, hi = BPF_LD_IMM64(3, 0x1122334455667788)
    assert lo == Insn(BPF_LD | BPF_DW | BPF_IMM, 3, 0, 0, 0x55667788)
    assert hi == Insn(0, 0, 0, 0, 0x11223344)
    assert BPF_LD_IMM64(0, -1)[1].imm == -1
    fd_lo, fd_hi = BPF_LD_MAP_FD(1, 5)
    assert (fd_lo.src_reg, fd_lo.imm, fd_hi.imm) == (BPF_PSEUDO_MAP_FD, 5, 0)
    val_lo, val_hi = BPF_LD_MAP_VALUE(2, 6, 16)
    assert (val_lo.src_reg, val_lo.imm, val_hi.imm) == (BPF_PSEUDO_MAP_VALUE, 6, 16)


def test_memory_builders():
    assert BPF_LDX_MEM(BPF_W, 0, 1, 4) == Insn(BPF_LDX | BPF_MEM | BPF_W, 0, 1, 4)
    assert BPF_LDX_MEMSX(BPF_B, 0, 1, -1) == Insn(BPF_LDX | BPF_MEMSX | BPF_B, 0, 1, -1)
    assert BPF_STX_MEM(BPF_DW, 10, 1, -8) == Insn(BPF_STX | BPF_MEM | BPF_DW, 10, 1, -8)
    assert BPF_ST_MEM(BPF_H, 10, -2, 7) == Insn(BPF_ST | BPF_MEM | BPF_H, 10, 0, -2, 7)
    assert BPF_ATOMIC_OP(BPF_DW, BPF_ADD | BPF_FETCH, 10, 1, -8) == Insn(
        BPF_STX | BPF_ATOMIC | BPF_DW, 10, 1, -8, BPF_ADD | BPF_FETCH)
    assert BPF_LD_ABS(BPF_B, 12) == Insn(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 12)
    assert BPF_LD_IND(BPF_H, 3, -1) == Insn(BPF_LD | BPF_IND | BPF_H, 0, 3, 0, -1)


def test_jump_and_call_builders():
    assert BPF_JMP_REG(BPF_JEQ, 1, 2, 3) == Insn(BPF_JMP | BPF_JEQ | BPF_X, 1, 2, 3)
    assert BPF_JMP32_IMM(BPF_JEQ, 1, 5, -1) == Insn(BPF_JMP32 | BPF_JEQ | BPF_K, 1, 0, -1, 5)
    assert BPF_JMP32_REG(BPF_JEQ, 1, 2, 0).code == BPF_JMP32 | BPF_JEQ | BPF_X
    assert BPF_JMP_A(-1) == Insn(BPF_JMP | BPF_JA, 0, 0, -1, 0)
    assert BPF_JMP32_A(70000) == Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 70000)
    assert BPF_CALL_REL(3) == Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, 3)
    assert BPF_CALL_HELPER(FuncId.map_lookup_elem) == Insn(BPF_JMP | BPF_CALL, 0, 0, 0, 1)
    assert BPF_EMIT_CALL is BPF_CALL_HELPER
    assert BPF_EXIT_INSN() == Insn(BPF_JMP | BPF_EXIT)
    assert BPF_RAW_INSN(0x95, 0, 0, 0, 0) == BPF_EXIT_INSN()


def test_assemble_insns_flattens_pairs():
    prog = [BPF_LD_IMM64(0, 1 << 40), [BPF_MOV64_IMM(1, 2), (BPF_EXIT_INSN(),)]]
    data = assemble_insns(prog)
    assert decode_prog(data) == [*BPF_LD_IMM64(0, 1 << 40), BPF_MOV64_IMM(1, 2), BPF_EXIT_INSN()]
