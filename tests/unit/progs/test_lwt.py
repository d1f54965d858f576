"""fakekernel/progs/lwt.py and fakekernel/helpers/lwt.py without the real kernel: the ctx rule,
the helper sets, and bpf_lwt_push_ip_encap's header checks and skb result."""
from __future__ import annotations

import pytest

from fakekernel.helpers.lwt import LWT_BPF_MAX_HEADROOM, bpf_lwt_push_ip_encap
from fakekernel.net.checksum import csum_fold, csum_partial
from fakekernel.net.headers import CHECKSUM_COMPLETE, ETH_P_IP, ETH_P_IPV6
from fakekernel.net.skbuff import SkBuff
from fakekernel.progs.ctx import BPF_READ, BPF_WRITE
from fakekernel.progs.lwt import (LWT_IN_FUNCS, LWT_OUT_FUNCS, LWT_SEG6LOCAL_FUNCS, LWT_XMIT_FUNCS,
                                  lwt_is_valid_access)
from fakekernel.verifier.mem import AccessInfo
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi

SKB = "struct __sk_buff"


def off(field, *idx):
    return ffi.offsetof(SKB, field, *idx)


@pytest.mark.parametrize("field,access,ok", [
    ("mark", BPF_WRITE, True), ("priority", BPF_WRITE, True), ("cb", BPF_WRITE, True),
    ("tc_index", BPF_WRITE, False), ("len", BPF_WRITE, False), ("len", BPF_READ, True),
    ("tc_classid", BPF_READ, False), ("family", BPF_READ, False), ("data_meta", BPF_READ, False),
    ("tstamp", BPF_READ, False), ("wire_len", BPF_READ, False), ("hwtstamp", BPF_READ, False),
])
def test_lwt_is_valid_access_fields(field, access, ok):
    o = off(field, 0) if field == "cb" else off(field)
    size = 8 if field in ("tstamp", "hwtstamp") else 4
    assert lwt_is_valid_access(o, size, access, None, AccessInfo()) is ok


def test_lwt_data_pointers_are_packet_pointers():
    info = AccessInfo()
    assert lwt_is_valid_access(off("data"), 4, BPF_READ, None, info)
    assert info.reg_type == RegType.PTR_TO_PACKET
    info = AccessInfo()
    assert lwt_is_valid_access(off("data_end"), 4, BPF_READ, None, info)
    assert info.reg_type == RegType.PTR_TO_PACKET_END


def test_lwt_helper_sets_differ_as_the_kernel_s():
    assert FuncId.lwt_push_encap in LWT_IN_FUNCS and FuncId.lwt_push_encap in LWT_XMIT_FUNCS
    assert FuncId.lwt_push_encap not in LWT_OUT_FUNCS
    assert FuncId.skb_store_bytes in LWT_XMIT_FUNCS and FuncId.skb_store_bytes not in LWT_IN_FUNCS
    assert FuncId.lwt_seg6_action in LWT_SEG6LOCAL_FUNCS and FuncId.skb_pull_data in LWT_SEG6LOCAL_FUNCS


class _Env:
    mem = None


class _Skb(SkBuff):
    def update_ctx(self) -> None:          # no program ctx is mapped in these tests
        pass


def skb_of(packet: bytes, headroom=64, csum_complete=False) -> SkBuff:
    skb = _Skb(head=bytearray(headroom) + bytearray(packet), data_off=headroom, len=len(packet),
               protocol=ETH_P_IP)
    skb.network_header = headroom
    if csum_complete:
        skb.ip_summed, skb.csum = CHECKSUM_COMPLETE, csum_partial(packet)
    return skb


INNER = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + bytes(8)
OUTER4 = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2])
OUTER6 = bytes([0x60, 0, 0, 0, 0, 0, 41, 64]) + bytes(32)


@pytest.mark.parametrize("hdr", [OUTER4[:19], OUTER4 + bytes(LWT_BPF_MAX_HEADROOM), bytes([0x55]) + OUTER4[1:],
                                 bytes([0x46]) + OUTER4[1:], OUTER6[:39], OUTER4[:9] + b"\x11" + OUTER4[10:]],
                         ids=["short", "too_long", "version5", "ihl_past_len", "ipv6_short", "udp_no_udphdr"])
def test_push_ip_encap_bad_header_einval_and_skb_untouched(hdr):
    skb = skb_of(INNER)
    before = (bytes(skb.head), skb.data_off, skb.len)
    assert bpf_lwt_push_ip_encap(_Env(), skb, hdr, ingress=False) == -Errno.EINVAL
    assert (bytes(skb.head), skb.data_off, skb.len) == before


def test_push_ip_encap_ipv4_fills_the_checksum():
    skb = skb_of(INNER)
    assert bpf_lwt_push_ip_encap(_Env(), skb, OUTER4, ingress=False) == 0
    data = skb.data()
    assert data[20:] == INNER and skb.protocol == ETH_P_IP and skb.network_header == skb.data_off
    assert csum_fold(csum_partial(data[:20])) == 0          # a valid header sums to zero
    assert skb.encapsulation


def test_push_ip_encap_ipv6_keeps_header_and_sets_protocol():
    skb = skb_of(INNER)
    assert bpf_lwt_push_ip_encap(_Env(), skb, OUTER6, ingress=True) == 0
    assert skb.data() == OUTER6 + INNER and skb.protocol == ETH_P_IPV6


def test_push_ip_encap_grows_the_headroom():
    skb = skb_of(INNER, headroom=4)
    assert bpf_lwt_push_ip_encap(_Env(), skb, OUTER6, ingress=True) == 0
    assert skb.data() == OUTER6 + INNER


def test_push_ip_encap_ingress_updates_checksum_complete_egress_does_not():
    for ingress in (True, False):
        skb = skb_of(INNER, csum_complete=True)
        before = skb.csum
        assert bpf_lwt_push_ip_encap(_Env(), skb, OUTER6, ingress=ingress) == 0
        assert (skb.csum != before) is ingress


def test_push_ip_encap_on_gso_skb_enotsupp_after_push():
    skb = skb_of(INNER)
    skb.gso_size = 1000
    assert bpf_lwt_push_ip_encap(_Env(), skb, OUTER6, ingress=False) == -Errno.ENOTSUPP
    assert skb.data() == OUTER6 + INNER
