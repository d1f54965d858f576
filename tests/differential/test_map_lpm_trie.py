"""LPM_TRIE, fakekernel vs the real kernel: creation limits, longest-prefix lookups,
exact update/delete with flags and ENOSPC, the kernel's GET_NEXT_KEY order (exact),
memlock accounting, random op sequences in lockstep, batch lookup, and a program's
lookup through PROG_TEST_RUN."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from uapi import calls
from uapi.bpf import BPF_W, BpfCmd, FuncId, MapFlags, MapType, ProgType, UpdateFlags
from uapi.calls import raw
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)
from uapi.bpf import BPF_JNE

from backends import FakeBackend, HostBackend
from maputil import both_equal, memlock

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
L = MapType.LPM_TRIE
NP = MapFlags.NO_PREALLOC
KMALLOC_MAX_SIZE = 1 << 22
VAL_MAX = KMALLOC_MAX_SIZE - 256 - 24


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def create(b, key_size=8, value_size=4, max_entries=4, map_flags=NP, **kw):
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=L, key_size=key_size, value_size=value_size,
                 max_entries=max_entries, map_flags=map_flags, **kw)
    if ret >= 0:
        out = ("fd", memlock(b, ret))
        b.close(ret)
        return out
    return ret


CREATE_CASES = {
    "ok": dict(),
    "no_prealloc_missing_einval": dict(map_flags=0),
    "key4_einval": dict(key_size=4),
    "key5": dict(key_size=5),
    "key260": dict(key_size=260),
    "key261_einval": dict(key_size=261),
    "value0_einval": dict(value_size=0),
    "value_max": dict(value_size=VAL_MAX),
    "value_max_plus1_einval": dict(value_size=VAL_MAX + 1),
    "max0_einval": dict(max_entries=0),
    "max_u32": dict(max_entries=2**32 - 1),
    "numa0": dict(map_flags=NP | MapFlags.NUMA_NODE, numa_node=0),
    "rdonly_prog": dict(map_flags=NP | MapFlags.RDONLY_PROG),
    "rdonly_wronly_prog_einval": dict(map_flags=NP | MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG),
    "map_extra_einval": dict(map_extra=1),
}
for _bit in MapFlags:
    if _bit not in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
        CREATE_CASES[f"flag_{_bit.name.lower()}"] = dict(map_flags=NP | _bit)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_lpm_trie(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


def key(plen: int, data: bytes) -> bytes:
    return plen.to_bytes(4, "little") + data


def ip(*octets) -> bytes:
    return bytes(octets)


def walk(b, fd, key_size, limit=200):
    out, k = [], None
    while len(out) < limit:
        nk = bytearray(key_size)
        ret = op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k or 0, next_key=nk)
        if ret:
            out.append(ret)
            break
        out.append(bytes(nk))
        k = bytes(nk)
    return out


PREFIXES = [(8, ip(10, 0, 0, 0)), (16, ip(10, 1, 0, 0)), (24, ip(10, 1, 2, 0)), (32, ip(10, 1, 2, 3)),
            (16, ip(10, 2, 0, 0)), (0, ip(0, 0, 0, 0)), (12, ip(192, 160, 0, 0)), (24, ip(192, 168, 1, 0)),
            (25, ip(192, 168, 1, 128)), (32, ip(255, 255, 255, 255)), (31, ip(10, 1, 2, 2))]


def test_map_lpm_trie_elem_semantics(both):
    def scenario(b):
        fd = calls.map_create(b, L, 8, 4, 10, map_flags=NP)
        out = []
        up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k, value=v.to_bytes(4, "little"),
                                  flags=f)
        for i, (plen, data) in enumerate(PREFIXES):
            out.append(up(key(plen, data), i))
            out.append((memlock(b, fd), walk(b, fd, 8)))
        out.append(up(key(8, ip(10, 9, 9, 9)), 77, UpdateFlags.EXIST))      # same prefix 10/8: replaced
        out.append(up(key(8, ip(10, 0, 0, 0)), 78, UpdateFlags.NOEXIST))
        out.append(up(key(9, ip(10, 0, 0, 0)), 79, UpdateFlags.EXIST))
        out.append(up(key(33, ip(10, 0, 0, 0)), 1))
        out.append(up(key(8, ip(11, 0, 0, 0)), 1, 4))
        for addr in (ip(10, 1, 2, 3), ip(10, 1, 2, 2), ip(10, 1, 2, 4), ip(10, 1, 3, 3), ip(10, 3, 0, 0),
                     ip(11, 0, 0, 0), ip(192, 168, 1, 200), ip(192, 168, 1, 1), ip(192, 161, 0, 0),
                     ip(255, 255, 255, 255), ip(255, 255, 255, 254)):
            for plen in (32, 24, 8, 0, 33):
                v = bytearray(4)
                out.append((op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key(plen, addr), value=v), bytes(v)))
        # deletes are exact; intermediate nodes are not entries
        for plen, data in ((16, ip(10, 1, 0, 0)), (16, ip(10, 1, 0, 0)), (17, ip(10, 1, 0, 0)),
                           (8, ip(192, 0, 0, 0)), (33, ip(0, 0, 0, 0)), (24, ip(10, 1, 2, 0)),
                           (0, ip(1, 2, 3, 4)), (25, ip(192, 168, 1, 128))):
            out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=key(plen, data)))
            out.append((memlock(b, fd), walk(b, fd, 8)))
        # get_next_key from a missing key / an oversized prefixlen restarts at the leftmost
        for k in (key(20, ip(1, 1, 1, 1)), key(40, ip(10, 0, 0, 0)), key(32, ip(10, 1, 2, 3))):
            nk = bytearray(8)
            out.append((op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k, next_key=nk), bytes(nk)))
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_lpm_trie_full_enospc(both):
    def scenario(b):
        fd = calls.map_create(b, L, 6, 3, 2, map_flags=NP)
        out = []
        for plen, d, f in ((16, b"\x01\x02", 0), (8, b"\x01\x00", 0), (12, b"\x01\x00", 0),
                           (16, b"\x01\x02", 0), (16, b"\x01\x02", UpdateFlags.EXIST),
                           (8, b"\x01\x00", UpdateFlags.NOEXIST), (4, b"\x01\x00", UpdateFlags.EXIST)):
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=key(plen, d), value=b"abc", flags=f))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=key(16, b"\x01\x02")))
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=key(12, b"\x01\x00"), value=b"xyz"))
        out.append((memlock(b, fd), walk(b, fd, 6)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=key(12, b"\x01\x00"),
                      value=bytearray(3)))
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_lpm_trie_lookup_batch(both):
    def scenario(b):
        fd = calls.map_create(b, L, 8, 4, 16, map_flags=NP)
        for i, (plen, data) in enumerate(PREFIXES):
            op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=key(plen, data), value=i.to_bytes(4, "little"))
        keys, vals, ob = bytearray(8 * 16), bytearray(4 * 16), bytearray(8)
        ret, a = raw(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=keys,
                     batch__values=vals, batch__count=16, batch__out_batch=ob)
        out = [ret, a.get("batch.count"), bytes(keys), bytes(vals)]
        b.close(fd)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ lockstep state machine

PREFIX = st.tuples(st.integers(0, 17), st.binary(min_size=2, max_size=2))


class _LpmLockstep(RuleBasedStateMachine):
    """Two data bytes, short random prefixes: many shared prefixes and intermediate nodes."""

    @initialize(max_entries=st.integers(1, 12))
    def setup(self, max_entries):
        self.backends = [FakeBackend(), HostBackend()]
        self.fds = [calls.map_create(b, L, 6, 2, max_entries, map_flags=NP) for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd) for b, fd in zip(self.backends, self.fds)]
        assert res[0] == res[1]

    @rule(p=PREFIX, v=st.binary(min_size=2, max_size=2),
          flags=st.sampled_from([0, 0, 0, UpdateFlags.NOEXIST, UpdateFlags.EXIST]))
    def update(self, p, v, flags):
        self._each(lambda b, fd: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=key(*p), value=v, flags=flags))

    @rule(p=PREFIX)
    def delete(self, p):
        self._each(lambda b, fd: op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=key(*p)))

    @rule(p=PREFIX)
    def lookup(self, p):
        def go(b, fd):
            v = bytearray(2)
            return op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key(*p), value=v), bytes(v)
        self._each(go)

    @rule(p=PREFIX)
    def get_next_key(self, p):
        def go(b, fd):
            nk = bytearray(6)
            return op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key(*p), next_key=nk), bytes(nk)
        self._each(go)

    @rule()
    def walk(self):
        self._each(lambda b, fd: (walk(b, fd, 6), memlock(b, fd)))

    def teardown(self):
        for b, fd in zip(getattr(self, "backends", []), getattr(self, "fds", [])):
            b.close(fd)
            assert not b.cleanup()


def test_map_lpm_trie_lockstep_random_ops(host):
    _LpmLockstep.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
    _LpmLockstep.TestCase().runTest()


# ------------------------------------------------------------------ program side

MARK = ffi.offsetof("struct __sk_buff", "mark")


def _prog_lookup(fd, plen):
    """key = {plen, ctx->mark (network order as stored)}; return *value or 0xffff when absent."""
    return [BPF_LDX_MEM(BPF_W, 2, 1, MARK), BPF_ST_MEM(BPF_W, 10, -8, plen), BPF_STX_MEM(BPF_W, 10, 2, -4),
            *BPF_LD_MAP_FD(1, fd), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(0x00, 2, -8),
            BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
            BPF_MOV64_IMM(0, 0xFFFF), BPF_EXIT_INSN(),
            BPF_LDX_MEM(BPF_W, 1, 0, 0), BPF_ALU64_IMM(0x00, 1, 1), BPF_STX_MEM(BPF_W, 0, 1, 0),  # ++*value
            BPF_MOV64_REG(0, 1), BPF_EXIT_INSN()]


def test_prog_test_run_lpm_trie_lookup(both):
    def scenario(b):
        fd = calls.map_create(b, L, 8, 4, 16, map_flags=NP)
        for i, (plen, data) in enumerate(PREFIXES):
            if plen:
                op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=key(plen, data), value=(i * 100).to_bytes(4, "little"))
        out = []
        for plen in (32, 20):
            r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(_prog_lookup(fd, plen)), strict=False)
            assert r.ret >= 0, r.log
            for addr in (ip(10, 1, 2, 3), ip(10, 1, 2, 9), ip(10, 7, 0, 0), ip(192, 168, 1, 129), ip(1, 1, 1, 1)):
                c = ffi.new("struct __sk_buff *")
                c.mark = int.from_bytes(addr, "little")
                t = calls.prog_test_run(b, r.ret, bytes(64), ctx_in=bytes(ffi.buffer(c)), strict=False)
                out.append((t.ret, t.retval))
            b.close(r.ret)
        out.append(walk(b, fd, 8))
        vals = []
        for plen, data in PREFIXES:
            v = bytearray(4)
            vals.append((op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=key(plen, data), value=v), bytes(v)))
        out.append(vals)
        b.close(fd)
        return out
    both_equal(both, scenario)
