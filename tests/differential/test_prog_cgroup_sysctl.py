"""CGROUP_SYSCTL programs FIRING, fakekernel vs the real kernel: a process in a scratch cgroup
reads and writes /proc/sys/net/ipv4/ip_forward while a program records what the sysctl helpers
return (full and base name, a truncated name, the current and new values, ``write``,
``file_pos``) into an array map and refuses every write — so the host's value never changes.
The fake's side goes through fakekernel.cgroup_sysctl.proc_sys_read/proc_sys_write.
"""
from __future__ import annotations

import os

import pytest

from differential.test_prog_cgroup_sock_hooks import FakeOps, Scratch, ret
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_JNE, BPF_W, AttachType as A, FuncId, ProgType
from uapi.errno import Errno
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

PATH = "/proc/sys/net/ipv4/ip_forward"
NAME = "net/ipv4/ip_forward"
VALUE_SIZE = 160


def host_value() -> int:
    with open(PATH) as f:
        return int(f.read())


def _call(fid, buf_off, size, flags=None, store_at=None):
    """r1 = ctx; r2 = value + buf_off; r3 = size [; r4 = flags]; call; *(u64 *)(value + store_at) = r0"""
    out = [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 7), BPF_ALU64_IMM(BPF_ADD, 2, buf_off), BPF_MOV64_IMM(3, size)]
    if flags is not None:
        out.append(BPF_MOV64_IMM(4, flags))
    return out + [BPF_CALL_HELPER(fid), BPF_STX_MEM(BPF_DW, 7, 0, store_at)]


def recorder(map_fd, deny_writes=True):
    body = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, map_fd),
            BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem),
            BPF_MOV64_REG(7, 0)]
    rec = (_call(FuncId.sysctl_get_name, 0, 32, 0, 32) + _call(FuncId.sysctl_get_name, 40, 16, 1, 56)
           + _call(FuncId.sysctl_get_current_value, 64, 16, None, 80)
           + [BPF_LDX_MEM(BPF_W, 2, 6, 0), BPF_STX_MEM(BPF_W, 7, 2, 88),
              BPF_LDX_MEM(BPF_W, 2, 6, 4), BPF_STX_MEM(BPF_W, 7, 2, 92)]
           + _call(FuncId.sysctl_get_new_value, 96, 16, None, 112)
           + _call(FuncId.sysctl_get_name, 128, 8, 0, 136))
    body += [BPF_JMP_IMM(BPF_JEQ, 7, 0, len(rec))] + rec
    verdict = [BPF_LDX_MEM(BPF_W, 2, 6, 0), BPF_JMP_IMM(BPF_JNE, 2, 0, 2)] + ret(1) + ret(0 if deny_writes else 1)
    return body + verdict


def _read(o, pos=0):
    if isinstance(o, FakeOps):
        from fakekernel.cgroup_sysctl import proc_sys_read
        r = proc_sys_read(o.k, NAME, 64, pos)
        return r if isinstance(r, int) else bytes(r)
    fd = os.open(PATH, os.O_RDONLY)
    try:
        return os.pread(fd, 64, pos)
    except OSError as e:
        return -e.errno
    finally:
        os.close(fd)


def _write(o, data):
    if isinstance(o, FakeOps):
        from fakekernel.cgroup_sysctl import proc_sys_write
        return proc_sys_write(o.k, NAME, data)
    fd = os.open(PATH, os.O_WRONLY)
    try:
        return os.write(fd, data)
    except OSError as e:
        return -e.errno
    finally:
        os.close(fd)


def scenario(b, value):
    if hasattr(b, "kern"):
        b.kern.sysctls["net.ipv4.ip_forward"] = value
    with Scratch(b) as cg:
        m = cg.array(VALUE_SIZE)
        cg.attach(ProgType.CGROUP_SYSCTL, A.CGROUP_SYSCTL, recorder(m), eat=0)
        out = [cg.run(lambda o: _read(o))]
        out.append(calls.map_lookup_elem(b, m, bytes(4), VALUE_SIZE))
        out.append(cg.run(lambda o: _write(o, f"{value}\n".encode())))
        out.append(calls.map_lookup_elem(b, m, bytes(4), VALUE_SIZE))
        out.append(cg.run(lambda o: _read(o, 1)))
    return out


def test_sysctl_program_sees_name_values_and_refuses_writes(both):
    value = host_value()
    fake, host = both
    f, h = scenario(fake, value), scenario(host, value)
    assert f == h
    assert f[0] == f"{value}\n".encode() and f[2] == -Errno.EPERM
    assert f[1][:20] == NAME.encode() + b"\0" and f[3][96:96 + len(str(value)) + 1] == f"{value}\n".encode()
    assert host_value() == value


@pytest.mark.parametrize("verdict", [0, 1])
def test_sysctl_read_verdict(both, verdict):
    value = host_value()
    out = []
    for b in both:
        if hasattr(b, "kern"):
            b.kern.sysctls["net.ipv4.ip_forward"] = value
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SYSCTL, A.CGROUP_SYSCTL, ret(verdict), eat=0)
            out.append(cg.run(lambda o: _read(o)))
    assert out[0] == out[1]
