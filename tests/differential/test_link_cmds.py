"""LINK_UPDATE, LINK_DETACH, LINK_GET_FD_BY_ID, LINK_GET_NEXT_ID, link pins and
RAW_TRACEPOINT_OPEN, fake vs the real kernel, on XDP links (lo) and cgroup links.

Link and prog ids are compared relative to ids the scenario saw; link fds on the host are
always closed in finally blocks (an XDP link left open would keep lo's XDP slot busy)."""
from __future__ import annotations

import os
import uuid

from backends import FakeBackend
from uapi import calls
from uapi.bpf import AttachFlags, AttachType, BpfCmd, ProgType
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

LO = 1
XDP = AttachType.XDP
REPLACE = AttachFlags.REPLACE
ING = AttachType.CGROUP_INET_INGRESS
CGROUP2 = "/sys/fs/cgroup/unified"


class Cg:
    """A scratch cgroup tree base/c/d (as in test_attach_cmds), removed on exit."""

    def __init__(self, b):
        self.b = b
        base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        self.dirs = [base, base + "/c", base + "/c/d"]

    def __enter__(self):
        for d in self.dirs:
            if isinstance(self.b, FakeBackend):
                self.b.kern.world.cgroup.mkdir(d)
            else:
                os.mkdir(d)
        self.fds = [self.b.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in self.dirs]
        return self.fds

    def __exit__(self, *exc):
        for fd in self.fds:
            self.b.close(fd)
        for d in reversed(self.dirs):
            if isinstance(self.b, FakeBackend):
                self.b.kern.world.cgroup.rmdir(d)
            else:
                os.rmdir(d)


def load(b, ptype, ret=2, eat=0):
    return calls.prog_load(b, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]),
                           expected_attach_type=eat)


def prog_id(b, fd):
    return calls.obj_get_info_by_fd(b, fd, "prog")[0].id


def link_info(b, fd):
    info, n = calls.obj_get_info_by_fd(b, fd, "link")
    return info


def create(b, prog, target, at, flags=0):
    return calls.raw(b, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog,
                     link_create__target_fd=target, link_create__attach_type=at,
                     link_create__flags=flags)[0]


def update(b, link, new, flags=0, old=0, **kw):
    return calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=link,
                     link_update__new_prog_fd=new, link_update__flags=flags,
                     link_update__old_prog_fd=old, **kw)[0]


def detach(b, link, size=None, **kw):
    return calls.raw(b, BpfCmd.LINK_DETACH, None, size=size, link_detach__link_fd=link, **kw)[0]


def fd_by_id(b, id_, **kw):
    return calls.raw(b, BpfCmd.LINK_GET_FD_BY_ID, None, link_id=id_, **kw)[0]


def next_id(b, start, **kw):
    ret, a = calls.raw(b, BpfCmd.LINK_GET_NEXT_ID, None, start_id=start, **kw)
    return ret, a.get("next_id")


def closed(b, ret):
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


def scenario_xdp_update_detach(b):
    x1, x2 = load(b, ProgType.XDP), load(b, ProgType.XDP, 1)
    xc = load(b, ProgType.XDP, eat=AttachType.XDP_CPUMAP)
    sk = load(b, ProgType.SOCKET_FILTER, 0)
    id1, id2 = prog_id(b, x1), prog_id(b, x2)
    out = []
    lk = create(b, x1, LO, XDP)
    lk2 = -1
    try:
        out.append(lk >= 0)
        out += [update(b, lk, x2, flags=2), update(b, lk, x2, flags=REPLACE | 2),
                update(b, 999, x2), update(b, x1, x2), update(b, lk, 999), update(b, lk, lk),
                update(b, lk, x2, old=x1), update(b, lk, 999, old=x1),
                update(b, lk, x2, REPLACE, old=x2), update(b, lk, x2, REPLACE, old=999),
                update(b, lk, x2, REPLACE, old=0), update(b, lk, sk), update(b, lk, xc),
                update(b, lk, x2, link_create__target_btf_id=1),
                link_info(b, lk).prog_id - id1]
        out += [update(b, lk, x2), link_info(b, lk).prog_id - id1,
                update(b, lk, x1, REPLACE, old=x1), update(b, lk, x1, REPLACE, old=x2),
                link_info(b, lk).prog_id - id1, update(b, lk, x1),
                link_info(b, lk).prog_id - id1]
        # the link keeps its prog alive after the prog fd is closed
        out += [update(b, lk, x2), b.close(x2)]
        p2 = calls.raw(b, BpfCmd.PROG_GET_FD_BY_ID, None, prog_id=id2)[0]
        out.append(p2 >= 0)
        x2 = p2
        # LINK_DETACH: errnos, then the link stays as an fd with no device
        out += [detach(b, 999), detach(b, x1), detach(b, lk, link_update__new_prog_fd=1)]
        info = link_info(b, lk)
        out += [info.type, info.xdp.ifindex, info.prog_id - id1]
        out += [detach(b, lk)]
        info = link_info(b, lk)
        out += [info.type, info.xdp.ifindex, info.prog_id - id1, detach(b, lk),
                update(b, lk, x1), update(b, lk, x2, REPLACE, old=x1)]
        lk2 = create(b, x1, LO, XDP)                # lo's XDP slot is free again
        out.append(lk2 >= 0)
    finally:
        for f in (lk, lk2):
            if f >= 0:
                b.close(f)
    for f in (x1, x2, xc, sk):
        b.close(f)
    return out


