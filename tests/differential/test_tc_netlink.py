"""tc clsact qdiscs and cls_bpf filters over rtnetlink, fakekernel vs the real kernel.

The same RTM_*QDISC / RTM_*TFILTER messages go to a real NETLINK_ROUTE socket
(NETLINK_EXT_ACK on) and to `fakekernel.net.rtnetlink.NetlinkSock`, on a veth device
("fkt6", created for the test and deleted after it; the fake gets a veth of that name).
Replies are compared decoded: message types and flags, ack errors and extack messages,
tcmsg fields (ifindex as "dev"), qdisc kinds/options (statistics by layout only) and the
filters' TCA_BPF_* attributes (program ids as id0, id1, ... in load order; tags as the
program they belong to).  Dumps are cut to the test device.
"""
from __future__ import annotations

import socket
import subprocess

import pytest

from fakekernel.net.rtnetlink import NetlinkSock
from uapi import calls
from uapi import netlink as nl
from uapi import pkt_sched as ps
from uapi.bpf import ProgType
from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_MAP_FD, BPF_MOV64_IMM, assemble_insns

pytestmark = pytest.mark.differential

DEV = "fkt6"
PEER = "fkt6p"
TCMSG = nl.ffi.sizeof("struct tcmsg")
ETH_P_ALL_BE, ETH_P_IP_BE = 0x0300, 0x0008
CREATE, EXCL, REPLACE, ECHO = ps.NLM_F_CREATE, ps.NLM_F_EXCL, ps.NLM_F_REPLACE, ps.NLM_F_ECHO
REQ, ACK = nl.NLM_F_REQUEST, nl.NLM_F_ACK
DUMP = nl.NLM_F_DUMP
CLSACT, INGRESS_PARENT = ps.TC_H_CLSACT, ps.TC_H_MAKE(ps.TC_H_CLSACT, ps.TC_H_MIN_INGRESS)
EGRESS_PARENT = ps.TC_H_MAKE(ps.TC_H_CLSACT, ps.TC_H_MIN_EGRESS)
HANDLE = 0xFFFF0000


def tcmsg(ifindex: int, handle: int = 0, parent: int = 0, info: int = 0) -> bytes:
    t = nl.ffi.new("struct tcmsg *", {"tcm_ifindex": ifindex, "tcm_handle": handle,
                                      "tcm_parent": parent, "tcm_info": info})
    return bytes(nl.ffi.buffer(t))


def kind(k: bytes) -> bytes:
    return nl.nla_put(ps.TCA_KIND, k + b"\0")


def u32(atype: int, v: int) -> bytes:
    return nl.nla_put(atype, (v & 0xFFFFFFFF).to_bytes(4, "little"))


def bpf_opts(fd: int | None, name: bytes | None = b"cls", flags: int | None = 1,
             classid: int | None = None, gen: int | None = None, extra: bytes = b"") -> bytes:
    out = b""
    if fd is not None:
        out += u32(ps.TCA_BPF_FD, fd)
    if name is not None:
        out += nl.nla_put(ps.TCA_BPF_NAME, name + b"\0")
    if flags is not None:
        out += u32(ps.TCA_BPF_FLAGS, flags)
    if classid is not None:
        out += u32(ps.TCA_BPF_CLASSID, classid)
    if gen is not None:
        out += u32(ps.TCA_BPF_FLAGS_GEN, gen)
    return kind(b"bpf") + nl.nla_put(ps.TCA_OPTIONS | nl.NLA_F_NESTED, out + extra)


