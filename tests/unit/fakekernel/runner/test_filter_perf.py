"""The runner's seccomp filter and perf: perf_event_open always reaches the supervisor, ioctl only
with a perf request ('$' type byte), whatever the other bits of the request are."""
from __future__ import annotations

import pytest

from cbpfutil import run_filter
from fakekernel.runner.filter import build_filter
from uapi.perf_event import NR_ioctl, NR_perf_event_open, PerfEventIoc
from uapi.seccomp import AuditArch, Cbpf, SeccompRet, ffi



PROG = build_filter()


def test_filter_perf_event_open_notifies():
    assert run_filter(PROG, AuditArch.X86_64, NR_perf_event_open) == SeccompRet.USER_NOTIF


@pytest.mark.parametrize("req", list(PerfEventIoc))
def test_filter_perf_ioctls_notify(req):
    assert run_filter(PROG, AuditArch.X86_64, NR_ioctl, 3, req) == SeccompRet.USER_NOTIF


@pytest.mark.parametrize("req", [0x5401, 0x541B, 0x8912, 0xC0182101, 0x2300, 0x2500, 0])
def test_filter_other_ioctls_allowed(req):
    # TCGETS, FIONREAD, SIOCGIFCONF, a seccomp notify ioctl, neighbours of '$'
    assert run_filter(PROG, AuditArch.X86_64, NR_ioctl, 3, req) == SeccompRet.ALLOW


def test_filter_without_perf_ioctl_trap_allows_them():
    prog = build_filter(trap_perf_ioctl=False)
    assert run_filter(prog, AuditArch.X86_64, NR_ioctl, 3, PerfEventIoc.ENABLE) == SeccompRet.ALLOW
