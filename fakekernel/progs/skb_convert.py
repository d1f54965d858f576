"""__sk_buff -> struct sk_buff rewrites — net/core/filter.c (bpf_convert_ctx_access,
tc_cls_act_convert_ctx_access, sk_skb_convert_ctx_access, bpf_convert_shinfo_access,
bpf_convert_tstamp_read/write, bpf_convert_tstamp_type_read, bpf_convert_data_end_access).

Each rewrite returns (insns, target_size) as the kernel's does; the verifier's
convert_ctx_accesses widens narrow loads before and masks after (fakekernel/verifier/fixups.py).
Offsets come from the 6.18 layouts (`fakekernel.kernel_layout`).  One access differs from the
kernel: ``__sk_buff.sk`` is read from fakekernel's slot after the image (`SKB_SK_SLOT`), since
loads through the ``struct bpf_sock`` pointer it yields are not rewritten.
"""
from __future__ import annotations

from fakekernel import kernel_layout as kl
from fakekernel.progs.ctx import BPF_WRITE, SKB_PTR_SLOTS, SKB_SK_SLOT, kernel_convert
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_H, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_LSH, BPF_MEM,
                      BPF_ST, BPF_STX, BPF_SUB, BPF_W, MAX_BPF_REG)
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU32_IMM, BPF_ALU64_REG, BPF_CLASS, BPF_JMP32_IMM, BPF_JMP_A, BPF_JMP_IMM,
                       BPF_LDX_MEM, BPF_MOV32_IMM, BPF_MOV64_IMM, BPF_RAW_INSN, BPF_SIZE, BPF_STX_MEM, Insn,
                       u32)

__all__ = ["bpf_convert_ctx_access", "tc_cls_act_convert_ctx_access", "sk_skb_convert_ctx_access",
           "BPF_REG_AX", "NO_QUEUE_MAPPING", "MIN_NAPI_ID"]

S = "struct __sk_buff"
BPF_REG_AX = MAX_BPF_REG        # include/linux/filter.h: the rewrites' scratch register
NO_QUEUE_MAPPING = 0xFFFF       # include/net/sock.h
MIN_NAPI_ID = 257               # include/net/busy_poll.h: NR_CPUS + 1, as the 6.18 xlated shows (0x101)
_CB = kl.offsetof("sk_buff.cb")
_SIZE_OF = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}
PKT_TYPE_MAX = kl.bit_mask("sk_buff.pkt_type")
SKB_TSTAMP_TYPE_MASK = kl.bit_mask("sk_buff.tstamp_type")
TC_AT_INGRESS_MASK = kl.bit_mask("sk_buff.tc_at_ingress")
_PKT_TYPE_OFFSET = kl.offsetof("sk_buff.__pkt_type_offset")
_MONO_TC_OFFSET = kl.offsetof("sk_buff.__mono_tc_offset")


def _o(field, *index) -> int:
    return ffi.offsetof(S, field, *index)


def _load(path: str, dst: int, src: int) -> Insn:
    return BPF_LDX_MEM(_SIZE_OF[kl.sizeof_field(path)], dst, src, kl.offsetof(path))


def _store(size: int, si: Insn, off: int) -> Insn:
    """BPF_EMIT_STORE(): the program's store (ST or STX), retargeted."""
    return BPF_RAW_INSN(BPF_CLASS(si.code) | size | BPF_MEM, si.dst_reg, si.src_reg, off, si.imm)


def _rw(path: str):
    """A field read or written in place (mark, priority, tc_index)."""
    def conv(access, si, prog):
        size, off = kl.sizeof_field(path), kl.offsetof(path)
        if access == BPF_WRITE:
            return [_store(_SIZE_OF[size], si, off)], size
        return [BPF_LDX_MEM(_SIZE_OF[size], si.dst_reg, si.src_reg, off)], size
    return conv


def _ro(path: str):
    return lambda access, si, prog: ([_load(path, si.dst_reg, si.src_reg)], kl.sizeof_field(path))


def _sk_field(path: str, extra: int = 0, target: bool = True, lsh: int = 0):
    """A struct sock_common field through skb->sk."""
    def conv(access, si, prog):
        out = [_load("sk_buff.sk", si.dst_reg, si.src_reg),
               BPF_LDX_MEM(_SIZE_OF[min(kl.sizeof_field(path), 4)], si.dst_reg, si.dst_reg,
                           kl.offsetof(path) + extra)]
        if lsh:
            out.append(BPF_ALU32_IMM(BPF_LSH, si.dst_reg, lsh))
        return out, (kl.sizeof_field(path) if target else 0)
    return conv


def _ifindex(null_check: bool):
    def conv(access, si, prog):
        out = [_load("sk_buff.dev", si.dst_reg, si.src_reg)]
        if null_check:
            out.append(BPF_JMP_IMM(BPF_JEQ, si.dst_reg, 0, 1))
        return out + [_load("net_device.ifindex", si.dst_reg, si.dst_reg)], 4
    return conv


