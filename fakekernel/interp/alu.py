"""ALU and branch semantics — kernel/bpf/core.c ___bpf_prog_run (the ALU/ALU64/JMP/JMP32 labels),
with the division-by-zero and signed-division results that the verifier's do_misc_fixups() makes
every architecture produce.

Registers are Python ints in ``[0, 2**64)``. Every operation here takes register-width operands and
returns a register value already wrapped: 64-bit ops wrap to 64 bits, 32-bit ops work on the low
halves and zero-extend the result. The interpreter composes these tables; it never does arithmetic
of its own.
"""
from __future__ import annotations

from collections.abc import Callable

from uapi.bpf import (
    BPF_ADD,
    BPF_AND,
    BPF_ARSH,
    BPF_DIV,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LSH,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_XOR,
)
from uapi.ffi import ffi

__all__ = [
    "U32_MAX",
    "U64_MAX",
    "ALU64_OPS",
    "ALU32_OPS",
    "ALU64_SIGNED_OPS",
    "ALU32_SIGNED_OPS",
    "JMP64_CONDS",
    "JMP32_CONDS",
    "neg64",
    "neg32",
    "movsx64",
    "movsx32",
    "to_le",
    "to_be",
    "bswap",
    "sign_extend",
    "ENDIAN_WIDTHS",
    "MOVSX64_WIDTHS",
    "MOVSX32_WIDTHS",
]

_BITS_PER_BYTE = 8
_W32 = ffi.sizeof("__u32") * _BITS_PER_BYTE
_W64 = ffi.sizeof("__u64") * _BITS_PER_BYTE
_W16 = ffi.sizeof("__u16") * _BITS_PER_BYTE
_W8 = ffi.sizeof("__u8") * _BITS_PER_BYTE

U32_MAX = (1 << _W32) - 1
U64_MAX = (1 << _W64) - 1
_SIGN32 = 1 << (_W32 - 1)
_SIGN64 = 1 << (_W64 - 1)
_SHIFT32 = _W32 - 1  # shift counts are taken modulo the operand width (SRC & 31 / SRC & 63)
_SHIFT64 = _W64 - 1

#: legal imm of BPF_END (to_le/to_be/bswap width in bits)
ENDIAN_WIDTHS = (_W16, _W32, _W64)
#: legal off of a sign-extending BPF_MOV (source width in bits)
MOVSX64_WIDTHS = (_W8, _W16, _W32)
MOVSX32_WIDTHS = (_W8, _W16)


def _s64(x: int) -> int:
    return (x ^ _SIGN64) - _SIGN64


def _s32(x: int) -> int:
    return ((x & U32_MAX) ^ _SIGN32) - _SIGN32


def sign_extend(x: int, bits: int) -> int:
    """Interpret the low ``bits`` of ``x`` as two's complement (a Python int, may be negative)."""
    sign = 1 << (bits - 1)
    return ((x & ((1 << bits) - 1)) ^ sign) - sign


# --- 64-bit ----------------------------------------------------------------------------------------


def _add64(a: int, b: int) -> int:
    return (a + b) & U64_MAX


def _sub64(a: int, b: int) -> int:
    return (a - b) & U64_MAX


def _mul64(a: int, b: int) -> int:
    return (a * b) & U64_MAX


def _div64(a: int, b: int) -> int:
    return a // b if b else 0  # x / 0 == 0


def _mod64(a: int, b: int) -> int:
    return a % b if b else a  # x % 0 == x


def _or64(a: int, b: int) -> int:
    return a | b


def _and64(a: int, b: int) -> int:
    return a & b


def _xor64(a: int, b: int) -> int:
    return a ^ b


def _lsh64(a: int, b: int) -> int:
    return (a << (b & _SHIFT64)) & U64_MAX


def _rsh64(a: int, b: int) -> int:
    return a >> (b & _SHIFT64)


def _arsh64(a: int, b: int) -> int:
    return (_s64(a) >> (b & _SHIFT64)) & U64_MAX


def _mov64(_a: int, b: int) -> int:
    return b


def _sdiv64(a: int, b: int) -> int:
    if not b:
        return 0
    sa, sb = _s64(a), _s64(b)
    q = abs(sa) // abs(sb)  # truncation toward zero
    return (-q if (sa < 0) != (sb < 0) else q) & U64_MAX


