"""rtnetlink's XDP attach (RTM_SETLINK IFLA_XDP) and link dumps, fakekernel vs the real kernel.

The same netlink messages go to a real NETLINK_ROUTE socket (NETLINK_EXT_ACK on) and to
`fakekernel.net.rtnetlink.NetlinkSock`; the replies are compared decoded: message types,
ack errors and extended-ack messages, and the IFLA_XDP attributes of lo (program ids
relative to the scenario's first program).  Every step runs on lo, which the real kernel
lets carry a generic-mode XDP program; the scenario ends detached (and the teardown
detaches whatever a failure left).
"""
from __future__ import annotations

import socket

import pytest

from backends import FakeBackend
from fakekernel.errors import Errno
from fakekernel.net.dev_xdp import XdpFlags
from fakekernel.net.rtnetlink import NetlinkSock
from fakekernel.task import NOBODY
from uapi import calls
from uapi import netlink as nl
from uapi.bpf import ProgType, XdpAction
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

pytestmark = pytest.mark.differential

LO = 1
SKB, DRV = XdpFlags.SKB_MODE, XdpFlags.DRV_MODE
NOEXIST, REPLACE = XdpFlags.UPDATE_IF_NOEXIST, XdpFlags.REPLACE
IFINFO = nl.ffi.sizeof("struct ifinfomsg")


def ifinfo(index: int) -> bytes:
    return bytes(nl.ffi.buffer(nl.ffi.new("struct ifinfomsg *", {"ifi_index": index})))


def setlink_xdp(index: int, fd: int | None = None, flags: int | None = None,
                expected: int | None = None, extra: bytes = b"") -> bytes:
    xdp = b""
    if fd is not None:
        xdp += nl.nla_put(nl.IFLA_XDP_FD, (fd & 0xFFFFFFFF).to_bytes(4, "little"))
    if flags is not None:
        xdp += nl.nla_put(nl.IFLA_XDP_FLAGS, int(flags).to_bytes(4, "little"))
    if expected is not None:
        xdp += nl.nla_put(nl.IFLA_XDP_EXPECTED_FD, (expected & 0xFFFFFFFF).to_bytes(4, "little"))
    return ifinfo(index) + nl.nla_put(nl.IFLA_XDP | nl.NLA_F_NESTED, xdp + extra)


