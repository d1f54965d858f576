"""kernel/bpf/cgroup.c semantics through PROG_ATTACH/DETACH/QUERY and LINK_CREATE.

Expected values were measured on the 6.18 oracle (see tests/differential/test_attach_cmds.py
for the same scenarios run against both kernels).
"""
from __future__ import annotations

import os

import pytest

from fakekernel import Kernel
from uapi import calls
from uapi.bpf import AttachFlags, AttachType, BpfCmd, ProgType, QueryFlags
from uapi.errno import Errno
from uapi.ffi import ffi

from hookutil import install_prog, prog_of, ret_prog

ING, EG = AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS
MULTI, OVERRIDE, REPLACE = AttachFlags.ALLOW_MULTI, AttachFlags.ALLOW_OVERRIDE, AttachFlags.REPLACE
BASE = "/sys/fs/cgroup/unified/t"


class B:
    """kern.bpf as a backend for uapi.calls.raw."""

    def __init__(self, kern):
        self.kern = kern

    def bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size)


@pytest.fixture
def env(kernel):
    cg = kernel.world.cgroup
    cg.mkdir(BASE)
    cg.mkdir(BASE + "/c")
    cg.mkdir(BASE + "/c/d")
    fds = {n: kernel.open(BASE + s, os.O_RDONLY | os.O_DIRECTORY)
           for n, s in (("P", ""), ("C", "/c"), ("D", "/c/d"))}
    progs = [install_prog(kernel, ProgType.CGROUP_SKB) for _ in range(4)]
    ids = [prog_of(kernel, f).aux.id for f in progs]
    yield kernel, fds, progs, ids
    for f in list(fds.values()) + progs:
        kernel.close(f)
    for p in ("/c/d", "/c", ""):
        cg.rmdir(BASE + p)


def att(k, prog, tgt, flags=0, rep=0, at=ING, **kw):
    return calls.raw(B(k), BpfCmd.PROG_ATTACH, None, target_fd=tgt, attach_bpf_fd=prog,
                     attach_type=at, attach_flags=flags, replace_bpf_fd=rep, **kw)[0]


def det(k, prog, tgt, at=ING, **kw):
    return calls.raw(B(k), BpfCmd.PROG_DETACH, None, target_fd=tgt, attach_bpf_fd=prog,
                     attach_type=at, **kw)[0]


def query(k, tgt, ids0, at=ING, qf=0, cnt=8, **kw):
    buf = ffi.new("uint32_t[]", 8)
    r, a = calls.raw(B(k), BpfCmd.PROG_QUERY, None, query__target_fd=tgt, query__attach_type=at,
                     query__query_flags=qf, query__prog_ids=buf if cnt else 0,
                     query__prog_cnt=cnt, **kw)
    n = a.get("query.prog_cnt")
    return (r, a.get("query.attach_flags"), [buf[i] - ids0 for i in range(min(n, cnt, 8))], n,
            a.get("query.revision"))


def test_prog_attach_none_then_override_rules(env):
    k, fd, p, ids = env
    P, C = fd["P"], fd["C"]
    assert query(k, P, ids[0]) == (0, 0, [], 0, 1)
    assert att(k, p[0], P) == 0
    assert query(k, P, ids[0]) == (0, 0, [0], 1, 2)
    assert att(k, p[0], P) == 0                      # NONE: re-attaching replaces in place
    assert att(k, p[1], P) == 0
    assert query(k, P, ids[0]) == (0, 0, [1], 1, 4)
    assert att(k, p[1], P, MULTI) == -Errno.EPERM    # mode differs from the attached one
    assert att(k, p[1], C) == -Errno.EPERM           # parent's NONE prog forbids children
    assert att(k, p[1], C, OVERRIDE) == -Errno.EPERM
    assert det(k, p[0], P) == 0                      # legacy: detaches whatever is there
    assert det(k, p[0], P) == -Errno.ENOENT
    assert att(k, p[0], P, OVERRIDE) == 0
    assert att(k, p[1], C) == 0
    assert query(k, C, ids[0]) == (0, 0, [1], 1, 2)
    assert query(k, fd["D"], ids[0], qf=QueryFlags.QUERY_EFFECTIVE) == (0, 0, [1], 1, 0)
    assert det(k, 0, C) == 0
    assert det(k, 0, P) == 0


