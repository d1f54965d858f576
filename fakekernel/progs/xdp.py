"""BPF_PROG_TYPE_XDP — net/core/filter.c (xdp_verifier_ops, xdp_func_proto, xdp_is_valid_access,
xdp_convert_ctx_access: xdp_md loads become struct xdp_buff loads, the ifindex fields chase
rxq->dev / txq->dev)."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel import kernel_layout as kl
from fakekernel.progs.ctx import BPF_WRITE, XDP_KCTX_SIZE, XDP_UAPI_SIZE, kernel_convert
from fakekernel.verifier.regs import RegType
from uapi.bpf import AttachType, FuncId
from uapi.bpf import BPF_DW, BPF_W
from uapi.ffi import ffi
from uapi.insn import BPF_LDX_MEM

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
# the loads each xdp_md field becomes: a chain of (size, struct.member) from the xdp_buff
_CHAINS = {_DATA: ((BPF_DW, "xdp_buff.data"),), _DATA_END: ((BPF_DW, "xdp_buff.data_end"),),
           _DATA_META: ((BPF_DW, "xdp_buff.data_meta"),),
           ffi.offsetof(XDP_MD, "ingress_ifindex"): ((BPF_DW, "xdp_buff.rxq"), (BPF_DW, "xdp_rxq_info.dev"),
                                                     (BPF_W, "net_device.ifindex")),
           ffi.offsetof(XDP_MD, "rx_queue_index"): ((BPF_DW, "xdp_buff.rxq"), (BPF_W, "xdp_rxq_info.queue_index")),
           _EGRESS_IFINDEX: ((BPF_DW, "xdp_buff.txq"), (BPF_DW, "xdp_txq_info.dev"), (BPF_W, "net_device.ifindex"))}


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


@kernel_convert
def xdp_convert_ctx_access(access: int, si, prog):
    chain = _CHAINS.get(si.off)
    if chain is None:
        return None
    out, src = [], si.src_reg
    for size, path in chain:
        out.append(BPF_LDX_MEM(size, si.dst_reg, src, kl.offsetof(path)))
        src = si.dst_reg
    return out, 0


VERIFIER_OPS = VerifierOps(get_func_proto=xdp_func_proto, is_valid_access=xdp_is_valid_access,
                           convert_ctx_access=xdp_convert_ctx_access, ctx_size=XDP_UAPI_SIZE,
                           kctx_size=XDP_KCTX_SIZE)
