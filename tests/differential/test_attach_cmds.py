"""PROG_ATTACH / PROG_DETACH / PROG_QUERY (+ cgroup LINK_CREATE) on a cgroup2 directory:
the same sequence on fakekernel and on the real kernel, every errno and query result
compared (prog ids relative to the scenario's first loaded prog)."""
from __future__ import annotations

import os
import uuid

from backends import FakeBackend
from uapi import calls
from uapi.bpf import AttachFlags, AttachType, BpfCmd, ProgType, QueryFlags
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

CGROUP2 = "/sys/fs/cgroup/unified"
ING, EG = AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS
MULTI, OVERRIDE, REPLACE = AttachFlags.ALLOW_MULTI, AttachFlags.ALLOW_OVERRIDE, AttachFlags.REPLACE
EFF = QueryFlags.QUERY_EFFECTIVE


def cg_mkdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.mkdir(path)
    else:
        os.mkdir(path)


def cg_rmdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.rmdir(path)
    else:
        os.rmdir(path)


class Cg:
    """A scratch cgroup tree base/c/d, removed (after closing its fds) on exit."""

    def __init__(self, b):
        self.b = b
        self.base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        self.dirs = [self.base, self.base + "/c", self.base + "/c/d"]

    def __enter__(self):
        for d in self.dirs:
            cg_mkdir(self.b, d)
        self.fds = [self.b.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in self.dirs]
        return self.fds

    def __exit__(self, *exc):
        for fd in self.fds:
            self.b.close(fd)
        for d in reversed(self.dirs):
            cg_rmdir(self.b, d)


def load(b, ptype=ProgType.CGROUP_SKB, ret=1, eat=0):
    return calls.prog_load(b, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]),
                           expected_attach_type=eat)


class Ops:
    def __init__(self, b, progs):
        self.b = b
        self.id0 = calls.obj_get_info_by_fd(b, progs[0], "prog")[0].id

    def att(self, prog, tgt, flags=0, rep=0, at=ING, **kw):
        return calls.raw(self.b, BpfCmd.PROG_ATTACH, None, target_fd=tgt, attach_bpf_fd=prog,
                         attach_type=at, attach_flags=flags, replace_bpf_fd=rep, **kw)[0]

    def det(self, prog, tgt, at=ING, **kw):
        return calls.raw(self.b, BpfCmd.PROG_DETACH, None, target_fd=tgt, attach_bpf_fd=prog,
                         attach_type=at, **kw)[0]

    def q(self, tgt, at=ING, qf=0, cnt=8, size=None, **kw):
        ids = ffi.new("uint32_t[]", 8)
        r, a = calls.raw(self.b, BpfCmd.PROG_QUERY, None, size=size, query__target_fd=tgt,
                         query__attach_type=at, query__query_flags=qf,
                         query__prog_ids=ids if cnt else 0, query__prog_cnt=cnt, **kw)
        n = a.get("query.prog_cnt")
        return (r, a.get("query.attach_flags"),
                [ids[i] - self.id0 for i in range(min(n, cnt, 8)) if r in (0, -28)], n,
                a.get("query.revision"))

    def link(self, prog, tgt, at=ING, flags=0, **kw):
        extra = {f"link_create__{k}": v for k, v in kw.items()}
        return calls.raw(self.b, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog,
                         link_create__target_fd=tgt, link_create__attach_type=at,
                         link_create__flags=flags, **extra)[0]


