"""BPF_PROG_TYPE_XDP — net/core/filter.c (xdp_verifier_ops, xdp_func_proto, xdp_is_valid_access,
xdp_convert_ctx_access for the packet pointers)."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, XDP_KCTX_SIZE, XDP_PTR_SLOTS, XDP_UAPI_SIZE
from fakekernel.progs.skb import pointer_slot_load
from fakekernel.verifier.regs import RegType
from uapi.bpf import AttachType, FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "XDP_FUNCS"]

XDP_MD = "struct xdp_md"
XDP_FUNCS = frozenset({
    FuncId.check_mtu, FuncId.csum_diff, FuncId.fib_lookup, FuncId.redirect, FuncId.redirect_map,
    FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp, FuncId.sk_release, FuncId.skc_lookup_tcp,
    FuncId.tcp_check_syncookie, FuncId.tcp_gen_syncookie, FuncId.tcp_raw_check_syncookie_ipv4,
    FuncId.tcp_raw_check_syncookie_ipv6, FuncId.tcp_raw_gen_syncookie_ipv4,
    FuncId.tcp_raw_gen_syncookie_ipv6, FuncId.xdp_adjust_head, FuncId.xdp_adjust_meta,
    FuncId.xdp_adjust_tail, FuncId.xdp_get_buff_len, FuncId.xdp_load_bytes, FuncId.xdp_store_bytes,
    FuncId.perf_event_output,       # bpf_xdp_event_output_proto
})
_DATA = ffi.offsetof(XDP_MD, "data")
_DATA_END = ffi.offsetof(XDP_MD, "data_end")
_DATA_META = ffi.offsetof(XDP_MD, "data_meta")
_EGRESS_IFINDEX = ffi.offsetof(XDP_MD, "egress_ifindex")
_U32 = ffi.sizeof("__u32")
_PKT_REG = {_DATA: RegType.PTR_TO_PACKET, _DATA_META: RegType.PTR_TO_PACKET_META,
            _DATA_END: RegType.PTR_TO_PACKET_END}
_SLOT_OF = {_DATA: XDP_PTR_SLOTS["data"], _DATA_END: XDP_PTR_SLOTS["data_end"],
            _DATA_META: XDP_PTR_SLOTS["data_meta"]}


def xdp_func_proto(func_id: int, prog):
    return net_func_proto(XDP_FUNCS, func_id, prog)


def _is_valid_xdp_access(off: int, size: int) -> bool:
    return 0 <= off < XDP_UAPI_SIZE and off % size == 0 and size == _U32


def xdp_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if prog.expected_attach_type != AttachType.XDP_DEVMAP and off == _EGRESS_IFINDEX:
        return False
    if access == BPF_WRITE:
        return False
    if off in _PKT_REG:
        if info.is_ldsx:
            return False
        info.reg_type = _PKT_REG[off]
    return _is_valid_xdp_access(off, size)


def xdp_convert_ctx_access(insn):
    return pointer_slot_load(insn, _SLOT_OF)


VERIFIER_OPS = VerifierOps(get_func_proto=xdp_func_proto, is_valid_access=xdp_is_valid_access,
                           convert_ctx_access=xdp_convert_ctx_access, ctx_size=XDP_UAPI_SIZE,
                           kctx_size=XDP_KCTX_SIZE)
