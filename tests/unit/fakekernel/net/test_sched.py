"""fakekernel/net/sched: clsact + cls_bpf through NetlinkSock, and the filters at run time —
tc_run after tcx on ingress and egress, direct-action verdicts, the newest-first order of a
proto's filters, program references, device removal and what is not emulated."""
from __future__ import annotations

import pytest

from fakekernel.net import tcx
from fakekernel.net.rtnetlink import NetlinkSock
from fakekernel.net.sched.sch_ingress import has_filters
from fakekernel.task import NOBODY
from uapi import calls
from uapi import netlink as nl
from uapi import pkt_sched as ps
from uapi.asm import assemble
from uapi.bpf import AttachType, BpfCmd, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi

LO = 1
ETH_P_ALL_BE = 0x0300
ING = ps.TC_H_MAKE(ps.TC_H_CLSACT, ps.TC_H_MIN_INGRESS)
EGR = ps.TC_H_MAKE(ps.TC_H_CLSACT, ps.TC_H_MIN_EGRESS)
CREATE = nl.NLM_F_REQUEST | nl.NLM_F_ACK | ps.NLM_F_CREATE
MARK = ffi.offsetof("struct __sk_buff", "mark")
FRAME = (bytes(6) + bytes(6) + b"\x08\x00"
         + bytes.fromhex("4500001c00000000401100007f0000017f000001") + bytes.fromhex("1f901f9000080000"))


def tcmsg(ifindex=LO, handle=0, parent=0, info=0) -> bytes:
    t = nl.ffi.new("struct tcmsg *", {"tcm_ifindex": ifindex, "tcm_handle": handle,
                                      "tcm_parent": parent, "tcm_info": info})
    return bytes(nl.ffi.buffer(t))


def bpf(fd: int, da: bool = True, extra: bytes = b"") -> bytes:
    opts = nl.nla_put(ps.TCA_BPF_FD, fd.to_bytes(4, "little"))
    if da:
        opts += nl.nla_put(ps.TCA_BPF_FLAGS, ps.TCA_BPF_FLAG_ACT_DIRECT.to_bytes(4, "little"))
    return nl.nla_put(ps.TCA_KIND, b"bpf\0") + nl.nla_put(ps.TCA_OPTIONS, opts + extra)


def talk(kern, mtype, flags, body, task=None) -> tuple[int, str]:
    """(ack errno, extack message) of one request."""
    sk = NetlinkSock(kern, portid=7, ext_ack=True)
    replies = sk.rcv(task or kern.current, nl.nlmsg(mtype, flags, 1, 0, body))
    ack = replies[-1][nl.NLMSG_HDRLEN:]
    err = -int.from_bytes(ack[:4], "little", signed=True)
    tlv = nl.nla_parse(ack[4 + len(body) + nl.NLMSG_HDRLEN:]) if err else {}
    return err, (tlv or {}).get(nl.NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode()


def clsact(kern, ifindex=LO, qkind=b"clsact"):
    assert talk(kern, nl.RTM_NEWQDISC, CREATE, tcmsg(ifindex, 0, ps.TC_H_CLSACT)
                + nl.nla_put(ps.TCA_KIND, qkind + b"\0")) == (0, "")


def add_filter(kern, fd, parent=ING, prio=1, handle=1, da=True, ifindex=LO):
    return talk(kern, nl.RTM_NEWTFILTER, CREATE | ps.NLM_F_EXCL,
                tcmsg(ifindex, handle, parent, (prio << 16) | ETH_P_ALL_BE) + bpf(fd, da))


def counter(kern, m: int, key: int, ret: int) -> int:
    return calls.prog_load(kern, ProgType.SCHED_CLS, assemble(
        f"*(u32 *)(r10 -4) = {key}\nr2 = r10\nr2 += -4\nr1 = map[id:{m}]\ncall bpf_map_lookup_elem#1\n"
        f"if r0 == 0x0 goto pc+2\nr1 = 1\nlock *(u64 *)(r0 +0) += r1\nr0 = {ret}\nexit"))


def counts(kern, m: int, n: int) -> list[int]:
    return [int.from_bytes(calls.map_lookup_elem(kern, m, k.to_bytes(4, "little"), 8), "little")
            for k in range(n)]


@pytest.fixture
def arr(kernel):
    m = calls.map_create(kernel, MapType.ARRAY, 4, 8, 4)
    yield m
    kernel.close(m)


def test_clsact_ingress_da_shot_drops_before_the_stack(kernel, arr):
    fd = counter(kernel, arr, 0, ps.TC_ACT_SHOT)
    clsact(kernel)
    assert add_filter(kernel, fd) == (0, "")
    res = kernel.world.net.receive(LO, FRAME)
    assert res.tcx_verdict == ps.TC_ACT_SHOT and not res.delivered
    assert counts(kernel, arr, 1) == [1]
    kernel.close(fd)


def test_tcx_verdict_comes_first_tc_runs_on_next(kernel, arr):
    pass_ = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble("r0 = 0\nexit"))
    nxt = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble("r0 = -1\nexit"))
    fd = counter(kernel, arr, 0, ps.TC_ACT_SHOT)
    clsact(kernel)
    add_filter(kernel, fd)
    for prog, want, seen in ((pass_, tcx.TCX_PASS, 0), (nxt, ps.TC_ACT_SHOT, 1)):
        r, _ = calls.raw(kernel, BpfCmd.PROG_ATTACH, "expected_revision", target_ifindex=LO,
                         attach_bpf_fd=prog, attach_type=AttachType.TCX_INGRESS)
        assert r == 0
        assert kernel.world.net.receive(LO, FRAME).tcx_verdict == want
        assert counts(kernel, arr, 1) == [seen]
        calls.raw(kernel, BpfCmd.PROG_DETACH, "expected_revision", target_ifindex=LO,
                  attach_bpf_fd=prog, attach_type=AttachType.TCX_INGRESS)
    for f in (pass_, nxt, fd):
        kernel.close(f)