def scenario_modes(b):
    progs = [load(b) for _ in range(4)]
    x = load(b, ProgType.XDP, 2)
    o, p = Ops(b, progs), progs
    out = []
    with Cg(b) as (P, C, D):
        out += [o.q(P), o.att(p[0], P), o.q(P), o.att(p[0], P), o.att(p[1], P), o.q(P),
                o.att(p[1], P, MULTI), o.att(p[1], C), o.att(p[1], C, OVERRIDE),
                o.det(p[0], P), o.det(p[0], P), o.q(P),
                o.att(p[0], P, OVERRIDE), o.att(p[1], C), o.q(C), o.q(C, qf=EFF), o.q(D, qf=EFF),
                o.det(0, C), o.det(p[0], P), o.q(P),
                o.att(p[0], P, MULTI), o.att(p[1], P, MULTI), o.att(p[1], P, MULTI), o.q(P),
                o.att(p[2], P, MULTI | REPLACE, rep=p[0]), o.q(P),
                o.att(p[3], P, MULTI | REPLACE, rep=p[0]), o.att(p[3], P, REPLACE, rep=p[2]),
                o.att(p[3], P, MULTI | REPLACE, rep=0), o.att(p[3], P, MULTI | OVERRIDE),
                o.att(p[3], P, 0), o.att(p[3], P, OVERRIDE),
                o.att(p[3], C, MULTI), o.att(p[0], D, MULTI), o.q(D, qf=EFF), o.q(C, qf=EFF),
                o.q(D, qf=EFF, cnt=1), o.q(D, qf=EFF, cnt=0), o.q(P, size=ffi.offsetof(
                    "union bpf_attr", "query", "revision")),
                o.det(0, P), o.det(p[3], P), o.det(x, P), o.att(x, P, MULTI),
                o.att(p[3], 999, MULTI), o.att(p[3], p[0], MULTI), o.att(999, P, MULTI),
                o.att(p[3], P, 1 << 10), o.att(p[3], P, MULTI, at=EG), o.q(P, at=EG),
                o.q(P, at=AttachType.XDP), o.q(P, qf=2), o.q(999), o.q(p[0]),
                o.det(p[3], P, at=EG), o.q(P, at=EG),
                [o.det(f, t) for f, t in ((p[2], P), (p[1], P), (p[3], C), (p[0], D))],
                o.q(P), o.q(C), o.q(D)]
    for f in progs + [x]:
        b.close(f)
    return out


def scenario_revision_relative_preorder(b):
    progs = [load(b) for _ in range(4)]
    o, p = Ops(b, progs), progs
    ids = [o.id0 + i for i in range(4)]
    af = ffi.new("uint32_t[]", 8)
    out = []
    with Cg(b) as (P, C, D):
        out += [o.att(p[0], P, MULTI, expected_revision=5),
                o.att(p[0], P, MULTI, expected_revision=1), o.q(P),
                o.att(p[1], P, MULTI | AttachFlags.BEFORE), o.q(P),
                o.att(p[2], P, MULTI | AttachFlags.AFTER, relative_fd=p[1]), o.q(P),
                o.att(p[3], P, MULTI | AttachFlags.BEFORE | AttachFlags.ID, relative_id=ids[0]),
                o.q(P), o.att(p[3], P, MULTI | AttachFlags.BEFORE | AttachFlags.AFTER),
                o.det(p[3], P, expected_revision=1), o.det(p[3], P, expected_revision=5),
                o.det(p[3], P, attach_flags=2), o.det(p[3], P, relative_fd=1),
                o.q(P, query__prog_attach_flags=af), list(af),
                o.q(P, qf=EFF, query__prog_attach_flags=af)]
        for f in p[:3]:
            out.append(o.det(f, P))
        out += [o.att(p[0], P, MULTI | AttachFlags.PREORDER), o.att(p[1], P, MULTI),
                o.att(p[2], P, MULTI | AttachFlags.PREORDER), o.q(P), o.q(P, qf=EFF),
                o.att(p[3], C, MULTI), o.q(C, qf=EFF)]
        for f in p[:3]:
            out.append(o.det(f, P))
        out.append(o.det(p[3], C))
    for f in progs:
        b.close(f)
    return out


def scenario_cgroup_links(b):
    progs = [load(b) for _ in range(4)]
    o, p = Ops(b, progs), progs
    out = []
    with Cg(b) as (P, C, D):
        lk = o.link(p[3], C)
        out += [lk >= 0, o.q(C), o.q(C, qf=EFF), o.att(p[0], C, 0), o.att(p[0], C, OVERRIDE)]
        lk2 = o.link(p[3], C)
        out += [lk2 >= 0, o.link(p[3], C, flags=1), o.link(p[3], C, flags=2),
                o.link(p[3], C, flags=4), o.link(p[0], P, at=AttachType.XDP),
                o.link(p[0], 999), o.link(p[0], p[1]), o.det(p[3], C)]
        info = calls.obj_get_info_by_fd(b, lk, "link")[0]
        out += [info.type, info.cgroup.attach_type, info.prog_id - o.id0]
        b.close(lk)
        out.append(o.q(C))
        b.close(lk2)
        out += [o.q(C), o.att(p[0], C), o.link(p[1], C), o.det(p[0], C)]
    for f in progs:
        b.close(f)
    return out


def test_prog_attach_modes_and_errnos(both):
    fake, host = both
    assert scenario_modes(fake) == scenario_modes(host)


def test_prog_attach_revision_relative_preorder(both):
    fake, host = both
    assert scenario_revision_relative_preorder(fake) == scenario_revision_relative_preorder(host)


def test_link_create_cgroup(both):
    fake, host = both
    assert scenario_cgroup_links(fake) == scenario_cgroup_links(host)
