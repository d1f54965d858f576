"""BPF_PROG_TYPE_CGROUP_SOCK — net/core/filter.c (cg_sock_verifier_ops: sock_filter_func_proto,
sock_filter_is_valid_access, bpf_sock_is_valid_access, __sock_filter_check_attach_type).

The program reads a ``struct bpf_sock`` describing the socket being created, released or
bound; sock_create/sock_release programs may also write ``bound_dev_if``, ``mark`` and
``priority``, post_bind programs read the bound address and port.  fakekernel runs it on the
uapi struct itself, filled from the socket (`fakekernel.cgroup_sock`), and copies the
writable fields back after the run.  Return range [0, 1] (check_return_code's default).
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import (CTX_ARG, EVENT_OUTPUT_DATA, NETNS_COOKIE_CTX,
                                            SK_STORAGE_GET_CG_SOCK, cgroup_base_func_proto)
from fakekernel.progs.ctx import BPF_READ, ctx_range, ctx_range_till, narrow_access_ok
from uapi.bpf import (BPF_ALU64, BPF_H, BPF_JMP32, BPF_JNE, BPF_K, BPF_LDX, BPF_MEM, BPF_MOV, BPF_W, AttachType,
                      FuncId)
from uapi.ffi import ffi, offsetofend
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_SIZE, Insn, s32 as u32_to_s32

__all__ = ["VERIFIER_OPS", "BPF_SOCK", "BPF_SOCK_SIZE", "bpf_sock_is_valid_access"]

BPF_SOCK = "struct bpf_sock"
BPF_SOCK_SIZE = ffi.sizeof(BPF_SOCK)
_U32 = ffi.sizeof("__u32")
_DST_PORT_SIZE = ffi.sizeof("__be16")


def _o(name: str) -> int:
    return ffi.offsetof(BPF_SOCK, name)


_NARROW_FIELDS = (
    range(_o("state"), _o("state") + 1), range(_o("family"), _o("family") + 1),
    range(_o("type"), _o("type") + 1), range(_o("protocol"), _o("protocol") + 1),
    range(_o("src_port"), _o("src_port") + 1), range(_o("rx_queue_mapping"), _o("rx_queue_mapping") + 1),
    ctx_range(BPF_SOCK, "src_ip4"), ctx_range_till(BPF_SOCK, ("src_ip6", 0), ("src_ip6", 3)),
    ctx_range(BPF_SOCK, "dst_ip4"), ctx_range_till(BPF_SOCK, ("dst_ip6", 0), ("dst_ip6", 3)),
)
_DST_PORT = ctx_range(BPF_SOCK, "dst_port")
_AFTER_DST_PORT = range(offsetofend(BPF_SOCK, "dst_port"), _o("dst_ip4"))


def bpf_sock_is_valid_access(off: int, size: int, access: int, info) -> bool:
    """bpf_sock_is_valid_access(): the rules every struct bpf_sock reader shares."""
    if off < 0 or off >= BPF_SOCK_SIZE or off % size:
        return False
    if any(off in r for r in _NARROW_FIELDS):
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    if off in _DST_PORT:
        field_size = _U32 if size == _U32 else _DST_PORT_SIZE
        info.ctx_field_size = field_size
        return narrow_access_ok(off, size, field_size)
    if off in _AFTER_DST_PORT:
        return False
    return size == _U32


_FULL_ACCESS = {_o("bound_dev_if"), _o("mark"), _o("priority")}
_CREATE_RELEASE = frozenset({AttachType.CGROUP_INET_SOCK_CREATE, AttachType.CGROUP_INET_SOCK_RELEASE})
_SRC_IP4 = ctx_range(BPF_SOCK, "src_ip4")
_SRC_IP6 = ctx_range_till(BPF_SOCK, ("src_ip6", 0), ("src_ip6", 3))
_SRC_PORT = ctx_range(BPF_SOCK, "src_port")


def _check_attach_type(off: int, access: int, eat: int) -> bool:
    """__sock_filter_check_attach_type(): which attach type may touch which field, how."""
    if off in _FULL_ACCESS:
        return eat in _CREATE_RELEASE
    if off in _SRC_IP4:
        return eat == AttachType.CGROUP_INET4_POST_BIND and access == BPF_READ
    if off in _SRC_IP6:
        return eat == AttachType.CGROUP_INET6_POST_BIND and access == BPF_READ
    if off in _SRC_PORT:
        return eat in (AttachType.CGROUP_INET4_POST_BIND, AttachType.CGROUP_INET6_POST_BIND) \
            and access == BPF_READ
    return access == BPF_READ


def sock_filter_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    return bpf_sock_is_valid_access(off, size, access, info) and \
        _check_attach_type(off, access, prog.expected_attach_type)


_OWN = {
    FuncId.get_socket_cookie: lambda prog: CTX_ARG,
    FuncId.get_netns_cookie: lambda prog: NETNS_COOKIE_CTX,
    FuncId.perf_event_output: lambda prog: EVENT_OUTPUT_DATA,
    FuncId.sk_storage_get: lambda prog: SK_STORAGE_GET_CG_SOCK,
    FuncId.ktime_get_coarse_ns: lambda prog: _any(FuncId.ktime_get_coarse_ns),
}


def _any(func_id: int):
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


def sock_filter_func_proto(func_id: int, prog):
    """sock_filter_func_proto()."""
    return cgroup_base_func_proto(func_id, prog, _OWN)


_RX_QUEUE_MAPPING = _o("rx_queue_mapping")
_NO_QUEUE = {BPF_W: 0xFFFFFFFF, BPF_H: 0xFFFF}     # what the uapi struct holds for "none" (-1)


def bpf_sock_convert_ctx_access(insn: Insn) -> list[Insn] | None:
    """bpf_sock_convert_ctx_access() where the uapi struct differs: a socket that recorded no
    rx queue reads rx_queue_mapping as a 64-bit -1 (4- and 2-byte loads; a 1-byte load is
    masked to 0xff, as the uapi byte already is)."""
    if BPF_CLASS(insn.code) != BPF_LDX or BPF_MODE(insn.code) != BPF_MEM or insn.off != _RX_QUEUE_MAPPING:
        return None
    none = _NO_QUEUE.get(BPF_SIZE(insn.code))
    if none is None:
        return None
    return [insn, Insn(BPF_JMP32 | BPF_JNE | BPF_K, insn.dst_reg, 0, 1, u32_to_s32(none)),
            Insn(BPF_ALU64 | BPF_MOV | BPF_K, insn.dst_reg, 0, 0, -1)]


def _ret_range(prog) -> tuple[int, int]:
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=sock_filter_func_proto, is_valid_access=sock_filter_is_valid_access,
                           convert_ctx_access=bpf_sock_convert_ctx_access,
                           ctx_size=BPF_SOCK_SIZE, kctx_size=BPF_SOCK_SIZE, get_ret_range=_ret_range)
