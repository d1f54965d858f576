"""BPF_PROG_TYPE_SOCKET_FILTER — net/core/filter.c (sk_filter_verifier_ops, sk_filter_func_proto,
sk_filter_is_valid_access)."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, SKB_KCTX_SIZE, SKB_UAPI_SIZE
from fakekernel.progs.skb import F, bpf_skb_is_valid_access, skb_convert_ctx_access
from uapi.bpf import FuncId

__all__ = ["VERIFIER_OPS", "SK_FILTER_FUNCS"]

SK_FILTER_FUNCS = frozenset({
    FuncId.skb_load_bytes, FuncId.skb_load_bytes_relative, FuncId.get_socket_cookie,
    FuncId.get_socket_uid, FuncId.get_netns_cookie,
    FuncId.perf_event_output,       # bpf_skb_event_output_proto
})


def sk_filter_func_proto(func_id: int, prog):
    return net_func_proto(SK_FILTER_FUNCS, func_id, prog)


def sk_filter_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    for r in (F.tc_classid, F.data, F.data_meta, F.data_end, F.family_till_local_port, F.tstamp,
              F.wire_len, F.hwtstamp):
        if off in r:
            return False
    if access == BPF_WRITE and off not in F.cb:
        return False
    return bpf_skb_is_valid_access(off, size, access, prog, info)


VERIFIER_OPS = VerifierOps(get_func_proto=sk_filter_func_proto, is_valid_access=sk_filter_is_valid_access,
                           convert_ctx_access=skb_convert_ctx_access, ctx_size=SKB_UAPI_SIZE,
                           kctx_size=SKB_KCTX_SIZE)
