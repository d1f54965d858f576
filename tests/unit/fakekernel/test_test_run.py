"""BPF_PROG_TEST_RUN for packet programs (fakekernel/test_run.py), hermetic.

Programs are installed directly as the verifier would leave them (loads of data /
data_end / data_meta already turned into 64-bit loads of the kernel ctx's pointer slots),
so these tests run without PROG_LOAD; the call itself goes through `Kernel.bpf`.  The
expected values are the ones measured on Linux 6.18 (tests/differential has the same
scenarios against the real kernel).
"""
from __future__ import annotations

import itertools

import pytest

from backends import FakeBackend
from fakekernel import Kernel
from fakekernel.bpf.prog import BpfProg
from fakekernel.bpf_types import PROG_TYPES
from fakekernel.verifier.fixups import convert_ctx_insns
from fakekernel.bpf.ops import ProgOps, ProgTypeDef, VerifierOps
from fakekernel.net.skbuff import SKB_PTR_SLOTS, SkBuff, eth_type_trans
from fakekernel.net.netdev import LOOPBACK
from fakekernel.net.xdp import XDP_PTR_SLOTS
from fakekernel.syscall import fdget
from fakekernel.test_run import (bpf_prog_test_run_not_supported, bpf_prog_test_run_skb,
                                 bpf_prog_test_run_xdp, skb_checksum)
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_B, BPF_DW, BPF_H, BPF_JGT, BPF_SUB, BPF_W, AttachType,
                      ProgType, XdpAction)
from uapi.bpf import TestRunFlags as RunFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_EXIT_INSN, BPF_JMP_REG, BPF_LD_ABS,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

SKB = "struct __sk_buff"
XMD = "struct xdp_md"
SKF_LL_OFF = -0x200000
SKB_TYPES = (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.CGROUP_SKB)
KPROBE_TYPE = ProgType.KPROBE


def O(field: str) -> int:
    return ffi.offsetof(SKB, field)


def X(field: str) -> int:
    return ffi.offsetof(XMD, field)


def _typedef(test_run):
    ops = VerifierOps(get_func_proto=lambda fid, prog: None, is_valid_access=lambda *a: True)
    return ProgTypeDef(verifier_ops=ops, prog_ops=ProgOps(test_run=test_run), uapi_ctx="", kern_ctx="")


_RUNNERS = {ProgType.XDP: bpf_prog_test_run_xdp, KPROBE_TYPE: bpf_prog_test_run_not_supported,
            **{t: bpf_prog_test_run_skb for t in SKB_TYPES}}


@pytest.fixture
def fk(fake):
    """A FakeBackend plus `load(type, insns)` that installs an already-verified program."""
    kern = fake.kern

    def load(prog_type, insns, eat=0, ifindex=0):
        prog = BpfProg(kern=kern, type=prog_type, expected_attach_type=eat, insns=b"",
                       len=len(insns), xlated=list(insns), ops=_typedef(_RUNNERS[prog_type]))
        # the verifier's ctx rewrites (uapi field offsets -> struct sk_buff / xdp_buff)
        prog.xlated = convert_ctx_insns(prog, PROG_TYPES[prog_type].verifier_ops, prog.xlated)
        prog.aux.ifindex = ifindex
        prog.aux.id = kern.prog_idr.alloc_cyclic(prog)
        fd = fdget.bpf_prog_new_fd(kern, kern.current, prog)
        fake.fds.append(fd)
        return fd

    fake.load = load
    return fake


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def field_prog(field, size=BPF_W):
    return [BPF_LDX_MEM(size, 0, 1, O(field)), BPF_EXIT_INSN()]


