"""fakekernel/interp/run.py and memory.py: frames, calls, helpers, tail calls, faults, may_goto."""
from __future__ import annotations

import pytest

from fakekernel.interp import AddressSpace, Interpreter, InterpreterFault, RunEnv, SkbData, TailCall
from fakekernel.interp.memory import DIRECT_MAP_BASE, PAGE_SIZE
from fakekernel.interp.run import MAX_BPF_STACK, MAX_CALL_FRAMES, MAX_TAIL_CALL_CNT, SKF_NET_OFF
from uapi.bpf import (
    BPF_ADD, BPF_AND, BPF_B, BPF_CMPXCHG, BPF_DW, BPF_FETCH, BPF_H, BPF_JA, BPF_JCOND, BPF_JEQ, BPF_JMP,
    BPF_JMP32, BPF_JNE, BPF_LOAD_ACQ, BPF_MAY_GOTO, BPF_OR, BPF_STORE_REL, BPF_SUB, BPF_W, BPF_XCHG,
    BPF_XOR, FuncId,
)
from uapi.insn import (
    BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP, BPF_CALL_HELPER, BPF_CALL_REL, BPF_EXIT_INSN,
    BPF_JMP32_A, BPF_JMP_A, BPF_JMP_IMM, BPF_JMP_REG, BPF_LD_ABS, BPF_LD_IMM64, BPF_LD_IND, BPF_LDX_MEM,
    BPF_LDX_MEMSX, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_RAW_INSN, BPF_ST_MEM, BPF_STX_MEM, Insn,
)

M64 = (1 << 64) - 1


def flat(insns):
    out = []
    for i in insns:
        out.extend(i if isinstance(i, tuple) else [i])
    return out


def run(insns, r1=0, *, mem=None, helpers=None, **kw):
    mem = mem or AddressSpace()
    env = RunEnv(mem=mem)
    r0 = Interpreter(flat(insns)).run(mem, r1, helpers=helpers or {}, env=env, **kw)
    return r0, env


# --- memory model -------------------------------------------------------------------------------------


def test_regions_are_separated_by_unmapped_guard_pages():
    mem = AddressSpace()
    a = mem.map_region(bytearray(16), "mem", "a")
    b = mem.map_region(bytearray(16), "mem", "b")
    assert a.base >= DIRECT_MAP_BASE + PAGE_SIZE and b.base - a.end >= PAGE_SIZE
    assert mem.region_at(a.base) is a and mem.region_at(a.end - 1) is a
    for addr, size in [(a.base - 1, 1), (a.end, 1), (a.end - 4, 8), (b.base - 1, 2)]:
        with pytest.raises(InterpreterFault):
            mem.load(addr, size)


def test_load_store_little_endian_in_the_backing_buffer():
    buf = bytearray(8)
    mem = AddressSpace()
    r = mem.map_region(buf, "map_value", "v")
    mem.store(r.base + 2, 2, 0x1_BEEF)  # only the low two bytes land
    assert buf == bytes.fromhex("0000efbe00000000")
    assert mem.load(r.base + 2, 2) == 0xBEEF
    mem.write(r.base, b"\x01\x02")
    assert mem.read(r.base, 3) == b"\x01\x02\xef"
    assert bytes(mem.view(r.base + 1, 2)) == b"\x02\xef"


def test_read_only_regions_and_buffers():
    mem = AddressSpace()
    r = mem.map_region(bytearray(4), "ctx", "ctx", writable=False)
    assert mem.load(r.base, 4) == 0
    with pytest.raises(InterpreterFault, match="read-only"):
        mem.store(r.base, 4, 1)
    with pytest.raises(ValueError):
        mem.map_region(b"immutable", "mem", "ro")


def test_unmapped_regions_fault_and_addresses_are_not_reused():
    mem = AddressSpace()
    r = mem.map_region(bytearray(8), "mem", "gone")
    mem.load(r.base, 8)
    mem.unmap(r)
    with pytest.raises(InterpreterFault, match="no region"):
        mem.load(r.base, 8)
    assert mem.map_region(bytearray(8), "mem", "new").base != r.base


def test_object_handles_are_opaque():
    mem = AddressSpace()
    obj = object()
    addr = mem.map_object(obj)
    assert mem.map_object(obj) == addr and mem.object_at(addr) is obj
    with pytest.raises(InterpreterFault, match="opaque handle"):
        mem.load(addr, 8)
    with pytest.raises(InterpreterFault):
        mem.object_at(addr + 8)


