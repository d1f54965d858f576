"""BPF_PROG_TYPE_LWT_IN, LWT_OUT, LWT_XMIT and LWT_SEG6LOCAL — net/core/filter.c
(lwt_{in,out,xmit,seg6local}_verifier_ops, lwt_*_func_proto, lwt_is_valid_access).

The four types share one ctx rule and the __sk_buff conversion of `fakekernel.progs.skb`;
they differ in their helper sets.  Packet bytes are writable only by LWT_XMIT
(may_access_direct_pkt_data, in the verifier).  LWT_IN/OUT/XMIT test-run through
`fakekernel.test_run.bpf_prog_test_run_skb` (no Ethernet header); LWT_SEG6LOCAL has no
test_run (ENOTSUPP).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, SKB_KCTX_SIZE, SKB_UAPI_SIZE
from fakekernel.progs.skb import F, bpf_skb_is_valid_access, skb_convert_ctx_access
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId

__all__ = ["LWT_IN_VERIFIER_OPS", "LWT_OUT_VERIFIER_OPS", "LWT_XMIT_VERIFIER_OPS",
           "LWT_SEG6LOCAL_VERIFIER_OPS", "LWT_OUT_FUNCS", "LWT_IN_FUNCS", "LWT_XMIT_FUNCS",
           "LWT_SEG6LOCAL_FUNCS", "lwt_is_valid_access"]

# lwt_out_func_proto(): what every LWT type may call besides bpf_sk_base_func_proto()
LWT_OUT_FUNCS = frozenset({
    FuncId.skb_load_bytes, FuncId.skb_pull_data, FuncId.csum_diff, FuncId.get_cgroup_classid,
    FuncId.get_route_realm, FuncId.get_hash_recalc, FuncId.get_smp_processor_id,
    FuncId.skb_under_cgroup,
    FuncId.perf_event_output,       # bpf_skb_event_output_proto
})
LWT_IN_FUNCS = LWT_OUT_FUNCS | {FuncId.lwt_push_encap}     # bpf_lwt_in_push_encap_proto
LWT_XMIT_FUNCS = LWT_OUT_FUNCS | {
    FuncId.skb_get_tunnel_key, FuncId.skb_set_tunnel_key, FuncId.skb_get_tunnel_opt,
    FuncId.skb_set_tunnel_opt, FuncId.redirect, FuncId.clone_redirect, FuncId.skb_change_tail,
    FuncId.skb_change_head, FuncId.skb_store_bytes, FuncId.csum_update, FuncId.csum_level,
    FuncId.l3_csum_replace, FuncId.l4_csum_replace, FuncId.set_hash_invalid,
    FuncId.lwt_push_encap,          # bpf_lwt_xmit_push_encap_proto
}
# lwt_seg6local_func_proto(): the seg6 helpers too (6.18 keeps skb_pull_data, which 6.12 hid)
LWT_SEG6LOCAL_FUNCS = LWT_OUT_FUNCS | {
    FuncId.lwt_seg6_store_bytes, FuncId.lwt_seg6_action, FuncId.lwt_seg6_adjust_srh,
}

_REFUSED = (F.tc_classid, F.family_till_local_port, F.data_meta, F.tstamp, F.wire_len, F.hwtstamp)
_WRITABLE = (F.mark, F.priority, F.cb)


def _func_proto(funcs: frozenset):
    def get_func_proto(func_id: int, prog):
        return net_func_proto(funcs, func_id, prog)
    return get_func_proto


def lwt_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if any(off in r for r in _REFUSED):
        return False
    if access == BPF_WRITE and not any(off in r for r in _WRITABLE):
        return False
    if off in F.data:
        info.reg_type = RegType.PTR_TO_PACKET
    elif off in F.data_end:
        info.reg_type = RegType.PTR_TO_PACKET_END
    return bpf_skb_is_valid_access(off, size, access, prog, info)


def _ops(get_func_proto) -> VerifierOps:
    return VerifierOps(get_func_proto=get_func_proto, is_valid_access=lwt_is_valid_access,
                       convert_ctx_access=skb_convert_ctx_access, ctx_size=SKB_UAPI_SIZE,
                       kctx_size=SKB_KCTX_SIZE)


LWT_IN_VERIFIER_OPS = _ops(_func_proto(LWT_IN_FUNCS))
LWT_OUT_VERIFIER_OPS = _ops(_func_proto(LWT_OUT_FUNCS))
LWT_XMIT_VERIFIER_OPS = _ops(_func_proto(LWT_XMIT_FUNCS))
LWT_SEG6LOCAL_VERIFIER_OPS = _ops(_func_proto(LWT_SEG6LOCAL_FUNCS))