def pkt(n=64, proto=0x0800, dst=bytes(6)):
    eth = dst + bytes(range(7, 13)) + proto.to_bytes(2, "big")
    ip = bytes([0x45, 0, 0, (n - 14) & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    body = bytes((i * 7) & 0xFF for i in range(max(0, n - 34)))
    return (eth + ip + body)[:n]


def skb_ctx(**fields) -> bytes:
    c = ffi.new(SKB + " *")
    for k, v in fields.items():
        if k == "cb":
            for i, x in enumerate(v):
                c.cb[i] = x
        else:
            setattr(c, k, v)
    return bytes(ffi.buffer(c))


def xdp_md(**fields) -> bytes:
    c = ffi.new(XMD + " *")
    for k, v in fields.items():
        setattr(c, k, v)
    return bytes(ffi.buffer(c))


def run(b, fd, data=None, **kw):
    return calls.prog_test_run(b, fd, data, strict=False, **kw)


def field(buf: bytes, name: str, ctype=SKB) -> int:
    c = ffi.new(ctype + " *")
    ffi.memmove(c, buf, min(len(buf), ffi.sizeof(ctype)))
    return getattr(c, name)


# ---------------------------------------------------------------- skb: packet and results

def test_prog_test_run_sched_cls_sees_and_returns_the_whole_frame(fk):
    fd = fk.load(ProgType.SCHED_CLS, field_prog("len"))
    p = pkt(64)
    r = run(fk, fd, p, data_size_out=128)
    assert (r.ret, r.retval, r.data_size_out, r.data_out[:64]) == (0, 64, 64, p)


@pytest.mark.parametrize("prog_type", [ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB])
def test_prog_test_run_l3_types_skip_the_mac_header_and_zero_it(fk, prog_type):
    fd = fk.load(prog_type, field_prog("len"))
    p = pkt(64)
    r = run(fk, fd, p, data_size_out=128)
    assert (r.ret, r.retval, r.data_size_out) == (0, 50, 64)
    assert r.data_out[:64] == bytes(14) + p[14:]


def test_prog_test_run_repeat_zero_runs_once_and_state_persists_across_repeats(fk):
    inc = [BPF_LDX_MEM(BPF_W, 2, 1, O("mark")), BPF_ALU64_IMM(BPF_ADD, 2, 1),
           BPF_STX_MEM(BPF_W, 1, 2, O("mark")), BPF_MOV64_REG(0, 2), BPF_EXIT_INSN()]
    fd = fk.load(ProgType.SCHED_CLS, inc)
    assert run(fk, fd, pkt(), repeat=0).retval == 1
    r = run(fk, fd, pkt(), repeat=5, ctx_size_out=192)
    assert (r.retval, field(r.ctx_out, "mark")) == (5, 5)


def test_prog_test_run_duration_is_the_mean_of_the_kernel_clock():
    ticks = itertools.count(0, 1000)
    b = FakeBackend(Kernel(clock=lambda: next(ticks)))
    kern = b.kern
    prog = BpfProg(kern=kern, type=ProgType.SCHED_CLS, expected_attach_type=0, insns=b"",
                   xlated=ret(0), ops=_typedef(bpf_prog_test_run_skb))
    prog.aux.id = kern.prog_idr.alloc_cyclic(prog)
    fd = fdget.bpf_prog_new_fd(kern, kern.current, prog)
    assert run(b, fd, pkt(), repeat=4).duration == 1000 // 4      # two clock reads, 1000 ns apart
    assert kern.close(fd) == 0


def test_prog_test_run_data_out_smaller_than_packet_enospc(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(7))
    p = pkt(64)
    r = run(fk, fd, p, data_size_out=10)
    assert (r.ret, r.retval, r.data_size_out, r.data_out) == (-Errno.ENOSPC, 7, 64, p[:10])


def test_prog_test_run_data_size_out_without_buffer_enospc(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(7))
    _, a = calls.raw(fk, calls.BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=fd,
                     test__data_in=pkt(), test__data_size_in=64, test__data_size_out=10)
    assert (_, a.get("test.data_size_out"), a.get("test.retval")) == (-Errno.ENOSPC, 64, 7)


@pytest.mark.parametrize("n, expect", [(0, -Errno.EINVAL), (13, -Errno.EINVAL), (14, 0),
                                       (3712, 0), (3713, -Errno.EINVAL)])
def test_prog_test_run_skb_data_size_limits(fk, n, expect):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    assert run(fk, fd, pkt(n, proto=0x1234) if n else None).ret == expect


@pytest.mark.parametrize("proto, n, expect", [(0x0800, 33, -Errno.EINVAL), (0x0800, 34, 0),
                                              (0x86DD, 53, -Errno.EINVAL), (0x86DD, 54, 0)])
def test_prog_test_run_skb_short_ip_headers_einval(fk, proto, n, expect):
    fd = fk.load(ProgType.SOCKET_FILTER, ret(0))
    assert run(fk, fd, pkt(n, proto=proto)).ret == expect


@pytest.mark.parametrize("kw", [dict(flags=RunFlags.TEST_RUN_ON_CPU),
                                dict(flags=RunFlags.TEST_XDP_LIVE_FRAMES),
                                dict(flags=8), dict(cpu=1), dict(batch_size=1)])
def test_prog_test_run_skb_bad_flags_cpu_batch_einval(fk, kw):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    assert run(fk, fd, pkt(), **kw).ret == -Errno.EINVAL


def test_prog_test_run_kprobe_enotsupp(fk):
    fd = fk.load(KPROBE_TYPE, ret(0))
    assert run(fk, fd, pkt()).ret == -Errno.ENOTSUPP


# ---------------------------------------------------------------- skb: the ctx a program sees

@pytest.mark.parametrize("dst, expect", [(bytes(6), 0), (b"\xff" * 6, 2), (b"\x01\0\x5e\0\0\1", 2),
                                         (b"\x02\0\0\0\0\1", 3)])
def test_prog_test_run_pkt_type_against_lo_addresses(fk, dst, expect):
    fd = fk.load(ProgType.SCHED_CLS, field_prog("pkt_type"))
    assert run(fk, fd, pkt(dst=dst)).retval == expect


@pytest.mark.parametrize("data, expect", [(pkt(), 0x0008), (pkt(80, 0x86DD), 0xDD86),
                                          (pkt(64, 0x0806), 0x0608),
                                          (pkt(64, 0x40)[:14] + b"\xff\xff" + bytes(48), 0x0100),
                                          (pkt(64, 0x40)[:14] + b"\xaa\xaa" + bytes(48), 0x0400)])
def test_prog_test_run_protocol_from_ethertype(fk, data, expect):
    fd = fk.load(ProgType.SCHED_CLS, field_prog("protocol"))
    assert run(fk, fd, data).retval == expect


def test_prog_test_run_default_field_values(fk):
    got = {}
    for name in ("ifindex", "ingress_ifindex", "mark", "priority", "queue_mapping", "hash",
                 "tc_index", "tc_classid", "napi_id", "vlan_present", "gso_segs", "wire_len"):
        fd = fk.load(ProgType.SCHED_CLS, field_prog(name))
        got[name] = run(fk, fd, pkt()).retval
        fk.close(fd)
    assert got == {"ifindex": 1, "ingress_ifindex": 0, "mark": 0, "priority": 0,
                   "queue_mapping": 0, "hash": 0, "tc_index": 0, "tc_classid": 0, "napi_id": 0,
                   "vlan_present": 0, "gso_segs": 0, "wire_len": 0}


def test_prog_test_run_wire_len_defaults_to_len_when_a_ctx_exists(fk):
    fd = fk.load(ProgType.SCHED_CLS, field_prog("wire_len"))
    assert run(fk, fd, pkt(), ctx_size_out=192).retval == 64


def test_prog_test_run_cgroup_skb_sees_the_dummy_sock(fk):
    got = {}
    for name in ("family", "local_ip4", "remote_ip4", "local_port", "remote_port"):
        fd = fk.load(ProgType.CGROUP_SKB, field_prog(name))
        got[name] = run(fk, fd, pkt()).retval
        fk.close(fd)
    assert got == {"family": 2, "local_ip4": 0x0100000A, "remote_ip4": 0x0200000A,
                   "local_port": 0, "remote_port": 0}


def test_prog_test_run_sk_pointer_reads_bpf_sock(fk):
    # r2 = skb->sk; r0 = sk->state (bpf_sock.state)
    prog = [BPF_LDX_MEM(BPF_DW, 2, 1, O("sk")), BPF_MOV64_IMM(0, 99),
            BPF_LDX_MEM(BPF_W, 0, 2, ffi.offsetof("struct bpf_sock", "state")), BPF_EXIT_INSN()]
    fd = fk.load(ProgType.SCHED_CLS, prog)
    assert run(fk, fd, pkt()).retval == 7           # TCP_CLOSE


def test_prog_test_run_packet_pointers_cover_the_data(fk):
    prog = [BPF_LDX_MEM(BPF_DW, 2, 1, SKB_PTR_SLOTS["data"]),
            BPF_LDX_MEM(BPF_DW, 0, 1, SKB_PTR_SLOTS["data_end"]),
            BPF_ALU64_REG(BPF_SUB, 0, 2), BPF_EXIT_INSN()]
    for t, expect in ((ProgType.SCHED_CLS, 64), (ProgType.CGROUP_SKB, 50)):
        fd = fk.load(t, prog)
        assert run(fk, fd, pkt()).retval == expect


def test_prog_test_run_ld_abs_reads_network_and_mac_headers(fk):
    fd = fk.load(ProgType.SOCKET_FILTER, [BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_B, 0), BPF_EXIT_INSN()])
    assert run(fk, fd, pkt()).retval == 0x45
    fd = fk.load(ProgType.SOCKET_FILTER, [BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_H, SKF_LL_OFF + 12),
                                          BPF_EXIT_INSN()])
    assert run(fk, fd, pkt()).retval == 0x0800
    fd = fk.load(ProgType.SOCKET_FILTER, [BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_W, 48),
                                          BPF_MOV64_IMM(0, 5), BPF_EXIT_INSN()])
    assert run(fk, fd, pkt()).retval == 0              # past the end: the program returns 0


