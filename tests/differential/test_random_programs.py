"""Differential property tests of the execution engine — kernel/bpf/core.c (the interpreter and
the JIT tiers) behind net/bpf/test_run.c: hypothesis-generated programs (tests/proggen.py) are
loaded with PROG_LOAD and run with PROG_TEST_RUN on the real kernel and on fakekernel.

Both must give the same verdict (accepted, or rejected with the same errno) and, when accepted,
the same retval, data_out and map contents.  Every test counts its verdicts and requires most
programs to be accepted, so the run-time comparison is what gets exercised.  The default engine
tier is compared for every generator; a subset is repeated with FAKEKERNEL_ENGINE pinned to each
tier (engines are compiled at a program's first run, after the env var is set).
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings

from fakekernel.jit import ENGINE_ENV, TIERS
import proggen
from uapi import calls
from uapi.bpf import MapType, ProgType
from uapi.asm import disasm_prog
from uapi.insn import assemble_insns

pytestmark = pytest.mark.differential

PKT = bytes(range(14)) + b"random-program"
ACCEPTED_SHARE = 0.8
KEY_SIZE = 4


def settings_for(n):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_prog(b, prog_type, insns, data, data_size_out=0):
    """PROG_LOAD + PROG_TEST_RUN reduced to what both kernels must agree on."""
    r = calls.prog_load(b, prog_type, assemble_insns(insns), strict=False)
    if r.ret < 0:
        return ("rejected", r.ret)
    try:
        t = calls.prog_test_run(b, r.ret, data, data_size_out=data_size_out, strict=False)
        _check_tier(b, r.ret)
        return ("ran", t.ret, t.retval, t.data_size_out, t.data_out)
    finally:
        b.close(r.ret)


def _check_tier(b, fd):
    """On the fake, the program ran on the tier FAKEKERNEL_ENGINE pins (the python tier by default)."""
    kern = getattr(b, "kern", None)
    if kern is not None:
        engine = kern.current.files.fdget(fd).private_data.engine
        assert engine is not None and engine.tier == (os.environ.get(ENGINE_ENV) or "python")


def compare(both, stats, prog_type, insns, data=PKT, data_size_out=0, broken=None):
    """Same verdict and results on both kernels; `broken` names the instruction injected to be
    rejected (the real verifier must accept every other program: the generator stays honest; a
    broken one behind a never-taken branch is dead code the verifier does not visit)."""
    fake, host = both
    want = run_prog(host, prog_type, insns, data, data_size_out)
    got = run_prog(fake, prog_type, insns, data, data_size_out)
    stats[want[0]] += 1
    event(f"{want[0]} {broken or ''}")
    assert broken or want[0] == "ran", _describe(insns, "(generator expected acceptance)", want)
    assert got == want, _describe(insns, got, want)


def _describe(insns, got, want):
    text = "\n".join(disasm_prog(assemble_insns(insns)))
    return f"fake {got} != real {want}\n{text}"


def assert_mostly_accepted(stats):
    total = stats["ran"] + stats["rejected"]
    assert total and stats["ran"] >= ACCEPTED_SHARE * total, dict(stats)


@pytest.fixture
def default_tier(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)


@pytest.fixture(params=TIERS)
def tier(request, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, request.param)
    return request.param


# ---------------------------------------------------------------- 1. ALU / ALU64

@pytest.mark.parametrize("prog_type", [ProgType.SOCKET_FILTER, ProgType.SCHED_CLS])
def test_random_alu_programs_match(both, default_tier, prog_type):
    stats = Counter()

    @settings_for(200)
    @given(proggen.alu_programs())
    def check(prog):
        insns, broken = prog
        compare(both, stats, prog_type, insns, broken=broken)

    check()
    assert_mostly_accepted(stats)


# ---------------------------------------------------------------- 2. JMP / JMP32

def test_random_jump_programs_match(both, default_tier):
    stats = Counter()

    @settings_for(250)
    @given(proggen.alu_programs(jumps=True))
    def check(prog):
        compare(both, stats, ProgType.SOCKET_FILTER, prog[0], broken=prog[1])

    check()
    assert_mostly_accepted(stats)


# ---------------------------------------------------------------- 3. stack, atomics

def test_random_stack_programs_match(both, default_tier):
    stats = Counter()

    @settings_for(250)
    @given(proggen.stack_programs(jumps=True))
    def check(prog):
        compare(both, stats, ProgType.SCHED_CLS, prog[0], broken=prog[1])

    check()
    assert_mostly_accepted(stats)


# ---------------------------------------------------------------- 4. packet access

def test_random_packet_programs_match(both, default_tier):
    stats = Counter()

    @settings_for(200)
    @given(proggen.packet_programs())
    def check(prog):
        insns, packet = prog
        compare(both, stats, ProgType.SCHED_CLS, insns, packet, data_size_out=len(packet))

    check()
    assert_mostly_accepted(stats)


# ---------------------------------------------------------------- 5. ARRAY map values

def run_map_prog(b, prog):
    value_size, max_entries, values, build = prog
    mfd = calls.map_create(b, MapType.ARRAY, KEY_SIZE, value_size, max_entries)
    try:
        for k, v in enumerate(values):
            calls.map_update_elem(b, mfd, k.to_bytes(KEY_SIZE, "little"), v)
        insns = build(mfd)
        res = run_prog(b, ProgType.SOCKET_FILTER, insns, PKT)
        after = [calls.map_lookup_elem(b, mfd, k.to_bytes(KEY_SIZE, "little"), value_size)
                 for k in range(max_entries)]
        return res, after, insns
    finally:
        b.close(mfd)


def compare_map(both, stats, prog):
    fake, host = both
    want, want_map, insns = run_map_prog(host, prog)
    got, got_map, _ = run_map_prog(fake, prog)
    stats[want[0]] += 1
    event(want[0])
    assert want[0] == "ran", _describe(insns, "(generator expected acceptance)", want)
    assert (got, got_map) == (want, want_map), _describe(insns, (got, got_map), (want, want_map))


def test_random_map_programs_match(both, default_tier):
    stats = Counter()

    @settings_for(150)
    @given(proggen.map_programs())
    def check(prog):
        compare_map(both, stats, prog)

    check()
    assert_mostly_accepted(stats)


# ---------------------------------------------------------------- every engine tier

TIER_EXAMPLES = {"interp": 60, "python": 60, "c": 8}   # the C tier costs a compiler run per program


def test_random_programs_match_on_each_tier(both, tier):
    stats = Counter()

    @settings_for(TIER_EXAMPLES[tier])
    @given(proggen.stack_programs(jumps=True))
    def check(prog):
        compare(both, stats, ProgType.SCHED_CLS, prog[0], broken=prog[1])

    check()
    assert_mostly_accepted(stats)


def test_random_map_programs_match_on_each_tier(both, tier):
    stats = Counter()

    @settings_for(TIER_EXAMPLES[tier] // 2)
    @given(proggen.map_programs())
    def check(prog):
        compare_map(both, stats, prog)

    check()
    assert_mostly_accepted(stats)


def test_random_packet_programs_match_on_each_tier(both, tier):
    stats = Counter()

    @settings_for(TIER_EXAMPLES[tier] // 2)
    @given(proggen.packet_programs())
    def check(prog):
        insns, packet = prog
        compare(both, stats, ProgType.SCHED_CLS, insns, packet, data_size_out=len(packet))

    check()
    assert_mostly_accepted(stats)
