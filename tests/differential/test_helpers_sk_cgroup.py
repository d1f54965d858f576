"""bpf_sk_cgroup_id, bpf_sk_ancestor_cgroup_id, bpf_skb_ancestor_cgroup_id and bpf_skb_under_cgroup,
fakekernel vs the real kernel, from a process inside a nested cgroup2 (the real one a forked child
in its own network namespace); cgroup ids are compared by name (root / top / sub)."""
from __future__ import annotations

import socket

import pytest

from backends import FakeBackend
from fakekernel import Kernel
from netnsutil import in_netns
from sklookuputil import LO4, LPORT, TUPLE, tuple4
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_JNE, BPF_W, FuncId, MapType, ProgType
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LD_MAP_FD,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential


def cgroup_prog(mfd, tup):
    """A CGROUP_SKB program (sk_cgroup_id is not a tc helper) run from inside a cgroup: the
    listener's sk_cgroup_id / sk_ancestor_cgroup_id(0..3, -1) and the test-run skb's
    skb_ancestor_cgroup_id(0..3), into map[0]."""
    b = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
         *BPF_LD_MAP_FD(1, mfd), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
         BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN(), BPF_MOV64_REG(8, 0)]
    for level in range(4):
        b += [BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, level), BPF_CALL_HELPER(FuncId.skb_ancestor_cgroup_id),
              BPF_STX_MEM(BPF_DW, 8, 0, 8 * level)]
    tup = tup.ljust(TUPLE, b"\0")
    for i in range(TUPLE // 8):
        b += [*BPF_LD_IMM64(1, int.from_bytes(tup[8 * i:8 * i + 8], "little")),
              BPF_STX_MEM(BPF_DW, 10, 1, -48 + 8 * i)]
    b += [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -48), BPF_MOV64_IMM(3, 12),
          *BPF_LD_IMM64(4, (1 << 64) - 1), BPF_MOV64_IMM(5, 0), BPF_CALL_HELPER(FuncId.sk_lookup_tcp)]
    body = [BPF_MOV64_REG(7, 0), BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(FuncId.sk_cgroup_id),
            BPF_STX_MEM(BPF_DW, 8, 0, 32)]
    for i, level in enumerate((0, 1, 2, 3, -1)):
        body += [BPF_MOV64_REG(1, 7), BPF_MOV64_IMM(2, level), BPF_CALL_HELPER(FuncId.sk_ancestor_cgroup_id),
                 BPF_STX_MEM(BPF_DW, 8, 0, 40 + 8 * i)]
    body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(FuncId.sk_release)]
    return b + [BPF_JMP_IMM(BPF_JEQ, 0, 0, len(body))] + body + [BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]


def under_cgroup_ret(b, dirs):
    """skb_under_cgroup() of a test-run skb against a CGROUP_ARRAY of `dirs` (slot 3 empty)."""
    import os
    cgs = [b.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in dirs]
    arr = calls.map_create(b, MapType.CGROUP_ARRAY, 4, 4, 5)
    for i, fd in zip((0, 1, 2, 4), cgs):
        calls.map_update_elem(b, arr, i.to_bytes(4, "little"), fd.to_bytes(4, "little"))
    mfd = calls.map_create(b, MapType.ARRAY, 4, 48, 1)
    insns = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
             *BPF_LD_MAP_FD(1, mfd), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
             BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN(), BPF_MOV64_REG(8, 0)]
    for k, idx in enumerate((0, 1, 2, 3, 4, 5)):
        insns += [BPF_MOV64_REG(1, 6), *BPF_LD_MAP_FD(2, arr), BPF_MOV64_IMM(3, idx),
                  BPF_CALL_HELPER(FuncId.skb_under_cgroup), BPF_STX_MEM(BPF_DW, 8, 0, 8 * k)]
    r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(insns + [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]),
                        b"GPL", strict=False, log_level=1, log_size=1 << 16)
    assert r.ret >= 0, r.log[-300:]
    calls.prog_test_run(b, r.ret, bytes(64))
    val = calls.map_lookup_elem(b, mfd, bytes(4), 48)
    for x in (r.ret, mfd, arr, *cgs):
        b.close(x)
    return [int.from_bytes(val[i:i + 8], "little", signed=True) for i in range(0, 48, 8)]


def cgroup_scenario(b, ids, dirs=None):
    under = under_cgroup_ret(b, dirs) if dirs else None
    fd = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert b.bind(fd, (LO4, LPORT)) == 0 and b.listen(fd) == 0
    mfd = calls.map_create(b, MapType.ARRAY, 4, 80, 1)
    r = calls.prog_load(b, ProgType.CGROUP_SKB, assemble_insns(cgroup_prog(mfd, tuple4(LO4, 1, LO4, LPORT))), b"GPL",
                        strict=False, log_level=1, log_size=1 << 16)
    assert r.ret >= 0, r.log[-300:]
    t = calls.prog_test_run(b, r.ret, bytes(64), strict=False)
    val = calls.map_lookup_elem(b, mfd, bytes(4), 80)
    for x in (r.ret, mfd, fd):
        b.close(x)
    return t.ret, [ids.get(int.from_bytes(val[i:i + 8], "little"), "?") for i in range(0, 80, 8)], under


def test_sk_and_skb_cgroup_ids_same_as_kernel():
    import os
    import uuid
    from backends import CGROUP2
    top = f"{CGROUP2}/fk-h2-{uuid.uuid4().hex[:8]}"
    sub, other = f"{top}/sub", f"{top}/other"
    dirs = [CGROUP2, top, sub, other]
    kern = Kernel()
    for d in (top, sub, other):
        kern.world.cgroup.mkdir(d)
    fake_ids = {0: 0, 1: "root", kern.world.cgroup.lookup(top).id: "top", kern.world.cgroup.lookup(sub).id: "sub"}
    saved, kern.current.cgroup = kern.current.cgroup, kern.world.cgroup.lookup(sub)
    fake = FakeBackend(kern)
    try:
        got = cgroup_scenario(fake, fake_ids, dirs)
    finally:
        kern.current.cgroup = saved
    assert not fake.cleanup()
    for d in (top, sub, other):
        os.mkdir(d)
    try:
        host_ids = {0: 0, 1: "root", os.stat(top).st_ino: "top", os.stat(sub).st_ino: "sub"}

        def in_sub(b):
            with open(f"{sub}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            return cgroup_scenario(b, host_ids, dirs)
        want = in_netns(["ip link set lo up"], in_sub)
    finally:
        for d in (sub, other, top):
            os.rmdir(d)
    assert want == got
    assert want[1][:4] == ["root", "top", "sub", 0]
    assert want[2] == [1, 1, 1, -11, 0, -7]