def _smod64(a: int, b: int) -> int:
    if not b:
        return a
    sa, sb = _s64(a), _s64(b)
    r = abs(sa) % abs(sb)  # the remainder takes the dividend's sign
    return (-r if sa < 0 else r) & U64_MAX


# --- 32-bit (operate on the low halves, zero-extend the result) -------------------------------------


def _add32(a: int, b: int) -> int:
    return (a + b) & U32_MAX


def _sub32(a: int, b: int) -> int:
    return (a - b) & U32_MAX


def _mul32(a: int, b: int) -> int:
    return ((a & U32_MAX) * (b & U32_MAX)) & U32_MAX


def _div32(a: int, b: int) -> int:
    b &= U32_MAX
    return (a & U32_MAX) // b if b else 0


def _mod32(a: int, b: int) -> int:
    b &= U32_MAX
    return (a & U32_MAX) % b if b else a & U32_MAX


def _or32(a: int, b: int) -> int:
    return (a | b) & U32_MAX


def _and32(a: int, b: int) -> int:
    return a & b & U32_MAX


def _xor32(a: int, b: int) -> int:
    return (a ^ b) & U32_MAX


def _lsh32(a: int, b: int) -> int:
    return ((a & U32_MAX) << (b & _SHIFT32)) & U32_MAX


def _rsh32(a: int, b: int) -> int:
    return (a & U32_MAX) >> (b & _SHIFT32)


def _arsh32(a: int, b: int) -> int:
    return (_s32(a) >> (b & _SHIFT32)) & U32_MAX


def _mov32(_a: int, b: int) -> int:
    return b & U32_MAX


def _sdiv32(a: int, b: int) -> int:
    sb = _s32(b)
    if not sb:
        return 0
    sa = _s32(a)
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & U32_MAX


def _smod32(a: int, b: int) -> int:
    sb = _s32(b)
    if not sb:
        return a & U32_MAX
    sa = _s32(a)
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & U32_MAX


BinOp = Callable[[int, int], int]

#: BPF_OP -> f(dst, src) for BPF_ALU64 (off == 0); operands are u64 (a K source is sign-extended)
ALU64_OPS: dict[int, BinOp] = {
    BPF_ADD: _add64,
    BPF_SUB: _sub64,
    BPF_MUL: _mul64,
    BPF_DIV: _div64,
    BPF_OR: _or64,
    BPF_AND: _and64,
    BPF_LSH: _lsh64,
    BPF_RSH: _rsh64,
    BPF_MOD: _mod64,
    BPF_XOR: _xor64,
    BPF_MOV: _mov64,
    BPF_ARSH: _arsh64,
}

#: BPF_OP -> f(dst, src) for BPF_ALU (off == 0); result is the zero-extended low 32 bits
ALU32_OPS: dict[int, BinOp] = {
    BPF_ADD: _add32,
    BPF_SUB: _sub32,
    BPF_MUL: _mul32,
    BPF_DIV: _div32,
    BPF_OR: _or32,
    BPF_AND: _and32,
    BPF_LSH: _lsh32,
    BPF_RSH: _rsh32,
    BPF_MOD: _mod32,
    BPF_XOR: _xor32,
    BPF_MOV: _mov32,
    BPF_ARSH: _arsh32,
}

#: off == 1 variants (sdiv/smod)
ALU64_SIGNED_OPS: dict[int, BinOp] = {BPF_DIV: _sdiv64, BPF_MOD: _smod64}
ALU32_SIGNED_OPS: dict[int, BinOp] = {BPF_DIV: _sdiv32, BPF_MOD: _smod32}


def neg64(a: int) -> int:
    return -a & U64_MAX


def neg32(a: int) -> int:
    return -a & U32_MAX


def movsx64(src: int, bits: int) -> int:
    """BPF_ALU64 | BPF_MOV | BPF_X with off = 8/16/32: sign-extend the low ``bits`` to 64."""
    return sign_extend(src, bits) & U64_MAX


def movsx32(src: int, bits: int) -> int:
    """BPF_ALU | BPF_MOV | BPF_X with off = 8/16: sign-extend to 32 bits, zero the upper half."""
    return sign_extend(src, bits) & U32_MAX