# ---------------------------------------------------------------- skb: ctx_in / ctx_out

def test_prog_test_run_ctx_in_settable_fields_round_trip(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    ctx_in = skb_ctx(mark=5, priority=6, ingress_ifindex=7, ifindex=1, cb=[1, 2, 3, 4, 5], tstamp=99,
                     wire_len=100, gso_segs=3, gso_size=1400, hwtstamp=77)
    r = run(fk, fd, pkt(), ctx_in=ctx_in, ctx_size_out=192)
    assert (r.ret, r.ctx_size_out, r.ctx_out) == (0, 192, ctx_in)


def test_prog_test_run_ctx_out_only_reports_ifindex_and_wire_len(fk):
    fd = fk.load(ProgType.SOCKET_FILTER, ret(0))
    r = run(fk, fd, pkt(), ctx_size_out=192)
    assert r.ctx_out == skb_ctx(ifindex=1, wire_len=50)


@pytest.mark.parametrize("name", ["len", "pkt_type", "queue_mapping", "protocol", "vlan_present",
                                  "vlan_tci", "vlan_proto", "tc_index", "hash", "tc_classid", "data",
                                  "data_end", "napi_id", "family", "remote_port", "data_meta",
                                  "tstamp_type"])
def test_prog_test_run_ctx_in_unsettable_field_einval(fk, name):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    assert run(fk, fd, pkt(), ctx_in=skb_ctx(**{name: 1})).ret == -Errno.EINVAL


@pytest.mark.parametrize("prog_type, wire_len, expect", [
    (ProgType.SOCKET_FILTER, 49, -Errno.EINVAL), (ProgType.SOCKET_FILTER, 50, 0),
    (ProgType.SCHED_CLS, 63, -Errno.EINVAL), (ProgType.SCHED_CLS, 64, 0),
    (ProgType.SCHED_CLS, 65536, 0), (ProgType.SCHED_CLS, 65537, -Errno.EINVAL)])
def test_prog_test_run_ctx_in_wire_len_bounds(fk, prog_type, wire_len, expect):
    fd = fk.load(prog_type, ret(0))
    assert run(fk, fd, pkt(), ctx_in=skb_ctx(wire_len=wire_len)).ret == expect


def test_prog_test_run_ctx_in_gso_segs_and_ifindex_checks(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    assert run(fk, fd, pkt(), ctx_in=skb_ctx(gso_segs=65535)).ret == 0
    assert run(fk, fd, pkt(), ctx_in=skb_ctx(gso_segs=65536)).ret == -Errno.EINVAL
    assert run(fk, fd, pkt(), ctx_in=skb_ctx(ifindex=99)).ret == -Errno.ENODEV


def test_prog_test_run_ctx_in_tail_and_short_ctx_out(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    assert run(fk, fd, pkt(), ctx_in=bytes(200)).ret == 0
    assert run(fk, fd, pkt(), ctx_in=bytes(199) + b"\1").ret == -Errno.E2BIG
    r = run(fk, fd, pkt(), ctx_in=bytes(24), ctx_size_out=24)
    assert (r.ret, r.ctx_size_out) == (-Errno.ENOSPC, 192)


def test_prog_test_run_program_writes_reach_ctx_out(fk):
    prog = [BPF_MOV64_IMM(2, 0x11), BPF_STX_MEM(BPF_W, 1, 2, O("mark")),
            BPF_ST_MEM(BPF_W, 1, O("priority"), 0x22), BPF_ST_MEM(BPF_W, 1, O("cb") + 8, 0x33),
            BPF_ST_MEM(BPF_W, 1, O("queue_mapping"), 0x12345)] + ret(0)
    fd = fk.load(ProgType.SCHED_CLS, prog)
    r = run(fk, fd, pkt(), ctx_size_out=192)
    assert (field(r.ctx_out, "mark"), field(r.ctx_out, "priority"), list(field(r.ctx_out, "cb"))) \
        == (0x11, 0x22, [0, 0, 0x33, 0, 0])


def test_prog_test_run_checksum_complete_detects_an_unfixed_write_ebadmsg(fk):
    write = [BPF_LDX_MEM(BPF_DW, 2, 1, SKB_PTR_SLOTS["data"]),
             BPF_LDX_MEM(BPF_DW, 3, 1, SKB_PTR_SLOTS["data_end"]), BPF_MOV64_REG(4, 2),
             BPF_ALU64_IMM(BPF_ADD, 4, 40), BPF_JMP_REG(BPF_JGT, 4, 3, 1),
             BPF_ST_MEM(BPF_B, 2, 30, 0x55)] + ret(0)
    fd = fk.load(ProgType.SCHED_CLS, write)
    assert run(fk, fd, pkt()).ret == 0
    assert run(fk, fd, pkt(), flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE).ret == -Errno.EBADMSG


def test_skb_checksum_is_ones_complement():
    assert skb_checksum(b"\xff\xff\x01\x00") == 1
    assert skb_checksum(b"\x01") == 1


def test_eth_type_trans_pulls_and_classifies():
    skb = SkBuff(head=bytearray(64), data_off=0)
    skb.head[:14] = b"\xff" * 6 + bytes(6) + b"\x86\xdd"
    skb.put(64)
    assert eth_type_trans(skb, LOOPBACK) == 0x86DD
    assert (skb.data_off, skb.len, skb.mac_header, skb.pkt_type) == (14, 50, 0, 2)


# ---------------------------------------------------------------- xdp

XDP_LEN = [BPF_LDX_MEM(BPF_DW, 2, 1, XDP_PTR_SLOTS["data"]),
           BPF_LDX_MEM(BPF_DW, 0, 1, XDP_PTR_SLOTS["data_end"]),
           BPF_ALU64_REG(BPF_SUB, 0, 2), BPF_EXIT_INSN()]
XDP_META = [BPF_LDX_MEM(BPF_DW, 0, 1, XDP_PTR_SLOTS["data"]),
            BPF_LDX_MEM(BPF_DW, 2, 1, XDP_PTR_SLOTS["data_meta"]),
            BPF_ALU64_REG(BPF_SUB, 0, 2), BPF_EXIT_INSN()]


def test_prog_test_run_xdp_pass_round_trip(fk):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    p = pkt(64)
    r = run(fk, fd, p, data_size_out=128)
    assert (r.ret, r.retval, r.data_size_out, r.data_out[:64]) == (0, XdpAction.PASS, 64, p)


def test_prog_test_run_xdp_rxq_fields(fk):
    for name, expect in (("ingress_ifindex", 1), ("rx_queue_index", 0)):
        fd = fk.load(ProgType.XDP, [BPF_LDX_MEM(BPF_W, 0, 1, X(name)), BPF_EXIT_INSN()])
        assert run(fk, fd, pkt()).retval == expect


def test_prog_test_run_xdp_metadata_from_ctx_in(fk):
    fd = fk.load(ProgType.XDP, XDP_META)
    p = bytes(range(64))
    r = run(fk, fd, p, ctx_in=xdp_md(data=8, data_end=64), ctx_size_out=24, data_size_out=100)
    assert (r.ret, r.retval, r.data_size_out, r.data_out[:64]) == (0, 8, 64, p)
    assert (field(r.ctx_out, "data", XMD), field(r.ctx_out, "data_end", XMD)) == (8, 64)


@pytest.mark.parametrize("meta, expect", [(4, 0), (33, -Errno.EINVAL), (216, 0), (220, -Errno.EINVAL)])
def test_prog_test_run_xdp_metadata_size_limits(fk, meta, expect):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    assert run(fk, fd, bytes(400), ctx_in=xdp_md(data=meta, data_end=300)).ret == expect


@pytest.mark.parametrize("md", [dict(data_meta=1, data_end=64), dict(data_end=65),
                                dict(data=10, data_end=8), dict(egress_ifindex=1, data_end=64),
                                dict(rx_queue_index=1, data_end=64),
                                dict(ingress_ifindex=1, rx_queue_index=1, data_end=64)])
def test_prog_test_run_xdp_bad_ctx_in_einval(fk, md):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    assert run(fk, fd, pkt(), ctx_in=xdp_md(**md)).ret == -Errno.EINVAL


def test_prog_test_run_xdp_unknown_ingress_ifindex_enodev(fk):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    assert run(fk, fd, pkt(), ctx_in=xdp_md(ingress_ifindex=99, data_end=64)).ret == -Errno.ENODEV


def test_prog_test_run_xdp_fragments_beyond_linear_part(fk):
    fd = fk.load(ProgType.XDP, XDP_LEN)
    p = bytes(i & 0xFF for i in range(5000))
    r = run(fk, fd, p, data_size_out=8000)
    assert (r.ret, r.retval, r.data_size_out, r.data_out[:5000]) == (0, 3520, 5000, p)
    r = run(fk, fd, pkt(), ctx_in=xdp_md(data_end=40), data_size_out=100)
    assert (r.retval, r.data_size_out, r.data_out[:64]) == (40, 64, pkt())
    assert run(fk, fd, bytes(73152)).ret == 0
    assert run(fk, fd, bytes(73153)).ret == -Errno.ENOMEM


def test_prog_test_run_xdp_fragments_larger_than_data_out_enospc(fk):
    fd = fk.load(ProgType.XDP, XDP_LEN)
    r = run(fk, fd, bytes(5000), data_size_out=1000)
    assert (r.ret, r.data_size_out, r.retval) == (-Errno.ENOSPC, 1000, 0)     # nothing written back


@pytest.mark.parametrize("kw, expect", [
    (dict(flags=RunFlags.TEST_RUN_ON_CPU), -Errno.EINVAL),
    (dict(flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE), -Errno.EINVAL),
    (dict(cpu=1), 0), (dict(batch_size=1), -Errno.EINVAL),
    (dict(flags=RunFlags.TEST_XDP_LIVE_FRAMES, batch_size=257), -Errno.E2BIG),
    (dict(flags=RunFlags.TEST_XDP_LIVE_FRAMES, batch_size=256), 0),
    (dict(flags=RunFlags.TEST_XDP_LIVE_FRAMES, ctx_in=xdp_md(data_end=64), data_size_out=100),
     -Errno.EINVAL),
])
def test_prog_test_run_xdp_flags_cpu_batch(fk, kw, expect):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    assert run(fk, fd, pkt(), **kw).ret == expect


def test_prog_test_run_xdp_live_frames_run_but_report_no_retval(fk):
    fd = fk.load(ProgType.XDP, XDP_LEN)
    r = run(fk, fd, pkt(), flags=RunFlags.TEST_XDP_LIVE_FRAMES, repeat=3, data_size_out=100)
    assert (r.ret, r.retval, r.data_size_out, r.data_out[:64]) == (0, 0, 64, pkt())
    assert run(fk, fd, bytes(3408), flags=RunFlags.TEST_XDP_LIVE_FRAMES).ret == 0
    assert run(fk, fd, bytes(3409), flags=RunFlags.TEST_XDP_LIVE_FRAMES).ret == -Errno.EINVAL


@pytest.mark.parametrize("eat", [AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP])
def test_prog_test_run_xdp_devmap_cpumap_programs_einval(fk, eat):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS), eat=eat)
    assert run(fk, fd, pkt()).ret == -Errno.EINVAL


def test_prog_test_run_xdp_too_short_einval(fk):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    assert run(fk, fd, pkt(13)).ret == -Errno.EINVAL
    assert run(fk, fd, pkt(14)).ret == 0                  # no IP length check for XDP


def test_prog_test_run_bad_user_pointers_efault(fk):
    fd = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    for kw in (dict(test__data_in=8, test__data_size_in=64),
               dict(test__data_in=pkt(), test__data_size_in=64, test__data_out=8),
               dict(test__data_in=pkt(), test__data_size_in=64, test__ctx_out=8, test__ctx_size_out=24)):
        assert calls.raw(fk, calls.BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=fd, **kw)[0] \
            == -Errno.EFAULT
    cls = fk.load(ProgType.SCHED_CLS, ret(0))
    # a short ctx_out whose copy faults reports the ENOSPC it was going to return
    assert calls.raw(fk, calls.BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=cls,
                     test__data_in=pkt(), test__data_size_in=64, test__ctx_out=8,
                     test__ctx_size_out=24)[0] == -Errno.ENOSPC


def test_prog_test_run_leaves_no_regions_mapped(fk):
    fd = fk.load(ProgType.SCHED_CLS, ret(0))
    before = len(fk.kern.mem.regions)
    run(fk, fd, pkt(), ctx_size_out=192)
    x = fk.load(ProgType.XDP, ret(XdpAction.PASS))
    run(fk, x, bytes(5000), ctx_in=xdp_md(data=8, data_end=100), ctx_size_out=24)
    assert len(fk.kern.mem.regions) == before
