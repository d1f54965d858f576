"""tcx (kernel/bpf/tcx.c + kernel/bpf/mprog.c) on lo, fake vs the real kernel: PROG_ATTACH /
PROG_DETACH / LINK_CREATE with BPF_TCX_INGRESS/EGRESS, relative placement (BPF_F_BEFORE,
BPF_F_AFTER, BPF_F_ID, BPF_F_LINK, BPF_F_REPLACE), expected_revision (ESTALE), the 64-program
limit (63), PROG_QUERY (count, revision, prog_ids/link_ids, ENOSPC), LINK_UPDATE / LINK_DETACH and
the tcx link info.  Every scenario detaches everything it attached (teardown checks lo is
empty on the real kernel)."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachFlags, AttachType, BpfCmd, LinkType, ProgType, BPF_F_LINK
from uapi.ffi import ffi

pytestmark = pytest.mark.differential

ING, EGR = AttachType.TCX_INGRESS, AttachType.TCX_EGRESS
LO = 1
BEFORE, AFTER, REPLACE, ID = AttachFlags.BEFORE, AttachFlags.AFTER, AttachFlags.REPLACE, AttachFlags.ID


class Tcx:
    """One backend's view: progs by label, ids normalised to labels."""

    def __init__(self, b, n=4, prog_type=ProgType.SCHED_CLS):
        self.b = b
        self.progs = [calls.prog_load(b, prog_type, assemble(f"r0 = {i}\nexit"), name=f"p{i}")
                      for i in range(n)]
        self.ids = [calls.obj_get_info_by_fd(b, p, "prog")[0].id for p in self.progs]
        self.links: list[int] = []

    def label(self, prog_id: int):
        return f"p{self.ids.index(prog_id)}" if prog_id in self.ids else prog_id

    def link_label(self, link_id: int):
        for i, fd in enumerate(self.links):
            if fd >= 0 and calls.obj_get_info_by_fd(self.b, fd, "link")[0].id == link_id:
                return f"l{i}"
        return link_id

    def attach(self, i, at=ING, flags=0, rel=0, rev=0, replace=0, ifindex=LO):
        r, _ = calls.raw(self.b, BpfCmd.PROG_ATTACH, "expected_revision", target_ifindex=ifindex,
                         attach_bpf_fd=self.progs[i] if i is not None else 0, attach_type=at,
                         attach_flags=flags, replace_bpf_fd=replace, relative_fd=rel,
                         expected_revision=rev)
        return r

    def detach(self, i, at=ING, flags=0, rel=0, rev=0, ifindex=LO):
        r, _ = calls.raw(self.b, BpfCmd.PROG_DETACH, "expected_revision", target_ifindex=ifindex,
                         attach_bpf_fd=self.progs[i] if i is not None else 0, attach_type=at,
                         attach_flags=flags, relative_fd=rel, expected_revision=rev)
        return r

    def link(self, i, at=ING, flags=0, rel=0, rev=0, ifindex=LO):
        r, _ = calls.raw(self.b, BpfCmd.LINK_CREATE, "link_create.tcx.expected_revision",
                         link_create__prog_fd=self.progs[i], link_create__target_ifindex=ifindex,
                         link_create__attach_type=at, link_create__flags=flags,
                         link_create__tcx__relative_fd=rel, link_create__tcx__expected_revision=rev)
        if r >= 0:
            self.links.append(r)
            return f"l{len(self.links) - 1}"
        return r

    def query(self, at=ING, count=64, ifindex=LO, qflags=0, aflags=0, ids=True):
        pids, lids = ffi.new("uint32_t[]", 64), ffi.new("uint32_t[]", 64)
        pf, lf = ffi.new("uint32_t[]", 64), ffi.new("uint32_t[]", 64)
        for arr in (pf, lf):
            for k in range(64):
                arr[k] = 0xAA
        r, a = calls.raw(self.b, BpfCmd.PROG_QUERY, "query.revision", query__target_ifindex=ifindex,
                         query__attach_type=at, query__query_flags=qflags, query__attach_flags=aflags,
                         query__prog_ids=pids if ids else 0, query__count=count,
                         query__link_ids=lids, query__prog_attach_flags=pf,
                         query__link_attach_flags=lf)
        n = min(a.get("query.count"), 64)
        return (r, a.get("query.count"), a.get("query.revision"), a.get("query.attach_flags"),
                [self.label(pids[k]) for k in range(n)], [self.link_label(lids[k]) for k in range(n)],
                [pf[k] for k in range(n)], [lf[k] for k in range(n)])

    def cleanup(self):
        for fd in self.links:
            if fd >= 0:
                self.b.close(fd)
        for i in range(len(self.progs)):
            self.detach(i)
            self.detach(i, at=EGR)
        for p in self.progs:
            self.b.close(p)
        assert self.query()[1] == 0 and self.query(at=EGR)[1] == 0


def run(b, scenario, **kw):
    t = Tcx(b, **kw)
    try:
        return scenario(t)
    finally:
        t.cleanup()


