"""The kernel-side ctx images (struct sk_buff / xdp_buff) and the rewrites that read them:
fakekernel/progs/skb_convert.py, progs/xdp.py, net/skbuff.py, net/xdp.py, verifier/fixups.py.

Each rewritten program runs on the interpreter against an image built from a simulated skb or
XDP buffer, so a field the rewrite and the image disagree on shows up as a wrong value.
"""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel import kernel_layout as kl
from fakekernel.bpf.core import bpf_prog_run
from fakekernel.bpf.prog import BpfProg
from fakekernel.bpf_types import PROG_TYPES
from fakekernel.kernel_layout import KImage
from fakekernel.net.netdev import LOOPBACK
from fakekernel.net.skbuff import Sock, SkBuff, build_skb_ctx, unmap_skb_ctx
from fakekernel.net.xdp import XdpBuff, build_xdp_ctx, unmap_xdp_ctx
from fakekernel.progs.skb_convert import BPF_REG_AX, MIN_NAPI_ID, PKT_TYPE_MAX
from fakekernel.verifier.fixups import convert_ctx_insns
from uapi.bpf import BPF_B, BPF_DW, BPF_H, BPF_W, AttachType, ProgType
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_LDX_MEM, BPF_STX_MEM, Insn

S, XMD = "struct __sk_buff", "struct xdp_md"


def o(field, *index):
    return ffi.offsetof(S, field, *index)


@pytest.fixture
def kern():
    k = Kernel()
    yield k
    k.shutdown()


def _run(kern, prog_type, insns, ctx_obj, build, unmap, eat=0):
    prog = BpfProg(kern=kern, type=prog_type, expected_attach_type=eat, insns=b"", len=len(insns),
                   ops=PROG_TYPES[prog_type])
    prog.xlated = convert_ctx_insns(prog, PROG_TYPES[prog_type].verifier_ops, list(insns))
    kctx, _ = build(kern, ctx_obj)
    try:
        return bpf_prog_run(kern, prog, kctx.base, ctx=ctx_obj), prog.xlated
    finally:
        if hasattr(ctx_obj, "sync_back"):
            ctx_obj.sync_back()
        unmap(kern, ctx_obj)


def _skb(**kw) -> SkBuff:
    head = bytearray(256)
    skb = SkBuff(head=head, data_off=64, **kw)
    skb.put(60)
    return skb


def _read(kern, prog_type, size, off, skb=None, eat=0):
    skb = skb if skb is not None else _skb()
    r0, xl = _run(kern, prog_type, [BPF_LDX_MEM(size, 0, 1, off), BPF_EXIT_INSN()], skb,
                  build_skb_ctx, unmap_skb_ctx, eat)
    return r0, xl


@pytest.mark.parametrize("field,attr,value", [
    ("len", None, 60), ("mark", "mark", 0xDEADBEEF), ("priority", "priority", 7),
    ("pkt_type", "pkt_type", 3), ("queue_mapping", "queue_mapping", 5), ("hash", "hash", 0x1234),
    ("tc_index", "tc_index", 9), ("tc_classid", "tc_classid", 0x55), ("ingress_ifindex", "skb_iif", 4),
    ("vlan_tci", "vlan_tci", 0x123), ("wire_len", "pkt_len", 77),
])
def test_kctx_skb_field_reads_come_from_the_sk_buff_image(kern, field, attr, value):
    skb = _skb(**({attr: value} if attr else {}))
    r0, _ = _read(kern, ProgType.SCHED_CLS, BPF_W, o(field), skb)
    assert r0 == value


def test_kctx_skb_protocol_and_vlan_proto_read_in_network_order(kern):
    skb = _skb(protocol=0x0800, vlan_proto=0x8100)
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("protocol"), skb)[0] == 0x0008
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("vlan_proto"), _skb(vlan_proto=0x8100))[0] == 0x0081


def test_kctx_skb_ifindex_chases_dev_and_napi_id_below_min_reads_zero(kern):
    r0, xl = _read(kern, ProgType.SOCKET_FILTER, BPF_W, o("ifindex"))
    assert r0 == LOOPBACK.ifindex and xl[0].off == kl.offsetof("sk_buff.dev") and len(xl) == 4
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("ifindex"))[1][1].off == kl.offsetof("net_device.ifindex")
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("napi_id"), _skb(napi_id=MIN_NAPI_ID - 1))[0] == 0
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("napi_id"), _skb(napi_id=MIN_NAPI_ID))[0] == MIN_NAPI_ID


def test_kctx_skb_vlan_present_is_vlan_all_nonzero(kern):
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("vlan_present"), _skb())[0] == 0
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("vlan_present"), _skb(vlan_tci=1, vlan_present=1))[0] == 1


def test_kctx_skb_shinfo_fields_use_the_ax_register(kern):
    skb = _skb(gso_segs=3, gso_size=1400, hwtstamp=99)
    r0, xl = _read(kern, ProgType.SCHED_CLS, BPF_W, o("gso_size"), skb)
    assert r0 == 1400 and xl[0].dst_reg == BPF_REG_AX
    assert _read(kern, ProgType.SCHED_CLS, BPF_W, o("gso_segs"), _skb(gso_segs=3))[0] == 3
    assert _read(kern, ProgType.SCHED_CLS, BPF_DW, o("hwtstamp"), _skb(hwtstamp=99))[0] == 99


