"""The cgroup program family without the real kernel: the registry entries, the sysctl helpers
(set_new_value rewrites what is written, the E2BIG/EINVAL paths), sock_release programs on
close, device access encoding, and the sockopt/sock_ops helper edges the differential tests
cannot reach safely on the host."""
from __future__ import annotations

import pytest

from fakekernel.bpf_types import PROG_TYPES
from fakekernel.cgroup_dev import DEVCG_ACC_MKNOD, DEVCG_DEV_BLOCK, devcgroup_check_permission
from fakekernel.cgroup_sysctl import proc_sys_read, proc_sys_write
from fakekernel.helpers.sysctl import strscpy
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_DW, BPF_JEQ, BPF_W, AttachType as A, BpfCmd, FuncId, MapType, ProgType)
from uapi.errno import Errno
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

CG = "/sys/fs/cgroup/unified/t"
O_DIRECTORY = 0o200000


@pytest.mark.parametrize("ptype,uapi_ctx", [
    (ProgType.CGROUP_SOCK, "struct bpf_sock"), (ProgType.CGROUP_SOCK_ADDR, "struct bpf_sock_addr"),
    (ProgType.SOCK_OPS, "struct bpf_sock_ops"), (ProgType.CGROUP_SOCKOPT, "struct bpf_sockopt"),
    (ProgType.CGROUP_SYSCTL, "struct bpf_sysctl"), (ProgType.CGROUP_DEVICE, "struct bpf_cgroup_dev_ctx"),
])
def test_registry_has_cgroup_family_type(ptype, uapi_ctx):
    assert PROG_TYPES[ptype].uapi_ctx == uapi_ctx
    assert PROG_TYPES[ptype].prog_ops.test_run is None


class Cg:
    def __init__(self, k):
        self.k = k
        self.cg = k.world.cgroup.mkdir(CG)
        self.fd = k.open(CG, O_DIRECTORY)
        self.fds = []

    def attach(self, ptype, at, insns, eat=None):
        fd = calls.prog_load(self.k, ptype, assemble_insns(insns), expected_attach_type=at if eat is None else eat)
        assert calls.raw(self.k, BpfCmd.PROG_ATTACH, None, target_fd=self.fd, attach_bpf_fd=fd, attach_type=at,
                         attach_flags=2)[0] == 0
        self.fds.append(fd)
        return fd

    def close(self):
        for fd in self.fds + [self.fd]:
            self.k.close(fd)
        self.k.current.cgroup = None
        self.k.world.cgroup.rmdir(CG)


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def test_sysctl_set_new_value_rewrites_the_write(kernel):
    kernel.sysctls["net.ipv4.ip_forward"] = 0
    cg = Cg(kernel)
    # on a write: set_new_value("1") and allow; reads are allowed untouched
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, 0), BPF_JMP_IMM(BPF_JEQ, 2, 0, 6),
             BPF_ST_MEM(BPF_DW, 10, -8, ord("1")), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -8),
             BPF_MOV64_IMM(3, 1), BPF_CALL_HELPER(FuncId.sysctl_set_new_value), BPF_JMP_IMM(BPF_JEQ, 0, 0, 0)] + ret(1)
    cg.attach(ProgType.CGROUP_SYSCTL, A.CGROUP_SYSCTL, insns, eat=0)
    kernel.current.cgroup = cg.cg
    try:
        assert proc_sys_write(kernel, "/proc/sys/net/ipv4/ip_forward", b"0\n") == 1
        assert kernel.sysctls["net.ipv4.ip_forward"] == 1
        assert proc_sys_read(kernel, "net/ipv4/ip_forward") == b"1\n"
        assert proc_sys_write(kernel, "net/ipv4/no_such_sysctl", b"1") == -Errno.ENOENT
        assert proc_sys_write(kernel, "net/ipv4/ip_forward", b"x", 0) == 1     # new text "1" parses
    finally:
        cg.close()


def test_sysctl_not_an_integer_einval(kernel):
    kernel.sysctls["net.ipv4.ip_forward"] = 0
    assert proc_sys_write(kernel, "net/ipv4/ip_forward", b"abc") == -Errno.EINVAL
    assert kernel.sysctls["net.ipv4.ip_forward"] == 0