def compare(both, scenario, **kw):
    fake, host = both
    assert run(fake, scenario, **kw) == run(host, scenario, **kw)


def test_tcx_prog_attach_ordering_and_revision(both):
    def s(t):
        out = [t.query()]
        out += [t.attach(0), t.query(), t.attach(0)]
        out += [t.attach(1, flags=BEFORE, rel=t.progs[0]), t.query()]
        out += [t.attach(2, flags=AFTER, rel=t.progs[0], rev=1)]               # stale
        out += [t.attach(2, flags=AFTER | ID, rel=t.ids[0], rev=3), t.query()]
        out += [t.attach(3, flags=BEFORE), t.query()]                          # first
        out += [t.detach(3), t.attach(3, flags=REPLACE, replace=t.progs[2]), t.query()]
        out += [t.query(count=2), t.query(count=0), t.query(ids=False), t.query(at=EGR)]
        out += [t.query(qflags=1)[0], t.query(aflags=1)[0], t.query(ifindex=999_999)[0]]
        out += [t.detach(None, flags=BEFORE), t.query(), t.detach(None), t.query()]
        out += [t.detach(None), t.query()]                                     # now empty: ENOENT
        return out
    compare(both, s)


def test_tcx_prog_attach_relative_errors(both):
    def s(t):
        out = [t.attach(0)]
        out += [t.attach(1, flags=BEFORE, rel=t.progs[2])]                    # anchor not attached
        out += [t.attach(1, rel=t.progs[0])]                                  # anchor without BEFORE/AFTER
        out += [t.attach(1, flags=BEFORE | AFTER, rel=t.progs[0])]
        out += [t.attach(1, flags=ID)]                                        # id 0
        out += [t.attach(1, flags=BEFORE | ID, rel=0x7FFFFFF0)]
        out += [t.attach(1, flags=BEFORE, rel=999)]                           # bad fd
        out += [t.attach(1, flags=BPF_F_LINK | BEFORE)]
        out += [t.attach(1, flags=REPLACE, replace=t.progs[2])]                # not attached
        out += [t.attach(1, flags=REPLACE | BEFORE, replace=t.progs[0], rel=t.progs[0])]
        out += [t.attach(1, flags=1 << 20)]
        out += [t.attach(1, ifindex=999_999), t.attach(1, at=EGR), t.query(at=EGR), t.query()]
        return out
    compare(both, s)


def test_tcx_prog_detach_errors(both):
    def s(t):
        out = [t.detach(0), t.attach(0), t.attach(1)]
        out += [t.detach(2), t.detach(0, rev=1), t.detach(0, flags=REPLACE)]
        out += [t.detach(1, flags=AFTER, rel=t.progs[0]), t.query()]
        out += [t.detach(0, ifindex=999_999), t.detach(None, flags=1 << 20), t.query()]
        return out
    compare(both, s)


def test_tcx_wrong_prog_type_einval(both):
    def s(t):
        return [t.attach(0), t.link(0), t.query()]
    compare(both, s, prog_type=ProgType.XDP)


def test_tcx_link_create_and_placement(both):
    def s(t):
        out = [t.link(0), t.query()]
        out += [t.attach(1, flags=BEFORE | BPF_F_LINK, rel=t.links[0]), t.query()]
        out += [t.link(2, flags=AFTER | BPF_F_LINK | ID,
                       rel=calls.obj_get_info_by_fd(t.b, t.links[0], "link")[0].id), t.query()]
        out += [t.link(0), t.link(3, rev=2), t.link(3, ifindex=999_999), t.link(3, flags=REPLACE)]
        out += [t.detach(0), t.detach(2), t.query()]
        return out
    compare(both, s)


def test_tcx_link_info_update_detach(both):
    def s(t):
        lbl = t.link(0, at=EGR)
        fd = t.links[0]
        info = calls.obj_get_info_by_fd(t.b, fd, "link")[0]
        out = [lbl, info.type == LinkType.TCX, t.label(info.prog_id), info.tcx.ifindex,
               info.tcx.attach_type, t.query(at=EGR)]
        r, _ = calls.raw(t.b, BpfCmd.LINK_UPDATE, "link_update.old_prog_fd", link_update__link_fd=fd,
                         link_update__new_prog_fd=t.progs[1])
        out += [r, t.query(at=EGR)]
        r, _ = calls.raw(t.b, BpfCmd.LINK_UPDATE, "link_update.old_prog_fd", link_update__link_fd=fd,
                         link_update__new_prog_fd=t.progs[2], link_update__flags=REPLACE,
                         link_update__old_prog_fd=t.progs[0])
        out += [r, t.attach(2, at=EGR)]
        r, _ = calls.raw(t.b, BpfCmd.LINK_UPDATE, "link_update.old_prog_fd", link_update__link_fd=fd,
                         link_update__new_prog_fd=t.progs[2])
        out += [r, t.query(at=EGR), t.detach(2, at=EGR)]
        r, _ = calls.raw(t.b, BpfCmd.LINK_DETACH, "link_detach.link_fd", link_detach__link_fd=fd)
        info = calls.obj_get_info_by_fd(t.b, fd, "link")[0]
        out += [r, info.tcx.ifindex, info.tcx.attach_type, t.query(at=EGR)]
        r, _ = calls.raw(t.b, BpfCmd.LINK_UPDATE, "link_update.old_prog_fd", link_update__link_fd=fd,
                         link_update__new_prog_fd=t.progs[3])
        out.append(r)
        return out
    compare(both, s)