def test_filters_of_one_proto_run_newest_first(kernel, arr):
    first = counter(kernel, arr, 0, ps.TC_ACT_OK)
    second = counter(kernel, arr, 1, ps.TC_ACT_UNSPEC)        # newest: runs first, goes on
    clsact(kernel)
    assert add_filter(kernel, first, handle=1) == (0, "")
    assert add_filter(kernel, second, handle=2) == (0, "")
    assert kernel.world.net.receive(LO, FRAME).delivered is False
    assert counts(kernel, arr, 2) == [1, 1]
    kernel.close(first)
    kernel.close(second)


def test_non_da_zero_is_no_match_and_classid_result_is_ok(kernel, arr):
    nomatch = counter(kernel, arr, 0, 0)
    classid = counter(kernel, arr, 1, 0x10002)
    clsact(kernel)
    add_filter(kernel, nomatch, prio=1, da=False)
    add_filter(kernel, classid, prio=2, da=False)
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == ps.TC_ACT_OK
    assert counts(kernel, arr, 2) == [1, 1]
    kernel.close(nomatch)
    kernel.close(classid)


def test_egress_filters_run_in_sch_handle_egress(kernel, arr):
    fd = counter(kernel, arr, 2, ps.TC_ACT_SHOT)
    clsact(kernel)
    add_filter(kernel, fd, parent=EGR)
    dev = kernel.world.net.dev_get_by_index(LO)
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == ps.TC_ACT_UNSPEC   # no verdict
    assert tcx.sch_handle_egress(kernel, dev, FRAME)[0] == ps.TC_ACT_SHOT
    assert counts(kernel, arr, 3) == [0, 0, 1]
    kernel.close(fd)


def test_ingress_qdisc_filters_run_on_ingress(kernel, arr):
    fd = counter(kernel, arr, 0, ps.TC_ACT_SHOT)
    clsact(kernel, qkind=b"ingress")
    assert add_filter(kernel, fd, parent=ps.TC_H_MAKE(ps.TC_H_INGRESS, 0)) == (0, "")
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == ps.TC_ACT_SHOT
    kernel.close(fd)


def test_filter_keeps_program_until_deleted(kernel):
    fd = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble("r0 = 2\nexit"))
    clsact(kernel)
    add_filter(kernel, fd)
    prog = kernel.current.files.fdget(fd).private_data
    kernel.close(fd)
    assert prog in kernel.world.attached_objects()
    assert kernel.world.net.receive(LO, FRAME).tcx_verdict == ps.TC_ACT_SHOT
    assert talk(kernel, nl.RTM_DELQDISC, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                tcmsg(LO, 0, ps.TC_H_CLSACT)) == (0, "")
    assert prog not in kernel.world.attached_objects()
    assert not has_filters(kernel.world.net, kernel.world.net.dev_get_by_index(LO), ps.TC_H_MIN_INGRESS)


def test_device_removal_releases_filters(kernel):
    net = kernel.world.net
    ifindex = net.add_device("fkt0", "veth")
    fd = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble("r0 = 0\nexit"))
    clsact(kernel, ifindex)
    assert add_filter(kernel, fd, ifindex=ifindex) == (0, "")
    kernel.close(fd)
    net.del_device(ifindex)
    assert not kernel.world.attached_objects()
    assert ifindex not in net.sched


