"""fakekernel/jit: tier selection, the native code cache, and the runtime rules the compiled tiers must
share with the reference interpreter (region cache vs helpers that unmap, exited frames, tail calls out
of subprograms, run_repeat, max_insns)."""
from __future__ import annotations

import gc

import pytest

from fakekernel.interp import AddressSpace, Interpreter, InterpreterFault, RunEnv, TailCall
from fakekernel.jit import ENGINE_ENV, InterpEngine, PyEngine, compile_prog, engine_tier
from fakekernel.jit.native import CEngine, cache_dir, compiler_works
from uapi.bpf import BPF_ADD, BPF_DW, FuncId
from uapi.insn import (
    BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP, BPF_CALL_HELPER, BPF_CALL_REL, BPF_EXIT_INSN, BPF_JMP_A,
    BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM,
)

needs_cc = pytest.mark.skipif(not compiler_works(), reason="no C compiler")
TIERS = ["python", pytest.param("c", marks=needs_cc)]


def outcome(make, insns, *, helpers=None, setup=None, **kw):
    """(result, insn_count, regions left mapped) of one run in a fresh address space."""
    mem = AddressSpace()
    r1 = setup(mem) if setup else 0
    env = RunEnv(mem=mem)
    try:
        res = ("ok", make(insns).run(mem, r1, helpers=helpers or {}, env=env, **kw))
    except InterpreterFault as f:
        res = ("fault", f.insn_idx, f.message, tuple(f.registers))
    return res, env.insn_count, [r.name for r in mem.regions]


def same_as_interpreter(tier, insns, **kw):
    expected = outcome(Interpreter, insns, **kw)
    assert outcome(lambda i: compile_prog(i, tier=tier), insns, **kw) == expected
    return expected


# --- selection ----------------------------------------------------------------------------------------


