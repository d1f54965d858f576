"""The ptrace fallback's filter (SECCOMP_RET_TRACE) and `filter.run_filter`, which decides in
PTRACE_SYSCALL mode which syscall-entry stops are the emulator's: it must give the verdict
the seccomp filter gives (checked against the tests' own classic-BPF evaluator), so both
modes trap exactly the same calls."""
from __future__ import annotations

import itertools

import pytest

from cbpfutil import run_filter as reference
from fakekernel.runner.filter import TRAPPED_X86_64, build_filter, run_filter
from uapi.seccomp import NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch, SeccompRet

TRACE = build_filter(action=SeccompRet.TRACE)
NOTIF = build_filter()
ARGS = [(0,) * 6, (16, 3, 0, 0, 0, 0), (2, 1, 0, 0, 0, 0), (3, 270, 0, 0, 0, 0),
        (0, 0, 0, 0x1000, 0, 0), (0, 0, 0x1000, 0, 0, 0), (3, 0x2400, 0, 0, 0, 0),
        (3, 0x5401, 0, 0, 0, 0), (0xFFFFFFFF00000010, 3, 0, 0, 0, 0)]
NRS = sorted(set(TRAPPED_X86_64) | {0, 1, 3, 16, 41, 54, 262, 332, 320, 322, 500})


@pytest.mark.parametrize("prog", [TRACE, NOTIF], ids=["trace", "notif"])
def test_run_filter_matches_the_reference_evaluator(prog):
    for nr, args in itertools.product(NRS, ARGS):
        for arch, n in ((AuditArch.X86_64, nr), (AuditArch.X86_64, nr | X32_SYSCALL_BIT),
                        (AuditArch.I386, nr), (AuditArch.I386, NR_I386.bpf)):
            assert run_filter(prog, n, arch, args) == reference(prog, arch, n, *args), (nr, args)


def test_trace_filter_traps_what_the_listener_filter_notifies():
    for nr, args in itertools.product(NRS, ARGS):
        got = run_filter(TRACE, nr, AuditArch.X86_64, args)
        want = run_filter(NOTIF, nr, AuditArch.X86_64, args)
        assert (got == SeccompRet.TRACE) == (want == SeccompRet.USER_NOTIF)
        assert got in (SeccompRet.TRACE, SeccompRet.ALLOW)


@pytest.mark.parametrize("nr", [NR_X86_64.epoll_wait, NR_X86_64.epoll_pwait,
                                NR_X86_64.epoll_pwait2, NR_X86_64.bpf])
def test_trace_filter_traps_epoll_waits_and_bpf(nr):
    assert run_filter(TRACE, nr, AuditArch.X86_64, (0,) * 6) == SeccompRet.TRACE
