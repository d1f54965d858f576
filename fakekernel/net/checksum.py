"""Internet checksums — include/net/checksum.h, include/asm-generic/checksum.h and
arch/x86/lib/csum-partial_64.c (the x86_64 csum_partial the oracle runs).

A ``__wsum`` is a 32-bit ones'-complement partial sum, a ``__sum16`` the folded and
complemented 16-bit checksum stored in headers.  The arithmetic is end-around-carry, so
values are exact (including the 0 / all-ones representation), not just equal modulo 2^n-1.
Multi-byte values are native (little-endian) as the kernel reads them from packet memory.
"""
from __future__ import annotations

__all__ = ["csum_partial", "csum_add", "wsum_negate", "csum_sub", "csum_fold", "csum_from32to16", "csum_unfold",
           "csum16_add",
           "csum16_sub", "csum_block_add", "csum_block_sub", "csum_replace2", "csum_replace4",
           "csum_replace_by_diff", "ror32", "CSUM_MANGLED_0"]

_M16 = 0xFFFF
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_WORD64 = 8

#: include/net/checksum.h: a UDP checksum of 0 means "none", so a computed 0 is sent as this
CSUM_MANGLED_0 = 0xFFFF


def _add64(a: int, b: int) -> int:
    s = a + b
    return (s & _M64) + (s >> 64)


def csum_partial(data: bytes, seed: int = 0) -> int:
    """csum_partial(): 64-bit little-endian words (the tail zero-padded) summed with
    end-around carry onto the 32-bit seed, then folded to 32 bits."""
    acc = seed & _M32
    n = len(data)
    full = n - n % _WORD64
    for i in range(0, full, _WORD64):
        acc = _add64(acc, int.from_bytes(data[i:i + _WORD64], "little"))
    if n % _WORD64:
        acc = _add64(acc, int.from_bytes(data[full:], "little"))
    return csum_add(acc & _M32, acc >> 32)


def csum_add(a: int, b: int) -> int:
    s = (a & _M32) + (b & _M32)
    return (s & _M32) + (s >> 32)


def csum_sub(a: int, b: int) -> int:
    return csum_add(a, ~b & _M32)


def wsum_negate(csum: int) -> int:
    """wsum_negate(): the two's-complement negation of a __wsum."""
    return -csum & _M32


def csum_fold(csum: int) -> int:
    """csum_fold(): the 32-bit sum folded to 16 bits and complemented (a __sum16)."""
    s = (csum >> 16) + (csum & _M16)
    s = (s & _M16) + (s >> 16)
    return ~s & _M16


def csum_from32to16(csum: int) -> int:
    """csum_from32to16(): the 32-bit sum folded to 16 bits, not complemented."""
    csum &= _M32
    csum = (csum + (((csum >> 16) | (csum << 16)) & _M32)) & _M32
    return csum >> 16


def csum_unfold(sum16: int) -> int:
    return sum16 & _M16


def csum16_add(csum: int, addend: int) -> int:
    res = (csum + addend) & _M16
    return (res + (res < (addend & _M16))) & _M16


def csum16_sub(csum: int, addend: int) -> int:
    return csum16_add(csum, ~addend & _M16)


def ror32(word: int, shift: int) -> int:
    word &= _M32
    return ((word >> shift) | (word << (32 - shift))) & _M32


def csum_block_add(csum: int, csum2: int, offset: int) -> int:
    """Add the sum of a block that starts at `offset`: an odd offset swaps its bytes."""
    if offset & 1:
        csum2 = ror32(csum2, 8)
    return csum_add(csum, csum2)


def csum_block_sub(csum: int, csum2: int, offset: int) -> int:
    return csum_block_add(csum, ~csum2 & _M32, offset)


def csum_replace_by_diff(sum16: int, diff: int) -> int:
    """The new __sum16 after adding the __wsum `diff` to the data it covers."""
    return csum_fold(csum_add(diff, ~csum_unfold(sum16) & _M32))


def csum_replace4(sum16: int, old: int, new: int) -> int:
    tmp = csum_sub(~csum_unfold(sum16) & _M32, old)
    return csum_fold(csum_add(tmp, new))


def csum_replace2(sum16: int, old: int, new: int) -> int:
    return ~csum16_add(csum16_sub(~sum16 & _M16, old), new) & _M16