def test_environment_variable_forces_a_tier(monkeypatch):
    prog = [BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    monkeypatch.setenv(ENGINE_ENV, "python")
    assert engine_tier() == "python" and isinstance(compile_prog(prog), PyEngine)
    monkeypatch.setenv(ENGINE_ENV, "interp")
    assert isinstance(compile_prog(prog), InterpEngine)
    monkeypatch.setenv(ENGINE_ENV, "jit")
    with pytest.raises(ValueError, match=ENGINE_ENV):
        compile_prog(prog)


def test_default_tier_is_c_when_a_compiler_works(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert engine_tier() == ("c" if compiler_works() else "python")


@needs_cc
def test_native_modules_are_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKEKERNEL_JIT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    prog = [BPF_MOV64_IMM(0, 0x5EED0 + tmp_path.stat().st_ino % 1000), BPF_EXIT_INSN()]
    a = CEngine(prog)
    assert len(list(tmp_path.glob("_fkjit_*.so"))) == 1
    b = CEngine(prog)
    assert a.module is b.module
    mem = AddressSpace()
    assert b.run(mem, 0, helpers={}, env=RunEnv(mem=mem)) == prog[0].imm


def test_interp_engine_is_the_reference_interpreter():
    eng = compile_prog([BPF_MOV64_IMM(0, 3), BPF_EXIT_INSN()], tier="interp")
    assert isinstance(eng, Interpreter) and eng.interpreter is eng
    mem = AddressSpace()
    env = RunEnv(mem=mem)
    assert eng.run_repeat(4, mem, 0, helpers={}, env=env) == 3 and env.insn_count == 8


# --- memory rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_pointer_into_a_region_a_helper_unmapped_faults(tier):
    """The compiled tiers cache translated regions; a helper that unmaps one must invalidate it."""
    state = {}

    def get(env, *args):
        state["region"] = env.mem.map_region(bytearray(8), "map_value", "v")
        return state["region"].base

    def drop(env, *args):
        env.mem.unmap(state["region"])
        return 0

    prog = [BPF_CALL_HELPER(1), BPF_MOV64_REG(6, 0), BPF_ST_MEM(BPF_DW, 6, 0, 7), BPF_LDX_MEM(BPF_DW, 7, 6, 0),
            BPF_CALL_HELPER(2), BPF_LDX_MEM(BPF_DW, 0, 6, 0), BPF_EXIT_INSN()]
    res, count, _ = same_as_interpreter(tier, prog, helpers={1: get, 2: drop})
    assert res[:3] == ("fault", 5, f"invalid read of 8 bytes at 0x{res[3][6]:x}: no region mapped there")


@pytest.mark.parametrize("tier", TIERS)
def test_write_to_a_read_only_region_faults(tier):
    def setup(mem):
        return mem.map_region(b"\x01" * 16, "ctx", "ro", writable=False).base

    prog = [BPF_LDX_MEM(BPF_DW, 0, 1, 8), BPF_STX_MEM(BPF_DW, 1, 0, 0), BPF_EXIT_INSN()]
    res, count, _ = same_as_interpreter(tier, prog, setup=setup)
    assert res[0] == "fault" and res[1] == 1 and "read-only" in res[2] and count == 1


@pytest.mark.parametrize("tier", TIERS)
def test_the_stack_of_an_exited_frame_is_unreachable(tier):
    # the subprogram returns a pointer into its own frame; the caller dereferences it
    prog = [BPF_CALL_REL(2), BPF_LDX_MEM(BPF_DW, 0, 0, 0), BPF_EXIT_INSN(),
            BPF_ST_MEM(BPF_DW, 10, -8, 5), BPF_MOV64_REG(0, 10), BPF_ALU64_IMM(BPF_ADD, 0, -8), BPF_EXIT_INSN()]
    res, count, regions = same_as_interpreter(tier, prog)
    assert res[:2] == ("fault", 1) and "no region mapped there" in res[2] and regions == []


@needs_cc
def test_gc_after_a_native_fault_is_safe():
    """The fault's traceback keeps the run alive in a cycle; buffer exports must already be released."""
    prog = [BPF_LDX_MEM(BPF_DW, 0, 1, 0), BPF_EXIT_INSN()]
    eng = compile_prog(prog, tier="c")
    kept = []
    for _ in range(20):
        mem = AddressSpace()
        region = mem.map_region(bytearray(4), "mem", "short")
        try:
            eng.run(mem, region.base, helpers={}, env=RunEnv(mem=mem))
        except InterpreterFault as exc:
            kept.append(exc)
    del region, mem
    gc.collect()
    assert len(kept) == 20


# --- control flow ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_tail_call_from_a_subprogram_returns_to_its_caller(tier):
    target = [BPF_MOV64_IMM(0, 7), BPF_EXIT_INSN()]
    prog = [BPF_MOV64_IMM(6, 100), BPF_CALL_REL(2), BPF_ALU64_REG(BPF_ADD, 0, 6), BPF_EXIT_INSN(),
            BPF_MOV64_IMM(0, 1), BPF_CALL_HELPER(FuncId.tail_call), BPF_MOV64_IMM(0, -1), BPF_EXIT_INSN()]
    make = {"python": lambda i: compile_prog(i, tier=tier), "c": lambda i: compile_prog(i, tier=tier)}[tier]
    tgt_interp, tgt_eng = Interpreter(target), make(target)
    expected = outcome(Interpreter, prog, helpers={FuncId.tail_call: lambda *a: TailCall(tgt_interp)})
    actual = outcome(make, prog, helpers={FuncId.tail_call: lambda *a: TailCall(tgt_eng)})
    assert actual == expected and expected[0] == ("ok", 107)


@pytest.mark.parametrize("tier", TIERS)
def test_run_repeat_counts_every_repetition(tier):
    prog = [BPF_MOV64_IMM(2, 1), BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 1, 2, 0), BPF_LDX_MEM(BPF_DW, 0, 1, 0),
            BPF_EXIT_INSN()]
    mem = AddressSpace()
    ctx = mem.map_region(bytearray(8), "ctx", "ctx")
    env = RunEnv(mem=mem)
    eng = compile_prog(prog, tier=tier)
    assert eng.run_repeat(1000, mem, ctx.base, helpers={}, env=env) == 1000
    assert env.insn_count == 4000 and mem.regions == [ctx]


@pytest.mark.parametrize("tier", TIERS)
def test_max_insns_is_enforced(tier):
    mem = AddressSpace()
    eng = compile_prog([BPF_JMP_A(-1), BPF_EXIT_INSN()], tier=tier)
    with pytest.raises(InterpreterFault, match="limit 500"):
        eng.run(mem, 0, helpers={}, env=RunEnv(mem=mem), max_insns=500)