# --- basics -------------------------------------------------------------------------------------------


def test_return_value_arguments_and_insn_count():
    r0, env = run([BPF_MOV64_REG(0, 1), BPF_ALU64_REG(BPF_ADD, 0, 2), BPF_EXIT_INSN()], 40, extra_args=(2,))
    assert r0 == 42 and env.insn_count == 3
    assert run([BPF_MOV64_IMM(0, -1), BPF_EXIT_INSN()])[0] == M64


def test_env_must_share_the_address_space():
    with pytest.raises(ValueError):
        Interpreter(flat([BPF_EXIT_INSN()])).run(AddressSpace(), 0, helpers={}, env=RunEnv(mem=AddressSpace()))


def test_stack_frame_and_r10():
    prog = [BPF_ST_MEM(BPF_DW, 10, -8, -2), BPF_LDX_MEM(BPF_W, 0, 10, -4), BPF_EXIT_INSN()]
    assert run(prog)[0] == 0xFFFFFFFF
    # one past the top of the stack is not mapped
    with pytest.raises(InterpreterFault) as exc:
        run([BPF_LDX_MEM(BPF_B, 0, 10, 0), BPF_EXIT_INSN()])
    assert exc.value.insn_idx == 0 and len(exc.value.registers) == 11
    with pytest.raises(InterpreterFault):
        run([BPF_LDX_MEM(BPF_B, 0, 10, -MAX_BPF_STACK - 1), BPF_EXIT_INSN()])


def test_stack_regions_are_unmapped_after_the_run_even_on_fault():
    mem = AddressSpace()
    user = mem.map_region(bytearray(4), "mem", "user")
    run([BPF_EXIT_INSN()], mem=mem)
    with pytest.raises(InterpreterFault):
        run([BPF_CALL_REL(1), BPF_EXIT_INSN(), BPF_LDX_MEM(BPF_B, 0, 0, 0), BPF_EXIT_INSN()], mem=mem)
    assert mem.regions == [user]


def test_memsx_and_ld_imm64():
    mem = AddressSpace()
    r = mem.map_region(bytearray(b"\x80\xff\x7f\x00"), "mem", "m")
    assert run([BPF_LDX_MEMSX(BPF_B, 0, 1, 0), BPF_EXIT_INSN()], r.base, mem=mem)[0] == M64 - 0x7F
    assert run([BPF_LDX_MEMSX(BPF_H, 0, 1, 2), BPF_EXIT_INSN()], r.base, mem=mem)[0] == 0x7F
    assert run([BPF_LDX_MEM(BPF_H, 0, 1, 0), BPF_EXIT_INSN()], r.base, mem=mem)[0] == 0xFF80
    assert run([BPF_LD_IMM64(0, 0x8000_0000_1234_5678), BPF_EXIT_INSN()])[0] == 0x8000_0000_1234_5678


def test_jumping_into_the_second_half_of_ld_imm64_faults():
    with pytest.raises(InterpreterFault, match="second half") as exc:
        run([BPF_JMP_A(1), BPF_LD_IMM64(0, 1), BPF_EXIT_INSN()])
    assert exc.value.insn_idx == 2


def test_gotol_and_ja():
    prog = [BPF_MOV64_IMM(0, 1), BPF_JMP32_A(2), BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN(), BPF_JMP_A(-2)]
    assert run(prog)[0] == 1


def test_unknown_opcode_faults_only_when_executed():
    dead = [BPF_MOV64_IMM(0, 3), BPF_EXIT_INSN(), Insn(0xFF)]
    assert run(dead)[0] == 3
    with pytest.raises(InterpreterFault, match="unknown opcode 0xff") as exc:
        run([BPF_MOV64_IMM(0, 3), Insn(0xFF), BPF_EXIT_INSN()])
    assert exc.value.insn_idx == 1 and exc.value.registers[0] == 3


@pytest.mark.parametrize("insn", [
    Insn(0xBF, 1, 2, 4),  # mov with an undefined off
    Insn(0x3F, 1, 2, 2),  # div with off=2
    Insn(0xD4, 1, 0, 0, 17),  # le17
    Insn(0xDB, 1, 2, 0, 0x30),  # atomic with an undefined imm
    Insn(0xD3, 1, 2, 0, BPF_ADD),  # 8-bit atomic add
    Insn(0x8D, 1),  # callx is not Linux
    Insn(BPF_JMP | BPF_JCOND, 0, 1, 0),  # JCOND other than may_goto
])
def test_undefined_encodings_fault(insn):
    with pytest.raises(InterpreterFault, match="invalid encoding"):
        run([insn, BPF_EXIT_INSN()])


