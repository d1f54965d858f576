"""PROG_LOAD verifier verdicts and logs: every row of tests/verifier/test_verifier_cases.py on
fakekernel and on the real kernel.

At log_level 1 the comparison is exact for every row — errno, the whole log text (kernel
addresses in ``r1 = 0xffff...`` lines normalised) and log_true_size (which counts the trace the
kernel printed and then discarded).  At log_level 2 fakekernel does not print the 6.18 liveness
section ("Live regs before insn", stack liveness lines), so only the errno and the error lines
are compared there.
"""
from __future__ import annotations

import re

import pytest

from uapi import calls
from uapi.bpf import ProgType
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns
from verifier.test_verifier_cases import CASES, error_lines, load_case

_KADDR = re.compile(r"0x[0-9a-f]{12,16}")


def _norm(log: str) -> str:
    return _KADDR.sub("<kaddr>", log)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_prog_load_verifier_log_level1(both, case):
    fake, host = both
    f, h = load_case(fake, case), load_case(host, case)
    assert (f.ret >= 0) == (h.ret >= 0)
    if h.ret < 0:
        assert f.ret == h.ret
    assert _norm(f.log) == _norm(h.log)
    assert f.log_true_size == h.log_true_size


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_prog_load_verifier_log_level2_errors(both, case):
    fake, host = both
    f, h = load_case(fake, case, log_level=2), load_case(host, case, log_level=2)
    assert (f.ret >= 0) == (h.ret >= 0)
    if h.ret < 0:
        assert f.ret == h.ret
        assert error_lines(f.log) == error_lines(h.log)
    assert f.log.splitlines()[-1] == h.log.splitlines()[-1]


def _log_scenario(b, log_level, log_size, size=None):
    res = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble_insns([BPF_MOV64_IMM(0, 0), BPF_MOV64_IMM(0, 0),
                                                                     BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]),
                          log_level=log_level, log_size=log_size, strict=False, size=size)
    if res.ret >= 0:
        b.close(res.ret)
    return (res.ret if res.ret < 0 else "fd"), res.log, res.log_true_size


@pytest.mark.parametrize("log_level,log_size", [
    (1, 64),            # the final log fits, but the discarded trace did not: ENOSPC
    (1, 150),
    (1, 169),           # exactly the largest size the log needed
    (1 | 8, 64),        # BPF_LOG_FIXED keeps the start
    (1 | 4, 4096),      # BPF_LOG_STATS
    (16, 4096),         # unknown log_level bit: EINVAL
    (0, 4096),          # buffer without a level: EINVAL
    (1, 0),             # level without a buffer: EINVAL
])
def test_prog_load_log_sizes(both, log_level, log_size):
    fake, host = both
    f = _log_scenario(fake, log_level, log_size)
    h = _log_scenario(host, log_level, log_size)
    if log_level & 4:     # "verification time N usec" differs run to run
        f = (f[0], re.sub(r"\d+ usec", "N usec", f[1]), None)
        h = (h[0], re.sub(r"\d+ usec", "N usec", h[1]), None)
    assert f == h


def test_prog_load_log_true_size_needs_attr_size(both):
    """log_true_size is written back only when the caller's attr reaches it."""
    from uapi.ffi import ffi
    size = ffi.offsetof("union bpf_attr", "log_true_size")
    fake, host = both
    assert _log_scenario(fake, 1, 4096, size=size) == _log_scenario(host, 1, 4096, size=size)


# ---------------------------------------------------------------- prog tag (bpf_prog_calc_tag)

def _tag_scenario(b):
    from uapi.bpf import MapType
    from uapi.ffi import ffi
    from uapi.insn import BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM
    from uapi.bpf import BPF_W
    tags = []
    fd = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    progs = [
        [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()],
        [*BPF_LD_MAP_FD(1, fd), *BPF_LD_MAP_VALUE(2, fd, 4), BPF_LDX_MEM(BPF_W, 0, 2, 0), BPF_EXIT_INSN()],
        [BPF_LDX_MEM(BPF_W, 2, 1, 80), BPF_LDX_MEM(BPF_W, 1, 1, 76), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()],
    ]
    for insns in progs:
        pfd = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(insns))
        info, _ = calls.obj_get_info_by_fd(b, pfd, "prog")
        tags.append(bytes(ffi.buffer(info.tag)).hex())
        b.close(pfd)
    b.close(fd)
    return tags


