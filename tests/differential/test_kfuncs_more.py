"""More kernel functions, fakekernel vs the real kernel: the dynptr kfuncs over LOCAL dynptrs
(bpf_dynptr_from_mem over an array map value), the task and cgroup kfuncs, the cpumask kfuncs
(SYSCALL programs) and bpf_map_sum_elem_count — each program run through PROG_TEST_RUN on both
kernels, results and map contents compared."""
from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakekernel.btf_vmlinux import BtfIndex
from fakekernel.kfuncs import KFUNC_PROG_TYPES, KFUNCS, kfunc_allowed
from kfuncutil import VMLINUX, kcall, kfunc_id
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_JEQ, BPF_JNE, BPF_SUB, BPF_W, BpfCmd, FuncId, MapType,
                      ProgLoadFlags, ProgType)
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG,
                       BPF_LD_IMM64, BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM, BPF_MOV32_REG, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, Insn, encode_prog)

pytestmark = pytest.mark.differential

PKT = bytes(range(64))
FP = 10
VALUE = bytes(range(100, 164))
DP, DP2 = -16, -32          # two bpf_dynptr stack slots
NSLOTS = 16                 # u64 result slots (SAVE stores r0 in the next one)


@functools.cache
def _ret_size(name: str) -> int:
    ix = BtfIndex(VMLINUX.read_bytes())
    proto = ix.type_by_id(ix.type_by_id(kfunc_id(name)).type)
    return ix.type_size(proto.type) or 0 if proto.type else 0


def kc(name: str) -> tuple:
    """Call kfunc `name` and keep only the bytes of its declared return type: the JIT leaves
    whatever the C function had in the rest of rax (a bool reads 0xffffffffffffff01 on 6.18)."""
    size = _ret_size(name)
    if size == 1:
        return kcall(name), BPF_ALU64_IMM(BPF_AND, 0, 0xFF)
    if size == 4:
        return kcall(name), BPF_MOV32_REG(0, 0)
    return (kcall(name),)


class _Save:
    """Marks where r0 is stored in the next u64 slot of the result map."""


SAVE = _Save()


class Skip:
    """A conditional jump over the next `n` items of the program list (whatever each expands to)."""

    def __init__(self, op: int, reg: int, imm: int, n: int):
        self.op, self.reg, self.imm, self.n = op, reg, imm, n


def _flat(insns, res_fd: int) -> list:
    groups, slot = [], 0
    for i in insns:
        if i is SAVE:
            assert slot < NSLOTS
            groups.append([*BPF_LD_MAP_VALUE(1, res_fd, 8 * slot), BPF_STX_MEM(BPF_DW, 1, 0, 0)])
            slot += 1
        elif isinstance(i, Skip):
            groups.append(i)
        else:
            groups.append(list(i) if isinstance(i, tuple) else [i])
    out = []
    for k, g in enumerate(groups):
        if isinstance(g, Skip):
            span = sum(len(x) for x in groups[k + 1:k + 1 + g.n])
            out.append(BPF_JMP_IMM(g.op, g.reg, g.imm, span))
        else:
            out.extend(g)
    return out


def _run(b, insns, prog_type=ProgType.SCHED_CLS, flags=0, ctx_in=None):
    """Load and test-run; (retval, the saved r0 values)."""
    res = calls.map_create(b, MapType.ARRAY, 4, 8 * NSLOTS, 1)
    try:
        r = calls.prog_load(b, prog_type, encode_prog(_flat(insns, res)), "GPL", log_level=1, log_size=1 << 20,
                            strict=False, prog_flags=flags)
        assert r.ret >= 0, r.log
        try:
            if prog_type == ProgType.SYSCALL:
                ret = calls.prog_test_run(b, r.ret, ctx_in=ctx_in or bytes(8)).retval
            else:
                ret = calls.prog_test_run(b, r.ret, PKT).retval
        finally:
            b.close(r.ret)
        raw = calls.map_lookup_elem(b, res, bytes(4), 8 * NSLOTS)
        return ret, [int.from_bytes(raw[k:k + 8], "little") for k in range(0, len(raw), 8)]
    finally:
        b.close(res)


# ---------------------------------------------------------------- dynptr kfuncs

