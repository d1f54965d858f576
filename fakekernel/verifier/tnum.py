"""Tristate numbers — kernel/bpf/tnum.c: a value whose bits are each 0, 1 or unknown."""
from __future__ import annotations

from uapi.insn import s32, s64, u32, u64

__all__ = ["Tnum", "TNUM_UNKNOWN"]

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
_UNUM_MAX_DECIMAL = (1 << 16) - 1


class Tnum(tuple):
    """(value, mask): bits set in mask are unknown."""

    __slots__ = ()

    def __new__(cls, value: int, mask: int):
        return tuple.__new__(cls, (value, mask))

    value = property(lambda s: s[0])
    mask = property(lambda s: s[1])

    @classmethod
    def const(cls, v: int) -> "Tnum":
        return cls(u64(v), 0)

    @classmethod
    def range(cls, lo: int, hi: int) -> "Tnum":
        chi = lo ^ hi
        bits = chi.bit_length()
        if bits > 63:
            return TNUM_UNKNOWN
        delta = (1 << bits) - 1
        return cls(lo & ~delta, delta)

    def is_const(self) -> bool:
        return self.mask == 0

    def is_unknown(self) -> bool:
        return self.mask == U64_MAX

    def add(self, o: "Tnum") -> "Tnum":
        sm = u64(self.mask + o.mask)
        sv = u64(self.value + o.value)
        sigma = u64(sm + sv)
        chi = sigma ^ sv
        mu = chi | self.mask | o.mask
        return Tnum(sv & ~mu & U64_MAX, mu)

    def sub(self, o: "Tnum") -> "Tnum":
        dv = u64(self.value - o.value)
        alpha = u64(dv + self.mask)
        beta = u64(dv - o.mask)
        chi = alpha ^ beta
        mu = chi | self.mask | o.mask
        return Tnum(dv & ~mu & U64_MAX, mu)

    def and_(self, o: "Tnum") -> "Tnum":
        alpha = self.value | self.mask
        beta = o.value | o.mask
        v = self.value & o.value
        return Tnum(v, alpha & beta & ~v & U64_MAX)

    def or_(self, o: "Tnum") -> "Tnum":
        v = self.value | o.value
        mu = self.mask | o.mask
        return Tnum(v, mu & ~v & U64_MAX)

    def xor(self, o: "Tnum") -> "Tnum":
        v = self.value ^ o.value
        mu = self.mask | o.mask
        return Tnum(v & ~mu & U64_MAX, mu)

    def lshift(self, n: int) -> "Tnum":
        return Tnum(u64(self.value << n), u64(self.mask << n))

    def rshift(self, n: int) -> "Tnum":
        return Tnum(self.value >> n, self.mask >> n)

    def intersect(self, o: "Tnum") -> "Tnum":
        v = self.value | o.value
        mu = self.mask & o.mask
        return Tnum(v & ~mu & U64_MAX, mu)

    def subreg(self) -> "Tnum":
        return Tnum(u32(self.value), u32(self.mask))

    def cast(self, size: int) -> "Tnum":
        m = (1 << (8 * size)) - 1
        return Tnum(self.value & m, self.mask & m)

    def with_subreg(self, sub: "Tnum") -> "Tnum":
        hi = Tnum(self.value & ~U32_MAX & U64_MAX, self.mask & ~U32_MAX & U64_MAX)
        return hi.or_(sub.subreg())

    def smin(self) -> int:
        return s64(self.value | (self.mask & (1 << 63)))

    def smax(self) -> int:
        return s64(self.value | (self.mask & ~(1 << 63)))

    def umin(self) -> int:
        return self.value

    def umax(self) -> int:
        return self.value | self.mask

    def s32min(self) -> int:
        return s32(self.value | (self.mask & (1 << 31)))

    def s32max(self) -> int:
        return s32((self.value | (self.mask & ~(1 << 31))) & U32_MAX)

    def strn(self) -> str:
        if self.mask == 0:
            return str(self.value) if self.value <= _UNUM_MAX_DECIMAL else f"{self.value:#x}"
        return f"({self.value:#x}; {self.mask:#x})"


TNUM_UNKNOWN = Tnum(0, U64_MAX)