def test_prog_load_tag_matches_kernel(both):
    """The tag hashes the user's insns with map fds zeroed (so it does not depend on fd numbers)."""
    fake, host = both
    assert _tag_scenario(fake) == _tag_scenario(host)


# ---------------------------------------------------------------- helper sets per prog type

_TYPES = [(ProgType.SOCKET_FILTER, 0), (ProgType.SCHED_CLS, 0), (ProgType.SCHED_ACT, 0), (ProgType.XDP, 0),
          (ProgType.CGROUP_SKB, 0), (ProgType.CGROUP_SKB, 1), (ProgType.KPROBE, 0), (ProgType.TRACEPOINT, 0)]


def _helper_verdicts(b, prog_type, eat):
    """For every helper id: the first error line of `call id; r0 = 0; exit` under a non-GPL licence
    (so both "may this type call it" and "is it GPL-only" are visible)."""
    from uapi.bpf import BPF_FUNC_MAX_ID
    from uapi.insn import BPF_CALL_HELPER
    out = {}
    for func_id in range(BPF_FUNC_MAX_ID + 1):
        res = calls.prog_load(b, prog_type, assemble_insns([BPF_CALL_HELPER(func_id), BPF_MOV64_IMM(0, 0),
                                                           BPF_EXIT_INSN()]),
                              b"MIT", log_level=1, log_size=1 << 16, strict=False, expected_attach_type=eat)
        if res.ret >= 0:
            b.close(res.ret)
        line = error_lines(res.log).split("\n")[0]
        kind = ("unknown" if "invalid func" in line else "not-allowed" if "cannot use helper" in line
                else "gpl" if "GPL-restricted" in line else "sleepable" if "might sleep" in line else "allowed")
        out[func_id] = kind
    return out


@pytest.mark.parametrize("prog_type,eat", _TYPES, ids=[f"{t.name}-{e}" for t, e in _TYPES])
def test_prog_load_helper_set_matches_kernel(both, prog_type, eat):
    fake, host = both
    f, h = _helper_verdicts(fake, prog_type, eat), _helper_verdicts(host, prog_type, eat)
    assert {k: v for k, v in f.items() if v != h[k]} == {}


# ---------------------------------------------------------------- where fakekernel gives up

def _verdict_only_cases():
    from uapi.bpf import BPF_ADD, BPF_AND, BPF_B, BPF_JGT
    from uapi.insn import BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_REL, BPF_JMP_REG, BPF_LDX_MEM, BPF_MOV64_REG
    from uapi.bpf import BPF_W
    return {
        # bpf-to-bpf calls are not walked yet
        "subprog_call": (ProgType.SCHED_CLS, [BPF_MOV64_REG(6, 1), BPF_CALL_REL(2), BPF_LDX_MEM(BPF_W, 0, 6, 76),
                                              BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]),
        # packet pointer plus a variable offset is not modelled yet
        "variable_packet_offset": (ProgType.XDP, [
            BPF_LDX_MEM(BPF_W, 2, 1, 4), BPF_LDX_MEM(BPF_W, 1, 1, 0), BPF_MOV64_REG(3, 1),
            BPF_ALU64_IMM(BPF_ADD, 3, 14), BPF_MOV64_IMM(0, 2), BPF_JMP_REG(BPF_JGT, 3, 2, 7),
            BPF_LDX_MEM(BPF_B, 4, 1, 0), BPF_ALU64_IMM(BPF_AND, 4, 7), BPF_ALU64_REG(BPF_ADD, 1, 4),
            BPF_MOV64_REG(3, 1), BPF_ALU64_IMM(BPF_ADD, 3, 1), BPF_JMP_REG(BPF_JGT, 3, 2, 1),
            BPF_LDX_MEM(BPF_B, 0, 1, 0), BPF_EXIT_INSN()]),
    }


@pytest.mark.parametrize("name", sorted(_verdict_only_cases()))
def test_prog_load_verdict_where_analysis_gives_up(both, name):
    """Programs this first pass does not fully analyse: the verdict still matches (both accept)."""
    prog_type, insns = _verdict_only_cases()[name]
    out = []
    for b in both:
        res = calls.prog_load(b, prog_type, assemble_insns(insns), strict=False)
        if res.ret >= 0:
            b.close(res.ret)
        out.append(res.ret >= 0)
    assert out[0] == out[1] == True  # noqa: E712
