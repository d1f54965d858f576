"""CGROUP_DEVICE programs FIRING, fakekernel vs the real kernel: a process in a scratch cgroup
opens /dev/null (char 1:3) read-only and read-write while a program records the
``bpf_cgroup_dev_ctx`` it saw (access_type, major, minor) and refuses write access to 1:3.
The fake's side asks fakekernel.cgroup_dev.devcgroup_check_permission (the open(2) check).
"""
from __future__ import annotations

import os

import pytest

from differential.test_prog_cgroup_sock_hooks import FakeOps, Scratch, ret
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_AND, BPF_H, BPF_JEQ, BPF_JNE, BPF_W, AttachType as A, FuncId, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_REG,
                       BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

DEV = "struct bpf_cgroup_dev_ctx"
ACC_WRITE = 4


def O(field):
    return ffi.offsetof(DEV, field)


def prog(map_fd):
    return [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, map_fd),
            BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem),
            BPF_JMP_IMM(BPF_JEQ, 0, 0, 7),
            BPF_LDX_MEM(BPF_W, 2, 6, O("access_type")), BPF_STX_MEM(BPF_W, 0, 2, 0),
            BPF_LDX_MEM(BPF_W, 2, 6, O("major")), BPF_STX_MEM(BPF_W, 0, 2, 4),
            BPF_LDX_MEM(BPF_W, 2, 6, O("minor")), BPF_STX_MEM(BPF_W, 0, 2, 8),
            BPF_LDX_MEM(BPF_H, 2, 6, O("access_type") + 2), BPF_STX_MEM(BPF_W, 0, 2, 12),
            # refuse write access to 1:3
            BPF_LDX_MEM(BPF_H, 2, 6, O("access_type") + 2), BPF_ALU64_IMM(BPF_AND, 2, ACC_WRITE),
            BPF_JMP_IMM(BPF_JEQ, 2, 0, 6),
            BPF_LDX_MEM(BPF_W, 2, 6, O("major")), BPF_JMP_IMM(BPF_JNE, 2, 1, 4),
            BPF_LDX_MEM(BPF_W, 2, 6, O("minor")), BPF_JMP_IMM(BPF_JNE, 2, 3, 2)] + ret(0) + ret(1)


def _open(o, flags):
    if isinstance(o, FakeOps):
        from fakekernel.cgroup_dev import DEVCG_ACC_READ, DEVCG_ACC_WRITE, DEVCG_DEV_CHAR, devcgroup_check_permission
        acc = {os.O_RDONLY: DEVCG_ACC_READ, os.O_WRONLY: DEVCG_ACC_WRITE,
               os.O_RDWR: DEVCG_ACC_READ | DEVCG_ACC_WRITE}[flags]
        r = devcgroup_check_permission(o.k, o.k.current, DEVCG_DEV_CHAR, 1, 3, acc)
        return True if r == 0 else r
    try:
        os.close(os.open("/dev/null", flags))
        return True
    except OSError as e:
        return -e.errno


def scenario(b):
    out = []
    with Scratch(b) as cg:
        m = cg.array(16)
        cg.attach(ProgType.CGROUP_DEVICE, A.CGROUP_DEVICE, prog(m), eat=0)
        for flags in (os.O_RDONLY, os.O_RDWR, os.O_WRONLY):
            out.append(cg.run(lambda o: _open(o, flags)))
            out.append(calls.map_lookup_elem(b, m, bytes(4), 16))
    return out


def test_device_program_sees_access_and_refuses_writes(both):
    fake, host = both
    f = scenario(fake)
    assert f == scenario(host)
    assert f[0] is True and f[2] == -Errno.EPERM and f[4] == -Errno.EPERM
