"""ALU instructions — kernel/bpf/verifier.c check_alu_op, adjust_reg_min_max_vals and the
pointer-arithmetic part of adjust_ptr_min_max_vals (constant offsets only: anything else makes
an untracked value, which never causes a rejection).
"""
from __future__ import annotations

from fakekernel.helpers.proto import TypeFlag, base_type
from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.mem import coerce_to_size
from fakekernel.verifier.regs import Reg, RegType, reg_type_str
from fakekernel.verifier.scalar import scalar_alu
from uapi.bpf import (
    BPF_ADD, BPF_ALU64, BPF_ARSH, BPF_DIV, BPF_END, BPF_K, BPF_LSH, BPF_MOD, BPF_MOV, BPF_NEG, BPF_RSH,
    BPF_SUB, BPF_TO_LE,
)
from uapi.errno import Errno
from uapi.insn import BPF_CLASS, BPF_OP, BPF_SRC, s64, u32, u64

__all__ = ["check_alu_op"]

_ENDIAN_SIZES = (16, 32, 64)
_MOVSX_OFFS_64 = (0, 8, 16, 32)
_MOVSX_OFFS_32 = (0, 8, 16)
_PKT = (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META)
#: adjust_ptr_min_max_vals(): types refused outright (sockets) or until NULL-checked
_SOCKS = (RegType.PTR_TO_SOCKET, RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_XDP_SOCK)
_NULLABLE_ARITH = (RegType.PTR_TO_BTF_ID, RegType.PTR_TO_BUF, RegType.PTR_TO_MEM) + _SOCKS



def check_alu_op(env, state, insn) -> None:
    cls, op, src_k = BPF_CLASS(insn.code), BPF_OP(insn.code), BPF_SRC(insn.code) == BPF_K
    alu64 = cls == BPF_ALU64
    regs = state.regs
    if op == BPF_END or op == BPF_NEG:
        if op == BPF_NEG:
            if not src_k or insn.src_reg or insn.off or insn.imm:
                raise env.fail(state, Errno.EINVAL, "BPF_NEG uses reserved fields\n")
        elif insn.src_reg or insn.off or insn.imm not in _ENDIAN_SIZES or (alu64 and BPF_SRC(insn.code) != BPF_TO_LE):
            raise env.fail(state, Errno.EINVAL, "BPF_END uses reserved fields\n")
        env.check_reg_arg(state, insn.dst_reg, src=True)
        env.check_reg_arg(state, insn.dst_reg, src=False)
        dst = regs[insn.dst_reg]
        if dst.type != RegType.SCALAR_VALUE:
            regs[insn.dst_reg] = Reg.unknown(exact=False) if dst.type == RegType.UNTRACKED else Reg.unknown()
            return
        if dst.is_const():
            from fakekernel.interp.alu import bswap, neg32, neg64, to_be, to_le
            v = dst.const_value
            if op == BPF_NEG:
                v = neg64(v) if alu64 else neg32(v)
            elif alu64:
                v = bswap(v, insn.imm)
            else:
                v = (to_be if BPF_SRC(insn.code) else to_le)(v, insn.imm)
            regs[insn.dst_reg] = Reg.const(v)
        else:
            regs[insn.dst_reg] = Reg.unknown(exact=False)
        return
    if op == BPF_MOV:
        if not src_k:
            if alu64:
                bad = insn.off not in _MOVSX_OFFS_64 or insn.imm
            else:
                bad = insn.off not in _MOVSX_OFFS_32 or insn.imm
            if bad:
                if alu64 and insn.off == 1:
                    raise GiveUp("addr_space_cast is not modelled")
                raise env.fail(state, Errno.EINVAL, "BPF_MOV uses reserved fields\n")
            env.check_reg_arg(state, insn.src_reg, src=True)
        elif insn.src_reg or insn.off:
            raise env.fail(state, Errno.EINVAL, "BPF_MOV uses reserved fields\n")
        env.check_reg_arg(state, insn.dst_reg, src=False)
        if src_k:
            regs[insn.dst_reg] = Reg.const(u64(insn.imm) if alu64 else u32(insn.imm))
            return
        src = regs[insn.src_reg]
        if insn.off:
            if src.is_const():
                from fakekernel.interp.alu import movsx32, movsx64
                v = (movsx64 if alu64 else movsx32)(src.const_value, insn.off)
                regs[insn.dst_reg] = Reg.const(v)
            else:
                regs[insn.dst_reg] = Reg.unknown(exact=False)
            return
        if alu64:
            if src.type == RegType.SCALAR_VALUE and not src.is_const() and src.id == 0:
                src.id = env.new_id()
            regs[insn.dst_reg] = src.copy()
            return
        if src.type != RegType.SCALAR_VALUE:
            regs[insn.dst_reg] = Reg.unknown(exact=src.type != RegType.UNTRACKED)
            regs[insn.dst_reg].set_from_tnum(regs[insn.dst_reg].var_off.cast(4))
            return
        if src.umax.bit_length() <= 32 and not src.is_const() and src.id == 0:
            src.id = env.new_id()
        r = src.copy()
        if src.umax.bit_length() > 32:
            r.id = 0
        coerce_to_size(r, 4, exact=src.exact)
        regs[insn.dst_reg] = r
        return
    if op > BPF_END:
        raise env.fail(state, Errno.EINVAL, f"invalid BPF_ALU opcode {op:x}\n")
    if not src_k:
        if insn.imm or insn.off not in (0, 1) or (insn.off == 1 and op not in (BPF_MOD, BPF_DIV)):
            raise env.fail(state, Errno.EINVAL, "BPF_ALU uses reserved fields\n")
        env.check_reg_arg(state, insn.src_reg, src=True)
    elif insn.src_reg or insn.off not in (0, 1) or (insn.off == 1 and op not in (BPF_MOD, BPF_DIV)):
        raise env.fail(state, Errno.EINVAL, "BPF_ALU uses reserved fields\n")
    env.check_reg_arg(state, insn.dst_reg, src=True)
    if op in (BPF_MOD, BPF_DIV) and src_k and insn.imm == 0:
        raise env.fail(state, Errno.EINVAL, "div by zero\n")
    if op in (BPF_LSH, BPF_RSH, BPF_ARSH) and src_k and not 0 <= insn.imm < (64 if alu64 else 32):
        raise env.fail(state, Errno.EINVAL, f"invalid shift {insn.imm}\n")
    env.check_reg_arg(state, insn.dst_reg, src=False)
    dst = regs[insn.dst_reg]
    src = Reg.const(u64(insn.imm) if alu64 else u32(insn.imm)) if src_k else regs[insn.src_reg]
    regs[insn.dst_reg] = _adjust_reg_min_max_vals(env, state, insn, op, dst, src, alu64)


