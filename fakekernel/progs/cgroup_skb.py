"""BPF_PROG_TYPE_CGROUP_SKB — net/core/filter.c (cg_skb_verifier_ops, cg_skb_func_proto,
cg_skb_is_valid_access) and the return range check_return_code() enforces."""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.base import prog_loader
from fakekernel.helpers.net import net_func_proto
from fakekernel.progs.ctx import BPF_WRITE, SKB_KCTX_SIZE, SKB_UAPI_SIZE
from fakekernel.progs.skb import F, bpf_skb_is_valid_access, skb_convert_ctx_access
from fakekernel.verifier.regs import RegType
from uapi.bpf import AttachType, FuncId

__all__ = ["VERIFIER_OPS", "CG_SKB_FUNCS"]

CG_SKB_FUNCS = frozenset({
    FuncId.get_listener_sock, FuncId.get_local_storage, FuncId.get_netns_cookie,
    FuncId.get_socket_cookie, FuncId.get_socket_uid, FuncId.sk_ancestor_cgroup_id, FuncId.sk_cgroup_id,
    FuncId.sk_fullsock, FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp, FuncId.sk_release,
    FuncId.sk_storage_delete, FuncId.sk_storage_get, FuncId.skb_ancestor_cgroup_id, FuncId.skb_cgroup_id,
    FuncId.skb_ecn_set_ce, FuncId.skb_load_bytes, FuncId.skb_load_bytes_relative, FuncId.skc_lookup_tcp,
    FuncId.tcp_sock,
    FuncId.perf_event_output,       # bpf_skb_event_output_proto
})
# verdicts: 1 = allow, 0 = drop; egress may also return congestion notification bits (NET_XMIT_CN)
_INGRESS_RANGE = (0, 1)
_EGRESS_RANGE = (0, 3)


def cg_skb_func_proto(func_id: int, prog):
    return net_func_proto(CG_SKB_FUNCS, func_id, prog)


def cg_skb_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off in F.tc_classid or off in F.data_meta or off in F.wire_len:
        return False
    capable = prog_loader(prog).bpf_capable()
    if (off in F.data or off in F.data_end) and not capable:
        return False
    if access == BPF_WRITE:
        if off in F.tstamp:
            if not capable:
                return False
        elif not (off in F.mark or off in F.priority or off in F.cb):
            return False
    if off in F.data:
        info.reg_type = RegType.PTR_TO_PACKET
    elif off in F.data_end:
        info.reg_type = RegType.PTR_TO_PACKET_END
    return bpf_skb_is_valid_access(off, size, access, prog, info)


def cg_skb_ret_range(prog) -> tuple[int, int]:
    return _EGRESS_RANGE if prog.expected_attach_type == AttachType.CGROUP_INET_EGRESS else _INGRESS_RANGE


VERIFIER_OPS = VerifierOps(get_func_proto=cg_skb_func_proto, is_valid_access=cg_skb_is_valid_access,
                           convert_ctx_access=skb_convert_ctx_access, ctx_size=SKB_UAPI_SIZE,
                           kctx_size=SKB_KCTX_SIZE, get_ret_range=cg_skb_ret_range)