def test_prog_attach_multi_replace_and_effective_order(env):
    k, fd, p, ids = env
    P, C, D = fd["P"], fd["C"], fd["D"]
    assert att(k, p[0], P, MULTI) == 0
    assert att(k, p[1], P, MULTI) == 0
    assert att(k, p[1], P, MULTI) == -Errno.EINVAL           # same prog twice
    assert att(k, p[2], P, MULTI | REPLACE, rep=p[0]) == 0
    assert query(k, P, ids[0]) == (0, MULTI, [2, 1], 2, 4)
    assert att(k, p[3], P, MULTI | REPLACE, rep=p[0]) == -Errno.ENOENT
    assert att(k, p[3], P, REPLACE, rep=p[2]) == -Errno.EINVAL
    assert att(k, p[3], P, MULTI | REPLACE) == -Errno.EINVAL   # replace_bpf_fd 0 = stdin
    assert att(k, p[3], P, MULTI | OVERRIDE) == -Errno.EINVAL
    assert att(k, p[3], P, 0) == -Errno.EPERM
    assert att(k, p[3], C, MULTI) == 0
    assert att(k, p[0], D, MULTI) == 0
    eff = QueryFlags.QUERY_EFFECTIVE
    assert query(k, D, ids[0], qf=eff) == (0, 0, [0, 3, 2, 1], 4, 0)
    assert query(k, C, ids[0], qf=eff) == (0, 0, [3, 2, 1], 3, 0)
    r = query(k, D, ids[0], qf=eff, cnt=1)
    assert r[0] == -Errno.ENOSPC and r[2] == [0] and r[3] == 4
    assert query(k, D, ids[0], qf=eff, cnt=0)[3] == 4
    assert det(k, 0, P) == -Errno.EINVAL
    assert det(k, p[3], P) == -Errno.ENOENT
    for f, t in ((p[2], P), (p[1], P), (p[3], C), (p[0], D)):
        assert det(k, f, t) == 0
    assert query(k, D, ids[0], qf=eff) == (0, 0, [], 0, 0)


def test_prog_attach_bad_fds_and_types(env):
    k, fd, p, ids = env
    x = install_prog(k, ProgType.XDP)
    try:
        assert att(k, p[0], 999, MULTI) == -Errno.EBADF
        assert att(k, p[0], p[1], MULTI) == -Errno.EBADF          # a prog is no cgroup
        assert att(k, 999, fd["P"], MULTI) == -Errno.EBADF
        assert att(k, 0, fd["P"], MULTI) == -Errno.EINVAL         # a tty is no prog
        assert att(k, x, fd["P"], MULTI) == -Errno.EINVAL         # wrong prog type
        assert att(k, p[0], fd["P"], 1 << 10) == -Errno.EINVAL
        assert att(k, p[0], fd["P"], at=AttachType.XDP) == -Errno.EINVAL
        assert query(k, fd["P"], ids[0], at=AttachType.XDP)[0] == -Errno.EINVAL
        assert query(k, fd["P"], ids[0], qf=2)[0] == -Errno.EINVAL
        assert query(k, 999, ids[0])[0] == -Errno.EBADF
        assert det(k, p[0], fd["P"], attach_flags=MULTI) == -Errno.EINVAL
    finally:
        k.close(x)


def test_prog_attach_revision_and_relative(env):
    k, fd, p, ids = env
    P = fd["P"]
    assert att(k, p[0], P, MULTI, expected_revision=5) == -Errno.ESTALE
    assert att(k, p[0], P, MULTI, expected_revision=1) == 0
    assert att(k, p[1], P, MULTI | AttachFlags.BEFORE) == 0
    assert att(k, p[2], P, MULTI | AttachFlags.AFTER, relative_fd=p[1]) == 0
    assert att(k, p[3], P, MULTI | AttachFlags.BEFORE | AttachFlags.ID, relative_id=ids[0]) == 0
    assert query(k, P, ids[0]) == (0, MULTI, [1, 2, 3, 0], 4, 5)
    assert det(k, p[3], P, expected_revision=1) == -Errno.ESTALE
    assert det(k, p[3], P, expected_revision=5) == 0
    flags = ffi.new("uint32_t[]", 8)
    assert query(k, P, ids[0], query__prog_attach_flags=flags)[0] == 0
    assert list(flags)[:4] == [MULTI, MULTI, MULTI, 0]
    assert query(k, P, ids[0], qf=QueryFlags.QUERY_EFFECTIVE,
                 query__prog_attach_flags=flags)[0] == -Errno.EINVAL
    for f in p[:3]:
        assert det(k, f, P) == 0


def test_prog_attach_preorder_runs_first(env):
    k, fd, p, ids = env
    P, C = fd["P"], fd["C"]
    pre = AttachFlags.PREORDER
    assert att(k, p[0], P, MULTI | pre) == 0
    assert att(k, p[1], P, MULTI) == 0
    assert att(k, p[2], P, MULTI | pre) == 0
    assert query(k, P, ids[0]) == (0, MULTI, [0, 1, 2], 3, 4)
    assert query(k, P, ids[0], qf=QueryFlags.QUERY_EFFECTIVE)[2] == [0, 2, 1]
    assert att(k, p[3], C, MULTI) == 0
    assert query(k, C, ids[0], qf=QueryFlags.QUERY_EFFECTIVE)[2] == [0, 2, 3, 1]
    for f in p[:3]:
        assert det(k, f, P) == 0
    assert det(k, p[3], C) == 0


def link(k, prog, tgt, at=ING, flags=0):
    return calls.raw(B(k), BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=prog,
                     link_create__target_fd=tgt, link_create__attach_type=at,
                     link_create__flags=flags)[0]


