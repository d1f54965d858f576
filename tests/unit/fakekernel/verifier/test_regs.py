"""tnum arithmetic, bounds synchronisation and the log's register text."""
from hypothesis import given, strategies as st

from fakekernel.verifier.regs import Reg, RegType, Tnum
from fakekernel.verifier.scalar import is_branch_taken, refine_const_branch, scalar_alu
from uapi.bpf import BPF_ADD, BPF_AND, BPF_JGT, BPF_LSH

U64 = st.integers(0, (1 << 64) - 1)


def _u32_load() -> Reg:
    r = Reg.unknown()
    r.set_from_tnum(Tnum(0, 0xFFFFFFFF))
    return r


def test_reg_state_str_like_the_kernel():
    r = _u32_load()
    assert r.state_str() == "scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff))"
    refine_const_branch(r, BPF_JGT, 10, taken=False)
    assert r.state_str() == "scalar(smin=smin32=0,smax=umax=smax32=umax32=10,var_off=(0x0; 0xf))"
    assert Reg.const(-1).state_str() == "-1"
    assert Reg.const(0xFFFFFFFF).state_str() == "0xffffffff"
    assert Reg.ptr(RegType.PTR_TO_STACK, off=-4).state_str() == "fp-4"


@given(U64, U64)
def test_tnum_add_contains_every_sum(a, b):
    t = Tnum(a & ~0xFF, 0xFF).add(Tnum.const(b))
    for low in (0, 0x7F, 0xFF):
        v = ((a & ~0xFF) | low) + b & ((1 << 64) - 1)
        assert v & ~t.mask == t.value


def test_alu_bounds_follow_the_kernel():
    r = scalar_alu(BPF_AND, _u32_load(), Reg.const(0xFF), alu64=True)
    assert (r.umin, r.umax) == (0, 255)
    r = scalar_alu(BPF_ADD, r, Reg.const(10), alu64=True)
    assert (r.umin, r.umax) == (10, 265)
    r = scalar_alu(BPF_LSH, r, Reg.const(2), alu64=True)
    assert (r.umin, r.umax) == (40, 1060)


def test_branch_decided_only_when_bounds_say_so():
    r = _u32_load()
    assert is_branch_taken(BPF_JGT, r, Reg.const(10), jmp32=False) == -1
    assert is_branch_taken(BPF_JGT, r, Reg.const(0xFFFFFFFF), jmp32=False) == 0
    assert is_branch_taken(BPF_JGT, Reg.const(5), Reg.const(3), jmp32=False) == 1
