"""do_misc_fixups pieces — fakekernel/verifier/misc_fixups.py: which map reaches a call, the
division guards, LD_ABS as load-helper calls, and the kernel function calls they emit."""
from __future__ import annotations

import types

from fakekernel.verifier.misc_fixups import (KERNEL_CALLS, _div_mod_guard, bpf_gen_ld_abs, map_at_calls)
from uapi.asm import assemble
from uapi.bpf import BPF_ALU64, BPF_DIV, BPF_X
from uapi.errno import Errno
from uapi.insn import Insn, decode_prog


class _Mem:
    def __init__(self, objs):
        self.objs = objs

    def object_at(self, addr):
        return self.objs[addr]


def _ld(reg: int, addr: int) -> str:
    return f"r{reg} = 0x{addr:x} ll"


def test_kctx_misc_map_at_calls_follows_moves_and_spills():
    a, b = 0xFFFF888000001000, 0xFFFF888000002000
    mem = _Mem({a: "A", b: "B"})
    insns = decode_prog(assemble("\n".join([
        _ld(6, a), "*(u64 *)(r10 -16) = r6", "r2 = r10", "r2 += -8", "r1 = *(u64 *)(r10 -16)",
        "call bpf_map_lookup_elem#1",                   # A through a spill
        "r1 = r6", "call bpf_map_lookup_elem#1",        # r6 survives the call
        "r1 = r6", "if r0 == 0x0 goto pc+2", _ld(1, b), "call bpf_map_lookup_elem#1",   # poisoned: A or B
        "r0 = 0", "exit"])))
    calls = [i for i, x in enumerate(insns) if x.code == 0x85]
    found = map_at_calls(insns, mem)
    assert [found.get(i) for i in calls] == ["A", "A", None]


def test_kctx_misc_map_at_calls_forgets_a_clobbered_spill():
    a = 0xFFFF888000001000
    insns = decode_prog(assemble("\n".join([
        _ld(6, a), "*(u64 *)(r10 -8) = r6", "*(u32 *)(r10 -4) = 0", "r1 = *(u64 *)(r10 -8)",
        "call bpf_map_lookup_elem#1", "exit"])))
    assert map_at_calls(insns, _Mem({a: "A"})) == {}


def test_kctx_misc_division_guard_shapes():
    div64 = Insn(BPF_ALU64 | BPF_DIV | BPF_X, 0, 1, 0, 0)
    out = _div_mod_guard(div64)
    assert len(out) == 4 and out[-1] == div64                      # jne, xor, ja, div
    assert len(_div_mod_guard(Insn(BPF_ALU64 | BPF_DIV | BPF_X, 0, 1, 1, 0))) == 8        # sdiv
    assert _div_mod_guard(Insn(BPF_ALU64 | BPF_DIV | 0, 0, 0, 0, 3)) is None         # by a constant


def test_kctx_misc_ld_abs_calls_a_registered_kernel_function():
    out = bpf_gen_ld_abs(decode_prog(assemble("r0 = *(u16 *)skb[14]"))[0])
    call = next(x for x in out if x.code == 0x85)
    assert KERNEL_CALLS[call.imm][0] == "bpf_skb_load_helper_16_no_cache"


def test_kctx_misc_skb_load_helper_reads_big_endian_or_efault():
    from fakekernel.net.skbuff import SkBuff
    skb = SkBuff(head=bytearray(range(64)), data_off=0, len=64)
    env = types.SimpleNamespace(ctx=skb)
    fn = next(f for name, f in KERNEL_CALLS.values() if name == "bpf_skb_load_helper_16_no_cache")
    assert fn(env, 0, 14, 0, 0, 0) == 0x0E0F
    assert fn(env, 0, 63, 0, 0, 0) == (-Errno.EFAULT) & ((1 << 64) - 1)