def from_mem(map_fd: int, off: int, size: int, slot: int, flags: int = 0) -> list:
    """bpf_dynptr_from_mem(&value[off], size, flags, fp+slot)."""
    return [BPF_LD_MAP_VALUE(1, map_fd, off), BPF_MOV64_IMM(2, size), BPF_MOV64_IMM(3, flags),
            BPF_MOV64_REG(4, FP), BPF_ALU64_IMM(BPF_ADD, 4, slot), BPF_CALL_HELPER(FuncId.dynptr_from_mem), SAVE]


def dp(reg: int, slot: int) -> list:
    return [BPF_MOV64_REG(reg, FP), BPF_ALU64_IMM(BPF_ADD, reg, slot)]


def dynptr_scenario(b, body) -> tuple:
    """Run `body(map_fd)` (instructions ending with r0 set) in a SCHED_CLS program; the result and
    the map value afterwards."""
    fd = calls.map_create(b, MapType.ARRAY, 4, len(VALUE), 1)
    try:
        calls.map_update_elem(b, fd, bytes(4), VALUE)
        ret = _run(b, [BPF_MOV64_IMM(7, 0)] + body(fd) + [BPF_EXIT_INSN()])
        return ret, calls.map_lookup_elem(b, fd, bytes(4), len(VALUE))
    finally:
        b.close(fd)


def both_equal(both, body):
    fake, host = both
    f, h = dynptr_scenario(fake, body), dynptr_scenario(host, body)
    assert f == h
    return f


@pytest.mark.parametrize("start,end", [(0, 64), (8, 16), (16, 8), (0, 65), (65, 70), (64, 64), (3, 3)])
def test_dynptr_adjust_then_size_match_kernel(both, start, end):
    def body(fd):
        return (from_mem(fd, 0, 64, DP) + dp(1, DP) + [BPF_MOV64_IMM(2, start), BPF_MOV64_IMM(3, end),
                kc("bpf_dynptr_adjust")] + [SAVE] + dp(1, DP) + [kc("bpf_dynptr_size")] + [SAVE]
                + dp(1, DP) + [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 1),
                               kc("bpf_dynptr_slice"), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1), BPF_LDX_MEM(BPF_B, 0, 0, 0)]
                + [SAVE] + [BPF_MOV64_REG(0, 7)])
    both_equal(both, body)


@pytest.mark.parametrize("flags", [0, 1])
def test_dynptr_null_queries_match_kernel(both, flags):
    """is_null / is_rdonly / size of a dynptr bpf_dynptr_from_mem left NULL (bad flags) or valid."""
    def body(fd):
        out = from_mem(fd, 0, 40, DP, flags)
        for name in ("bpf_dynptr_is_null", "bpf_dynptr_is_rdonly", "bpf_dynptr_size"):
            out += dp(1, DP) + [kc(name)] + [SAVE]
        out += dp(1, DP) + [BPF_MOV64_IMM(2, 1), BPF_MOV64_IMM(3, 2), kc("bpf_dynptr_adjust")] + [SAVE]
        return out + [BPF_MOV64_REG(0, 7)]
    both_equal(both, body)


def test_dynptr_size_of_null_is_einval_u32_like_kernel(both):
    def body(fd):
        return from_mem(fd, 0, 8, DP, 1) + dp(1, DP) + [kc("bpf_dynptr_size")]
    (ret, _), _ = both_equal(both, body)
    assert ret == (-22) & 0xFFFFFFFF


@pytest.mark.parametrize("flags", [0, 1])
def test_dynptr_clone_then_adjust_is_independent_like_kernel(both, flags):
    def body(fd):
        return (from_mem(fd, 0, 48, DP, flags) + dp(1, DP) + dp(2, DP2) + [kc("bpf_dynptr_clone")] + [SAVE]
                + dp(1, DP2) + [BPF_MOV64_IMM(2, 4), BPF_MOV64_IMM(3, 10), kc("bpf_dynptr_adjust")] + [SAVE]
                + dp(1, DP) + [kc("bpf_dynptr_size")] + [SAVE]
                + dp(1, DP2) + [kc("bpf_dynptr_size")] + [SAVE] + [BPF_MOV64_REG(0, 7)])
    both_equal(both, body)


