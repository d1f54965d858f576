"""Scalar arithmetic on register bounds — kernel/bpf/verifier.c adjust_scalar_min_max_vals,
scalar(32)_min_max_{add,sub,and,or,lsh,rsh} and reg_set_min_max for constant comparisons.

Operations modelled as the kernel does keep ``exact``; the rest give a sound but possibly
coarser result with ``exact=False``.
"""
from __future__ import annotations

from fakekernel.interp.alu import ALU32_OPS, ALU64_OPS, ALU32_SIGNED_OPS, ALU64_SIGNED_OPS
from fakekernel.verifier.regs import S32_MAX, S32_MIN, S64_MAX, S64_MIN, U32_MAX, U64_MAX, Reg, Tnum
from uapi.bpf import (
    BPF_ADD, BPF_AND, BPF_ARSH, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT, BPF_JNE, BPF_JSET,
    BPF_JSGE, BPF_JSGT, BPF_JSLE, BPF_JSLT, BPF_LSH, BPF_MUL, BPF_OR, BPF_RSH, BPF_SUB, BPF_XOR,
)
from uapi.insn import s32, s64, u64

__all__ = ["scalar_alu", "is_branch_taken", "refine_const_branch", "refine_const_branch32", "FLIP"]


def _fits(v: int, lo: int, hi: int) -> bool:
    return lo <= v <= hi


def _safe_to_compute(op: int, src: Reg, bits: int) -> bool:
    """is_safe_to_compute_dst_reg_range()."""
    if op in (BPF_ADD, BPF_SUB, BPF_AND, BPF_XOR, BPF_OR, BPF_MUL):
        return True
    if op in (BPF_LSH, BPF_RSH, BPF_ARSH):
        return src.var_off.is_const() and src.umax < bits
    return False


def scalar_alu(op: int, dst: Reg, src: Reg, alu64: bool, signed_divmod: bool = False) -> Reg:
    """dst = dst <op> src for two scalars; returns the new dst."""
    out = Reg.unknown()
    bits = 64 if alu64 else 32
    if signed_divmod or not _safe_to_compute(op, src, bits):
        if dst.exact and src.exact:
            return out          # div/mod (and shifts by a variable or too far) are not tracked
        out.exact = False
        return out
    if dst.is_const() and src.is_const():
        if signed_divmod:
            f = (ALU64_SIGNED_OPS if alu64 else ALU32_SIGNED_OPS)[op]
        else:
            f = (ALU64_OPS if alu64 else ALU32_OPS)[op]
        out.set_const(f(dst.const_value, src.const_value))
        return out
    if not dst.exact or not src.exact:
        out.exact = False
        if not alu64:
            out.set_from_tnum(Tnum(0, U32_MAX))
        return out
    if op not in (BPF_ADD, BPF_SUB, BPF_AND, BPF_OR) + (() if not alu64 else (BPF_LSH, BPF_RSH)):
        out.exact = False
        out.set_from_tnum(Tnum(0, U32_MAX) if not alu64 else Tnum(0, U64_MAX))
        return out
    r = dst.copy()
    r.id = 0
    if op == BPF_ADD:
        r.var_off = dst.var_off.add(src.var_off)
        _add32(r, src)
        _add64(r, src)
    elif op == BPF_SUB:
        r.var_off = dst.var_off.sub(src.var_off)
        _sub32(r, src)
        _sub64(r, src)
    elif op == BPF_AND:
        r.var_off = dst.var_off.and_(src.var_off)
        _bitwise(r, src, dst, is_and=True)
    elif op == BPF_OR:
        r.var_off = dst.var_off.or_(src.var_off)
        _bitwise(r, src, dst, is_and=False)
    elif op == BPF_LSH:
        _lsh(r, src.umin)
    elif op == BPF_RSH:
        _rsh(r, src.umin)
    if not alu64:                       # zext_32_to_64() / __reg_assign_32_into_64()
        r.var_off = r.var_off.subreg()
        r.umin, r.umax = r.u32_min, r.u32_max
        if 0 <= r.s32_min <= S32_MAX and 0 <= r.s32_max <= S32_MAX:
            r.smin, r.smax = r.s32_min, r.s32_max
        else:
            r.smin, r.smax = 0, U32_MAX
    r.sync()
    return r


