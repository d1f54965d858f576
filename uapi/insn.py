"""struct bpf_insn codec — include/uapi/linux/bpf.h (struct bpf_insn), include/uapi/linux/bpf_common.h
(BPF_CLASS/BPF_OP/... field macros) and the instruction-building macros of include/linux/filter.h.

This is the one place (with uapi/btf.py) that packs bytes with :mod:`struct`. The function-like
macros of the UAPI headers are hand-written here; every other module composes opcodes from the
generated constants in :mod:`uapi.bpf` and takes fields apart with the helpers below.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import attrs

from uapi.bpf import (
    BPF_ALU,
    BPF_ABS,
    BPF_ALU64,
    BPF_B,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_H,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOV,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
)
from uapi.ffi import ffi

__all__ = [
    "INSN_SIZE",
    "Insn",
    "decode_prog",
    "encode_prog",
    "assemble_insns",
    "BPF_CLASS",
    "BPF_OP",
    "BPF_SRC",
    "BPF_SIZE",
    "BPF_MODE",
    "BPF_SIZE_BYTES",
    "u8",
    "u16",
    "u32",
    "u64",
    "s8",
    "s16",
    "s32",
    "s64",
    "BPF_RAW_INSN",
    "BPF_ALU64_REG",
    "BPF_ALU32_REG",
    "BPF_ALU64_IMM",
    "BPF_ALU32_IMM",
    "BPF_ALU64_REG_OFF",
    "BPF_ALU32_REG_OFF",
    "BPF_ALU64_IMM_OFF",
    "BPF_ALU32_IMM_OFF",
    "BPF_MOV64_REG",
    "BPF_MOV32_REG",
    "BPF_MOV64_IMM",
    "BPF_MOV32_IMM",
    "BPF_MOVSX64_REG",
    "BPF_MOVSX32_REG",
    "BPF_ENDIAN",
    "BPF_BSWAP",
    "BPF_LD_IMM64",
    "BPF_LD_IMM64_RAW",
    "BPF_LD_IMM64_RAW_FULL",
    "BPF_LD_MAP_FD",
    "BPF_LD_MAP_VALUE",
    "BPF_LD_ABS",
    "BPF_LD_IND",
    "BPF_LDX_MEM",
    "BPF_LDX_MEMSX",
    "BPF_STX_MEM",
    "BPF_ST_MEM",
    "BPF_ATOMIC_OP",
    "BPF_JMP_REG",
    "BPF_JMP_IMM",
    "BPF_JMP32_REG",
    "BPF_JMP32_IMM",
    "BPF_JMP_A",
    "BPF_JMP32_A",
    "BPF_CALL_REL",
    "BPF_CALL_HELPER",
    "BPF_EMIT_CALL",
    "BPF_EXIT_INSN",
]

INSN_SIZE: int = ffi.sizeof("struct bpf_insn")

# code:u8, regs:u8 (dst in the low nibble, src in the high one on a little-endian ABI), off:s16, imm:s32
_INSN = struct.Struct("<BBhi")
assert _INSN.size == INSN_SIZE

_REG_BITS = 4
_REG_MASK = (1 << _REG_BITS) - 1

# --- fixed-width views of Python ints ------------------------------------------------------------

_U8 = (1 << 8) - 1
_U16 = (1 << 16) - 1
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_S8_SIGN = 1 << 7
_S16_SIGN = 1 << 15
_S32_SIGN = 1 << 31
_S64_SIGN = 1 << 63


def u8(x: int) -> int:
    return x & _U8


def u16(x: int) -> int:
    return x & _U16


def u32(x: int) -> int:
    return x & _U32


def u64(x: int) -> int:
    return x & _U64


def s8(x: int) -> int:
    return ((x & _U8) ^ _S8_SIGN) - _S8_SIGN


def s16(x: int) -> int:
    return ((x & _U16) ^ _S16_SIGN) - _S16_SIGN


def s32(x: int) -> int:
    return ((x & _U32) ^ _S32_SIGN) - _S32_SIGN


def s64(x: int) -> int:
    return ((x & _U64) ^ _S64_SIGN) - _S64_SIGN


# --- bpf_common.h field macros -------------------------------------------------------------------

_CLASS_MASK = 0x07
_SIZE_MASK = 0x18
_MODE_MASK = 0xE0
_OP_MASK = 0xF0
_SRC_MASK = 0x08


def BPF_CLASS(code: int) -> int:
    return code & _CLASS_MASK


def BPF_SIZE(code: int) -> int:
    return code & _SIZE_MASK


def BPF_MODE(code: int) -> int:
    return code & _MODE_MASK


def BPF_OP(code: int) -> int:
    return code & _OP_MASK


def BPF_SRC(code: int) -> int:
    return code & _SRC_MASK


#: bytes moved by each BPF_SIZE() value (bpf_size_to_bytes() in include/linux/filter.h)
BPF_SIZE_BYTES: dict[int, int] = {
    BPF_W: ffi.sizeof("__u32"),
    BPF_H: ffi.sizeof("__u16"),
    BPF_B: ffi.sizeof("__u8"),
    BPF_DW: ffi.sizeof("__u64"),
}


# --- the instruction ------------------------------------------------------------------------------


def _field_range(lo: int, hi: int, name: str):
    def check(_inst, _attr, value: int) -> None:
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"bpf_insn.{name} out of range: {value!r}")

    return check


def _to_s16(value: int) -> int:
    """Accept -0x8000..0xffff (C's implicit conversion of a u16 literal), store signed."""
    if isinstance(value, int) and -_S16_SIGN <= value <= _U16:
        return s16(value)
    raise ValueError(f"bpf_insn.off out of range: {value!r}")


def _to_s32(value: int) -> int:
    """Accept -2**31..2**32-1 (a u32 literal as C converts it), store signed."""
    if isinstance(value, int) and -_S32_SIGN <= value <= _U32:
        return s32(value)
    raise ValueError(f"bpf_insn.imm out of range: {value!r}")


@attrs.frozen
class Insn:
    """One ``struct bpf_insn``; ``off``/``imm`` are kept signed as in the C struct."""

    code: int = attrs.field(validator=_field_range(0, _U8, "code"))
    dst_reg: int = attrs.field(default=0, validator=_field_range(0, _REG_MASK, "dst_reg"))
    src_reg: int = attrs.field(default=0, validator=_field_range(0, _REG_MASK, "src_reg"))
    off: int = attrs.field(default=0, converter=_to_s16)
    imm: int = attrs.field(default=0, converter=_to_s32)

    def encode(self) -> bytes:
        return _INSN.pack(self.code, (self.src_reg << _REG_BITS) | self.dst_reg, self.off, self.imm)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Insn:
        if len(data) != INSN_SIZE:
            raise ValueError(f"struct bpf_insn is {INSN_SIZE} bytes, got {len(data)}")
        code, regs, off, imm = _INSN.unpack(data)
        return cls(code, regs & _REG_MASK, regs >> _REG_BITS, off, imm)


def decode_prog(data: bytes | bytearray | memoryview) -> list[Insn]:
    """Split a program image into instructions (an LD_IMM64 stays two ``Insn`` slots)."""
    if len(data) % INSN_SIZE:
        raise ValueError(f"program length {len(data)} is not a multiple of {INSN_SIZE}")
    return [
        Insn(code, regs & _REG_MASK, regs >> _REG_BITS, off, imm)
        for code, regs, off, imm in _INSN.iter_unpack(bytes(data))
    ]


def encode_prog(insns: Sequence[Insn]) -> bytes:
    return b"".join(insn.encode() for insn in insns)


def _flatten(items: Iterable[Insn | Iterable]) -> Iterable[Insn]:
    for item in items:
        if isinstance(item, Insn):
            yield item
        else:
            yield from _flatten(item)


def assemble_insns(items: Iterable[Insn | Iterable]) -> bytes:
    """Encode a list of instructions in which two-slot macros appear as nested pairs."""
    return encode_prog(list(_flatten(items)))


# --- include/linux/filter.h instruction macros ----------------------------------------------------


def BPF_RAW_INSN(code: int, dst: int, src: int, off: int, imm: int) -> Insn:
    return Insn(code, dst, src, off, imm)


def BPF_ALU64_REG_OFF(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_OP(op) | BPF_X, dst, src, off, 0)


def BPF_ALU32_REG_OFF(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_ALU | BPF_OP(op) | BPF_X, dst, src, off, 0)


def BPF_ALU64_IMM_OFF(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_OP(op) | BPF_K, dst, 0, off, imm)


def BPF_ALU32_IMM_OFF(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_ALU | BPF_OP(op) | BPF_K, dst, 0, off, imm)


def BPF_ALU64_REG(op: int, dst: int, src: int) -> Insn:
    return BPF_ALU64_REG_OFF(op, dst, src, 0)


def BPF_ALU32_REG(op: int, dst: int, src: int) -> Insn:
    return BPF_ALU32_REG_OFF(op, dst, src, 0)


def BPF_ALU64_IMM(op: int, dst: int, imm: int) -> Insn:
    return BPF_ALU64_IMM_OFF(op, dst, imm, 0)


def BPF_ALU32_IMM(op: int, dst: int, imm: int) -> Insn:
    return BPF_ALU32_IMM_OFF(op, dst, imm, 0)


def BPF_MOV64_REG(dst: int, src: int) -> Insn:
    return BPF_ALU64_REG(BPF_MOV, dst, src)


def BPF_MOV32_REG(dst: int, src: int) -> Insn:
    return BPF_ALU32_REG(BPF_MOV, dst, src)


def BPF_MOV64_IMM(dst: int, imm: int) -> Insn:
    return BPF_ALU64_IMM(BPF_MOV, dst, imm)


def BPF_MOV32_IMM(dst: int, imm: int) -> Insn:
    return BPF_ALU32_IMM(BPF_MOV, dst, imm)


def BPF_MOVSX64_REG(dst: int, src: int, off: int) -> Insn:
    """dst = (s<off>)src, sign-extended to 64 bits (off is 8, 16 or 32)."""
    return BPF_ALU64_REG_OFF(BPF_MOV, dst, src, off)


def BPF_MOVSX32_REG(dst: int, src: int, off: int) -> Insn:
    """w_dst = (s<off>)w_src (off is 8 or 16), upper half zeroed."""
    return BPF_ALU32_REG_OFF(BPF_MOV, dst, src, off)


def BPF_ENDIAN(type_: int, dst: int, length: int) -> Insn:
    """to_le/to_be conversion (BPF_ALU class); type_ is BPF_TO_LE or BPF_TO_BE."""
    return Insn(BPF_ALU | BPF_END | BPF_SRC(type_), dst, 0, 0, length)


def BPF_BSWAP(dst: int, length: int) -> Insn:
    """Unconditional byte swap (BPF_ALU64 | BPF_END | BPF_TO_LE)."""
    return Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, dst, 0, 0, length)