@pytest.mark.parametrize("off,length", [(0, 8), (56, 8), (57, 8), (60, 4), (64, 1)])
def test_dynptr_slice_rdwr_write_through_match_kernel(both, off, length):
    """A writable slice writes the map value directly; out of range answers NULL."""
    def body(fd):
        return (from_mem(fd, 0, 64, DP) + dp(1, DP) + [BPF_MOV64_IMM(2, off), BPF_MOV64_IMM(3, 0),
                BPF_MOV64_IMM(4, length), kc("bpf_dynptr_slice_rdwr"), BPF_MOV64_IMM(7, 1),
                BPF_JMP_IMM(BPF_JEQ, 0, 0, 2), BPF_ST_MEM(BPF_B, 0, length - 1, 0x5A), BPF_MOV64_IMM(7, 2),
                BPF_MOV64_REG(0, 7)])
    both_equal(both, body)


@pytest.mark.parametrize("dst_off,src_off,size", [(0, 0, 16), (0, 8, 24), (8, 0, 24), (0, 0, 33), (30, 0, 4),
                                                  (0, 30, 4), (32, 32, 0), (33, 33, 0)])
def test_dynptr_copy_match_kernel(both, dst_off, src_off, size):
    """dst = value[0:32], src = value[16:48] (overlapping views of one value)."""
    def body(fd):
        return (from_mem(fd, 0, 32, DP) + from_mem(fd, 16, 32, DP2) + dp(1, DP)
                + [BPF_MOV64_IMM(2, dst_off)] + dp(3, DP2) + [BPF_MOV64_IMM(4, src_off), BPF_MOV64_IMM(5, size),
                                                              kc("bpf_dynptr_copy")])
    both_equal(both, body)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(adj=st.tuples(st.integers(0, 40), st.integers(0, 40)), copy=st.tuples(*[st.integers(0, 40)] * 3),
       fill=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 255)))
def test_dynptr_adjust_copy_memset_sequences_match_kernel(both, adj, copy, fill):
    """Adjust the destination view, copy into it from a second view, memset part of it."""
    def body(fd):
        return (from_mem(fd, 0, 32, DP) + from_mem(fd, 24, 40, DP2)
                + dp(1, DP) + [BPF_MOV64_IMM(2, adj[0]), BPF_MOV64_IMM(3, adj[1]), kc("bpf_dynptr_adjust"), SAVE]
                + dp(1, DP) + [BPF_MOV64_IMM(2, copy[0])] + dp(3, DP2)
                + [BPF_MOV64_IMM(4, copy[1]), BPF_MOV64_IMM(5, copy[2]), kc("bpf_dynptr_copy"), SAVE]
                + dp(1, DP) + [BPF_MOV64_IMM(2, fill[0]), BPF_MOV64_IMM(3, fill[1]), BPF_MOV64_IMM(4, fill[2]),
                               kc("bpf_dynptr_memset"), SAVE]
                + dp(1, DP) + [kc("bpf_dynptr_size"), SAVE])
    both_equal(both, body)


@pytest.mark.parametrize("null_dst,null_src,size", [(True, False, 4), (False, True, 4), (True, True, 4),
                                                    (True, True, 0), (False, True, 0)])
def test_dynptr_copy_null_sides_match_kernel(both, null_dst, null_src, size):
    def body(fd):
        return (from_mem(fd, 0, 32, DP, int(null_dst)) + from_mem(fd, 32, 32, DP2, int(null_src)) + dp(1, DP)
                + [BPF_MOV64_IMM(2, 0)] + dp(3, DP2) + [BPF_MOV64_IMM(4, 0), BPF_MOV64_IMM(5, size),
                                                        kc("bpf_dynptr_copy")])
    both_equal(both, body)


@pytest.mark.parametrize("flags,off,size,val", [(0, 0, 64, 0), (0, 10, 5, 0x1FF), (0, 60, 5, 7), (0, 64, 0, 7),
                                                (0, 65, 0, 7), (1, 0, 0, 7), (1, 0, 4, 7)])
def test_dynptr_memset_match_kernel(both, flags, off, size, val):
    def body(fd):
        return (from_mem(fd, 0, 64, DP, flags) + dp(1, DP) + [BPF_MOV64_IMM(2, off), BPF_MOV64_IMM(3, size),
                                                              BPF_MOV64_IMM(4, val), kc("bpf_dynptr_memset")])
    both_equal(both, body)


# ---------------------------------------------------------------- cpumask kfuncs (SYSCALL programs)