def test_link_create_cgroup_link_lifecycle(env):
    k, fd, p, ids = env
    C, P = fd["C"], fd["P"]
    lk = link(k, p[3], C)
    assert lk >= 0
    assert query(k, C, ids[0]) == (0, MULTI, [3], 1, 2)
    assert att(k, p[0], C, 0) == -Errno.EPERM
    lk2 = link(k, p[3], C)                 # a second link with the same prog is fine
    assert lk2 >= 0
    assert link(k, p[3], C, flags=OVERRIDE) == -Errno.EINVAL
    assert link(k, p[0], P, at=AttachType.XDP) == -Errno.EINVAL
    assert link(k, p[0], 999) == -Errno.EBADF
    assert det(k, p[3], C) == -Errno.ENOENT        # a link is not detached by prog
    lobj = k.current.files.fdget(lk).private_data
    assert lobj.cgroup.id == k.world.cgroup.lookup(BASE + "/c").id
    k.close(lk)
    assert query(k, C, ids[0]) == (0, MULTI, [3], 1, 4)
    k.close(lk2)
    assert query(k, C, ids[0]) == (0, 0, [], 0, 5)
    assert lobj.freed and k.link_idr.find(lobj.id) is None


def test_link_create_failed_attach_consumes_link_id(env):
    k, fd, p, ids = env
    assert att(k, p[0], fd["C"]) == 0                  # NONE mode: a MULTI link is refused
    assert link(k, p[1], fd["C"]) == -Errno.EPERM
    lk = link(k, p[1], fd["P"])
    assert k.current.files.fdget(lk).private_data.id == 2
    k.close(lk)
    assert det(k, p[0], fd["C"]) == 0


def test_rmdir_releases_programs(kernel):
    cg = kernel.world.cgroup
    cg.mkdir(BASE)
    fd = kernel.open(BASE, os.O_RDONLY | os.O_DIRECTORY)
    p = install_prog(kernel, ProgType.CGROUP_SKB)
    prog = prog_of(kernel, p)
    assert att(kernel, p, fd, MULTI) == 0
    assert prog in kernel.world.attached_objects()
    kernel.close(p)
    assert not prog.freed
    cg.rmdir(BASE)
    assert prog.freed
    # a removed cgroup's directory: ENOENT (measured on 6.18), not EBADF
    assert att(kernel, install_prog(kernel, ProgType.CGROUP_SKB), fd, MULTI) == -Errno.ENOENT
    kernel.shutdown()


def test_cgroup_skb_verdicts_run_every_program(kernel):
    kernel.sysctls["kernel.bpf_stats_enabled"] = 1      # run_cnt counts only with stats on
    cg = kernel.world.cgroup
    cg.mkdir(BASE)
    fd = kernel.open(BASE, os.O_RDONLY | os.O_DIRECTORY)
    allow = install_prog(kernel, ProgType.CGROUP_SKB, ret_prog(1))
    deny = install_prog(kernel, ProgType.CGROUP_SKB, ret_prog(0))
    cn = install_prog(kernel, ProgType.CGROUP_SKB, ret_prog(3), eat=EG)
    pkt = bytes.fromhex("4500001c0000400040110000" "7f000001" "7f000001" "1f900035" "00080000")
    try:
        assert kernel.world.cgroup_skb(BASE, "ingress", pkt) is True      # nothing attached
        assert att(kernel, allow, fd, MULTI) == 0
        assert kernel.world.cgroup_skb(BASE, "ingress", pkt) is True
        assert att(kernel, deny, fd, MULTI) == 0
        assert kernel.world.cgroup_skb(BASE, "ingress", pkt) is False
        assert prog_of(kernel, allow).aux.run_cnt == 2 and prog_of(kernel, deny).aux.run_cnt == 1
        assert att(kernel, cn, fd, MULTI, at=EG) == 0
        assert kernel.world.cgroup_skb_result(BASE, "egress", pkt) == 2        # NET_XMIT_CN
        assert kernel.world.cgroup_skb(BASE, "egress", pkt) is True
    finally:
        for f in (allow, deny, cn):
            det(kernel, f, fd, at=EG if f == cn else ING)
            kernel.close(f)
        kernel.close(fd)
        cg.rmdir(BASE)


def test_cgroup_fs_mkdir_rmdir_errors(kernel):
    cg = kernel.world.cgroup
    with pytest.raises(Exception):
        cg.mkdir("/sys/fs/cgroup/unified/missing/child")
    cg.mkdir(BASE)
    cg.mkdir(BASE + "/c")
    with pytest.raises(Exception):
        cg.mkdir(BASE)
    with pytest.raises(Exception):
        cg.rmdir(BASE)                        # has a child
    cg.rmdir(BASE + "/c")
    cg.rmdir(BASE)
    assert kernel.open(BASE, os.O_RDONLY) == -Errno.ENOENT
    assert Kernel().world.cgroup.root.id == 1
