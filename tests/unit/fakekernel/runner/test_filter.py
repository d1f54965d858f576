"""The runner's seccomp filter, run by a small classic-BPF evaluator (seccomp semantics)."""
from __future__ import annotations

import pytest

from cbpfutil import run_filter
from fakekernel.runner.filter import build_filter
from uapi.seccomp import (NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch, Cbpf, SeccompRet,
                          ffi)



PROG = build_filter()


@pytest.mark.parametrize("nr", [NR_X86_64.bpf, NR_X86_64.statfs, NR_X86_64.fstatfs,
                                NR_X86_64.mkdir, NR_X86_64.unlinkat])
def test_filter_x86_64_trapped_calls_notify(nr):
    assert run_filter(PROG, AuditArch.X86_64, nr) == SeccompRet.USER_NOTIF
    assert run_filter(PROG, AuditArch.X86_64, nr | X32_SYSCALL_BIT) == SeccompRet.USER_NOTIF


@pytest.mark.parametrize("nr", [0, 1, 3, 256, 437, NR_X86_64.seccomp, 320, 322, 1 << 20])
def test_filter_x86_64_other_calls_allowed(nr):
    assert run_filter(PROG, AuditArch.X86_64, nr) == SeccompRet.ALLOW


def test_filter_i386_only_bpf_notifies():
    assert run_filter(PROG, AuditArch.I386, NR_I386.bpf) == SeccompRet.USER_NOTIF
    assert run_filter(PROG, AuditArch.I386, NR_X86_64.bpf) == SeccompRet.ALLOW
    assert run_filter(PROG, AuditArch.I386, NR_X86_64.statfs) == SeccompRet.ALLOW


def test_filter_unknown_arch_allowed():
    assert run_filter(PROG, 0xB7 | 0x80000000 | 0x40000000, NR_X86_64.bpf) == SeccompRet.ALLOW


AF_INET, AF_NETLINK, NETLINK_ROUTE, NETLINK_GENERIC, SOL_SOCKET, SOL_NETLINK = 2, 16, 0, 16, 1, 270
AT_EMPTY_PATH, AT_FDCWD = 0x1000, -100


def test_filter_socket_only_netlink_route_notifies():
    x64 = AuditArch.X86_64
    assert run_filter(PROG, x64, NR_X86_64.socket, AF_NETLINK, 3, NETLINK_ROUTE) == SeccompRet.USER_NOTIF
    assert run_filter(PROG, x64, NR_X86_64.socket, AF_NETLINK, 3, NETLINK_GENERIC) == SeccompRet.ALLOW
    assert run_filter(PROG, x64, NR_X86_64.socket, AF_INET, 2, 0) == SeccompRet.ALLOW


def test_filter_setsockopt_only_sol_netlink_notifies():
    x64 = AuditArch.X86_64
    assert run_filter(PROG, x64, NR_X86_64.setsockopt, 3, SOL_NETLINK, 11) == SeccompRet.USER_NOTIF
    assert run_filter(PROG, x64, NR_X86_64.setsockopt, 3, SOL_SOCKET, 2) == SeccompRet.ALLOW


def test_filter_fstatat_with_empty_path_is_fstat_and_allowed():
    x64 = AuditArch.X86_64
    assert run_filter(PROG, x64, NR_X86_64.newfstatat, 3, 0, 0, AT_EMPTY_PATH) == SeccompRet.ALLOW
    assert run_filter(PROG, x64, NR_X86_64.newfstatat, AT_FDCWD, 0, 0, 0) == SeccompRet.USER_NOTIF
    assert run_filter(PROG, x64, NR_X86_64.statx, 3, 0, AT_EMPTY_PATH, 0x7FF) == SeccompRet.ALLOW
    assert run_filter(PROG, x64, NR_X86_64.statx, AT_FDCWD, 0, 0, 0x7FF) == SeccompRet.USER_NOTIF


@pytest.mark.parametrize("nr", [NR_X86_64.stat, NR_X86_64.lstat, NR_X86_64.access,
                                NR_X86_64.faccessat2, NR_X86_64.epoll_ctl, NR_X86_64.bind,
                                NR_X86_64.getsockname])
def test_filter_path_and_socket_calls_notify(nr):
    assert run_filter(PROG, AuditArch.X86_64, nr) == SeccompRet.USER_NOTIF
