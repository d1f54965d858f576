"""__sk_buff access rules shared by the skb-based prog types — net/core/filter.c
(bpf_skb_is_valid_access; bpf_convert_ctx_access lives in fakekernel/progs/skb_convert.py).
"""
from __future__ import annotations

from fakekernel.progs.ctx import (BPF_WRITE, ctx_range, ctx_range_ptr, ctx_range_till, kernel_convert,
                                  narrow_access_ok)
from fakekernel.progs.skb_convert import bpf_convert_ctx_access
from fakekernel.verifier.regs import RegType
from fakekernel.helpers.proto import TypeFlag
from uapi.bpf import BPF_DW, BPF_LDX, BPF_MEM
from uapi.ffi import ffi
from uapi.insn import BPF_CLASS, BPF_MODE, Insn

__all__ = ["SK_BUFF", "F", "bpf_skb_is_valid_access", "skb_convert_ctx_access", "SIZE_DEFAULT"]

SK_BUFF = "struct __sk_buff"
SIZE_DEFAULT = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")


class F:
    """Byte ranges of the __sk_buff fields the rules name."""

    cb = ctx_range_till(SK_BUFF, ("cb", 0), ("cb", 4))
    data = ctx_range(SK_BUFF, "data")
    data_meta = ctx_range(SK_BUFF, "data_meta")
    data_end = ctx_range(SK_BUFF, "data_end")
    remote_ip6 = ctx_range_till(SK_BUFF, ("remote_ip6", 0), ("remote_ip6", 3))
    local_ip6 = ctx_range_till(SK_BUFF, ("local_ip6", 0), ("local_ip6", 3))
    remote_ip4 = ctx_range(SK_BUFF, "remote_ip4")
    local_ip4 = ctx_range(SK_BUFF, "local_ip4")
    flow_keys = ctx_range_ptr(SK_BUFF, "flow_keys")
    hwtstamp = ctx_range(SK_BUFF, "hwtstamp")
    tstamp = ctx_range(SK_BUFF, "tstamp")
    sk = ctx_range_ptr(SK_BUFF, "sk")
    tstamp_type = ffi.offsetof(SK_BUFF, "tstamp_type")
    pad_after_tstamp_type = range(tstamp_type + 1, ffi.offsetof(SK_BUFF, "hwtstamp"))
    tc_classid = ctx_range(SK_BUFF, "tc_classid")
    family_till_local_port = ctx_range_till(SK_BUFF, "family", "local_port")
    wire_len = ctx_range(SK_BUFF, "wire_len")
    mark = ctx_range(SK_BUFF, "mark")
    tc_index = ctx_range(SK_BUFF, "tc_index")
    priority = ctx_range(SK_BUFF, "priority")
    queue_mapping = ctx_range(SK_BUFF, "queue_mapping")


def bpf_skb_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    """bpf_skb_is_valid_access()."""
    if off < 0 or off >= ffi.sizeof(SK_BUFF):
        return False
    if off % size != 0:
        return False
    if off in F.cb:
        return off + size <= F.cb.stop
    if off in F.data or off in F.data_meta or off in F.data_end:
        return not info.is_ldsx and size == SIZE_DEFAULT
    if off in F.remote_ip6 or off in F.local_ip6 or off in F.remote_ip4 or off in F.local_ip4:
        return size == SIZE_DEFAULT
    if off in F.flow_keys:
        return False
    if off in F.hwtstamp:
        return access != BPF_WRITE and size == _U64
    if off in F.tstamp:
        return size == _U64
    if off in F.sk:
        if access == BPF_WRITE or size != _U64:
            return False
        info.reg_type = RegType.PTR_TO_SOCK_COMMON | TypeFlag.PTR_MAYBE_NULL
        return True
    if off == F.tstamp_type or off in F.pad_after_tstamp_type:
        return False
    if access == BPF_WRITE:
        return size == SIZE_DEFAULT
    info.ctx_field_size = SIZE_DEFAULT
    return narrow_access_ok(off, size, SIZE_DEFAULT)


def pointer_slot_load(insn: Insn, slots: dict) -> list[Insn] | None:
    """Rewrite ``rD = *(u32 *)(rS + <uapi pointer field>)`` into a u64 load of its kernel slot."""
    if BPF_CLASS(insn.code) != BPF_LDX or BPF_MODE(insn.code) != BPF_MEM or insn.off not in slots:
        return None
    return [Insn(BPF_LDX | BPF_MEM | BPF_DW, insn.dst_reg, insn.src_reg, slots[insn.off], 0)]


@kernel_convert
def skb_convert_ctx_access(access: int, si: Insn, prog):
    """bpf_convert_ctx_access(): __sk_buff loads and stores become struct sk_buff accesses
    (fakekernel.progs.skb_convert)."""
    return bpf_convert_ctx_access(access, si, prog)