class HostRoute:
    """A real NETLINK_ROUTE socket."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_ROUTE)
        self.sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))
        self.portid = self.sock.getsockname()[0]

    def talk(self, data: bytes) -> list[bytes]:
        self.sock.send(data)
        out = split(self.sock.recv(65536))
        while True:             # replies to a request are queued by the time send() returns;
            try:                # a dump's parts come as we read, up to NLMSG_DONE
                more = split(self.sock.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                if header(out[-1])[1] & nl.NLM_F_MULTI and header(out[-1])[0] != nl.NLMSG_DONE:
                    more = split(self.sock.recv(65536))
                else:
                    return out
            out.extend(more)

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


def header(m: bytes):
    h = nl.ffi.new("struct nlmsghdr *")
    nl.ffi.memmove(h, m[:nl.NLMSG_HDRLEN], nl.NLMSG_HDRLEN)
    return h.nlmsg_type, h.nlmsg_flags, h.nlmsg_seq, h.nlmsg_pid


def split(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off + nl.NLMSG_HDRLEN <= len(buf):
        length = int.from_bytes(buf[off:off + 4], "little")
        out.append(buf[off:off + length])
        off += nl.nla_align(length)
    return out


def decode(m: bytes, portid: int, seq: int, ids: dict) -> tuple:
    typ, flags, mseq, pid = header(m)
    assert (mseq, pid) == (seq, portid)
    body = m[nl.NLMSG_HDRLEN:]
    if typ == nl.NLMSG_ERROR:
        err = int.from_bytes(body[:4], "little", signed=True)
        caps = flags & (nl.NLM_F_CAPPED | nl.NLM_F_ACK_TLVS)
        # the echoed request: its header only when capped, else all of it (nlmsg_len)
        echo = nl.NLMSG_HDRLEN if flags & nl.NLM_F_CAPPED else int.from_bytes(body[4:8], "little")
        tlv = (nl.nla_parse(body[4 + nl.nla_align(echo):]) or {}) if flags & nl.NLM_F_ACK_TLVS else {}
        msg = tlv.get(nl.NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode()
        return ("ack", err, caps, msg)
    if typ == nl.RTM_NEWLINK:
        ifm = nl.ffi.new("struct ifinfomsg *")
        nl.ffi.memmove(ifm, body[:IFINFO], IFINFO)
        tb = nl.nla_parse(body[IFINFO:])
        xdp = nl.nla_parse(tb[nl.IFLA_XDP])
        shown = {}
        for k, v in sorted(xdp.items()):
            val = int.from_bytes(v, "little")
            shown[k] = ids.setdefault(val, f"id{len(ids)}") if k != nl.IFLA_XDP_ATTACHED else val
        return ("link", ifm.ifi_index, tb[nl.IFLA_IFNAME], flags & nl.NLM_F_MULTI, shown)
    return ("other", typ, flags & nl.NLM_F_MULTI)


def scenario(b, route) -> list:
    progs = [calls.prog_load(b, ProgType.XDP, assemble_insns(
        [BPF_MOV64_IMM(0, XdpAction.PASS), BPF_EXIT_INSN()])) for _ in range(2)]
    sock_filter = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble_insns(
        [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]))
    p1, p2 = progs
    ids: dict = {}
    for fd in progs:           # id0, id1: the two programs, in load order
        ids.setdefault(calls.obj_get_info_by_fd(b, fd, "prog")[0].id, f"id{len(ids)}")
    req = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    steps = [
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p1, SKB)),
        (nl.RTM_GETLINK, nl.NLM_F_REQUEST, ifinfo(LO)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p2, SKB | NOEXIST)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, sock_filter, SKB)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, 999, SKB)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p2, SKB | REPLACE)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p2, SKB | REPLACE, expected=p2)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p2, SKB | REPLACE, expected=p1)),
        (nl.RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, ifinfo(LO)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p1, DRV)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p1, 1 << 8)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p1, SKB | DRV)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, p1, SKB, extra=nl.nla_put(nl.IFLA_XDP_ATTACHED, b"\1"))),
        (nl.RTM_SETLINK, req, setlink_xdp(999999, p1, SKB)),
        (nl.RTM_SETLINK, req, ifinfo(0)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, -1, SKB)),
        (nl.RTM_GETLINK, nl.NLM_F_REQUEST, ifinfo(LO)),
        (nl.RTM_SETLINK, req, setlink_xdp(LO, flags=SKB)),       # flags without an fd: no-op
    ]
    out = []
    for seq, (typ, flags, payload) in enumerate(steps, start=1):
        replies = route.talk(nl.nlmsg(typ, flags, seq, 0, payload))
        out.append([decode(m, route.portid, seq, ids) for m in replies])
    # a dump: lo's entry as every other device's is MULTI, then DONE
    dump = route.talk(nl.nlmsg(nl.RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 99, 0, ifinfo(0)))
    decoded = [decode(m, route.portid, 99, ids) for m in dump]
    out.append([d for d in decoded if d[0] != "link" or d[1] == LO] if decoded[-1] == ("other", nl.NLMSG_DONE, nl.NLM_F_MULTI) else decoded)
    for fd in (p1, p2, sock_filter):
        b.close(fd)
    return out


def _detach_real():
    r = HostRoute()
    try:
        r.talk(nl.nlmsg(nl.RTM_SETLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1, 0, setlink_xdp(LO, -1, SKB)))
    finally:
        r.close()


def test_rtnetlink_xdp_attach_replace_detach_and_dumps(both):
    fake, host = both
    got_fake = scenario(fake, FakeRoute(fake.kern))
    route = HostRoute()
    try:
        got_host = scenario(host, route)
    finally:
        route.close()
        _detach_real()
    assert got_fake == got_host
    assert got_host[0] == [("ack", 0, nl.NLM_F_CAPPED, "")]


def test_rtnetlink_setlink_without_net_admin_is_eperm_but_getlink_works(kernel):
    """rtnetlink_rcv_msg(): changes need CAP_NET_ADMIN, GET requests do not."""
    nobody = kernel.spawn(creds=NOBODY)
    nlsk = NetlinkSock(kernel, portid=7)
    set_req = nl.nlmsg(nl.RTM_SETLINK, nl.NLM_F_REQUEST, 1, 0, setlink_xdp(LO, 3, SKB))
    assert decode(nlsk.rcv(nobody, set_req)[0], 7, 1, {})[:2] == ("ack", -Errno.EPERM)
    get_req = nl.nlmsg(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 2, 0, ifinfo(LO))
    link = decode(nlsk.rcv(nobody, get_req)[0], 7, 2, {})
    assert link == ("link", LO, b"lo\0", 0, {nl.IFLA_XDP_ATTACHED: nl.XDP_ATTACHED_NONE})


def test_rtnetlink_tc_messages_reach_the_tc_layer(kernel):
    """RTM_NEWQDISC goes to fakekernel/net/sched (tests/differential/test_tc_netlink.py):
    a tcmsg naming no device is ENODEV, as tc_modify_qdisc() answers."""
    nlsk = NetlinkSock(kernel, portid=7, ext_ack=True)
    req = nl.nlmsg(nl.RTM_NEWQDISC, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1, 0, bytes(20))
    kind, err, _, msg = decode(nlsk.rcv(kernel.current, req)[0], 7, 1, {})
    assert (kind, err, msg) == ("ack", -Errno.ENODEV, "")


def test_rtnetlink_truncated_message_is_ignored(kernel):
    """netlink_rcv_skb(): a header claiming more than was sent ends the datagram silently."""
    nlsk = NetlinkSock(kernel, portid=7)
    msg = nl.nlmsg(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 1, 0, ifinfo(LO))
    assert nlsk.rcv(kernel.current, msg[:-4]) == []
    assert nlsk.rcv(kernel.current, b"\xff" * 3) == []