def cpumask_prog(ops) -> list:
    """r6 = bpf_cpumask_create(); then `ops` (each a list using r6, saving its results);
    release; r0 = r7 (0).  A NULL mask returns 0xdead."""
    out = [BPF_MOV64_IMM(7, 0), kc("bpf_cpumask_create"), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
           BPF_MOV64_IMM(0, 0xDEAD), BPF_EXIT_INSN(), BPF_MOV64_REG(6, 0)]
    for op in ops:
        out += op
    return out + [BPF_MOV64_REG(1, 6), kc("bpf_cpumask_release"), BPF_MOV64_REG(0, 7), BPF_EXIT_INSN()]


def q(name, *args) -> list:
    """Call a cpumask kfunc with r6 (the mask) in the slots marked "m" and immediates elsewhere,
    saving its result."""
    masks = {"m": 6, "n": 8}
    regs = [BPF_MOV64_REG(i + 1, masks[a]) if a in masks else BPF_MOV64_IMM(i + 1, a) for i, a in enumerate(args)]
    return regs + [kc(name)] + [SAVE]


def v(name, *args) -> list:
    """As q() for a kfunc returning void (r0 is unreadable after it)."""
    return q(name, *args)[:-1]


def syscall_run(b, insns) -> int:
    return _run(b, insns, ProgType.SYSCALL, ProgLoadFlags.SLEEPABLE)


CPUMASK_CASES = {
    "empty_queries": [q("bpf_cpumask_first", "m"), q("bpf_cpumask_first_zero", "m"), q("bpf_cpumask_weight", "m"),
                      q("bpf_cpumask_empty", "m")],
    "set_test": [v("bpf_cpumask_set_cpu", 1, "m"), q("bpf_cpumask_test_cpu", 1, "m"),
                 q("bpf_cpumask_test_cpu", 0, "m"), q("bpf_cpumask_first", "m")],
    "set_invalid_cpu": [v("bpf_cpumask_set_cpu", 2, "m"), v("bpf_cpumask_set_cpu", 100, "m"),
                        q("bpf_cpumask_test_cpu", 2, "m"), q("bpf_cpumask_weight", "m"),
                        q("bpf_cpumask_test_and_set_cpu", 5, "m")],
    "test_and_set_clear": [q("bpf_cpumask_test_and_set_cpu", 0, "m"), q("bpf_cpumask_test_and_set_cpu", 0, "m"),
                           q("bpf_cpumask_test_and_clear_cpu", 0, "m"),
                           q("bpf_cpumask_test_and_clear_cpu", 0, "m")],
    "setall_full": [v("bpf_cpumask_setall", "m"), q("bpf_cpumask_full", "m"), q("bpf_cpumask_weight", "m"),
                    q("bpf_cpumask_first_zero", "m"), v("bpf_cpumask_clear_cpu", 0, "m"),
                    q("bpf_cpumask_full", "m"), q("bpf_cpumask_first", "m")],
    "clear": [v("bpf_cpumask_setall", "m"), v("bpf_cpumask_clear", "m"), q("bpf_cpumask_empty", "m")],
    "self_ops": [v("bpf_cpumask_set_cpu", 1, "m"), q("bpf_cpumask_equal", "m", "m"),
                 q("bpf_cpumask_intersects", "m", "m"), q("bpf_cpumask_subset", "m", "m"),
                 q("bpf_cpumask_first_and", "m", "m"), q("bpf_cpumask_and", "m", "m", "m"),
                 v("bpf_cpumask_xor", "m", "m", "m"), q("bpf_cpumask_empty", "m"),
                 q("bpf_cpumask_and", "m", "m", "m")],
    "acquire_release": [[BPF_MOV64_REG(1, 6), kc("bpf_cpumask_acquire"), BPF_MOV64_REG(1, 0),
                         kc("bpf_cpumask_release")], v("bpf_cpumask_set_cpu", 0, "m"),
                        q("bpf_cpumask_weight", "m")],
    "any_distribute_empty": [q("bpf_cpumask_any_distribute", "m"), q("bpf_cpumask_any_and_distribute", "m", "m")],
    "any_distribute_one": [v("bpf_cpumask_set_cpu", 1, "m"), q("bpf_cpumask_any_distribute", "m"),
                           q("bpf_cpumask_any_and_distribute", "m", "m")],
}