def scenario_cgroup_update_detach(b):
    p = [load(b, ProgType.CGROUP_SKB, 1) for _ in range(3)]
    eg = load(b, ProgType.CGROUP_SKB, 1, eat=AttachType.CGROUP_INET_EGRESS)
    xdp = load(b, ProgType.XDP)
    id0 = prog_id(b, p[0])
    out = []

    def query(tgt):
        ids = ffi.new("uint32_t[]", 8)
        r, a = calls.raw(b, BpfCmd.PROG_QUERY, None, query__target_fd=tgt,
                         query__attach_type=ING, query__prog_ids=ids, query__prog_cnt=8)
        n = a.get("query.prog_cnt")
        return r, [ids[i] - id0 for i in range(min(n, 8))], a.get("query.revision")

    with Cg(b) as (P, C, D):
        lk = create(b, p[0], C, ING)
        try:
            rev0 = query(C)[2]
            out += [lk >= 0, query(C)[:2], update(b, lk, xdp), update(b, lk, eg),
                    update(b, lk, p[1], REPLACE, old=p[2]), update(b, lk, p[1]), query(C)[:2],
                    query(C)[2] - rev0, update(b, lk, p[2], REPLACE, old=p[1]), query(C)[:2]]
            info = link_info(b, lk)
            out += [info.prog_id - id0, info.cgroup.attach_type, info.cgroup.cgroup_id != 0]
            out += [detach(b, lk), query(C)[:2], query(C)[2] - rev0]
            info = link_info(b, lk)
            out += [info.prog_id - id0, info.cgroup.attach_type, info.cgroup.cgroup_id,
                    detach(b, lk), update(b, lk, p[1])]
        finally:
            b.close(lk)
    for f in p + [eg, xdp]:
        b.close(f)
    return out


def scenario_link_ids_and_pins(b):
    x = load(b, ProgType.XDP)
    pid = prog_id(b, x)
    pin = os.path.join(b.pin_dir(), "lk")
    out = []
    lk = create(b, x, LO, XDP)
    try:
        lid = link_info(b, lk).id
        r = next_id(b, lid - 1)
        out += [(r[0], r[1] - lid), next_id(b, lid - 1, open_flags=1)]
        r = next_id(b, lid)
        out.append(r[0] < 0 or r[1] > lid)
        out += [next_id(b, 0x7FFFFFFF), next_id(b, 0xFFFFFFFF), fd_by_id(b, 0),
                fd_by_id(b, 0x7FFFFFF0), fd_by_id(b, lid, open_flags=0, next_id=1)]
        f2 = fd_by_id(b, lid)
        info = link_info(b, f2)
        out += [f2 >= 0, info.id - lid, info.prog_id - pid, info.xdp.ifindex]
        b.close(f2)
        calls.obj_pin(b, lk, pin)
        out += [closed(b, calls.raw(b, BpfCmd.OBJ_GET, None, pathname=pin.encode(),
                                    file_flags=flags)[0]) for flags in (0, 8, 16, 24)]
        f3 = calls.obj_get(b, pin)
        out += [link_info(b, f3).id - lid, detach(b, f3), link_info(b, lk).xdp.ifindex]
        b.close(f3)
    finally:
        b.close(lk)
    # the pin keeps the (detached) link alive
    f4 = fd_by_id(b, lid)
    out += [f4 >= 0, link_info(b, f4).prog_id - pid]
    b.close(f4)
    b.unlink(pin)
    out += [fd_by_id(b, lid), b.close(x)]
    return out


def scenario_raw_tracepoint_open(b):
    x = load(b, ProgType.XDP)
    k = load(b, ProgType.KPROBE, 0)
    name = ffi.new("char[]", b"sys_enter")

    def rto(prog, nm=name, **kw):
        return closed(b, calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, None,
                                   raw_tracepoint__prog_fd=prog, raw_tracepoint__name=nm,
                                   **kw)[0])
    out = [rto(999), rto(0), rto(x), rto(k), rto(x, 0), rto(x, raw_tracepoint__cookie=7),
           rto(999, link_create__kprobe_multi__syms=1)]
    b.close(x)
    b.close(k)
    return out


def test_link_update_xdp_replace_eperm_and_detach(both):
    fake, host = both
    assert scenario_xdp_update_detach(fake) == scenario_xdp_update_detach(host)


def test_link_update_cgroup_replace_and_detach_enolink(both):
    fake, host = both
    assert scenario_cgroup_update_detach(fake) == scenario_cgroup_update_detach(host)


def test_link_get_fd_by_id_next_id_and_pins(both):
    fake, host = both
    assert scenario_link_ids_and_pins(fake) == scenario_link_ids_and_pins(host)


def test_raw_tracepoint_open_non_raw_tp_prog_einval(both):
    fake, host = both
    assert scenario_raw_tracepoint_open(fake) == scenario_raw_tracepoint_open(host)