def _cb_at(inner: int, base: int, size_code: int | None = None):
    """A range of the control block: cb[] (its data at `inner`, accessed at the program's
    size), tc_classid (u16), wire_len (u32)."""
    def conv(access, si, prog):
        off = si.off - base + _CB + inner
        size = BPF_SIZE(si.code) if size_code is None else size_code
        if access == BPF_WRITE:
            return [_store(size, si, off)], 0
        return [BPF_LDX_MEM(size, si.dst_reg, si.src_reg, off)], 0
    return conv


def _sized(conv, target: int):
    return lambda access, si, prog: (conv(access, si, prog)[0], target)


def _pkt_type(access, si, prog):
    return [BPF_LDX_MEM(BPF_B, si.dst_reg, si.src_reg, _PKT_TYPE_OFFSET),
            BPF_ALU32_IMM(BPF_AND, si.dst_reg, PKT_TYPE_MAX)], 1


def _queue_mapping(access, si, prog):
    off = kl.offsetof("sk_buff.queue_mapping")
    if access != BPF_WRITE:
        return [BPF_LDX_MEM(BPF_H, si.dst_reg, si.src_reg, off)], 2
    if BPF_CLASS(si.code) == BPF_ST and u32(si.imm) >= NO_QUEUE_MAPPING:
        return [BPF_JMP_A(0)], 2                    # a no-op
    out = [BPF_JMP_IMM(BPF_JGE, si.src_reg, NO_QUEUE_MAPPING, 1)] if BPF_CLASS(si.code) == BPF_STX else []
    return out + [_store(BPF_H, si, off)], 2


def _vlan_present(access, si, prog):
    return [_load("sk_buff.vlan_all", si.dst_reg, si.src_reg), BPF_JMP_IMM(BPF_JEQ, si.dst_reg, 0, 1),
            BPF_MOV32_IMM(si.dst_reg, 1)], 4


def _napi_id(access, si, prog):
    return [_load("sk_buff.napi_id", si.dst_reg, si.src_reg),
            BPF_JMP_IMM(BPF_JGE, si.dst_reg, MIN_NAPI_ID, 1), BPF_MOV64_IMM(si.dst_reg, 0)], 4


def _ptr(off: int):
    return lambda access, si, prog: ([BPF_LDX_MEM(BPF_DW, si.dst_reg, si.src_reg, off)], 0)


def _shinfo(dst: int, skb: int) -> list[Insn]:
    """bpf_convert_shinfo_access(): dst = skb->head + skb->end (NET_SKBUFF_DATA_USES_OFFSET)."""
    return [_load("sk_buff.end", BPF_REG_AX, skb), _load("sk_buff.head", dst, skb),
            BPF_ALU64_REG(BPF_ADD, dst, BPF_REG_AX)]


def _shinfo_field(path: str, size: int):
    def conv(access, si, prog):
        return _shinfo(si.dst_reg, si.src_reg) + [
            BPF_LDX_MEM(_SIZE_OF[size], si.dst_reg, si.dst_reg, kl.offsetof(path))], size
    return conv


def _tstamp(access, si, prog):
    """bpf_convert_tstamp_read/write() (CONFIG_NET_XGRESS)."""
    off = kl.offsetof("sk_buff.tstamp")
    aware = getattr(prog, "tstamp_type_access", False)
    if access == BPF_WRITE:
        skb, value = si.dst_reg, si.src_reg
        out = [] if aware else [
            BPF_LDX_MEM(BPF_B, BPF_REG_AX, skb, _MONO_TC_OFFSET),
            BPF_JMP32_IMM(BPF_JSET, BPF_REG_AX, TC_AT_INGRESS_MASK, 1), BPF_JMP_A(2),
            BPF_ALU32_IMM(BPF_AND, BPF_REG_AX, ~SKB_TSTAMP_TYPE_MASK),
            BPF_STX_MEM(BPF_B, skb, BPF_REG_AX, _MONO_TC_OFFSET)]
        return out + [BPF_RAW_INSN(BPF_CLASS(si.code) | BPF_DW | BPF_MEM, skb, value, off, si.imm)], 8
    value, skb = si.dst_reg, si.src_reg
    out = [] if aware else [
        BPF_LDX_MEM(BPF_B, BPF_REG_AX, skb, _MONO_TC_OFFSET),
        BPF_JMP32_IMM(BPF_JSET, BPF_REG_AX, TC_AT_INGRESS_MASK, 1), BPF_JMP_A(4),
        BPF_JMP32_IMM(BPF_JSET, BPF_REG_AX, SKB_TSTAMP_TYPE_MASK, 1), BPF_JMP_A(2),
        BPF_MOV64_IMM(value, 0), BPF_JMP_A(1)]
    return out + [BPF_LDX_MEM(BPF_DW, value, skb, off)], 8