def _add32(r: Reg, s: Reg) -> None:
    a, b = r.s32_min + s.s32_min, r.s32_max + s.s32_max
    if _fits(a, S32_MIN, S32_MAX) and _fits(b, S32_MIN, S32_MAX):
        r.s32_min, r.s32_max = a, b
    else:
        r.s32_min, r.s32_max = S32_MIN, S32_MAX
    a, b = r.u32_min + s.u32_min, r.u32_max + s.u32_max
    if a <= U32_MAX and b <= U32_MAX:
        r.u32_min, r.u32_max = a, b
    else:
        r.u32_min, r.u32_max = 0, U32_MAX


def _add64(r: Reg, s: Reg) -> None:
    a, b = r.smin + s.smin, r.smax + s.smax
    if _fits(a, S64_MIN, S64_MAX) and _fits(b, S64_MIN, S64_MAX):
        r.smin, r.smax = a, b
    else:
        r.smin, r.smax = S64_MIN, S64_MAX
    a, b = r.umin + s.umin, r.umax + s.umax
    if a <= U64_MAX and b <= U64_MAX:
        r.umin, r.umax = a, b
    else:
        r.umin, r.umax = 0, U64_MAX


def _sub32(r: Reg, s: Reg) -> None:
    a, b = r.s32_min - s.s32_max, r.s32_max - s.s32_min
    if _fits(a, S32_MIN, S32_MAX) and _fits(b, S32_MIN, S32_MAX):
        r.s32_min, r.s32_max = a, b
    else:
        r.s32_min, r.s32_max = S32_MIN, S32_MAX
    if r.u32_min < s.u32_max:
        r.u32_min, r.u32_max = 0, U32_MAX
    else:
        r.u32_min, r.u32_max = r.u32_min - s.u32_max, r.u32_max - s.u32_min


def _sub64(r: Reg, s: Reg) -> None:
    a, b = r.smin - s.smax, r.smax - s.smin
    if _fits(a, S64_MIN, S64_MAX) and _fits(b, S64_MIN, S64_MAX):
        r.smin, r.smax = a, b
    else:
        r.smin, r.smax = S64_MIN, S64_MAX
    if r.umin < s.umax:
        r.umin, r.umax = 0, U64_MAX
    else:
        r.umin, r.umax = r.umin - s.umax, r.umax - s.umin


def _bitwise(r: Reg, s: Reg, d: Reg, is_and: bool) -> None:
    v32 = r.var_off.subreg()
    if is_and:
        r.u32_min, r.u32_max = v32.value, min(d.u32_max, s.u32_max)
        r.umin, r.umax = r.var_off.value, min(d.umax, s.umax)
    else:
        r.u32_min, r.u32_max = max(d.u32_min, s.u32_min), v32.value | v32.mask
        r.umin, r.umax = max(d.umin, s.umin), r.var_off.value | r.var_off.mask
    if s32(r.u32_min) <= s32(r.u32_max):
        r.s32_min, r.s32_max = s32(r.u32_min), s32(r.u32_max)
    else:
        r.s32_min, r.s32_max = S32_MIN, S32_MAX
    if s64(r.umin) <= s64(r.umax):
        r.smin, r.smax = s64(r.umin), s64(r.umax)
    else:
        r.smin, r.smax = S64_MIN, S64_MAX


def _lsh(r: Reg, n: int) -> None:
    r.smax = (r.s32_max << 32) if n == 32 and r.s32_max >= 0 else S64_MAX
    r.smin = (r.s32_min << 32) if n == 32 and r.s32_min >= 0 else S64_MIN
    if r.umax > 1 << (63 - n):
        r.umin, r.umax = 0, U64_MAX
    else:
        r.umin, r.umax = r.umin << n, r.umax << n
    r.s32_min, r.s32_max = S32_MIN, S32_MAX
    if n > 31 or r.u32_max > 1 << (31 - n):
        r.u32_min, r.u32_max = 0, U32_MAX
    else:
        r.u32_min, r.u32_max = r.u32_min << n, r.u32_max << n
    r.var_off = r.var_off.lshift(n)