@pytest.mark.parametrize("extra, errno, msg", [
    (nl.nla_put(ps.TCA_BPF_FLAGS_GEN, ps.TCA_CLS_FLAGS_SKIP_SW.to_bytes(4, "little")),
     Errno.EOPNOTSUPP, ""),
    (nl.nla_put(ps.TCA_BPF_ACT, b""), Errno.EOPNOTSUPP, "fakekernel: tc actions are not emulated"),
])
def test_not_emulated_options_eopnotsupp(kernel, extra, errno, msg):
    fd = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble("r0 = 0\nexit"))
    clsact(kernel)
    assert talk(kernel, nl.RTM_NEWTFILTER, CREATE, tcmsg(LO, 1, ING, (1 << 16) | ETH_P_ALL_BE)
                + bpf(fd, extra=extra)) == (errno, msg)
    assert not kernel.world.attached_objects()
    kernel.close(fd)


def test_classic_bpf_filter_eopnotsupp(kernel):
    clsact(kernel)
    ops = nl.nla_put(ps.TCA_BPF_OPS_LEN, (1).to_bytes(2, "little")) + \
        nl.nla_put(ps.TCA_BPF_OPS, bytes.fromhex("0600000000000000"))        # ret #0
    body = tcmsg(LO, 1, ING, (1 << 16) | ETH_P_ALL_BE) + nl.nla_put(ps.TCA_KIND, b"bpf\0") + \
        nl.nla_put(ps.TCA_OPTIONS, ops)
    assert talk(kernel, nl.RTM_NEWTFILTER, CREATE, body) == \
        (Errno.EOPNOTSUPP, "fakekernel: classic BPF cls_bpf filters are not emulated")


def test_unprivileged_changes_eperm(kernel):
    task = kernel.spawn(creds=NOBODY)
    assert talk(kernel, nl.RTM_NEWQDISC, CREATE, tcmsg(LO, 0, ps.TC_H_CLSACT)
                + nl.nla_put(ps.TCA_KIND, b"clsact\0"), task=task)[0] == Errno.EPERM


from hypothesis import given, settings, strategies as st     # noqa: E402

_TYPES = [nl.RTM_NEWQDISC, nl.RTM_DELQDISC, nl.RTM_GETQDISC, nl.RTM_NEWTFILTER,
          nl.RTM_DELTFILTER, nl.RTM_GETTFILTER, ps.RTM_GETTCLASS]
_ATTR = st.builds(lambda t, p: nl.nla_put(t, p), st.integers(0, 20),
                  st.one_of(st.binary(max_size=12), st.sampled_from([b"bpf\0", b"clsact\0", b"ingress\0"])))
_BPF_ATTR = st.builds(lambda t, p: nl.nla_put(t, p), st.integers(0, 12), st.binary(max_size=12))


@settings(max_examples=300, deadline=None)
@given(mtype=st.sampled_from(_TYPES), flags=st.integers(0, 0xFFF),
       ifindex=st.sampled_from([0, 1, 1, 2, -1]),
       handle=st.sampled_from([0, 1, 0xFFFF0000, 0x10000, 0xFFFFFFFF]),
       parent=st.sampled_from([0, ps.TC_H_CLSACT, ING, EGR, ps.TC_H_ROOT, 0x10001]),
       info=st.sampled_from([0, (1 << 16) | ETH_P_ALL_BE, 0xC0000000, 0x8, 0xFFFFFFFF]),
       attrs=st.lists(_ATTR, max_size=4), opts=st.lists(_BPF_ATTR, max_size=4),
       cut=st.integers(0, 64))
def test_malformed_tc_requests_answer_errno_not_exceptions(mtype, flags, ifindex, handle, parent,
                                                           info, attrs, opts, cut):
    from fakekernel.kernel import Kernel
    kern = Kernel()
    fd = calls.prog_load(kern, ProgType.SCHED_CLS, assemble("r0 = 0\nexit"))
    clsact(kern)
    add_filter(kern, fd)
    t = nl.ffi.new("struct tcmsg *", {"tcm_ifindex": ifindex, "tcm_handle": handle,
                                      "tcm_parent": parent, "tcm_info": info})
    body = bytes(nl.ffi.buffer(t)) + b"".join(attrs) + nl.nla_put(ps.TCA_OPTIONS, b"".join(opts))
    body = body[:len(body) - cut] if cut < len(body) else body[:cut]
    sk = NetlinkSock(kern, portid=7, ext_ack=True)
    replies = sk.rcv(kern.current, nl.nlmsg(mtype, flags | nl.NLM_F_REQUEST, 1, 0, body))
    assert all(isinstance(r, bytes) and len(r) >= nl.NLMSG_HDRLEN for r in replies)
    kern.close(fd)
    kern.world.net.del_device(kern.world.net.add_device("fkt9", "veth"))