def BPF_LD_IMM64_RAW_FULL(dst: int, src: int, off1: int, off2: int, imm1: int, imm2: int) -> tuple[Insn, Insn]:
    return (Insn(BPF_LD | BPF_DW | BPF_IMM, dst, src, off1, imm1), Insn(0, 0, 0, off2, imm2))


def BPF_LD_IMM64_RAW(dst: int, src: int, imm: int) -> tuple[Insn, Insn]:
    imm = u64(imm)
    return BPF_LD_IMM64_RAW_FULL(dst, src, 0, 0, imm & _U32, imm >> 32)


def BPF_LD_IMM64(dst: int, imm: int) -> tuple[Insn, Insn]:
    return BPF_LD_IMM64_RAW(dst, 0, imm)


def BPF_LD_MAP_FD(dst: int, map_fd: int) -> tuple[Insn, Insn]:
    return BPF_LD_IMM64_RAW(dst, BPF_PSEUDO_MAP_FD, map_fd)


def BPF_LD_MAP_VALUE(dst: int, map_fd: int, value_off: int) -> tuple[Insn, Insn]:
    return BPF_LD_IMM64_RAW_FULL(dst, BPF_PSEUDO_MAP_VALUE, 0, 0, map_fd, value_off)


def BPF_LD_ABS(size: int, imm: int) -> Insn:
    return Insn(BPF_LD | BPF_SIZE(size) | BPF_ABS, 0, 0, 0, imm)