def _adjust_reg_min_max_vals(env, state, insn, op: int, dst: Reg, src: Reg, alu64: bool) -> Reg:
    if dst.type == RegType.UNTRACKED or src.type == RegType.UNTRACKED:
        return Reg(RegType.UNTRACKED)
    dptr, sptr = dst.type != RegType.SCALAR_VALUE, src.type != RegType.SCALAR_VALUE
    if not dptr and not sptr:
        return scalar_alu(op, dst, src, alu64, signed_divmod=insn.off == 1)
    if dptr and sptr:
        if alu64 and op == BPF_SUB and dst.type == src.type and env.allow_ptr_leaks:
            return Reg.unknown()
        return Reg(RegType.UNTRACKED)
    ptr, off = (dst, src) if dptr else (src, dst)
    if not alu64 or op not in (BPF_ADD, BPF_SUB) or (sptr and op == BPF_SUB):
        return Reg(RegType.UNTRACKED)
    t = ptr.type
    if t & TypeFlag.PTR_MAYBE_NULL and base_type(t) in _NULLABLE_ARITH and not ptr.weak_null:
        raise env.fail(state, Errno.EACCES, f"R{insn.dst_reg} pointer arithmetic on {reg_type_str(t)} "
                                            f"prohibited, null-check it first\n")
    if t & TypeFlag.PTR_MAYBE_NULL or t in (RegType.CONST_PTR_TO_MAP, RegType.PTR_TO_PACKET_END):
        return Reg(RegType.UNTRACKED)
    if t in _SOCKS:
        raise env.fail(state, Errno.EACCES, f"R{insn.dst_reg} pointer arithmetic on {reg_type_str(t)} "
                                            f"prohibited\n")
    if t not in (RegType.PTR_TO_STACK, RegType.PTR_TO_MAP_VALUE, RegType.PTR_TO_CTX,
                 RegType.PTR_TO_MEM | TypeFlag.MEM_RINGBUF) + _PKT:
        return Reg(RegType.UNTRACKED)
    if not off.is_const():
        return Reg(RegType.UNTRACKED)
    delta = s64(off.const_value)
    if op == BPF_SUB:
        delta = -delta
    new_off = ptr.off + delta
    if not -(1 << 29) < new_off < (1 << 29):
        return Reg(RegType.UNTRACKED)
    r = ptr.copy()
    r.off = new_off
    return r


