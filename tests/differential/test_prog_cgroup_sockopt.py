"""CGROUP_SOCKOPT programs FIRING, fakekernel vs the real kernel: getsockopt/setsockopt of a
process in a scratch cgroup with getsockopt/setsockopt programs attached — overriding the
result and its length, turning an error into success through ``retval``, refusing, bypassing
the kernel handler (optlen = -1), rewriting the value, and an out-of-range optlen (EFAULT).
"""
from __future__ import annotations

import socket

import pytest

from differential.test_prog_cgroup_sock_hooks import Scratch, ret
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JGT, BPF_JNE, BPF_W, AttachType as A, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_JMP_IMM, BPF_JMP_REG, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG,
                       BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

SOL_SOCKET, SO_RCVBUF, SO_BOGUS = 1, 8, 999
SO = "struct bpf_sockopt"


def O(field):
    return ffi.offsetof(SO, field)


def only(level, optname, body, skip=1):
    """Run `body` for (level, optname) only; other options pass with verdict `skip`."""
    tail = ret(skip)
    n = len(body)
    return [BPF_LDX_MEM(BPF_W, 2, 1, O("level")), BPF_JMP_IMM(BPF_JNE, 2, level, n + 2),
            BPF_LDX_MEM(BPF_W, 2, 1, O("optname")), BPF_JMP_IMM(BPF_JNE, 2, optname, n)] + body + tail


def write_u32(value, verdict=1, optlen=4, retval=None):
    """*(u32 *)optval = value (bounds-checked), optlen = `optlen`, ctx->retval = `retval`."""
    body = [BPF_LDX_MEM(BPF_DW, 2, 1, O("optval")), BPF_LDX_MEM(BPF_DW, 3, 1, O("optval_end")),
            BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 4), BPF_JMP_REG(BPF_JGT, 4, 3, 1),
            BPF_ST_MEM(BPF_W, 2, 0, value),
            BPF_MOV64_IMM(5, optlen), BPF_STX_MEM(BPF_W, 1, 5, O("optlen"))]
    if retval is not None:
        body += [BPF_MOV64_IMM(5, retval), BPF_STX_MEM(BPF_W, 1, 5, O("retval"))]
    return body + ret(verdict)


def u32(b):
    return int.from_bytes(b, "little") if isinstance(b, bytes) else b


def run(both, progs, ops):
    out = []
    for b in both:
        with Scratch(b) as cg:
            for at, insns in progs:
                cg.attach(ProgType.CGROUP_SOCKOPT, at, insns)
            out.append(cg.run(ops))
    assert out[0] == out[1]
    return out[0]


def test_getsockopt_program_overrides_value(both):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [u32(o.getsockopt(s, SOL_SOCKET, SO_RCVBUF)), o.getsockopt(s, SOL_SOCKET, 2)]
    r = run(both, [(A.CGROUP_GETSOCKOPT, only(SOL_SOCKET, SO_RCVBUF, write_u32(1234)[:-2]) )], ops)
    assert r[0] == 1234


def test_getsockopt_program_turns_error_into_success(both):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [u32(o.getsockopt(s, SOL_SOCKET, SO_BOGUS)), u32(o.getsockopt(s, SOL_SOCKET, SO_BOGUS + 1))]
    r = run(both, [(A.CGROUP_GETSOCKOPT, only(SOL_SOCKET, SO_BOGUS, write_u32(7, retval=0)[:-2]))], ops)
    assert r == [7, -Errno.ENOPROTOOPT]


@pytest.mark.parametrize("at", [A.CGROUP_GETSOCKOPT, A.CGROUP_SETSOCKOPT], ids=["get", "set"])
def test_sockopt_program_refuses_eperm(both, at):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.getsockopt(s, SOL_SOCKET, 2) if at == A.CGROUP_GETSOCKOPT else
                o.setsockopt(s, SOL_SOCKET, SO_RCVBUF, 65536)]
    assert run(both, [(at, ret(0))], ops) == [-Errno.EPERM]


def test_setsockopt_program_bypasses_kernel(both):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        before = o.getsockopt(s, SOL_SOCKET, SO_RCVBUF)
        return [o.setsockopt(s, SOL_SOCKET, SO_RCVBUF, 65536), o.getsockopt(s, SOL_SOCKET, SO_RCVBUF) == before]
    body = [BPF_MOV64_IMM(5, -1), BPF_STX_MEM(BPF_W, 1, 5, O("optlen"))] + ret(1)
    assert run(both, [(A.CGROUP_SETSOCKOPT, only(SOL_SOCKET, SO_RCVBUF, body[:-2]))], ops) == [0, True]


def test_setsockopt_program_rewrites_value(both):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.setsockopt(s, SOL_SOCKET, SO_RCVBUF, 100000), u32(o.getsockopt(s, SOL_SOCKET, SO_RCVBUF))]
    assert run(both, [(A.CGROUP_SETSOCKOPT, only(SOL_SOCKET, SO_RCVBUF, write_u32(32768)[:-2]))], ops) == \
        [0, 65536]


@pytest.mark.parametrize("optlen", [17, 100, -2])
def test_setsockopt_program_optlen_out_of_range_efault(both, optlen):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.setsockopt(s, SOL_SOCKET, SO_RCVBUF, 65536)]
    body = [BPF_MOV64_IMM(5, optlen), BPF_STX_MEM(BPF_W, 1, 5, O("optlen"))]
    assert run(both, [(A.CGROUP_SETSOCKOPT, only(SOL_SOCKET, SO_RCVBUF, body))], ops) == [-Errno.EFAULT]


def test_getsockopt_program_optlen_beyond_buffer_efault(both):
    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.getsockopt(s, SOL_SOCKET, SO_RCVBUF, 4), u32(o.getsockopt(s, SOL_SOCKET, SO_RCVBUF, 8)) > 0]
    body = [BPF_MOV64_IMM(5, 8), BPF_STX_MEM(BPF_W, 1, 5, O("optlen"))]
    r = run(both, [(A.CGROUP_GETSOCKOPT, only(SOL_SOCKET, SO_RCVBUF, body))], ops)
    assert r[0] == -Errno.EFAULT