def test_falling_off_the_end_and_instruction_limit():
    with pytest.raises(InterpreterFault, match="fell off"):
        run([BPF_MOV64_IMM(0, 0)])
    with pytest.raises(InterpreterFault, match="limit 1000"):
        run([BPF_JMP_A(-1), BPF_EXIT_INSN()], max_insns=1000)
    with pytest.raises(InterpreterFault, match="jump out of range"):
        run([BPF_JMP_IMM(BPF_JEQ, 0, 0, 5), BPF_EXIT_INSN()])


# --- atomics ----------------------------------------------------------------------------------------


def _atomic_prog(size, op, init, src, r0=0):
    return [BPF_LD_IMM64(1, init), BPF_STX_MEM(BPF_DW, 10, 1, -8), BPF_LD_IMM64(2, src), BPF_LD_IMM64(0, r0),
            BPF_ATOMIC_OP(size, op, 10, 2, -8),
            BPF_LDX_MEM(BPF_DW, 3, 10, -8),  # memory after
            # return (memory << 0) and keep r2/r0 observable through a second run below
            BPF_MOV64_REG(0, 3) if op not in (BPF_CMPXCHG,) else BPF_MOV64_REG(4, 0),
            BPF_EXIT_INSN()]


@pytest.mark.parametrize("op,expect", [
    (BPF_ADD, 0x1_0000_0005 + 7), (BPF_AND, 0x1_0000_0005 & 6), (BPF_OR, 0x1_0000_0005 | 6), (BPF_XOR, 0x1_0000_0005 ^ 6),
])
def test_atomic_rmw_64(op, expect):
    src = 7 if op == BPF_ADD else 6
    assert run(_atomic_prog(BPF_DW, op, 0x1_0000_0005, src))[0] == expect
    assert run(_atomic_prog(BPF_DW, op | BPF_FETCH, 0x1_0000_0005, src))[0] == expect


def test_atomic_32_bit_touches_only_the_low_word_and_fetch_zero_extends():
    init = 0xAAAA_AAAA_FFFF_FFFF
    assert run(_atomic_prog(BPF_W, BPF_ADD, init, 1))[0] == 0xAAAA_AAAA_0000_0000
    prog = [BPF_LD_IMM64(1, init), BPF_STX_MEM(BPF_DW, 10, 1, -8), BPF_LD_IMM64(2, M64),
            BPF_ATOMIC_OP(BPF_W, BPF_XOR | BPF_FETCH, 10, 2, -8), BPF_MOV64_REG(0, 2), BPF_EXIT_INSN()]
    assert run(prog)[0] == 0xFFFF_FFFF


def test_xchg_and_cmpxchg():
    prog = [BPF_ST_MEM(BPF_DW, 10, -8, 5), BPF_MOV64_IMM(2, 9), BPF_ATOMIC_OP(BPF_DW, BPF_XCHG, 10, 2, -8),
            BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_ALU64_IMM(BPF_SUB, 0, 9), BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_EXIT_INSN()]
    assert run(prog)[0] == 5  # memory became 9, r2 got the old 5
    for expected_old, r0, stored in [(5, 5, 9), (5, 4, 5)]:
        prog = [BPF_ST_MEM(BPF_DW, 10, -8, 5), BPF_MOV64_IMM(2, 9), BPF_MOV64_IMM(0, r0),
                BPF_ATOMIC_OP(BPF_DW, BPF_CMPXCHG, 10, 2, -8), BPF_LDX_MEM(BPF_DW, 3, 10, -8),
                BPF_ALU64_IMM(BPF_SUB, 3, stored), BPF_JMP_IMM(BPF_JNE, 3, 0, 1), BPF_EXIT_INSN(),
                BPF_MOV64_IMM(0, -1), BPF_EXIT_INSN()]
        assert run(prog)[0] == expected_old


def test_cmpxchg32_compares_the_low_half_of_r0():
    prog = [BPF_ST_MEM(BPF_DW, 10, -8, 5), BPF_MOV64_IMM(2, 9), BPF_LD_IMM64(0, 0xFFFF_0000_0000_0005),
            BPF_ATOMIC_OP(BPF_W, BPF_CMPXCHG, 10, 2, -8), BPF_LDX_MEM(BPF_DW, 3, 10, -8),
            BPF_ALU64_IMM(BPF_SUB, 3, 9), BPF_ALU64_REG(BPF_ADD, 0, 3), BPF_EXIT_INSN()]
    assert run(prog)[0] == 5  # swapped (memory 9), r0 = zero-extended old value