def BPF_LD_IND(size: int, src: int, imm: int) -> Insn:
    return Insn(BPF_LD | BPF_SIZE(size) | BPF_IND, 0, src, 0, imm)


def BPF_LDX_MEM(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_SIZE(size) | BPF_MEM, dst, src, off, 0)


def BPF_LDX_MEMSX(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_SIZE(size) | BPF_MEMSX, dst, src, off, 0)


def BPF_STX_MEM(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_STX | BPF_SIZE(size) | BPF_MEM, dst, src, off, 0)


def BPF_ST_MEM(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(BPF_ST | BPF_SIZE(size) | BPF_MEM, dst, 0, off, imm)


def BPF_ATOMIC_OP(size: int, op: int, dst: int, src: int, off: int) -> Insn:
    """Atomic op on *(size *)(dst + off) with src; op is the imm (BPF_ADD|BPF_FETCH, BPF_XCHG, ...)."""
    return Insn(BPF_STX | BPF_SIZE(size) | BPF_ATOMIC, dst, src, off, op)


def BPF_JMP_REG(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_JMP | BPF_OP(op) | BPF_X, dst, src, off, 0)


def BPF_JMP_IMM(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP | BPF_OP(op) | BPF_K, dst, 0, off, imm)


def BPF_JMP32_REG(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_JMP32 | BPF_OP(op) | BPF_X, dst, src, off, 0)


def BPF_JMP32_IMM(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP32 | BPF_OP(op) | BPF_K, dst, 0, off, imm)


def BPF_JMP_A(off: int) -> Insn:
    return Insn(BPF_JMP | BPF_JA, 0, 0, off, 0)


def BPF_JMP32_A(imm: int) -> Insn:
    """``gotol``: unconditional jump with a 32-bit displacement in imm."""
    return Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, imm)


def BPF_CALL_REL(imm: int) -> Insn:
    """bpf-to-bpf call: target is pc + imm + 1."""
    return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, imm)


def BPF_CALL_HELPER(func_id: int) -> Insn:
    """Helper call by ``FuncId`` (the kernel's BPF_EMIT_CALL before the imm is made relative)."""
    return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, func_id)


BPF_EMIT_CALL = BPF_CALL_HELPER


def BPF_EXIT_INSN() -> Insn:
    return Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
