"""The runner's seccomp filter, run by a small classic-BPF evaluator (seccomp semantics)."""
from __future__ import annotations

import pytest

from fakekernel.runner.filter import build_filter
from uapi.seccomp import (NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch, Cbpf, SeccompRet,
                          ffi)

_OFF_NR = ffi.offsetof("struct seccomp_data", "nr")
_OFF_ARCH = ffi.offsetof("struct seccomp_data", "arch")


def run_filter(prog: bytes, arch: int, nr: int) -> int:
    insns = ffi.from_buffer("struct sock_filter[]", prog)
    n = len(prog) // ffi.sizeof("struct sock_filter")
    data = {_OFF_NR: nr & 0xFFFFFFFF, _OFF_ARCH: arch}
    a, pc = 0, 0
    for _ in range(1000):
        assert 0 <= pc < n, "fell off the filter"
        i = insns[pc]
        cls = i.code & 0x07
        if i.code == Cbpf.LD | Cbpf.W | Cbpf.ABS:
            a = data[i.k]
        elif i.code == Cbpf.ALU | Cbpf.AND | Cbpf.K:
            a &= i.k
        elif i.code == Cbpf.JMP | Cbpf.JEQ | Cbpf.K:
            pc += i.jt if a == i.k else i.jf
        elif cls == Cbpf.RET:
            return i.k
        else:
            raise AssertionError(f"unexpected opcode {i.code:#x}")
        pc += 1
    raise AssertionError("loop")


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