def test_load_acquire_store_release():
    prog = [BPF_LD_IMM64(2, 0x1122334455667788), BPF_ATOMIC_OP(BPF_H, BPF_STORE_REL, 10, 2, -8),
            BPF_ATOMIC_OP(BPF_DW, BPF_LOAD_ACQ, 0, 10, -8), BPF_EXIT_INSN()]
    assert run(prog)[0] & 0xFFFF == 0x7788


# --- calls ----------------------------------------------------------------------------------------------


def test_bpf_to_bpf_call_frames():
    prog = [
        BPF_MOV64_IMM(6, 6), BPF_MOV64_IMM(1, 10), BPF_MOV64_IMM(2, 20), BPF_ST_MEM(BPF_DW, 10, -8, 111),
        BPF_MOV64_REG(3, 10),
        BPF_CALL_REL(5),
        # back in the caller: r6 and the caller's stack are intact, r1-r5 are the caller's again
        BPF_LDX_MEM(BPF_DW, 3, 10, -8), BPF_ALU64_REG(BPF_ADD, 0, 3), BPF_ALU64_REG(BPF_ADD, 0, 6),
        BPF_ALU64_REG(BPF_ADD, 0, 1), BPF_EXIT_INSN(),
        # callee: r0 = r1 + r2; clobber r6, r1 and its own stack; its r10 is not the caller's (r3)
        BPF_MOV64_REG(0, 1), BPF_ALU64_REG(BPF_ADD, 0, 2), BPF_MOV64_IMM(6, 1000), BPF_MOV64_IMM(1, 0),
        BPF_ST_MEM(BPF_DW, 10, -8, 999), BPF_JMP_REG(BPF_JNE, 3, 10, 1), BPF_MOV64_IMM(0, -1000),
        BPF_EXIT_INSN(),
    ]
    r0, env = run(prog)
    assert r0 == 30 + 111 + 6 + 10
    assert env.insn_count == 6 + 7 + 5  # the taken jne skips one callee insn


def test_call_depth_is_limited_to_max_call_frames():
    recurse = [BPF_CALL_REL(-1), BPF_EXIT_INSN()]
    with pytest.raises(InterpreterFault, match=f"{MAX_CALL_FRAMES} frames"):
        run(recurse)
    # exactly MAX_CALL_FRAMES frames are fine: main + 7 nested calls
    chain = [x for _ in range(MAX_CALL_FRAMES - 1) for x in (BPF_CALL_REL(1), BPF_EXIT_INSN())]
    chain += [BPF_MOV64_IMM(0, 8), BPF_EXIT_INSN()]
    assert run(chain)[0] == 8


def test_helper_calls():
    seen = []

    def helper(env, r1, r2, r3, r4, r5):
        seen.append((r1, r2, r3, r4, r5, env.mem is not None))
        return -7

    prog = [BPF_MOV64_IMM(1, 1), BPF_MOV64_IMM(2, 2), BPF_MOV64_IMM(3, 3), BPF_MOV64_IMM(4, 4), BPF_MOV64_IMM(5, 5),
            BPF_CALL_HELPER(FuncId.ktime_get_ns), BPF_ALU64_REG(BPF_ADD, 0, 5), BPF_EXIT_INSN()]
    r0, _ = run(prog, helpers={FuncId.ktime_get_ns: helper})
    assert seen == [(1, 2, 3, 4, 5, True)]
    assert r0 == (-7 + 5) & M64  # negative returns are u64; r1-r5 keep their values
    with pytest.raises(InterpreterFault, match="not in the helper table"):
        run(prog)


def test_helper_exceptions_propagate_and_faults_get_the_insn():
    def boom(env, *args):
        raise RuntimeError("helper bug")

    def bad_access(env, r1, *args):
        return env.mem.load(r1, 8)

    prog = [BPF_MOV64_IMM(0, 0), BPF_CALL_HELPER(1), BPF_EXIT_INSN()]
    with pytest.raises(RuntimeError, match="helper bug") as exc:
        run(prog, helpers={1: boom})
    assert any("insn 1" in note for note in exc.value.__notes__)
    with pytest.raises(InterpreterFault) as fault:
        run(prog, helpers={1: bad_access})
    assert fault.value.insn_idx == 1