def test_tcx_link_close_detaches(both):
    def s(t):
        out = [t.link(0), t.link(1), t.query()]
        t.b.close(t.links[0])
        t.links[0] = -1
        out += [t.query()]
        return out
    compare(both, s)


def test_tcx_63_program_limit_erange(both):
    """bpf_mprog_max() is 63: the 64th slot of the fp array is the terminator."""
    def s(t):
        out = [t.attach(i) for i in range(64)]
        out += [t.attach(64), t.link(64), t.attach(64, flags=REPLACE, replace=t.progs[0]),
                t.attach(65, flags=BEFORE, rel=t.progs[0])]
        q = t.query()
        out += [q[1], q[2], q[4][:3], q[4][-1]]
        return out
    compare(both, s, n=66)


# ------------------------------------------------------------------ lockstep state machine

from backends import FakeBackend, HostBackend            # noqa: E402
from hypothesis import settings, strategies as st        # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule   # noqa: E402

_FLAG_SETS = [0, 0, 0, BEFORE, BEFORE, AFTER, AFTER, REPLACE, REPLACE, BEFORE | ID, AFTER | ID,
              BEFORE | BPF_F_LINK, AFTER | BPF_F_LINK, REPLACE | BEFORE, BEFORE | AFTER]


class _TcxLockstep(RuleBasedStateMachine):
    """Random attach/detach/link/close sequences on lo's tcx ingress, both kernels in lockstep,
    compared after every step together with PROG_QUERY."""

    @initialize()
    def setup(self):
        self.t = [Tcx(FakeBackend(), n=5), Tcx(HostBackend(), n=5)]

    def _pick(self, t, r) -> int:
        """Mostly a program that is attached now (the anchors that succeed), else any."""
        attached = [int(lbl[1:]) for lbl in t.query()[4] if isinstance(lbl, str)]
        return attached[r % len(attached)] if attached and r < 4 else r % len(t.progs)

    def _rel(self, t, kind, i):
        if kind == "prog":
            return t.progs[self._pick(t, i)]
        if kind == "id":
            return t.ids[self._pick(t, i)]
        live = [fd for fd in t.links if fd >= 0]
        return live[i % len(live)] if live else 0

    def _each(self, fn):
        res = [fn(t) for t in self.t]
        res.append(self.t[0].query() == self.t[1].query())
        assert res[0] == res[1] and res[2], (res, self.t[0].query(), self.t[1].query())

    @rule(op=st.sampled_from(["attach"] * 4 + ["link"] * 3 + ["detach"] * 2 + ["close"]),
          i=st.integers(0, 4), flags=st.sampled_from(_FLAG_SETS), r=st.integers(0, 5),
          rev=st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3, 5]))
    def step(self, op, i, flags, r, rev):
        self._each(lambda t: getattr(self, "_" + op)(t, i, flags, r, rev))

    def _attach(self, t, i, flags, r, rev):
        kind = "link" if flags & BPF_F_LINK else ("id" if flags & ID else "prog")
        rel = self._rel(t, kind, r) if flags & (BEFORE | AFTER) else 0
        return t.attach(i, flags=flags, rel=rel, rev=rev, replace=t.progs[self._pick(t, r)])

    def _link(self, t, i, flags, r, rev):
        flags &= ~REPLACE
        kind = "link" if flags & BPF_F_LINK else ("id" if flags & ID else "prog")
        rel = self._rel(t, kind, r) if flags & (BEFORE | AFTER) else 0
        return t.link(i, flags=flags, rel=rel, rev=rev)

    def _detach(self, t, i, flags, r, rev):
        flags &= BEFORE | AFTER | ID
        rel = self._rel(t, "id" if flags & ID else "prog", r) if flags & (BEFORE | AFTER) else 0
        target = None if i == 0 else self._pick(t, i)
        return t.detach(target, flags=flags, rel=rel, rev=rev)

    def _close(self, t, i, flags, r, rev):
        live = [k for k, fd in enumerate(t.links) if fd >= 0]
        if not live:
            return None
        k = live[r % len(live)]
        ret = t.b.close(t.links[k])
        t.links[k] = -1
        return ret

    def teardown(self):
        for t in getattr(self, "t", []):
            t.cleanup()
            assert not t.b.cleanup()


def test_tcx_lockstep_random_ops(host):
    _TcxLockstep.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
    _TcxLockstep.TestCase().runTest()
