"""fakekernel/jit: random programs give the same result on every tier as on the reference interpreter.

Programs are straight-line ALU/JMP code with forward jumps only (so they terminate), memory operations on
the stack (r10) and on a 64-byte mem region (r9, never written), some of them a little out of bounds or
through an arbitrary register (so some runs fault), and helper calls. The outcome compared is r0, the
instruction count, the mem region and the final stack (read by a helper at the end), or for a faulting
run the fault's insn index, message and registers.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakekernel.interp import AddressSpace, Interpreter, InterpreterFault, RunEnv
from fakekernel.jit import compile_prog
from fakekernel.jit.native import compiler_works
from uapi.bpf import (
    BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ARSH, BPF_B, BPF_CMPXCHG, BPF_DIV, BPF_DW, BPF_END, BPF_FETCH,
    BPF_H, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT, BPF_JMP, BPF_JMP32, BPF_JNE, BPF_JSET, BPF_JSGE,
    BPF_JSGT, BPF_JSLE, BPF_JSLT, BPF_K, BPF_LOAD_ACQ, BPF_LSH, BPF_MOD, BPF_MOV, BPF_MUL, BPF_NEG, BPF_OR,
    BPF_RSH, BPF_STORE_REL, BPF_SUB, BPF_TO_BE, BPF_TO_LE, BPF_W, BPF_X, BPF_XCHG, BPF_XOR,
)
from uapi.insn import (
    BPF_ATOMIC_OP, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_A, BPF_LD_IMM64, BPF_LDX_MEM, BPF_LDX_MEMSX,
    BPF_MOV64_REG, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_MOV64_IMM, BPF_ST_MEM, BPF_STX_MEM, Insn,
)

TIERS = ["python", pytest.param("c", marks=pytest.mark.skipif(not compiler_works(), reason="no C compiler"))]
MEM_SIZE = 64
STACK = 512
MEM_REG = 9
M64 = (1 << 64) - 1

_ALU_OPS = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH]
_JMP_OPS = [BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE]
_SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
_RMW = [BPF_ADD, BPF_AND, BPF_OR, BPF_XOR, BPF_XCHG, BPF_CMPXCHG]

imm32 = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from([0, 1, -1, 2, 31, 32, 63, 64, -(1 << 31)]))
work_reg = st.integers(0, 8)
any_reg = st.integers(0, 10)


@st.composite
def alu_insn(draw, src_reg=any_reg):
    cls = draw(st.sampled_from([BPF_ALU, BPF_ALU64]))
    kind = draw(st.integers(0, 9))
    dst = draw(work_reg)
    if kind == 0:
        return [Insn(cls | BPF_NEG | BPF_K, dst)]
    if kind == 1:
        code = draw(st.sampled_from([BPF_ALU | BPF_END | BPF_TO_LE, BPF_ALU | BPF_END | BPF_TO_BE,
                                     BPF_ALU64 | BPF_END | BPF_TO_LE]))
        return [Insn(code, dst, imm=draw(st.sampled_from([16, 32, 64])))]
    if kind == 2:
        widths = [8, 16, 32] if cls == BPF_ALU64 else [8, 16]
        return [Insn(cls | BPF_MOV | BPF_X, dst, draw(src_reg), draw(st.sampled_from(widths)))]
    if kind == 3:
        return list(BPF_LD_IMM64(dst, draw(st.integers(0, M64))))
    op = draw(st.sampled_from(_ALU_OPS))
    off = 1 if op in (BPF_DIV, BPF_MOD) and draw(st.booleans()) else 0
    if draw(st.booleans()):
        return [Insn(cls | op | BPF_X, dst, draw(src_reg), off)]
    return [Insn(cls | op | BPF_K, dst, 0, off, draw(imm32))]


@st.composite
def mem_insn(draw, src_reg=any_reg):
    size_code = draw(st.sampled_from(list(_SIZES)))
    size = _SIZES[size_code]
    where = draw(st.integers(0, 15))
    if where < 8:
        base, off = 10, draw(st.integers(-STACK, -size))
    elif where < 14:
        base, off = MEM_REG, draw(st.integers(0, MEM_SIZE - size))
    elif where == 14:  # a little out of bounds: faults unless unaligned luck keeps it inside
        base, off = draw(st.sampled_from([(10, -STACK - 4), (10, -4), (MEM_REG, -2), (MEM_REG, MEM_SIZE - 4)]))
    else:  # whatever the register holds (scalars fault, pointers may not)
        base, off = draw(any_reg), draw(st.integers(-16, 16))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return [BPF_LDX_MEM(size_code, draw(work_reg), base, off)]
    if kind == 1 and size_code != BPF_DW:
        return [BPF_LDX_MEMSX(size_code, draw(work_reg), base, off)]
    if kind == 2:
        return [BPF_ST_MEM(size_code, base, off, draw(imm32))]
    if kind == 3:
        return [BPF_STX_MEM(size_code, base, draw(src_reg), off)]
    if kind == 4:
        imm = draw(st.sampled_from([BPF_LOAD_ACQ, BPF_STORE_REL]))
        reg = draw(work_reg)
        if imm == BPF_LOAD_ACQ:  # dst = *(src + off)
            return [BPF_ATOMIC_OP(size_code, imm, reg, base, off)]
        return [BPF_ATOMIC_OP(size_code, imm, base, reg, off)]
    op = draw(st.sampled_from(_RMW))
    if op not in (BPF_XCHG, BPF_CMPXCHG) and draw(st.booleans()):
        op |= BPF_FETCH
    return [BPF_ATOMIC_OP(draw(st.sampled_from([BPF_W, BPF_DW])), op, base, draw(work_reg), off)]


@st.composite
def programs(draw, with_helpers=True, leak_r10=True):
    """``leak_r10=False``: r10 is only ever a memory base, so no result depends on the stack's address
    (which differs between separate runs but not between the repetitions of run_repeat)."""
    src_reg = any_reg if leak_r10 else st.integers(0, 9)
    body: list[list[Insn]] = [[BPF_MOV64_REG(MEM_REG, 1)], [BPF_MOV64_IMM(0, 0)]]
    n = draw(st.integers(1, 40))
    pending: list[tuple[int, int]] = []  # (body index of a jump, how many later items it skips)
    for _ in range(n):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            body.append(draw(alu_insn(src_reg)))
        elif kind < 8:
            body.append(draw(mem_insn(src_reg)))
        elif kind == 8:
            skip = draw(st.integers(0, 6))
            if draw(st.booleans()):
                body.append([BPF_JMP_A(0)])
            else:
                cls = draw(st.sampled_from([BPF_JMP, BPF_JMP32]))
                op = draw(st.sampled_from(_JMP_OPS))
                if draw(st.booleans()):
                    body.append([Insn(cls | op | BPF_X, draw(src_reg), draw(src_reg), 0)])
                else:
                    body.append([Insn(cls | op | BPF_K, draw(src_reg), 0, 0, draw(imm32))])
            pending.append((len(body) - 1, skip))
        elif with_helpers:
            body.append([BPF_CALL_HELPER(2)])
    tail = [BPF_MOV64_REG(7, 0), BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -STACK),
            BPF_MOV64_IMM(2, STACK), BPF_CALL_HELPER(1), BPF_MOV64_REG(0, 7), BPF_EXIT_INSN()]
    if not with_helpers:  # lets the C tier loop inside C (run_repeat)
        tail = [BPF_LDX_MEM(BPF_DW, 1, 10, -8), BPF_ALU64_REG(BPF_XOR, 0, 1), BPF_EXIT_INSN()]
    # resolve forward jumps over whole items (never into the middle of an ld_imm64)
    starts, pos = [], 0
    for item in body:
        starts.append(pos)
        pos += len(item)
    for i, skip in pending:
        target_item = min(i + 1 + skip, len(body))
        target = starts[target_item] if target_item < len(body) else pos
        jmp = body[i][0]
        body[i] = [Insn(jmp.code, jmp.dst_reg, jmp.src_reg, target - starts[i] - 1, jmp.imm)]
    return [insn for item in body for insn in item] + tail


def _helpers(seen):
    def dump_stack(env, r1, r2, r3, r4, r5):
        seen.append(env.mem.read(r1, r2))
        return 0

    def mix(env, r1, r2, r3, r4, r5):
        return (r1 * 3 + r2 ^ r3 + (r4 << 1) - r5) & M64

    return {1: dump_stack, 2: mix}


def outcome(engine_factory, insns, args, mem_init):
    mem = AddressSpace()
    region = mem.map_region(bytearray(mem_init), "mem", "mem")
    env = RunEnv(mem=mem)
    seen: list[bytes] = []
    eng = engine_factory(insns)
    try:
        r0 = eng.run(mem, region.base, helpers=_helpers(seen), env=env, extra_args=args)
        result = ("ok", r0)
    except InterpreterFault as f:
        result = ("fault", f.insn_idx, f.message, tuple(f.registers))
    assert mem.regions == [region]
    return result, env.insn_count, bytes(region.buf), seen


@pytest.mark.parametrize("tier", TIERS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(insns=programs(), args=st.lists(st.integers(0, M64), min_size=4, max_size=4),
       mem_init=st.binary(min_size=MEM_SIZE, max_size=MEM_SIZE))
def test_random_programs_match_the_interpreter(tier, insns, args, mem_init):
    expected = outcome(Interpreter, insns, args, mem_init)
    actual = outcome(lambda i: compile_prog(i, tier=tier), insns, args, mem_init)
    assert actual == expected


@pytest.mark.parametrize("tier", TIERS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(insns=st.one_of(programs(leak_r10=False), programs(with_helpers=False, leak_r10=False)),
       args=st.lists(st.integers(0, M64), min_size=4, max_size=4),
       mem_init=st.binary(min_size=MEM_SIZE, max_size=MEM_SIZE), n=st.integers(1, 4))
def test_run_repeat_matches_repeated_runs(tier, insns, args, mem_init, n):
    """run_repeat(n) == n runs of the reference interpreter on the same memory (state carries over).

    The repetitions share one stack region (as the kernel's repeat loop does), so the programs here do
    not compute with r10's value."""
    def go(factory, repeat):
        mem = AddressSpace()
        region = mem.map_region(bytearray(mem_init), "mem", "mem")
        env = RunEnv(mem=mem)
        seen: list[bytes] = []
        eng = factory(insns)
        try:
            if repeat:
                r0 = eng.run_repeat(n, mem, region.base, helpers=_helpers(seen), env=env, extra_args=args)
            else:
                for _ in range(n):
                    r0 = eng.run(mem, region.base, helpers=_helpers(seen), env=env, extra_args=args)
            res = ("ok", r0)
        except InterpreterFault as f:
            res = ("fault", f.insn_idx, f.message)
        return res, env.insn_count, bytes(region.buf), seen

    assert go(lambda i: compile_prog(i, tier=tier), True) == go(Interpreter, False)