def _rsh(r: Reg, n: int) -> None:
    r.smin, r.smax = S64_MIN, S64_MAX
    r.var_off = r.var_off.rshift(n)
    r.umin >>= n
    r.umax >>= n
    r.s32_min, r.s32_max, r.u32_min, r.u32_max = S32_MIN, S32_MAX, 0, U32_MAX


# ---------------------------------------------------------------- branches

#: flip_opcode(): the same test with the operands swapped
FLIP = {BPF_JEQ: BPF_JEQ, BPF_JNE: BPF_JNE, BPF_JSET: BPF_JSET, BPF_JGT: BPF_JLT, BPF_JLT: BPF_JGT,
        BPF_JGE: BPF_JLE, BPF_JLE: BPF_JGE, BPF_JSGT: BPF_JSLT, BPF_JSLT: BPF_JSGT, BPF_JSGE: BPF_JSLE,
        BPF_JSLE: BPF_JSGE}
_NEGATE = {BPF_JEQ: BPF_JNE, BPF_JNE: BPF_JEQ, BPF_JGT: BPF_JLE, BPF_JLE: BPF_JGT, BPF_JGE: BPF_JLT,
           BPF_JLT: BPF_JGE, BPF_JSGT: BPF_JSLE, BPF_JSLE: BPF_JSGT, BPF_JSGE: BPF_JSLT, BPF_JSLT: BPF_JSGE}


def is_branch_taken(op: int, a: Reg, b: Reg, jmp32: bool) -> int:
    """is_scalar_branch_taken(): 1 taken, 0 not taken, -1 unknown (64-bit view, or 32-bit consts)."""
    if a.is_const() and b.is_const():
        from fakekernel.interp.alu import JMP32_CONDS, JMP64_CONDS
        return int((JMP32_CONDS if jmp32 else JMP64_CONDS)[op](a.const_value, b.const_value))
    if jmp32:
        return _is_branch_taken32(op, a, b)
    if op == BPF_JEQ or op == BPF_JNE:
        disjoint = (a.umin > b.umax or a.umax < b.umin or a.smin > b.smax or a.smax < b.smin or
                    a.u32_min > b.u32_max or a.u32_max < b.u32_min or
                    a.s32_min > b.s32_max or a.s32_max < b.s32_min or
                    ((a.var_off.value ^ b.var_off.value) & ~(a.var_off.mask | b.var_off.mask) & U64_MAX) != 0)
        if disjoint:
            return 0 if op == BPF_JEQ else 1
        return -1
    if op == BPF_JSET:
        if a.var_off.value & b.var_off.value:
            return 1
        if not ((a.var_off.value | a.var_off.mask) & (b.var_off.value | b.var_off.mask)):
            return 0
        return -1
    checks = {
        BPF_JGT: (a.umin > b.umax, a.umax <= b.umin), BPF_JSGT: (a.smin > b.smax, a.smax <= b.smin),
        BPF_JLT: (a.umax < b.umin, a.umin >= b.umax), BPF_JSLT: (a.smax < b.smin, a.smin >= b.smax),
        BPF_JGE: (a.umin >= b.umax, a.umax < b.umin), BPF_JSGE: (a.smin >= b.smax, a.smax < b.smin),
        BPF_JLE: (a.umax <= b.umin, a.umin > b.umax), BPF_JSLE: (a.smax <= b.smin, a.smin > b.smax),
    }
    taken, not_taken = checks[op]
    return 1 if taken else 0 if not_taken else -1