def test_helpers_write_program_memory_through_regions():
    def fill(env, r1, r2, *rest):
        env.mem.write(r1, b"\x2a" * r2)
        return 0

    prog = [BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -8), BPF_MOV64_IMM(2, 8), BPF_CALL_HELPER(1),
            BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_EXIT_INSN()]
    assert run(prog, helpers={1: fill})[0] == 0x2A2A2A2A2A2A2A2A


# --- tail calls ----------------------------------------------------------------------------------------

TAIL = FuncId.tail_call


def _counting_prog():
    """*(u64 *)ctx += 1; tail_call(); return *(u64 *)ctx + 1000 (reached when the tail call fails)."""
    return flat([BPF_MOV64_REG(6, 1), BPF_MOV64_IMM(2, 1), BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 6, 2, 0),
                 BPF_MOV64_IMM(0, 1000), BPF_CALL_HELPER(TAIL),
                 BPF_LDX_MEM(BPF_DW, 1, 6, 0), BPF_ALU64_REG(BPF_ADD, 0, 1), BPF_EXIT_INSN()])


def _run_tail(make_result):
    mem = AddressSpace()
    ctx = mem.map_region(bytearray(8), "ctx", "ctx")
    interp = Interpreter(_counting_prog())
    env = RunEnv(mem=mem)
    r0 = interp.run(mem, ctx.base, helpers={TAIL: lambda env, *a: make_result(interp)}, env=env)
    return r0, mem.load(ctx.base, 8)


def test_tail_call_limit():
    r0, count = _run_tail(lambda interp: TailCall(interp))
    assert count == 1 + MAX_TAIL_CALL_CNT
    assert r0 == 1000 + count  # the failed tail call left r0 alone


def test_tail_call_to_another_program_keeps_ctx_and_switches_prog():
    mem = AddressSpace()
    ctx = mem.map_region(bytearray(8), "ctx", "ctx")
    target = Interpreter(flat([BPF_LDX_MEM(BPF_DW, 0, 1, 0), BPF_ALU64_IMM(BPF_ADD, 0, 5), BPF_EXIT_INSN()]),
                         prog="target-prog")

    class Prog:
        interpreter = target

    seen = []

    def tail(env, r1, r2, r3, *rest):
        seen.append(env.prog)
        return TailCall(Prog())

    env = RunEnv(mem=mem, prog="caller-prog")
    caller = Interpreter(flat([BPF_ST_MEM(BPF_DW, 1, 0, 37), BPF_CALL_HELPER(TAIL), BPF_MOV64_IMM(0, -1),
                               BPF_EXIT_INSN()]))
    assert caller.run(mem, ctx.base, helpers={TAIL: tail}, env=env) == 42
    assert seen == ["caller-prog"] and env.prog == "target-prog"


def test_empty_slot_counts_and_out_of_range_does_not():
    # every call hits an empty slot: counted, so only MAX_TAIL_CALL_CNT of them are attempted
    r0, count = _run_tail(lambda interp: TailCall(None))
    assert count == 1 and r0 == 1001
    calls = []

    def alternate(interp):
        calls.append(1)
        return TailCall(interp) if len(calls) % 2 else TailCall(None, in_range=False)

    r0, count = _run_tail(alternate)
    assert count == 2  # the out-of-range attempt simply falls through


# --- may_goto ----------------------------------------------------------------------------------------------


def _may_goto_loop():
    # r0 = 0; loop: may_goto +2; r0 += 1; goto loop; exit
    return [BPF_MOV64_IMM(0, 0), Insn(BPF_JMP | BPF_JCOND, 0, BPF_MAY_GOTO, 2), BPF_ALU64_IMM(BPF_ADD, 0, 1),
            BPF_JMP_A(-3), BPF_EXIT_INSN()]


def test_may_goto_budget():
    mem = AddressSpace()
    interp = Interpreter(_may_goto_loop(), max_loops=1000)
    assert interp.run(mem, 0, helpers={}, env=RunEnv(mem=mem)) == 1000


def test_may_goto_budget_is_per_frame():
    prog = [BPF_CALL_REL(3), BPF_MOV64_REG(6, 0), BPF_CALL_REL(1), BPF_EXIT_INSN(), *_may_goto_loop()]
    mem = AddressSpace()
    interp = Interpreter(prog, max_loops=50)
    assert interp.run(mem, 0, helpers={}, env=RunEnv(mem=mem)) == 50


