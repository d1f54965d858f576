"""bpf-to-bpf calls on fakekernel and on the real kernel: every row of
tests/verifier/test_subprogs_cases.py, comparing errno, the whole level-1 log (kernel addresses
normalised) and log_true_size; at level 2 the verdict and the error lines.
"""
from __future__ import annotations

import pytest

from differential.test_prog_load_verifier import _norm
from verifier.test_subprogs_cases import SUBPROG_CASES, load_asm_case
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential


def compare_level1(fake, host, case) -> None:
    f, h = load_asm_case(fake, case), load_asm_case(host, case)
    assert (f.ret >= 0) == (h.ret >= 0), (f.log, h.log)
    if h.ret < 0:
        assert f.ret == h.ret
    if case.exact_log:
        assert _norm(f.log) == _norm(h.log)
        assert f.log_true_size == h.log_true_size
    else:
        assert error_lines(f.log) == error_lines(h.log)


def compare_level2(fake, host, case) -> None:
    f, h = load_asm_case(fake, case, log_level=2), load_asm_case(host, case, log_level=2)
    assert (f.ret >= 0) == (h.ret >= 0)
    if h.ret < 0:
        assert f.ret == h.ret
        assert error_lines(f.log) == error_lines(h.log)


@pytest.mark.parametrize("case", SUBPROG_CASES, ids=[c.name for c in SUBPROG_CASES])
def test_verifier_subprogs_log_level1(both, case):
    compare_level1(*both, case)


@pytest.mark.parametrize("case", SUBPROG_CASES, ids=[c.name for c in SUBPROG_CASES])
def test_verifier_subprogs_log_level2_errors(both, case):
    compare_level2(*both, case)


# ---------------------------------------------------------------- random programs with a subprogram

@pytest.mark.parametrize("jumps", [False, True])
def test_random_subprog_programs_match_kernel(both, jumps):
    """hypothesis: the same verdict and test-run result for programs calling a static subprog
    (arguments, caller-saved clobbering, a pointer into the caller's stack)."""
    from collections import Counter

    from hypothesis import given

    import proggen
    from differential.test_random_programs import assert_mostly_accepted, compare, settings_for
    from uapi.bpf import ProgType
    stats = Counter()

    @settings_for(40)
    @given(proggen.subprog_programs(jumps=jumps))
    def run(prog):
        insns, broken = prog
        compare(both, stats, ProgType.SOCKET_FILTER, insns, broken=broken)

    run()
    assert_mostly_accepted(stats)


@pytest.mark.parametrize("case", SUBPROG_CASES, ids=[c.name for c in SUBPROG_CASES])
def test_verifier_subprogs_log_stats(both, case):
    """BPF_LOG_STATS: "stack depth" lists every subprog's depth ("8+0")."""
    import re
    fake, host = both
    f, h = (load_asm_case(b, case, log_level=1 | 4) for b in (fake, host))
    stats = [re.findall(r"stack depth \S+", r.log) for r in (f, h)]
    assert stats[0] == stats[1]
    assert (f.ret >= 0) == (h.ret >= 0)