def _is_branch_taken32(op: int, a: Reg, b: Reg) -> int:
    ta, tb = a.var_off.subreg(), b.var_off.subreg()
    if ta.is_const() and tb.is_const():
        from fakekernel.interp.alu import JMP32_CONDS
        return int(JMP32_CONDS[op](ta.value, tb.value))
    if op == BPF_JEQ or op == BPF_JNE:
        disjoint = (a.u32_min > b.u32_max or a.u32_max < b.u32_min or a.s32_min > b.s32_max or
                    a.s32_max < b.s32_min or ((ta.value ^ tb.value) & ~(ta.mask | tb.mask) & U32_MAX) != 0)
        if disjoint:
            return 0 if op == BPF_JEQ else 1
        return -1
    if op == BPF_JSET:
        if ta.value & tb.value:
            return 1
        if not ((ta.value | ta.mask) & (tb.value | tb.mask)):
            return 0
        return -1
    checks = {
        BPF_JGT: (a.u32_min > b.u32_max, a.u32_max <= b.u32_min),
        BPF_JSGT: (a.s32_min > b.s32_max, a.s32_max <= b.s32_min),
        BPF_JLT: (a.u32_max < b.u32_min, a.u32_min >= b.u32_max),
        BPF_JSLT: (a.s32_max < b.s32_min, a.s32_min >= b.s32_max),
        BPF_JGE: (a.u32_min >= b.u32_max, a.u32_max < b.u32_min),
        BPF_JSGE: (a.s32_min >= b.s32_max, a.s32_max < b.s32_min),
        BPF_JLE: (a.u32_max <= b.u32_min, a.u32_min > b.u32_max),
        BPF_JSLE: (a.s32_max <= b.s32_min, a.s32_min > b.s32_max),
    }
    taken, not_taken = checks[op]
    return 1 if taken else 0 if not_taken else -1


_BOUNDS32 = ("u32_min", "u32_max", "s32_min", "s32_max")
_BOUNDS64 = ("umin", "umax", "smin", "smax")


def _narrow(reg: Reg, op: int, uc: int, sc: int, bounds: tuple[str, str, str, str]) -> None:
    """Shrink one set of bounds (32- or 64-bit) for `reg op constant` being true; JEQ is the
    caller's.  JNE only moves a bound that sits exactly on the constant."""
    umin, umax, smin, smax = bounds
    if op == BPF_JNE:
        for name, value, step in ((umin, uc, 1), (umax, uc, -1), (smin, sc, 1), (smax, sc, -1)):
            if getattr(reg, name) == value:
                setattr(reg, name, value + step)
        return
    name, value, pick = {
        BPF_JGT: (umin, uc + 1, max), BPF_JGE: (umin, uc, max),
        BPF_JLT: (umax, uc - 1, min), BPF_JLE: (umax, uc, min),
        BPF_JSGT: (smin, sc + 1, max), BPF_JSGE: (smin, sc, max),
        BPF_JSLT: (smax, sc - 1, min), BPF_JSLE: (smax, sc, min),
    }[op]
    setattr(reg, name, pick(getattr(reg, name), value))


def _branch_op(op: int, taken: bool) -> int | None:
    """The test that holds on this branch; None for JSET (not modelled)."""
    if not taken:
        if op == BPF_JSET:
            return None
        op = _NEGATE[op]
    return None if op == BPF_JSET else op


def refine_const_branch32(reg: Reg, op: int, c: int, taken: bool) -> bool:
    """reg_set_min_max() for a JMP32 test against a constant (the low 32 bits)."""
    op = _branch_op(op, taken)
    if op is None:
        return False
    uc, sc = c & U32_MAX, s32(c)
    if op == BPF_JEQ:
        sub = reg.var_off.subreg().intersect(Tnum.const(uc))
        reg.var_off = reg.var_off.with_subreg(sub)
        reg.u32_min = reg.u32_max = uc
        reg.s32_min = reg.s32_max = sc
    else:
        _narrow(reg, op, uc, sc, _BOUNDS32)
    reg.sync()
    return True


def refine_const_branch(reg: Reg, op: int, c: int, taken: bool) -> bool:
    """reg_set_min_max() against a 64-bit constant ``c`` for one branch; False when not modelled."""
    op = _branch_op(op, taken)
    if op is None:
        return False
    uc, sc = u64(c), s64(c)
    if op == BPF_JEQ:
        reg.set_const_bounds(uc)
        return True
    _narrow(reg, op, uc, sc, _BOUNDS64)
    reg.sync()
    return True