def test_default_may_goto_budget_is_bpf_max_loops():
    from fakekernel.interp.run import BPF_MAX_LOOPS
    assert Interpreter([BPF_EXIT_INSN()]).max_loops == BPF_MAX_LOOPS == 8 * 1024 * 1024


# --- LD_ABS / LD_IND ---------------------------------------------------------------------------------------


PKT = bytes(range(0x10, 0x30))


def test_ld_abs_big_endian():
    assert run([BPF_LD_ABS(BPF_B, 1), BPF_EXIT_INSN()], skb_data=PKT)[0] == 0x11
    assert run([BPF_LD_ABS(BPF_H, 1), BPF_EXIT_INSN()], skb_data=PKT)[0] == 0x1112
    assert run([BPF_LD_ABS(BPF_W, 28), BPF_EXIT_INSN()], skb_data=PKT)[0] == 0x2C2D2E2F


def test_ld_ind_adds_the_register():
    prog = [BPF_MOV64_IMM(3, 4), BPF_LD_IND(BPF_H, 3, 2), BPF_EXIT_INSN()]
    assert run(prog, skb_data=PKT)[0] == 0x1617


def test_ld_abs_out_of_bounds_returns_zero_from_the_program():
    prog = [BPF_MOV64_IMM(0, 7), BPF_LD_ABS(BPF_W, 29), BPF_MOV64_IMM(0, 99), BPF_EXIT_INSN()]
    r0, env = run(prog, skb_data=PKT)
    assert r0 == 0 and env.insn_count == 2
    prog = [BPF_MOV64_IMM(3, -40), BPF_LD_IND(BPF_B, 3, 0), BPF_MOV64_IMM(0, 99), BPF_EXIT_INSN()]
    assert run(prog, skb_data=PKT)[0] == 0


def test_ld_abs_negative_offsets_use_the_network_header():
    skb = SkbData(PKT, network_offset=14)
    assert run([BPF_LD_ABS(BPF_B, SKF_NET_OFF + 1), BPF_EXIT_INSN()], skb_data=skb)[0] == PKT[15]


def test_ld_abs_without_skb_faults():
    with pytest.raises(InterpreterFault, match="skb"):
        run([BPF_LD_ABS(BPF_B, 0), BPF_EXIT_INSN()])


# --- callbacks (bpf_loop-style helpers) -------------------------------------------------------------------


def _bpf_loop(env, nr_loops, callback, ctx, flags, _r5):
    """A stand-in for bpf_loop(): the callback is given as an insn index here."""
    for i in range(nr_loops):
        if env.call_subprog(callback, i, ctx):
            return i + 1
    return nr_loops


LOOP_PROG = [
    BPF_ST_MEM(BPF_DW, 10, -8, 0), BPF_MOV64_IMM(1, 5), BPF_MOV64_IMM(2, 10), BPF_MOV64_REG(3, 10),
    BPF_ALU64_IMM(BPF_ADD, 3, -8), BPF_MOV64_IMM(4, 0), BPF_MOV64_IMM(6, 66), BPF_CALL_HELPER(FuncId.loop),
    BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_EXIT_INSN(),
    # callback(index=r1, ctx=r2): *ctx += index; r6 is its own; return index == 3
    BPF_LDX_MEM(BPF_DW, 3, 2, 0), BPF_ALU64_REG(BPF_ADD, 3, 1), BPF_STX_MEM(BPF_DW, 2, 3, 0),
    BPF_MOV64_IMM(6, 0), BPF_MOV64_IMM(0, 0), BPF_JMP_IMM(BPF_JNE, 1, 3, 1), BPF_MOV64_IMM(0, 1),
    BPF_EXIT_INSN(),
]


def test_callbacks_run_in_their_own_frame():
    mem = AddressSpace()
    r0, env = run(LOOP_PROG, mem=mem, helpers={FuncId.loop: _bpf_loop})
    assert r0 == 0 + 1 + 2 + 3
    assert mem.regions == []
    assert env._vm is None


def test_call_subprog_outside_a_run():
    with pytest.raises(RuntimeError):
        RunEnv(mem=AddressSpace()).call_subprog(0)


def test_fault_inside_a_callback_reports_the_callback_insn():
    prog = list(LOOP_PROG)
    prog[10] = BPF_LDX_MEM(BPF_DW, 3, 0, 0)  # r0 is 0 in the callback: NULL dereference
    mem = AddressSpace()
    with pytest.raises(InterpreterFault) as exc:
        run(prog, mem=mem, helpers={FuncId.loop: _bpf_loop})
    assert exc.value.insn_idx == 10
    assert mem.regions == []