def test_kctx_skb_tstamp_reads_as_stored_outside_tc_ingress(kern):
    skb = _skb(tstamp=1234, tstamp_type=1)
    assert _read(kern, ProgType.SCHED_CLS, BPF_DW, o("tstamp"), skb)[0] == 1234     # not at ingress


def test_kctx_skb_narrow_loads_shift_and_mask(kern):
    skb = _skb(mark=0x11223344)
    for size, at, want in ((BPF_B, 0, 0x44), (BPF_B, 1, 0x33), (BPF_B, 3, 0x11), (BPF_H, 2, 0x1122)):
        r0, xl = _read(kern, ProgType.SCHED_CLS, size, o("mark") + at, _skb(mark=0x11223344))
        assert r0 == want and xl[0].off == kl.offsetof("sk_buff.mark")
    assert skb.mark == 0x11223344


def test_kctx_skb_pkt_type_masks_the_bitfield(kern):
    skb = _skb(pkt_type=2)
    r0, xl = _read(kern, ProgType.SCHED_CLS, BPF_W, o("pkt_type"), skb)
    assert r0 == 2 and xl[1].imm == PKT_TYPE_MAX


def test_kctx_skb_sock_fields_through_skb_sk(kern):
    sk = Sock(family=2, daddr=bytes([10, 0, 0, 2]), rcv_saddr=bytes([10, 0, 0, 1]), num=80, dport=1234)
    skb = _skb(sk=sk)
    eat = AttachType.CGROUP_INET_INGRESS
    assert _read(kern, ProgType.CGROUP_SKB, BPF_W, o("family"), skb, eat)[0] == 2
    assert _read(kern, ProgType.CGROUP_SKB, BPF_W, o("local_port"), _skb(sk=sk), eat)[0] == 80
    assert _read(kern, ProgType.CGROUP_SKB, BPF_W, o("remote_ip4"), _skb(sk=sk), eat)[0] == 0x0200000A
    r0, _ = _read(kern, ProgType.CGROUP_SKB, BPF_W, o("remote_port"), _skb(sk=sk), eat)
    assert r0 == int.from_bytes((1234).to_bytes(2, "big"), "little") << 16


def test_kctx_skb_writes_reach_the_skb(kern):
    skb = _skb()
    insns = [Insn(0xB7, 2, 0, 0, 0x77),                          # r2 = 0x77
             BPF_STX_MEM(BPF_W, 1, 2, o("mark")), BPF_STX_MEM(BPF_W, 1, 2, o("tc_classid")),
             BPF_STX_MEM(BPF_W, 1, 2, o("cb", 2)), BPF_STX_MEM(BPF_W, 1, 2, o("priority")),
             Insn(0xB7, 0, 0, 0, 0), BPF_EXIT_INSN()]
    _run(kern, ProgType.SCHED_CLS, insns, skb, build_skb_ctx, unmap_skb_ctx)
    assert (skb.mark, skb.tc_classid, skb.priority, skb.cb[8]) == (0x77, 0x77, 0x77, 0x77)


def test_kctx_skb_image_layout_matches_the_generated_offsets():
    img = KImage("sk_buff")
    img["pkt_type"] = 5
    img["tstamp_type"] = 2
    assert img.buf[kl.offsetof("sk_buff.__pkt_type_offset")] == 5
    assert img.buf[kl.offsetof("sk_buff.__mono_tc_offset")] & kl.bit_mask("sk_buff.tstamp_type") == 2
    assert (kl.sizeof("sk_buff"), kl.offsetof("sk_buff.len")) == (224, 112)      # measured 6.18


@pytest.mark.parametrize("field,attr,value", [("ingress_ifindex", "ingress_ifindex", 1),
                                              ("rx_queue_index", "rx_queue_index", 3)])
def test_kctx_xdp_rxq_fields_chase_pointers(kern, field, attr, value):
    xdp = XdpBuff.from_frame(bytes(64), ifindex=1, rx_queue=3)
    r0, xl = _run(kern, ProgType.XDP, [BPF_LDX_MEM(BPF_W, 0, 1, ffi.offsetof(XMD, field)), BPF_EXIT_INSN()],
                  xdp, build_xdp_ctx, unmap_xdp_ctx)
    assert r0 == value and xl[0] == BPF_LDX_MEM(BPF_DW, 0, 1, kl.offsetof("xdp_buff.rxq"))


def test_kctx_xdp_packet_pointers_are_absolute_and_synced_back(kern):
    xdp = XdpBuff.from_frame(bytes(64), ifindex=1)
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, ffi.offsetof(XMD, "data")),
             BPF_LDX_MEM(BPF_W, 0, 1, ffi.offsetof(XMD, "data_end")),
             Insn(0x1F, 0, 2, 0, 0), BPF_EXIT_INSN()]                 # r0 -= r2
    r0, xl = _run(kern, ProgType.XDP, insns, xdp, build_xdp_ctx, unmap_xdp_ctx)
    assert r0 == 64 and xl[0].code == BPF_LDX_MEM(BPF_DW, 0, 0, 0).code