@pytest.mark.parametrize("case", sorted(CPUMASK_CASES))
def test_cpumask_kfuncs_match_kernel(both, case):
    fake, host = both
    prog = cpumask_prog(CPUMASK_CASES[case])
    assert syscall_run(fake, prog) == syscall_run(host, prog)


_MASK = st.sampled_from(["m", "n"])
_CPU = st.sampled_from([0, 1, 2, 3, 63, 64, 100])
_OPS = st.one_of(
    st.tuples(st.sampled_from(["bpf_cpumask_set_cpu", "bpf_cpumask_clear_cpu"]), _CPU, _MASK).map(lambda t: v(*t)),
    st.tuples(st.sampled_from(["bpf_cpumask_setall", "bpf_cpumask_clear"]), _MASK).map(lambda t: v(*t)),
    st.tuples(st.sampled_from(["bpf_cpumask_or", "bpf_cpumask_xor"]), _MASK, _MASK, _MASK).map(lambda t: v(*t)),
    st.tuples(st.just("bpf_cpumask_copy"), _MASK, _MASK).map(lambda t: v(*t)),
    st.tuples(st.just("bpf_cpumask_and"), _MASK, _MASK, _MASK).map(lambda t: q(*t)),
    st.tuples(st.sampled_from(["bpf_cpumask_test_cpu", "bpf_cpumask_test_and_set_cpu",
                               "bpf_cpumask_test_and_clear_cpu"]), _CPU, _MASK).map(lambda t: q(*t)),
    st.tuples(st.sampled_from(["bpf_cpumask_first", "bpf_cpumask_first_zero", "bpf_cpumask_empty",
                               "bpf_cpumask_full", "bpf_cpumask_weight"]), _MASK).map(lambda t: q(*t)),
    st.tuples(st.sampled_from(["bpf_cpumask_first_and", "bpf_cpumask_equal", "bpf_cpumask_intersects",
                               "bpf_cpumask_subset"]), _MASK, _MASK).map(lambda t: q(*t)))


def two_mask_prog(ops) -> list:
    """r6, r8 = two new masks; `ops`; both weights saved; both released."""
    out = [BPF_MOV64_IMM(7, 0), kc("bpf_cpumask_create"), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
           BPF_MOV64_IMM(0, 0xDEAD), BPF_EXIT_INSN(), BPF_MOV64_REG(6, 0),
           kc("bpf_cpumask_create"), Skip(BPF_JNE, 0, 0, 4), BPF_MOV64_REG(1, 6), kc("bpf_cpumask_release"),
           BPF_MOV64_IMM(0, 0xDEAD), BPF_EXIT_INSN(), BPF_MOV64_REG(8, 0)]
    for op in ops:
        out += op
    return out + q("bpf_cpumask_weight", "m") + q("bpf_cpumask_weight", "n") + [
        BPF_MOV64_REG(1, 6), kc("bpf_cpumask_release"), BPF_MOV64_REG(1, 8), kc("bpf_cpumask_release"),
        BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OPS, max_size=NSLOTS - 2))
def test_cpumask_op_sequences_match_kernel(both, ops):
    fake, host = both
    prog = two_mask_prog(ops)
    assert syscall_run(fake, prog) == syscall_run(host, prog)


@pytest.mark.parametrize("size,word", [(8, 0b10), (8, 0xFF), (16, 0b01), (4, 0b11), (0, 1)])
def test_cpumask_populate_match_kernel(both, size, word):
    """populate from an 8-byte-aligned stack buffer: -EACCES below bitmap_size(nr_cpu_ids)."""
    fake, host = both
    fill = [BPF_MOV64_IMM(1, word), BPF_STX_MEM(BPF_DW, FP, 1, -16), BPF_ST_MEM(BPF_DW, FP, -8, 0)]
    pop = fill + [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, FP), BPF_ALU64_IMM(BPF_ADD, 2, -16),
                  BPF_MOV64_IMM(3, size), kc("bpf_cpumask_populate")] + [SAVE]
    prog = cpumask_prog([pop, q("bpf_cpumask_weight", "m"), q("bpf_cpumask_first", "m")])
    assert syscall_run(fake, prog) == syscall_run(host, prog)


# ---------------------------------------------------------------- task and cgroup kfuncs

