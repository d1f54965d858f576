"""PROG_ATTACH / PROG_QUERY / PROG_DETACH and cgroup LINK_CREATE for every attach type of the
cgroup program family (sock, sock_addr, sock_ops, sockopt, sysctl, device) on a scratch cgroup
tree, fakekernel vs the real kernel: the prog's expected_attach_type must match exactly for
sock/sock_addr/sockopt, any type of the right program type works for the others, and the
effective arrays follow the hierarchy."""
from __future__ import annotations

import pytest

from differential.test_attach_cmds import Cg, Ops
from differential.test_prog_cgroup_sock import PAIRS, pair_id
from uapi import calls
from uapi.bpf import AttachFlags, AttachType as A, ProgType
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

pytestmark = pytest.mark.differential

MULTI = AttachFlags.ALLOW_MULTI
EFF = 1
# the attach type a program loaded with expected_attach_type 0 goes to
_DEFAULT_AT = {ProgType.SOCK_OPS: A.CGROUP_SOCK_OPS, ProgType.CGROUP_SYSCTL: A.CGROUP_SYSCTL,
               ProgType.CGROUP_DEVICE: A.CGROUP_DEVICE}
_OTHER = {ProgType.CGROUP_SOCK: A.CGROUP_INET4_POST_BIND, ProgType.CGROUP_SOCK_ADDR: A.CGROUP_INET4_CONNECT,
          ProgType.CGROUP_SOCKOPT: A.CGROUP_GETSOCKOPT, ProgType.SOCK_OPS: A.CGROUP_SYSCTL,
          ProgType.CGROUP_SYSCTL: A.CGROUP_DEVICE, ProgType.CGROUP_DEVICE: A.CGROUP_INET_INGRESS}


class IdxOps(Ops):
    """Ops whose query results name programs by their index in `progs` (the host's prog ids
    need not be consecutive: other processes load programs too)."""

    def __init__(self, b, progs):
        super().__init__(b, progs)
        self.ids = [calls.obj_get_info_by_fd(b, fd, "prog")[0].id for fd in progs]

    def idx(self, rel_id):
        return self.ids.index(rel_id + self.id0) if rel_id + self.id0 in self.ids else "?"

    def q(self, *args, **kw):
        r, flags, ids, n, rev = super().q(*args, **kw)
        return r, flags, [self.idx(i) for i in ids], n, rev


def scenario(b, pair):
    ptype, eat = pair
    at = eat or _DEFAULT_AT[ptype]
    insns = assemble_insns([BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])
    p = [calls.prog_load(b, ptype, insns, expected_attach_type=eat) for _ in range(2)]
    o = IdxOps(b, p)
    other = _OTHER[ptype] if _OTHER[ptype] != at else A.CGROUP_INET6_CONNECT
    out = []
    with Cg(b) as (P, C, D):
        out += [o.att(p[0], P, at=at), o.att(p[0], P, at=other), o.q(P, at=at), o.q(D, at=at, qf=EFF),
                o.att(p[1], C, MULTI, at=at), o.att(p[1], P, MULTI, at=at), o.q(C, at=at, qf=EFF),
                o.det(p[0], P, at=at), o.att(p[0], P, MULTI, at=at), o.att(p[1], C, MULTI, at=at),
                o.q(D, at=at, qf=EFF)]
        lk = o.link(p[1], D, at=at)
        out += [lk >= 0, o.link(p[1], D, at=other), o.q(D, at=at), o.q(D, at=at, qf=EFF)]
        if lk >= 0:
            info = calls.obj_get_info_by_fd(b, lk, "link")[0]
            out += [info.cgroup.attach_type, o.idx(info.prog_id - o.id0)]
            b.close(lk)
        out += [o.q(D, at=at), o.det(p[1], C, at=at), o.det(p[0], P, at=at), o.det(p[0], P, at=at),
                o.q(P, at=at)]
    for fd in p:
        b.close(fd)
    return out


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_cgroup_family_attach_query_detach_link(both, pair):
    fake, host = both
    assert scenario(fake, pair) == scenario(host, pair)