@pytest.mark.parametrize("src,size,out", [(b"abc", 4, (b"abc\0", 3)), (b"abcd", 4, (b"abc\0", -Errno.E2BIG)),
                                          (b"a", 0, (b"", -Errno.E2BIG))])
def test_strscpy(src, size, out):
    assert strscpy(src, size) == out


def test_sock_release_program_runs_on_close(kernel):
    cg = Cg(kernel)
    m = calls.map_create(kernel, MapType.ARRAY, 4, 8, 1)
    insns = [BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, m), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
             BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 3),
             BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_STX_MEM(BPF_DW, 0, 1, 0)] + ret(1)
    cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE, insns)
    kernel.current.cgroup = cg.cg
    try:
        fds = [kernel.socket(2, 1), kernel.socket(10, 2), kernel.socket(1, 1)]
        assert calls.map_lookup_elem(kernel, m, bytes(4), 8) == bytes(8)
        for fd in fds:
            kernel.close(fd)
        assert int.from_bytes(calls.map_lookup_elem(kernel, m, bytes(4), 8), "little") == 2   # not AF_UNIX
    finally:
        kernel.close(m)
        cg.close()


def test_device_access_type_encoding(kernel):
    """access_type = access << 16 | type: a program refusing mknod of block devices."""
    cg = Cg(kernel)
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, 0), BPF_JMP_IMM(BPF_JEQ, 2, (DEVCG_ACC_MKNOD << 16) | DEVCG_DEV_BLOCK, 2)] \
        + ret(1) + ret(0)
    cg.attach(ProgType.CGROUP_DEVICE, A.CGROUP_DEVICE, insns, eat=0)
    try:
        assert devcgroup_check_permission(kernel, kernel.current, DEVCG_DEV_BLOCK, 8, 0, DEVCG_ACC_MKNOD) == 0
        kernel.current.cgroup = cg.cg
        assert devcgroup_check_permission(kernel, kernel.current, DEVCG_DEV_BLOCK, 8, 0, DEVCG_ACC_MKNOD) \
            == -Errno.EPERM
        assert devcgroup_check_permission(kernel, None, DEVCG_DEV_BLOCK, 8, 0, 2) == 0
    finally:
        cg.close()


def test_sock_ops_cb_flags_set_keeps_known_bits(kernel):
    """bpf_sock_ops_cb_flags_set(): the known bits are stored (bpf_sock_ops_cb_flags reads them
    back in the next callback), the unknown ones returned."""
    cg = Cg(kernel)
    q = calls.map_create(kernel, MapType.QUEUE, 0, 8, 16)
    insns = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_W, 7, 6, 84),           # bpf_sock_ops_cb_flags
             BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, 0x104), BPF_CALL_HELPER(FuncId.sock_ops_cb_flags_set),
             BPF_STX_MEM(BPF_W, 10, 0, -8), BPF_STX_MEM(BPF_W, 10, 7, -4),
             *BPF_LD_MAP_FD(1, q), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -8), BPF_MOV64_IMM(3, 0),
             BPF_CALL_HELPER(FuncId.map_push_elem)] + ret(1)
    cg.attach(ProgType.SOCK_OPS, A.CGROUP_SOCK_OPS, insns, eat=0)
    kernel.current.cgroup = cg.cg
    try:
        lst = kernel.socket(2, 1)
        assert kernel.bind(lst, ("127.0.0.1", 4000)) == 0 and kernel.listen(lst) == 0
        c = kernel.socket(2, 1)
        assert kernel.connect(c, ("127.0.0.1", 4000)) == 0
        recs = []
        while True:
            try:
                v = calls.map_lookup_and_delete_elem(kernel, q, None, 8)
            except OSError:
                break
            recs.append((int.from_bytes(v[:4], "little", signed=True), int.from_bytes(v[4:], "little")))
        # listen, then connect's four on the client: flags 4 stored from the first call on
        assert recs[0] == (0x100, 0) and recs[1] == (0x100, 0)
        assert recs[2] == (0x100, 4)
        assert recs[5] == (-Errno.EINVAL, 0)               # the request socket is not a full socket
        for fd in (lst, c):
            kernel.close(fd)
    finally:
        kernel.close(q)
        cg.close()