@functools.cache
def field(struct: str, name: str) -> tuple:
    from fakekernel.btf_objects import struct_layout
    return struct_layout(BtfIndex(VMLINUX.read_bytes()), struct)[1][name]


def own_pid(b) -> int:
    return b.kern.current.pid if hasattr(b, "kern") else os.getpid()


def ld_field(dst: int, src: int, struct: str, name: str) -> Insn:
    off, size = field(struct, name)
    return BPF_LDX_MEM({1: BPF_B, 4: BPF_W, 8: BPF_DW}[size], dst, src, off)


def task_prog(lookup: str, pid_delta: int, extra=()) -> list:
    """r9 = ctx pid + pid_delta; r6 = lookup(r9); NULL -> r0 = 0x100.  Saves task->pid - r9,
    task->tgid - ctx pid; then `extra` (r6 = the task); releases; r0 = 0."""
    out = [BPF_LDX_MEM(BPF_W, 9, 1, 0), BPF_ALU64_IMM(BPF_ADD, 9, pid_delta), BPF_MOV64_REG(1, 9), kc(lookup),
           BPF_JMP_IMM(BPF_JNE, 0, 0, 2), BPF_MOV64_IMM(0, 0x100), BPF_EXIT_INSN(), BPF_MOV64_REG(6, 0),
           ld_field(0, 6, "task_struct", "pid"), BPF_ALU64_REG(BPF_SUB, 0, 9), SAVE,
           ld_field(0, 6, "task_struct", "tgid"), BPF_ALU64_IMM(BPF_SUB, 0, pid_delta), BPF_ALU64_REG(BPF_SUB, 0, 9),
           SAVE]
    return out + list(extra) + [BPF_MOV64_REG(1, 6), kc("bpf_task_release"), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


def task_run(b, insns):
    return _run(b, insns, ProgType.SYSCALL, ProgLoadFlags.SLEEPABLE, ctx_in=own_pid(b).to_bytes(8, "little"))


@pytest.mark.parametrize("lookup", ["bpf_task_from_pid", "bpf_task_from_vpid"])
@pytest.mark.parametrize("which", ["own", "zero", "minus_one", "huge"])
def test_task_from_pid_match_kernel(both, lookup, which):
    """Our own pid resolves to a task whose pid/tgid read back; pids 0, -1 and 2^31-1 do not."""
    fake, host = both

    def prog(b):
        delta = {"own": 0, "zero": -own_pid(b), "minus_one": -own_pid(b) - 1,
                 "huge": 0x7FFFFFFF - own_pid(b)}[which]
        return task_prog(lookup, delta)
    f, h = task_run(fake, prog(fake)), task_run(host, prog(host))
    assert f == h
    assert f[0] == (0 if which == "own" else 0x100)


def test_task_acquire_release_pairs_match_kernel(both):
    fake, host = both
    extra = [BPF_MOV64_REG(1, 6), kc("bpf_task_acquire"), Skip(BPF_JEQ, 0, 0, 6), BPF_MOV64_REG(7, 0),
             ld_field(0, 7, "task_struct", "pid"), BPF_ALU64_REG(BPF_SUB, 0, 9), SAVE,
             BPF_MOV64_REG(1, 7), kc("bpf_task_release")]
    prog = lambda b: task_prog("bpf_task_from_pid", 0, extra)     # noqa: E731
    f, h = task_run(fake, prog(fake)), task_run(host, prog(host))
    assert f == h and f[0] == 0


@pytest.mark.parametrize("sig,ptype", [(0, 1), (0, 0), (0, 2), (65, 1), (-1, 0), (0, -1)])
def test_send_signal_task_checks_match_kernel(both, sig, ptype):
    """Only signal 0 (no signal is delivered) or invalid requests: the test process is the target."""
    fake, host = both
    extra = [BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, sig), BPF_MOV64_IMM(3, ptype), BPF_MOV64_IMM(4, 7),
             kc("bpf_send_signal_task"), SAVE]
    prog = lambda b: task_prog("bpf_task_from_pid", 0, extra)     # noqa: E731
    f, h = task_run(fake, prog(fake)), task_run(host, prog(host))
    assert f == h and f[0] == 0