def _tstamp_type(access, si, prog):
    return [BPF_LDX_MEM(BPF_B, si.dst_reg, si.src_reg, _MONO_TC_OFFSET),
            BPF_ALU32_IMM(BPF_AND, si.dst_reg, SKB_TSTAMP_TYPE_MASK)], 0


def _data_end_sk_skb(access, si, prog):
    """bpf_convert_data_end_access(): skb->data + skb_headlen(skb)."""
    return [_load("sk_buff.data", si.dst_reg, si.src_reg), _load("sk_buff.len", BPF_REG_AX, si.src_reg),
            BPF_ALU64_REG(BPF_ADD, si.dst_reg, BPF_REG_AX), _load("sk_buff.data_len", BPF_REG_AX, si.src_reg),
            BPF_ALU64_REG(BPF_SUB, si.dst_reg, BPF_REG_AX)], 0


def _table() -> dict:
    t = {
        _o("len"): _ro("sk_buff.len"), _o("protocol"): _ro("sk_buff.protocol"),
        _o("vlan_proto"): _ro("sk_buff.vlan_proto"), _o("priority"): _rw("sk_buff.priority"),
        _o("ingress_ifindex"): _ro("sk_buff.skb_iif"), _o("ifindex"): _ifindex(True),
        _o("hash"): _ro("sk_buff.hash"), _o("mark"): _rw("sk_buff.mark"), _o("pkt_type"): _pkt_type,
        _o("queue_mapping"): _queue_mapping, _o("vlan_present"): _vlan_present,
        _o("vlan_tci"): _ro("sk_buff.vlan_tci"),
        _o("tc_classid"): _sized(_cb_at(kl.offsetof("qdisc_skb_cb.tc_classid"), _o("tc_classid"), BPF_H), 2),
        _o("data"): _ptr(SKB_PTR_SLOTS["data"]), _o("data_meta"): _ptr(SKB_PTR_SLOTS["data_meta"]),
        _o("data_end"): _ptr(SKB_PTR_SLOTS["data_end"]), _o("tc_index"): _rw("sk_buff.tc_index"),
        _o("napi_id"): _napi_id, _o("family"): _sk_field("sock_common.skc_family"),
        _o("remote_ip4"): _sk_field("sock_common.skc_daddr"),
        _o("local_ip4"): _sk_field("sock_common.skc_rcv_saddr"),
        _o("remote_port"): _sk_field("sock_common.skc_dport", lsh=16),
        _o("local_port"): _sk_field("sock_common.skc_num"),
        _o("tstamp"): _tstamp, _o("tstamp_type"): _tstamp_type,
        _o("gso_segs"): _shinfo_field("skb_shared_info.gso_segs", 2),
        _o("gso_size"): _shinfo_field("skb_shared_info.gso_size", 2),
        _o("wire_len"): _sized(_cb_at(kl.offsetof("qdisc_skb_cb.pkt_len"), _o("wire_len"), BPF_W), 4),
        _o("sk"): _ptr(SKB_SK_SLOT),
        _o("hwtstamp"): _shinfo_field("skb_shared_info.hwtstamps", 8),
    }
    word = ffi.sizeof("__u32")
    for i in range(4):
        t[_o("remote_ip6", i)] = _sk_field("sock_common.skc_v6_daddr", i * word, target=False)
        t[_o("local_ip6", i)] = _sk_field("sock_common.skc_v6_rcv_saddr", i * word, target=False)
    cb = _cb_at(kl.offsetof("qdisc_skb_cb.data"), _o("cb", 0))
    for off in range(_o("cb", 0), _o("cb", 4) + word):
        t[off] = cb
    return t


_CONVERT = _table()
_TC = {**_CONVERT, _o("ifindex"): _ifindex(False)}
_SK_SKB_CB = _cb_at(kl.offsetof("sk_skb_cb.data"), _o("cb", 0))
_SK_SKB = {**_CONVERT, _o("data_end"): _data_end_sk_skb,
           **{off: _SK_SKB_CB for off in range(_o("cb", 0), _o("cb", 4) + ffi.sizeof("__u32"))}}


def _run(table: dict, access: int, si: Insn, prog):
    conv = table.get(si.off)
    return None if conv is None else conv(access, si, prog)


@kernel_convert
def bpf_convert_ctx_access(access: int, si: Insn, prog):
    return _run(_CONVERT, access, si, prog)


@kernel_convert
def tc_cls_act_convert_ctx_access(access: int, si: Insn, prog):
    """tc reads ifindex without the NULL check: skb->dev is always set there."""
    return _run(_TC, access, si, prog)


@kernel_convert
def sk_skb_convert_ctx_access(access: int, si: Insn, prog):
    """data_end is computed from data, len and data_len; cb[] is struct sk_skb_cb's."""
    return _run(_SK_SKB, access, si, prog)
