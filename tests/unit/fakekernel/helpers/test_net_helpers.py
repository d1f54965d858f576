"""Networking helper runtimes (fakekernel/helpers/net_pkt.py, net_xdp.py, net_skb.py) and the
checksum arithmetic under them (fakekernel/net/checksum.py) — hermetic checks; the
comparison with the real kernel is tests/differential/test_net_helpers.py."""
from __future__ import annotations

from hypothesis import given, strategies as st

from fakekernel.helpers import HELPERS, UNIMPLEMENTED_AT_RUNTIME
from fakekernel.net.checksum import (csum_add, csum_fold, csum_from32to16, csum_partial, csum_replace2,
                                     csum_replace4, csum_sub, wsum_negate)
from uapi import calls
from uapi.bpf import AttachType, BpfCmd, FuncId, ProgType, XdpAction
from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

from hookutil import install_prog

NET_DONE = (FuncId.skb_load_bytes, FuncId.skb_load_bytes_relative, FuncId.skb_store_bytes,
            FuncId.xdp_load_bytes, FuncId.xdp_store_bytes, FuncId.csum_diff, FuncId.l3_csum_replace,
            FuncId.l4_csum_replace, FuncId.get_hash_recalc, FuncId.set_hash, FuncId.set_hash_invalid,
            FuncId.skb_pull_data, FuncId.xdp_adjust_head, FuncId.xdp_adjust_meta, FuncId.xdp_adjust_tail,
            FuncId.skb_change_proto, FuncId.skb_change_type, FuncId.skb_change_tail,
            FuncId.skb_change_head, FuncId.skb_adjust_room, FuncId.skb_vlan_push, FuncId.skb_vlan_pop,
            FuncId.redirect, FuncId.clone_redirect, FuncId.xdp_get_buff_len)


def test_net_runtimes_are_registered_and_leave_the_unimplemented_list():
    for f in NET_DONE:
        assert f in HELPERS and f not in UNIMPLEMENTED_AT_RUNTIME
    assert FuncId.fib_lookup in HELPERS and FuncId.fib_lookup not in UNIMPLEMENTED_AT_RUNTIME


def test_rfc1071_example():
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert csum_fold(csum_partial(data)) == ~0xF2DD & 0xFFFF        # RFC 1071 0xddf2, little-endian


@given(st.binary(max_size=200), st.integers(0, 0xFFFFFFFF))
def test_csum_partial_is_the_ones_complement_sum(data, seed):
    padded = data + bytes(-len(data) % 4)
    total = seed + sum(int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4))
    assert csum_partial(data, seed) % 0xFFFFFFFF == total % 0xFFFFFFFF
    assert csum_partial(data, seed) <= 0xFFFFFFFF


def test_zero_representations_differ_where_the_kernel_s_do():
    assert csum_fold(0) == 0xFFFF and csum_fold(0xFFFFFFFF) == 0
    assert csum_sub(0x60, 0x60) == 0xFFFFFFFF
    assert wsum_negate(csum_partial(b"\x60", wsum_negate(0x60))) == 0xFFFFFFFF
    assert csum_from32to16(0x12345678) == 0x68AC and csum_add(0xFFFFFFFF, 1) == 1


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_csum_replace2_and_4_agree_with_recomputing(old_word, new_word, other):
    hdr_old = old_word.to_bytes(2, "little") + other.to_bytes(2, "little")
    hdr_new = new_word.to_bytes(2, "little") + other.to_bytes(2, "little")
    old_sum = csum_fold(csum_partial(hdr_old))
    want = csum_fold(csum_partial(hdr_new))
    assert csum_replace2(old_sum, old_word, new_word) % 0xFFFF == want % 0xFFFF
    assert csum_replace4(old_sum, int.from_bytes(hdr_old, "little"), int.from_bytes(hdr_new, "little")) % 0xFFFF \
        == want % 0xFFFF


class _B:
    def __init__(self, kern):
        self.kern = kern

    def bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size)


def test_xdp_redirect_reaches_the_target_device(kernel):
    """bpf_redirect(2, 0) from XDP on lo: the frame goes out of device 2."""
    idx = kernel.world.net.add_device("veth0", "veth")
    insns = assemble_insns([BPF_MOV64_IMM(1, idx), BPF_MOV64_IMM(2, 0),
                            BPF_CALL_HELPER(FuncId.redirect), BPF_EXIT_INSN()])
    x = install_prog(kernel, ProgType.XDP, insns)
    lk = calls.raw(_B(kernel), BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=x,
                   link_create__target_fd=1, link_create__attach_type=AttachType.XDP)[0]
    assert lk >= 0
    frame = bytes(range(60))
    res = kernel.world.net.receive(1, frame)
    assert res.xdp_ret == XdpAction.REDIRECT and res.action == XdpAction.REDIRECT
    assert kernel.world.net.tx[idx] == [frame]
    kernel.close(lk)
    kernel.close(x)