def _swab(x: int, bits: int) -> int:
    nbytes = bits // _BITS_PER_BYTE
    return int.from_bytes((x & ((1 << bits) - 1)).to_bytes(nbytes, "little"), "big")


def to_le(x: int, bits: int) -> int:
    """cpu_to_le<bits> on a little-endian machine: truncate (zero-extend) to ``bits``."""
    return x & ((1 << bits) - 1)


def to_be(x: int, bits: int) -> int:
    """cpu_to_be<bits> on a little-endian machine: byte-swap the low ``bits``."""
    return _swab(x, bits)


def bswap(x: int, bits: int) -> int:
    """BPF_ALU64 | BPF_END: unconditional byte swap of the low ``bits``."""
    return _swab(x, bits)


# --- branch conditions -----------------------------------------------------------------------------

Cond = Callable[[int, int], bool]


def _jeq(a: int, b: int) -> bool:
    return a == b


def _jne(a: int, b: int) -> bool:
    return a != b


def _jgt(a: int, b: int) -> bool:
    return a > b


def _jge(a: int, b: int) -> bool:
    return a >= b


def _jlt(a: int, b: int) -> bool:
    return a < b


def _jle(a: int, b: int) -> bool:
    return a <= b


def _jset(a: int, b: int) -> bool:
    return (a & b) != 0


def _jsgt64(a: int, b: int) -> bool:
    return _s64(a) > _s64(b)


def _jsge64(a: int, b: int) -> bool:
    return _s64(a) >= _s64(b)


def _jslt64(a: int, b: int) -> bool:
    return _s64(a) < _s64(b)


def _jsle64(a: int, b: int) -> bool:
    return _s64(a) <= _s64(b)


def _jeq32(a: int, b: int) -> bool:
    return (a & U32_MAX) == (b & U32_MAX)


def _jne32(a: int, b: int) -> bool:
    return (a & U32_MAX) != (b & U32_MAX)


def _jgt32(a: int, b: int) -> bool:
    return (a & U32_MAX) > (b & U32_MAX)


def _jge32(a: int, b: int) -> bool:
    return (a & U32_MAX) >= (b & U32_MAX)


def _jlt32(a: int, b: int) -> bool:
    return (a & U32_MAX) < (b & U32_MAX)


def _jle32(a: int, b: int) -> bool:
    return (a & U32_MAX) <= (b & U32_MAX)


def _jset32(a: int, b: int) -> bool:
    return (a & b & U32_MAX) != 0


def _jsgt32(a: int, b: int) -> bool:
    return _s32(a) > _s32(b)


def _jsge32(a: int, b: int) -> bool:
    return _s32(a) >= _s32(b)


def _jslt32(a: int, b: int) -> bool:
    return _s32(a) < _s32(b)


def _jsle32(a: int, b: int) -> bool:
    return _s32(a) <= _s32(b)


#: BPF_OP -> cond(dst, src) for BPF_JMP; operands are u64 (a K source is sign-extended to 64)
JMP64_CONDS: dict[int, Cond] = {
    BPF_JEQ: _jeq,
    BPF_JNE: _jne,
    BPF_JGT: _jgt,
    BPF_JGE: _jge,
    BPF_JLT: _jlt,
    BPF_JLE: _jle,
    BPF_JSET: _jset,
    BPF_JSGT: _jsgt64,
    BPF_JSGE: _jsge64,
    BPF_JSLT: _jslt64,
    BPF_JSLE: _jsle64,
}

#: BPF_OP -> cond(dst, src) for BPF_JMP32: only the low 32 bits of each operand take part
JMP32_CONDS: dict[int, Cond] = {
    BPF_JEQ: _jeq32,
    BPF_JNE: _jne32,
    BPF_JGT: _jgt32,
    BPF_JGE: _jge32,
    BPF_JLT: _jlt32,
    BPF_JLE: _jle32,
    BPF_JSET: _jset32,
    BPF_JSGT: _jsgt32,
    BPF_JSGE: _jsge32,
    BPF_JSLT: _jslt32,
    BPF_JSLE: _jsle32,
}