def test_task_cpus_ptr_feeds_cpumask_kfuncs_like_kernel(both):
    """bpf_cpumask_copy(mask, task->cpus_ptr) under bpf_rcu_read_lock: the test process may run
    on every CPU of the 2-CPU machine (weight 2, nr_cpus_allowed 2)."""
    fake, host = both
    extra = [kc("bpf_cpumask_create"), BPF_MOV64_REG(7, 0), Skip(BPF_JEQ, 0, 0, 12),
             kc("bpf_rcu_read_lock"), ld_field(2, 6, "task_struct", "cpus_ptr"), BPF_MOV64_REG(1, 7),
             kc("bpf_cpumask_copy"), kc("bpf_rcu_read_unlock"), BPF_MOV64_REG(1, 7), kc("bpf_cpumask_weight"), SAVE,
             ld_field(0, 6, "task_struct", "nr_cpus_allowed"), SAVE, BPF_MOV64_REG(1, 7), kc("bpf_cpumask_release")]
    prog = lambda b: task_prog("bpf_task_from_pid", 0, extra)     # noqa: E731
    f, h = task_run(fake, prog(fake)), task_run(host, prog(host))
    assert f == h
    assert f[1][2:4] == [len(os.sched_getaffinity(0))] * 2


def cgroup_prog(cgid: int, extra=()) -> list:
    """r6 = bpf_cgroup_from_id(cgid); NULL -> r0 = 0x100; saves level and kn->id; `extra`;
    release."""
    return [*BPF_LD_IMM64(1, cgid), kc("bpf_cgroup_from_id"), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
            BPF_MOV64_IMM(0, 0x100), BPF_EXIT_INSN(), BPF_MOV64_REG(6, 0),
            ld_field(0, 6, "cgroup", "level"), SAVE, ld_field(1, 6, "cgroup", "kn"),
            ld_field(0, 1, "kernfs_node", "id"), SAVE, *extra,
            BPF_MOV64_REG(1, 6), kc("bpf_cgroup_release"), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


@pytest.mark.parametrize("cgid", [1, 0, 2**40, 2**64 - 1])
def test_cgroup_from_id_match_kernel(both, cgid):
    """The root cgroup (id 1) resolves (level 0, kn->id 1); ids naming nothing give NULL."""
    fake, host = both
    f, h = task_run(fake, cgroup_prog(cgid)), task_run(host, cgroup_prog(cgid))
    assert f == h
    assert f[0] == (0 if cgid == 1 else 0x100)


@pytest.mark.parametrize("level", [0, 1, -1])
def test_cgroup_ancestor_and_acquire_match_kernel(both, level):
    anc = [BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, level), kc("bpf_cgroup_ancestor"), BPF_MOV64_REG(7, 0),
           Skip(BPF_JEQ, 0, 0, 4), ld_field(0, 7, "cgroup", "level"), SAVE, BPF_MOV64_REG(1, 7),
           kc("bpf_cgroup_release"),
           BPF_MOV64_REG(1, 6), kc("bpf_cgroup_acquire"), BPF_MOV64_REG(7, 0), Skip(BPF_JEQ, 0, 0, 6),
           BPF_MOV64_IMM(0, 0), BPF_JMP_REG(BPF_JNE, 7, 6, 1), BPF_MOV64_IMM(0, 1), SAVE,   # the same pointer
           BPF_MOV64_REG(1, 7), kc("bpf_cgroup_release")]
    fake, host = both
    f, h = task_run(fake, cgroup_prog(1, anc)), task_run(host, cgroup_prog(1, anc))
    assert f == h and f[0] == 0


def test_task_under_root_cgroup_match_kernel(both):
    fake, host = both
    extra = [*BPF_LD_IMM64(1, 1), kc("bpf_cgroup_from_id"), BPF_MOV64_REG(7, 0), Skip(BPF_JEQ, 0, 0, 6),
             BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 7), kc("bpf_task_under_cgroup"), SAVE,
             BPF_MOV64_REG(1, 7), kc("bpf_cgroup_release")]
    prog = lambda b: task_prog("bpf_task_from_pid", 0, extra)     # noqa: E731
    f, h = task_run(fake, prog(fake)), task_run(host, prog(host))
    assert f == h and f[1][2] == 1


# ---------------------------------------------------------------- bpf_map_sum_elem_count