def split(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off + nl.NLMSG_HDRLEN <= len(buf):
        length = int.from_bytes(buf[off:off + 4], "little")
        out.append(buf[off:off + length])
        off += nl.nla_align(length)
    return out


def header(m: bytes):
    h = nl.ffi.new("struct nlmsghdr *")
    nl.ffi.memmove(h, m[:nl.NLMSG_HDRLEN], nl.NLMSG_HDRLEN)
    return h.nlmsg_type, h.nlmsg_flags, h.nlmsg_seq, h.nlmsg_pid


class HostRoute:
    """A real NETLINK_ROUTE socket (extended acks on)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_ROUTE)
        self.sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))
        self.portid = self.sock.getsockname()[0]

    def talk(self, data: bytes) -> list[bytes]:
        self.sock.send(data)
        out: list[bytes] = []
        while True:
            try:
                buf = self.sock.recv(65536, socket.MSG_DONTWAIT if out else 0)
            except BlockingIOError:
                last = header(out[-1])
                if last[1] & nl.NLM_F_MULTI and last[0] != nl.NLMSG_DONE:
                    continue
                return out
            out.extend(split(buf))
            last = header(out[-1])
            if last[0] in (nl.NLMSG_ERROR, nl.NLMSG_DONE):
                return out

    def close(self):
        self.sock.close()


class FakeRoute:
    def __init__(self, kern):
        self.kern = kern
        self.nlsk = NetlinkSock(kern, portid=4242, ext_ack=True)
        self.portid = 4242

    def talk(self, data: bytes) -> list[bytes]:
        return self.nlsk.rcv(self.kern.current, data)

    def close(self):
        pass


class Decoder:
    """Replies as comparable tuples; `ifindex` is the test device, `ids` program id -> name,
    `tags` program tag -> name."""

    def __init__(self, ifindex: int, ids: dict, tags: dict):
        self.ifindex, self.ids, self.tags = ifindex, ids, tags

    def __call__(self, m: bytes, portid: int, seq: int):
        typ, flags, mseq, pid = header(m)
        assert (mseq, pid) == (seq, portid)
        body = m[nl.NLMSG_HDRLEN:]
        if typ == nl.NLMSG_ERROR:
            err = int.from_bytes(body[:4], "little", signed=True)
            echo = nl.NLMSG_HDRLEN if flags & nl.NLM_F_CAPPED else int.from_bytes(body[4:8], "little")
            tlv = (nl.nla_parse(body[4 + nl.nla_align(echo):]) or {}) if flags & nl.NLM_F_ACK_TLVS else {}
            return ("ack", err, tlv.get(nl.NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode())
        if typ == nl.NLMSG_DONE:                 # a dump's end, with its error if it failed
            err = int.from_bytes(body[:4], "little", signed=True)
            tlv = (nl.nla_parse(body[4:]) or {}) if flags & nl.NLM_F_ACK_TLVS else {}
            return ("done", flags, err, tlv.get(nl.NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode())
        t = nl.ffi.new("struct tcmsg *")
        nl.ffi.memmove(t, body[:TCMSG], TCMSG)
        if t.tcm_ifindex != self.ifindex:
            return None
        tca = nl.nla_parse(body[TCMSG:])
        shown = {}
        for k, v in sorted(tca.items()):
            if k in (ps.TCA_STATS, ps.TCA_STATS2):
                v = len(v)                       # traffic differs; the layout must not
            elif k == ps.TCA_OPTIONS and typ in (nl.RTM_NEWTFILTER, nl.RTM_DELTFILTER):
                v = self.bpf_options(v)
            shown[k] = v
        return (typ, flags, t.tcm_family, t.tcm_handle, t.tcm_parent, t.tcm_info, shown)

    def bpf_options(self, data: bytes) -> dict:
        out = {}
        for k, v in sorted(nl.nla_parse(data).items()):
            if k == ps.TCA_BPF_ID:
                v = self.ids.get(int.from_bytes(v, "little"), "?")
            elif k == ps.TCA_BPF_TAG:
                v = self.tags.get(v, "?")
            out[k] = v
        return out


def load_progs(b, n: int = 2) -> tuple[list[int], dict, dict, int]:
    """n SCHED_CLS programs (returning 0, 1, ...) and a socket filter (wrong type)."""
    fds = [calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(
        [BPF_MOV64_IMM(0, i), BPF_EXIT_INSN()])) for i in range(n)]
    ids, tags = {}, {}
    for i, fd in enumerate(fds):
        info = calls.obj_get_info_by_fd(b, fd, "prog")[0]
        ids[info.id] = f"id{i}"
        tags[bytes(info.tag)] = f"id{i}"
    sk = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble_insns(
        [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]))
    return fds, ids, tags, sk


def run_steps(route, ifindex: int, steps, ids, tags) -> list:
    dec = Decoder(ifindex, ids, tags)
    out = []
    for seq, (mtype, flags, body) in enumerate(steps, 1):
        replies = route.talk(nl.nlmsg(mtype, REQ | flags, seq, 0, body))
        out.append([d for d in (dec(m, route.portid, seq) for m in replies) if d is not None])
    return out


def _make_veth() -> int:
    _del_veth()
    subprocess.run(["ip", "link", "add", DEV, "type", "veth", "peer", "name", PEER], check=True)
    subprocess.run(["ip", "link", "set", DEV, "up"], check=True)
    subprocess.run(["ip", "link", "set", PEER, "up"], check=True)
    with open(f"/sys/class/net/{DEV}/ifindex") as f:
        return int(f.read())


def _del_veth() -> None:
    subprocess.run(["ip", "link", "del", DEV], capture_output=True)


@pytest.fixture
def veth(host):
    """A veth pair on the real kernel; its ifindex.  Deleted afterwards."""
    yield _make_veth()
    _del_veth()


def fake_dev(fake) -> int:
    net = fake.kern.world.net
    dev = net.dev_get_by_name(DEV)
    return dev.ifindex if dev is not None else net.add_device(DEV, "veth")


def compare(both, veth, make_steps, nprogs: int = 2):
    fake, host = both
    results = []
    for b, route, ifindex in ((fake, FakeRoute(fake.kern), fake_dev(fake)),
                              (host, HostRoute(), veth)):
        fds, ids, tags, sk = load_progs(b, nprogs)
        try:
            results.append(run_steps(route, ifindex, make_steps(ifindex, fds, sk), ids, tags))
        finally:
            route.talk(nl.nlmsg(nl.RTM_DELQDISC, REQ | ACK, 999, 0, tcmsg(ifindex, 0, CLSACT)))
            route.close()
            for fd in fds + [sk]:
                b.close(fd)
    for i, (f, h) in enumerate(zip(*results)):
        assert f == h, f"step {i + 1}: fake {f} != host {h}"
    return results[0]


def qdisc_steps(ifx, fds, sk):
    new, get, dele = nl.RTM_NEWQDISC, nl.RTM_GETQDISC, nl.RTM_DELQDISC
    return [
        (get, DUMP, tcmsg(ifx)),
        (get, DUMP | ACK, bytes(4)),                                  # short tcmsg: the dump fails
        (get, DUMP, tcmsg(ifx) + nl.nla_put(ps.TCA_CHAIN, b"\1")),     # ERANGE in NLMSG_DONE
        (nl.RTM_GETTFILTER, DUMP, bytes(4)),                          # ... but this one is empty
        (ps.RTM_GETTCLASS, DUMP, tcmsg(ifx) + nl.nla_put(ps.TCA_CHAIN, b"\1")),
        (new, ACK | CREATE, b""),                                     # no family byte: ignored
        (get, ACK | ECHO, tcmsg(ifx, 0, CLSACT)),                     # no ingress queue yet
        (dele, ACK, tcmsg(ifx, 0, CLSACT)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ps.TC_H_ROOT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ps.TC_H_ROOT) + kind(b"nosuchqdisc")),
        (new, ACK | CREATE, tcmsg(ifx, 0, 0) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0x10000, 0) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0, 0x10000) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(9999, 0, CLSACT) + kind(b"clsact")),
        (new, ACK, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),           # no NLM_F_CREATE
        (new, ACK | CREATE | EXCL | ECHO, tcmsg(ifx, HANDLE, CLSACT) + kind(b"clsact")),
        (get, DUMP, tcmsg(ifx)),
        (ps.RTM_GETTCLASS, DUMP, tcmsg(ifx)),
        (new, ACK | CREATE | EXCL, tcmsg(ifx, HANDLE, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE | EXCL, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, HANDLE, CLSACT) + kind(b"ingress")),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0, CLSACT) + kind(b"clsact") + nl.nla_put(ps.TCA_OPTIONS, b"")),
        (new, ACK | CREATE, tcmsg(ifx, 0x10001, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0x10000, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE | REPLACE, tcmsg(ifx, 0x10000, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0, INGRESS_PARENT) + kind(b"clsact")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ps.TC_H_MAKE(CLSACT, 5)) + kind(b"clsact")),
        (get, ECHO, tcmsg(ifx, 0, CLSACT)),
        (get, ACK | ECHO, tcmsg(ifx, 0, ps.TC_H_ROOT)),
        (get, ACK | ECHO, tcmsg(ifx, HANDLE, 0)),
        (get, ACK | ECHO, tcmsg(ifx, 0x20000, 0)),
        (get, ACK, tcmsg(ifx, 0x10000, CLSACT)),
        (get, ACK, tcmsg(ifx, 0, CLSACT) + kind(b"ingress")),
        (dele, ACK, tcmsg(ifx, 0, ps.TC_H_ROOT)),
        (dele, ACK, tcmsg(ifx, HANDLE, 0)),
        (dele, ACK | ECHO, tcmsg(ifx, 0, CLSACT)),
        (dele, ACK, tcmsg(ifx, 0, CLSACT)),
        (get, ACK | ECHO, tcmsg(ifx, 0, CLSACT)),
        (new, ACK | CREATE | EXCL, tcmsg(ifx, 0, CLSACT) + kind(b"ingress")),
        (get, DUMP, tcmsg(ifx)),
        (new, ACK | CREATE | EXCL | ECHO, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),
        (new, ACK | CREATE | REPLACE | ECHO, tcmsg(ifx, 0, CLSACT) + kind(b"ingress")),
        (get, DUMP, tcmsg(ifx)),
        (dele, ACK, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),
        (dele, ACK, tcmsg(ifx, 0, CLSACT) + kind(b"ingress")),
        (get, DUMP, tcmsg(ifx)),
    ]


def test_tc_qdisc_clsact_sequence_matches_kernel(both, veth):
    compare(both, veth, qdisc_steps)


def info(prio: int, proto: int = ETH_P_ALL_BE) -> int:
    return (prio << 16) | proto


def filter_steps(ifx, fds, sk):
    p0, p1 = fds
    newq, new, get, dele = nl.RTM_NEWQDISC, nl.RTM_NEWTFILTER, nl.RTM_GETTFILTER, nl.RTM_DELTFILTER
    ing, eg = INGRESS_PARENT, EGRESS_PARENT
    return [
        (new, ACK | CREATE, tcmsg(ifx, 1, ing, info(1)) + bpf_opts(p0)),     # no clsact yet
        (get, DUMP, tcmsg(ifx, 0, ing)),
        (newq, ACK | CREATE, tcmsg(ifx, 0, CLSACT) + kind(b"clsact")),
        (get, DUMP, tcmsg(ifx, 0, ing)),
        (new, ACK | CREATE | EXCL | ECHO, tcmsg(ifx, 1, ing, info(1)) + bpf_opts(p0)),
        (new, ACK | CREATE | EXCL | ECHO, tcmsg(ifx, 1, ing, info(1)) + bpf_opts(p0)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 2, ing, info(1)) + bpf_opts(p1, name=None)),
        (get, DUMP, tcmsg(ifx, 0, ing)),
        (get, ACK, tcmsg(ifx, 1, ing, info(1))),
        (get, 0, tcmsg(ifx, 2, ing, info(1))),
        (get, ACK, tcmsg(ifx, 3, ing, info(1))),
        (get, ACK, tcmsg(ifx, 1, ing, info(2))),
        (get, ACK, tcmsg(ifx, 1, ing, 0)),
        (get, ACK, tcmsg(ifx, 1, ing, info(1, ETH_P_IP_BE))),
        (get, ACK, tcmsg(ifx, 1, ing, info(1)) + kind(b"u32")),
        (get, ACK, tcmsg(ifx, 1, ing, info(1)) + u32(ps.TCA_CHAIN, 3)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(1, ETH_P_IP_BE)) + bpf_opts(p0)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2, 0)) + bpf_opts(p0)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + kind(b"nosuchcls")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + kind(b"bpf")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(None)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(sk)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(9999)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(p0, flags=2)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(p0, gen=3)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(p0, gen=16)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(p0, gen=ps.TCA_CLS_FLAGS_SKIP_SW)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, ing, info(2)) + bpf_opts(p0, gen=ps.TCA_CLS_FLAGS_SKIP_HW)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, ing, info(0)) + bpf_opts(p1, flags=0, classid=0x10002)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, ing, info(0)) + bpf_opts(p1, name=b"x" * 300)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, eg, info(0)) + bpf_opts(p1)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, eg, info(0)) + bpf_opts(p0) + u32(ps.TCA_CHAIN, 7)),
        (new, ACK, tcmsg(ifx, 0, eg, info(0)) + bpf_opts(p0)),
        (new, ACK | ECHO, tcmsg(ifx, 1, ing, info(1)) + bpf_opts(p1, name=b"replaced")),
        (new, ACK | ECHO, tcmsg(ifx, 7, ing, info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ps.TC_H_MAKE(CLSACT, 5), info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, CLSACT, info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, 0, info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, 0x10000, info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(9999, 0, ing, info(1)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(1)) + bpf_opts(p1) + u32(ps.TCA_CHAIN, 1 << 28)),
        (new, ACK, tcmsg(ifx, 0, ing, info(0)) + bpf_opts(p1)),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(3)) + bpf_opts(p1, name=None,
                                                                   extra=nl.nla_put(ps.TCA_BPF_NAME, b"abc"))),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(3)) + bpf_opts(None, extra=nl.nla_put(ps.TCA_BPF_FD, b"\3\0"))),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(3)) + bpf_opts(p1) + nl.nla_put(ps.TCA_CHAIN, b"\1\0")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(3)) + kind(b"x" * 20)),
        (new, ACK | CREATE | ECHO, tcmsg(ifx, 0, ing, info(3)) + bpf_opts(p1) + nl.nla_put(40, b"junk")),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(4)) + bpf_opts(p1, extra=nl.nla_put(ps.TCA_BPF_OPS_LEN, b"\1\0")
                                                                 + nl.nla_put(ps.TCA_BPF_OPS, bytes(8)))),
        (new, ACK | CREATE, tcmsg(ifx, 0, ing, info(4)) + bpf_opts(p1, gen=ps.TCA_CLS_FLAGS_SKIP_HW)
         + u32(ps.TCA_CHAIN, 2)),
        (new, ACK | CREATE | REPLACE, tcmsg(ifx, 0, ing, info(4)) + bpf_opts(p1) + u32(ps.TCA_CHAIN, 2)),
        (new, ACK | ECHO, tcmsg(ifx, 1, ing, info(4)) + bpf_opts(p1) + u32(ps.TCA_CHAIN, 2)),
        (new, ACK | ECHO, tcmsg(ifx, 1, ing, info(4)) + bpf_opts(p0, gen=ps.TCA_CLS_FLAGS_SKIP_HW)
         + u32(ps.TCA_CHAIN, 2)),
        (dele, ACK, tcmsg(ifx, 0, ing, 0) + u32(ps.TCA_CHAIN, 2)),
        (get, DUMP, tcmsg(ifx, 0, ing)),
        (get, DUMP, tcmsg(ifx, 0, eg)),
        (get, DUMP, tcmsg(ifx, 0, eg) + u32(ps.TCA_CHAIN, 7)),
        (get, DUMP, tcmsg(ifx, 0, ing, info(1))),
        (get, DUMP, tcmsg(ifx, 0, ing, ps.TC_H_MAKE(0, ETH_P_IP_BE))),
        (dele, ACK, tcmsg(ifx, 5, ing, info(1))),
        (dele, ACK, tcmsg(ifx, 1, ing, 0)),
        (dele, ACK, tcmsg(ifx, 1, ing, info(9))),
        (dele, ACK, tcmsg(ifx, 0, ing, info(1)) + u32(ps.TCA_CHAIN, 4)),
        (dele, ACK, tcmsg(ifx, 0, ing, 0) + u32(ps.TCA_CHAIN, 4)),
        (dele, ACK, tcmsg(ifx, 1, ing, info(1)) + kind(b"u32")),
        (dele, ACK | ECHO, tcmsg(ifx, 1, ing, info(1))),
        (dele, ACK | ECHO, tcmsg(ifx, 0, ing, info(0xC000))),
        (get, DUMP, tcmsg(ifx, 0, ing)),
        (dele, ACK | ECHO, tcmsg(ifx, 0, eg, 0)),
        (get, DUMP, tcmsg(ifx, 0, eg)),
        (dele, ACK | ECHO, tcmsg(ifx, 0, eg, 0) + u32(ps.TCA_CHAIN, 7)),
        (get, DUMP, tcmsg(ifx, 0, eg)),
        (nl.RTM_DELQDISC, ACK, tcmsg(ifx, 0, CLSACT)),
        (get, DUMP, tcmsg(ifx, 0, ing)),
    ]


def test_tc_filter_cls_bpf_sequence_matches_kernel(both, veth):
    compare(both, veth, filter_steps)


@pytest.mark.parametrize("prios", [(0, 0, 0), (1, 2, 0, 0), (0xD000, 0), (0x8000, 0),
                                   (0x8001, 0), (0x7FFF, 0), (0x8000, 0xC001, 0), (0xFFFF, 0),
                                   (0, 0xC000, 0)])
def test_tc_filter_auto_prio_matches_kernel(both, veth, prios):
    """Priority 0 with NLM_F_CREATE: 0xC000, or one below the lowest proto at or above
    0x8000 (ENOSPC when that is 0x8000 itself)."""
    def steps(ifx, fds, sk):
        out = [(nl.RTM_NEWQDISC, ACK | CREATE, tcmsg(ifx, 0, CLSACT) + kind(b"clsact"))]
        out += [(nl.RTM_NEWTFILTER, ACK | CREATE | ECHO, tcmsg(ifx, 0, INGRESS_PARENT, info(p))
                 + bpf_opts(fds[0])) for p in prios]
        return out + [(nl.RTM_GETTFILTER, DUMP, tcmsg(ifx, 0, INGRESS_PARENT))]
    compare(both, veth, steps)


# ---------------------------------------------------------------- the data path
ETH_P_TEST = 0x88B5                  # IEEE 802 local experimental ethertype
TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_SHOT = -1, 0, 2


def counting_prog(b, map_fd: int, key: int, verdict: int) -> int:
    """array[key] += 1; return verdict."""
    from uapi.bpf import BPF_ADD, BPF_JEQ, FuncId
    from uapi.insn import (BPF_ALU64_IMM, BPF_ATOMIC_OP, BPF_DW, BPF_JMP_IMM, BPF_MOV64_REG,
                           BPF_ST_MEM, BPF_W)
    return calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns([
        BPF_ST_MEM(BPF_W, 10, -4, key), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
        BPF_LD_MAP_FD(1, map_fd), BPF_CALL_HELPER(FuncId.map_lookup_elem),
        BPF_JMP_IMM(BPF_JEQ, 0, 0, 2), BPF_MOV64_IMM(1, 1),
        BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 0, 1, 0), BPF_MOV64_IMM(0, verdict), BPF_EXIT_INSN()]))


def test_tc_cls_bpf_ingress_verdicts_count_like_kernel(both, veth):
    """Filters on the peer's clsact ingress for one ethertype: prio 1 non-DA returning 0 (no
    match: go on), prio 2 DA returning TC_ACT_UNSPEC (go on), prio 3 DA returning
    TC_ACT_SHOT (the packet ends there), prio 4 never runs.  Frames sent through the veth
    pair (host) / received on the peer (fake) leave the same counts."""
    from fakekernel.net.rx import netif_receive
    from uapi.bpf import MapType
    fake, host = both
    frame = bytes.fromhex("020000000001" "020000000002") + ETH_P_TEST.to_bytes(2, "big") + bytes(50)
    proto = ((ETH_P_TEST & 0xFF) << 8) | (ETH_P_TEST >> 8)
    counts = []
    for b in both:
        if b is fake:
            net = fake.kern.world.net
            fake_dev(fake)
            peer = net.add_device(PEER, "veth")
            route = FakeRoute(fake.kern)
            send = lambda: netif_receive(fake.kern, peer, frame)      # noqa: E731
        else:
            with open(f"/sys/class/net/{PEER}/ifindex") as f:
                peer = int(f.read())
            route = HostRoute()
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            tx.bind((DEV, 0))
            send = lambda: tx.send(frame)                             # noqa: E731
        m = calls.map_create(b, MapType.ARRAY, 4, 8, 4)
        progs = [counting_prog(b, m, k, v) for k, v in
                 enumerate((0, TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_OK))]
        try:
            steps = [(nl.RTM_NEWQDISC, ACK | CREATE, tcmsg(peer, 0, CLSACT) + kind(b"clsact"))]
            steps += [(nl.RTM_NEWTFILTER, ACK | CREATE | EXCL,
                       tcmsg(peer, 1, INGRESS_PARENT, info(i + 1, proto))
                       + bpf_opts(fd, flags=0 if i == 0 else 1)) for i, fd in enumerate(progs)]
            for seq, (mtype, flags, body) in enumerate(steps, 1):
                assert route.talk(nl.nlmsg(mtype, REQ | flags, seq, 0, body))[-1][16:20] == bytes(4)
            for _ in range(5):
                send()
            if b is host:
                import time
                time.sleep(0.1)
            counts.append([int.from_bytes(calls.map_lookup_elem(b, m, k.to_bytes(4, "little"), 8),
                                          "little") for k in range(4)])
        finally:
            route.talk(nl.nlmsg(nl.RTM_DELQDISC, REQ | ACK, 99, 0, tcmsg(peer, 0, CLSACT)))
            if b is host:
                tx.close()
            route.close()
            for fd in progs + [m]:
                b.close(fd)
    assert counts[0] == counts[1] == [5, 5, 5, 0]


def test_tcx_revision_survives_while_clsact_holds_the_entry(both, veth):
    """A clsact qdisc shares the device's tcx entry (tcx_entry_is_active: programs or the
    mini-qdisc): tcx revisions go on across the last program leaving while it exists, and
    restart at 1 only once neither holds the entry."""
    from uapi.asm import assemble
    from uapi.bpf import AttachType, BpfCmd
    fake, host = both
    out = []
    for b, route, ifx in ((fake, FakeRoute(fake.kern), fake_dev(fake)), (host, HostRoute(), veth)):
        p = calls.prog_load(b, ProgType.SCHED_CLS, assemble("r0 = 0\nexit"))

        def query():
            r, a = calls.raw(b, BpfCmd.PROG_QUERY, "query.revision", query__target_ifindex=ifx,
                             query__attach_type=AttachType.TCX_INGRESS)
            return r, a.c.query.revision, a.c.query.prog_cnt

        def prog(cmd):
            return calls.raw(b, cmd, "expected_revision", target_ifindex=ifx, attach_bpf_fd=p,
                             attach_type=AttachType.TCX_INGRESS)[0]

        def qdisc(mtype):
            msg = nl.nlmsg(mtype, REQ | ACK | CREATE, 1, 0, tcmsg(ifx, 0, CLSACT) + kind(b"clsact"))
            return route.talk(msg)[-1][16:20]
        att, det = BpfCmd.PROG_ATTACH, BpfCmd.PROG_DETACH
        try:
            out.append([query(), prog(att), query(), prog(det), query(),
                        qdisc(nl.RTM_NEWQDISC), query(), prog(att), query(), prog(det), query(),
                        prog(att), query(), qdisc(nl.RTM_DELQDISC), query(), prog(det), query()])
        finally:
            route.close()
            b.close(p)
    assert out[0] == out[1]
    assert out[1][10] == (0, 3, 0)


# ---------------------------------------------------------------- lockstep state machine
from backends import FakeBackend, HostBackend             # noqa: E402
from hypothesis import settings, strategies as st         # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule   # noqa: E402

_QFLAGS = [CREATE, CREATE | EXCL, CREATE | REPLACE, 0, REPLACE, EXCL]
_FFLAGS = [CREATE, CREATE, CREATE | EXCL, 0, CREATE | REPLACE]
_PARENTS = [INGRESS_PARENT, INGRESS_PARENT, EGRESS_PARENT, HANDLE, 0]


class _Side:
    def __init__(self, b, route, ifindex):
        self.b, self.route, self.ifindex = b, route, ifindex
        self.fds, self.ids, self.tags, self.sk = load_progs(b, 3)
        self.dec = Decoder(ifindex, self.ids, self.tags)
        self.seq = 0

    def talk(self, mtype, flags, body_fn):
        self.seq += 1
        replies = self.route.talk(nl.nlmsg(mtype, REQ | flags, self.seq, 0, body_fn(self)))
        return [d for d in (self.dec(m, self.route.portid, self.seq) for m in replies) if d is not None]

    def close(self):
        self.route.talk(nl.nlmsg(nl.RTM_DELQDISC, REQ | ACK, 0, 0, tcmsg(self.ifindex, 0, CLSACT)))
        self.route.close()
        for fd in self.fds + [self.sk]:
            self.b.close(fd)


class _TcLockstep(RuleBasedStateMachine):
    """Random qdisc and filter requests on the veth, both kernels in lockstep: every reply
    (acks, extack messages, echoed notifications, dumps) must be the same."""

    @initialize()
    def setup(self):
        fake = FakeBackend()
        self.sides = [_Side(fake, FakeRoute(fake.kern), fake_dev(fake)),
                      _Side(HostBackend(), HostRoute(), _make_veth())]

    def _each(self, mtype, flags, body_fn):
        res = [s.talk(mtype, flags, body_fn) for s in self.sides]
        assert res[0] == res[1], res

    @rule(mtype=st.sampled_from([nl.RTM_NEWQDISC] * 3 + [nl.RTM_DELQDISC, nl.RTM_GETQDISC]),
          qkind=st.sampled_from([b"clsact", b"clsact", b"ingress", None]),
          handle=st.sampled_from([0, 0, HANDLE, 0x10000]),
          parent=st.sampled_from([CLSACT, CLSACT, CLSACT, ps.TC_H_ROOT, INGRESS_PARENT, 0]),
          flags=st.sampled_from(_QFLAGS), echo=st.booleans())
    def qdisc(self, mtype, qkind, handle, parent, flags, echo):
        extra = kind(qkind) if qkind else b""
        self._each(mtype, ACK | flags | (ECHO if echo else 0),
                   lambda s: tcmsg(s.ifindex, handle, parent) + extra)

    @rule(parent=st.sampled_from(_PARENTS), prio=st.sampled_from([0, 1, 2, 0xC000]),
          proto=st.sampled_from([ETH_P_ALL_BE, ETH_P_ALL_BE, ETH_P_IP_BE, 0]),
          handle=st.sampled_from([0, 1, 1, 2]), prog=st.integers(0, 3),
          flags=st.sampled_from(_FFLAGS), da=st.booleans(), echo=st.booleans(),
          chain=st.sampled_from([None, None, 0, 1]))
    def new_filter(self, parent, prio, proto, handle, prog, flags, da, echo, chain):
        def body(s):
            fd = s.fds[prog] if prog < 3 else s.sk
            opts = bpf_opts(fd, flags=1 if da else None)
            return tcmsg(s.ifindex, handle, parent, info(prio, proto)) + opts + \
                (u32(ps.TCA_CHAIN, chain) if chain is not None else b"")
        self._each(nl.RTM_NEWTFILTER, ACK | flags | (ECHO if echo else 0), body)

    @rule(mtype=st.sampled_from([nl.RTM_DELTFILTER, nl.RTM_GETTFILTER]),
          parent=st.sampled_from(_PARENTS), prio=st.sampled_from([0, 1, 2, 0xC000]),
          proto=st.sampled_from([ETH_P_ALL_BE, 0, ETH_P_IP_BE]), handle=st.sampled_from([0, 1, 2]),
          chain=st.sampled_from([None, None, 1]), echo=st.booleans())
    def del_or_get_filter(self, mtype, parent, prio, proto, handle, chain, echo):
        self._each(mtype, ACK | (ECHO if echo else 0),
                   lambda s: tcmsg(s.ifindex, handle, parent, info(prio, proto))
                   + (u32(ps.TCA_CHAIN, chain) if chain is not None else b""))

    @rule(parent=st.sampled_from([INGRESS_PARENT, EGRESS_PARENT, HANDLE]),
          chain=st.sampled_from([None, None, 1]))
    def dump(self, parent, chain):
        self._each(nl.RTM_GETTFILTER, DUMP, lambda s: tcmsg(s.ifindex, 0, parent)
                   + (u32(ps.TCA_CHAIN, chain) if chain is not None else b""))
        self._each(nl.RTM_GETQDISC, DUMP, lambda s: tcmsg(s.ifindex))

    def teardown(self):
        for s in getattr(self, "sides", []):
            s.close()
            assert not s.b.cleanup()
        _del_veth()


def test_tc_lockstep_random_requests(host):
    """A fresh veth per example: a device keeps its ingress queue once created."""
    _TcLockstep.TestCase.settings = settings(max_examples=60, stateful_step_count=25,
                                             deadline=None)
    _TcLockstep.TestCase().runTest()
