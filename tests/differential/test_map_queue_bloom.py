"""QUEUE, STACK and BLOOM_FILTER, fakekernel vs the real kernel: creation matrix, the
syscall's push/peek/pop, random op sequences in lockstep, bloom filter bit placement
(false positives included, with BPF_F_ZERO_SEED) and the program-side helpers through
PROG_TEST_RUN."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from uapi import calls
from uapi.bpf import BPF_DW, BPF_JEQ, BPF_W, BpfCmd, FuncId, MapFlags, MapType, ProgType, UpdateFlags
from uapi.calls import raw
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM, assemble_insns)

from backends import FakeBackend, HostBackend
from maputil import both_equal

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
Q, S, BF = MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER
KMALLOC_MAX_SIZE = 1 << 22
SKB = "struct __sk_buff"


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def memlock(b, fd) -> int:
    """fdinfo's memlock line (the map's bpf_map_mem_usage())."""
    if isinstance(b, FakeBackend):
        return b.kern.current.files.fdget(fd).private_data.memlock
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise AssertionError("no memlock in fdinfo")


def create(b, map_type, key_size=0, value_size=8, max_entries=4, **kw):
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, **kw)
    if ret >= 0:
        info, _ = calls.obj_get_info_by_fd(b, ret, "map")
        out = ("fd", info.key_size, info.value_size, info.max_entries, info.map_flags, info.map_extra,
               memlock(b, ret))
        b.close(ret)
        return out
    return ret


# ------------------------------------------------------------------ MAP_CREATE matrix

CREATE_CASES = {}
for _t in (Q, S, BF):
    _n = _t.name.lower()
    CREATE_CASES.update({
        f"{_n}_ok": dict(map_type=_t),
        f"{_n}_value1_max1": dict(map_type=_t, value_size=1, max_entries=1),
        f"{_n}_value3_max7": dict(map_type=_t, value_size=3, max_entries=7),
        f"{_n}_key4_einval": dict(map_type=_t, key_size=4),
        f"{_n}_value0_einval": dict(map_type=_t, value_size=0),
        f"{_n}_max0_einval": dict(map_type=_t, max_entries=0),
        f"{_n}_value_kmalloc_max": dict(map_type=_t, value_size=KMALLOC_MAX_SIZE, max_entries=1),
        f"{_n}_value_over_kmalloc_max_e2big": dict(map_type=_t, value_size=KMALLOC_MAX_SIZE + 1),
        f"{_n}_value_over_kmalloc_max_key4": dict(map_type=_t, key_size=4, value_size=KMALLOC_MAX_SIZE + 1),
        # past map_alloc_check (a bad token fd is the next failure: EBADF) without allocating
        f"{_n}_max_u32_value4_past_check_ebadf": dict(map_type=_t, value_size=4, max_entries=2**32 - 1,
                                                      map_flags=MapFlags.TOKEN_FD, map_token_fd=2**31 - 1),
        f"{_n}_max_1024_value_kmalloc_max_past_check_ebadf": dict(
            map_type=_t, value_size=KMALLOC_MAX_SIZE, max_entries=1024, map_flags=MapFlags.TOKEN_FD,
            map_token_fd=2**31 - 1),
        f"{_n}_huge_enomem": dict(map_type=_t, value_size=KMALLOC_MAX_SIZE, max_entries=2**32 - 1),
        f"{_n}_numa0": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=0),
        f"{_n}_numa1_einval": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=1),
        f"{_n}_rdonly_wronly_prog_einval": dict(map_type=_t,
                                               map_flags=MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG),
        f"{_n}_map_extra_1": dict(map_type=_t, map_extra=1),
        f"{_n}_map_extra_15": dict(map_type=_t, map_extra=15),
        f"{_n}_map_extra_16": dict(map_type=_t, map_extra=16),
        f"{_n}_map_extra_hi": dict(map_type=_t, map_extra=1 << 40),
        f"{_n}_name": dict(map_type=_t, map_name=b"q_1.x"),
    })
    for _bit in MapFlags:
        if _bit in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
            continue
        CREATE_CASES[f"{_n}_flag_{_bit.name.lower()}"] = dict(map_type=_t, map_flags=_bit)
# bloom filter bit-array sizing: below 64 bits, powers of two, overflow to 2**32 bits
for _me, _nh in ((1, 0), (9, 0), (10, 0), (100, 3), (1000, 7), (12345, 15), (2**28, 8), (2**31, 2),
                 (2**32 - 1, 1)):
    if _me * (_nh or 5) // 5 * 7 <= 1 << 27:        # keep host allocations small
        CREATE_CASES[f"bloom_sizing_{_me}_{_nh}"] = dict(map_type=BF, max_entries=_me, map_extra=_nh)
    else:                                              # mask saturates: 512 MiB bitset
        CREATE_CASES[f"bloom_sizing_{_me}_{_nh}_badflag_einval"] = dict(
            map_type=BF, max_entries=_me, map_extra=_nh, map_flags=1 << 30)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_queue_stack_bloom(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


# ------------------------------------------------------------------ element semantics

def _v(i: int, n: int = 8) -> bytes:
    return bytes((i * 13 + j) & 0xFF for j in range(n))


def _qs_scenario(map_type, max_entries=3, value_size=8):
    def scenario(b):
        fd = calls.map_create(b, map_type, 0, value_size, max_entries)
        out = []

        def push(i, flags=0):
            out.append(("push", i, flags, op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0,
                                              value=_v(i, value_size), flags=flags)))

        def get(cmd, **kw):
            buf = bytearray(b"\xee" * value_size)
            out.append((cmd.name, op(b, cmd, map_fd=fd, key=0, value=buf, **kw), bytes(buf)))
        get(BpfCmd.MAP_LOOKUP_ELEM)
        get(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM)
        for i in range(max_entries + 1):
            push(i)
        push(9, UpdateFlags.EXIST)
        push(10, UpdateFlags.EXIST)
        for flags in (UpdateFlags.NOEXIST, UpdateFlags.F_LOCK, 3, 8):
            push(11, flags)
        get(BpfCmd.MAP_LOOKUP_ELEM)
        get(BpfCmd.MAP_LOOKUP_ELEM, flags=UpdateFlags.F_LOCK)
        get(BpfCmd.MAP_LOOKUP_ELEM, flags=8)
        get(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, flags=UpdateFlags.F_LOCK)
        get(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM)
        push(12)
        for _ in range(max_entries + 1):
            get(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM)
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=0))
        nk = bytearray(4)
        out.append(op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=nk))
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=b"\0" * 4, value=_v(1, value_size)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=b"\0" * 4, value=bytearray(value_size)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd,
                      batch__keys=bytearray(8), batch__values=bytearray(64), batch__count=1))
        out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
        push(13)
        get(BpfCmd.MAP_LOOKUP_ELEM)
        get(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM)
        b.close(fd)
        return out
    return scenario


@pytest.mark.parametrize("value_size", [1, 8, 13])
@pytest.mark.parametrize("map_type", [Q, S], ids=lambda t: t.name)
def test_map_queue_stack_elem_semantics(both, map_type, value_size):
    both_equal(both, _qs_scenario(map_type, value_size=value_size))


def _bloom_scenario(value_size, nr_hash, max_entries, pushes, probes, flags=MapFlags.ZERO_SEED):
    def scenario(b):
        fd = calls.map_create(b, BF, 0, value_size, max_entries, map_flags=flags, map_extra=nr_hash)
        out = []
        for i in pushes:
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=_v(i, value_size)))
        hits = [i for i in probes
                if op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=0, value=_v(i, value_size)) == 0]
        out.append(hits)
        b.close(fd)
        return out
    return scenario


@pytest.mark.parametrize("value_size,nr_hash,max_entries", [(4, 0, 1), (8, 1, 3), (3, 2, 10), (5, 15, 50),
                                                            (16, 3, 200), (64, 5, 20)])
def test_map_bloom_zero_seed_bits_match(both, value_size, nr_hash, max_entries):
    """Which values read as present (false positives included) is the same on both kernels."""
    got = both_equal(both, _bloom_scenario(value_size, nr_hash, max_entries, range(0, 3 * max_entries, 3),
                                                 range(600)))
    assert len(got[-1]) < 600          # some values are definitely absent


def test_map_bloom_random_seed_no_false_negatives(both):
    def scenario(b):
        out = _bloom_scenario(8, 0, 1000, range(50), range(50), flags=0)(b)
        assert out[-1] == list(range(50))
        return out
    both_equal(both, scenario)


def test_map_bloom_syscall_errors(both):
    def scenario(b):
        fd = calls.map_create(b, BF, 0, 4, 8, map_flags=MapFlags.ZERO_SEED)
        out = [op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=_v(1, 4), flags=f)
               for f in (0, UpdateFlags.NOEXIST, UpdateFlags.EXIST, UpdateFlags.F_LOCK, 8)]
        out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=0, value=_v(1, 4), flags=UpdateFlags.F_LOCK))
        out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=0, value=1))
        out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=b"\0" * 4, value=_v(1, 4)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=0, value=bytearray(4)))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=0))
        out.append(op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=bytearray(4)))
        out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=_v(2, 4)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=0, value=_v(1, 4)))
        b.close(fd)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ lockstep state machine

class _QueueLockstep(RuleBasedStateMachine):
    MAP_TYPE = Q

    @initialize(max_entries=st.integers(1, 5))
    def setup(self, max_entries):
        self.backends = [FakeBackend(), HostBackend()]
        self.fds = [calls.map_create(b, self.MAP_TYPE, 0, 4, max_entries) for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd) for b, fd in zip(self.backends, self.fds)]
        assert res[0] == res[1]

    @rule(v=st.binary(min_size=4, max_size=4),
          flags=st.sampled_from([0, 0, UpdateFlags.EXIST, UpdateFlags.EXIST, UpdateFlags.NOEXIST, 4]))
    def push(self, v, flags):
        self._each(lambda b, fd: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=v, flags=flags))

    @rule(cmd=st.sampled_from([BpfCmd.MAP_LOOKUP_ELEM, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM]))
    def get(self, cmd):
        def go(b, fd):
            buf = bytearray(b"\xee" * 4)
            return op(b, cmd, map_fd=fd, key=0, value=buf), bytes(buf)
        self._each(go)

    def teardown(self):
        for b, fd in zip(getattr(self, "backends", []), getattr(self, "fds", [])):
            b.close(fd)
            assert not b.cleanup()


class _StackLockstep(_QueueLockstep):
    MAP_TYPE = S


@pytest.mark.parametrize("machine", [_QueueLockstep, _StackLockstep], ids=["queue", "stack"])
def test_map_queue_stack_lockstep_random_ops(host, machine):
    machine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
    machine.TestCase().runTest()


# ------------------------------------------------------------------ program side (PROG_TEST_RUN)

MARK, PRIO = ffi.offsetof(SKB, "mark"), ffi.offsetof(SKB, "priority")


def _prog_push(fd):
    """push(ctx->mark as u64, flags = ctx->priority); return r0."""
    return [BPF_LDX_MEM(BPF_W, 2, 1, MARK), BPF_LDX_MEM(BPF_W, 3, 1, PRIO),
            BPF_STX_MEM(BPF_DW, 10, 2, -8), *BPF_LD_MAP_FD(1, fd), BPF_MOV64_REG(2, 10),
            BPF_ALU64_IMM(0x00, 2, -8), BPF_CALL_HELPER(FuncId.map_push_elem), BPF_EXIT_INSN()]


def _prog_get(fd, func_id):
    """pop/peek into the stack (pre-filled with 0x77); return r0 if non-zero, else the low 32 bits."""
    return [BPF_MOV64_IMM(2, 0x77), BPF_STX_MEM(BPF_DW, 10, 2, -8), *BPF_LD_MAP_FD(1, fd),
            BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(0x00, 2, -8), BPF_CALL_HELPER(func_id),
            BPF_JMP_IMM(BPF_JEQ, 0, 0, 1), BPF_EXIT_INSN(), BPF_LDX_MEM(BPF_W, 0, 10, -8), BPF_EXIT_INSN()]


def _prog_bloom_peek(fd):
    """peek(ctx->mark as u64); return r0."""
    return [BPF_LDX_MEM(BPF_W, 2, 1, MARK), BPF_STX_MEM(BPF_DW, 10, 2, -8), *BPF_LD_MAP_FD(1, fd),
            BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(0x00, 2, -8),
            BPF_CALL_HELPER(FuncId.map_peek_elem), BPF_EXIT_INSN()]


def _skb_ctx(mark, prio=0) -> bytes:
    c = ffi.new(SKB + " *")
    c.mark, c.priority = mark, prio
    return bytes(ffi.buffer(c))


def _run(b, prog_fd, mark=0, prio=0):
    r = calls.prog_test_run(b, prog_fd, bytes(64), ctx_in=_skb_ctx(mark, prio), strict=False)
    return r.ret, r.retval


def _load(b, insns):
    r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(insns), strict=False)
    assert r.ret >= 0, r.log
    return r.ret


@pytest.mark.parametrize("map_type", [Q, S], ids=lambda t: t.name)
def test_prog_test_run_queue_stack_helpers(both, map_type):
    def scenario(b):
        fd = calls.map_create(b, map_type, 0, 8, 3)
        push, pop = _load(b, _prog_push(fd)), _load(b, _prog_get(fd, FuncId.map_pop_elem))
        peek = _load(b, _prog_get(fd, FuncId.map_peek_elem))
        out = [_run(b, pop), _run(b, peek)]
        for mark, prio in ((1, 0), (2, 0), (3, 0), (4, 0), (5, UpdateFlags.EXIST), (6, UpdateFlags.NOEXIST),
                           (7, 4)):
            out.append(_run(b, push, mark, prio))
        out.append(_run(b, peek))
        buf = bytearray(8)          # the syscall sees what programs pushed
        out.append((op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=0, value=buf), bytes(buf)))
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=_v(3)))
        out += [_run(b, pop) for _ in range(4)]
        for f in (push, pop, peek, fd):
            b.close(f)
        return out
    both_equal(both, scenario)


def test_prog_test_run_bloom_helpers(both):
    def scenario(b):
        fd = calls.map_create(b, BF, 0, 8, 4, map_flags=MapFlags.ZERO_SEED, map_extra=1)
        push, peek = _load(b, _prog_push(fd)), _load(b, _prog_bloom_peek(fd))
        out = [_run(b, push, m, p) for m, p in ((1, 0), (2, 0), (3, UpdateFlags.EXIST))]
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=(40).to_bytes(8, "little")))
        out.append([m for m in range(200) if _run(b, peek, m) == (0, 0)])
        for f in (push, peek, fd):
            b.close(f)
        return out
    both_equal(both, scenario)