@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.LRU_HASH, MapType.PERCPU_HASH, MapType.ARRAY])
def test_map_sum_elem_count_match_kernel(both, map_type):
    fake, host = both

    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 8, 16)
        try:
            for k in (1, 5, 9):
                calls.map_update_elem(b, fd, k.to_bytes(4, "little"), bytes(8))
            if map_type != MapType.ARRAY:
                calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=(5).to_bytes(4, "little"))
            prog = [*BPF_LD_MAP_FD(1, fd), kc("bpf_map_sum_elem_count"), SAVE, BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
            return task_run(b, prog)
        finally:
            b.close(fd)
    f, h = scenario(fake), scenario(host)
    assert f == h


@pytest.mark.parametrize("size", [16, 0, 8192])
def test_ringbuf_dynptr_kfuncs_match_kernel(both, size):
    """A RINGBUF dynptr (bpf_ringbuf_reserve_dynptr; a failed reservation leaves it NULL): size,
    rdonly, adjust, memset and a writable slice, then submitted."""
    fake, host = both

    def scenario(b):
        rb = calls.map_create(b, MapType.RINGBUF, 0, 0, 4096)
        try:
            prog = [*BPF_LD_MAP_FD(1, rb), BPF_MOV64_IMM(2, size), BPF_MOV64_IMM(3, 0), *dp(4, DP),
                    BPF_CALL_HELPER(FuncId.ringbuf_reserve_dynptr), SAVE]
            for name in ("bpf_dynptr_size", "bpf_dynptr_is_rdonly", "bpf_dynptr_is_null"):
                prog += dp(1, DP) + [kc(name), SAVE]
            prog += dp(1, DP) + [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 0xC3),
                                 kc("bpf_dynptr_memset"), SAVE]
            prog += dp(1, DP) + [BPF_MOV64_IMM(2, 4), BPF_MOV64_IMM(3, 12), kc("bpf_dynptr_adjust"), SAVE]
            prog += dp(1, DP) + [BPF_MOV64_IMM(2, 2), BPF_MOV64_IMM(3, 3), BPF_MOV64_IMM(4, 0x11),
                                 kc("bpf_dynptr_memset"), SAVE]
            prog += dp(1, DP) + [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 4),
                                 kc("bpf_dynptr_slice_rdwr"), Skip(BPF_JEQ, 0, 0, 1), BPF_ST_MEM(BPF_B, 0, 0, 0x77),
                                 BPF_MOV64_REG(7, 0), BPF_MOV64_IMM(0, 0), Skip(BPF_JEQ, 7, 0, 1), BPF_MOV64_IMM(0, 1),
                                 SAVE]
            prog += dp(1, DP) + [BPF_MOV64_IMM(2, 0), BPF_CALL_HELPER(FuncId.ringbuf_submit_dynptr),
                                 BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
            return _run(b, prog)
        finally:
            b.close(rb)
    f = scenario(fake)
    assert f == scenario(host)
    if size == 16:
        assert f[1][:8] == [0, 16, 0, 0, 0, 0, 0, 1]


# ---------------------------------------------------------------- which program types reach them

MINE = sorted(n for n in KFUNCS if n.startswith(("bpf_dynptr_", "bpf_cpumask_", "bpf_task_", "bpf_cgroup_",
                                                 "bpf_send_signal_task", "bpf_map_sum_elem_count")))
TYPES = [ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.XDP, ProgType.TRACEPOINT, ProgType.CGROUP_SKB,
         ProgType.SYSCALL]


def test_every_runtime_here_is_a_vmlinux_kfunc():
    assert len(MINE) >= 45
    assert all(name in KFUNC_PROG_TYPES for name in MINE)


@pytest.mark.parametrize("name", MINE)
def test_kfunc_reachable_from_same_types_as_kernel(both, name):
    """A bare call is refused ("calling kernel function X is not allowed") on the same types."""
    fake, host = both
    prog = encode_prog([kcall(name), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()])
    for pt in TYPES:
        flags = ProgLoadFlags.SLEEPABLE if pt == ProgType.SYSCALL else 0
        out = []
        for b in (fake, host):
            r = calls.prog_load(b, pt, prog, "GPL", log_level=1, log_size=1 << 20, strict=False, prog_flags=flags)
            if r.ret >= 0:
                b.close(r.ret)
            out.append(f"calling kernel function {name} is not allowed" in r.log)
        assert out[0] == out[1] == (not kfunc_allowed(pt, name)), (pt, name)
