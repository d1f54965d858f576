"""BPF_PROG_TEST_RUN for flow dissector, sk_lookup and netfilter programs — net/bpf/test_run.c:
bpf_prog_test_run_flow_dissector() (with net/core/flow_dissector.c bpf_flow_dissect()),
bpf_prog_test_run_sk_lookup() (with BPF_PROG_SK_LOOKUP_RUN_ARRAY of include/linux/filter.h)
and bpf_prog_test_run_nf().

data_in is an Ethernet frame; the program runs on it with a zeroed ``struct bpf_flow_keys``
(n_proto from the frame, nhoff = thoff = ETH_HLEN, flags from ctx_in), the offsets it leaves
are clamped into the frame, and data_out receives the flow keys.
"""
from __future__ import annotations

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.errors import Errno, KernelError
from fakekernel.net.headers import (AF_INET, AF_INET6, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HDR_LEN,
                                    IPV6_HDR_LEN, NET_IP_ALIGN, NET_SKB_PAD, SKB_SHARED_INFO_SIZE)
from fakekernel.net.netdev import LOOPBACK
from fakekernel.net.skbuff import SkBuff, eth_type_trans
from fakekernel.progs.flow_dissector import FD_KCTX_SIZE, FD_PTR_SLOTS, FLOW_KEYS_OFF
from fakekernel.progs.netfilter import NF_CTX
from fakekernel.progs.sk_lookup import SK_LOOKUP_CTX, SK_LOOKUP_CTX_SIZE, SkLookupKern
from fakekernel.test_run import bpf_ctx_finish, bpf_ctx_init, bpf_test_finish, bpf_test_init, bpf_test_run
from uapi.bpf import SK_DROP, SK_PASS
from uapi.ffi import ffi, offsetofend
from uapi.netfilter import NF_HOOK_STATE, NfInetHook, NfProto
from uapi.netfilter import ffi as nf_ffi

__all__ = ["bpf_prog_test_run_flow_dissector", "bpf_flow_dissect", "FlowDissectorCtx",
           "bpf_prog_test_run_sk_lookup", "bpf_prog_test_run_nf", "nf_prog_run", "nf_hook_state"]

_KEYS = "struct bpf_flow_keys"
_KEYS_SIZE = ffi.sizeof(_KEYS)
_FLAGS_LO = ffi.offsetof(_KEYS, "flags")
_FLAGS_HI = offsetofend(_KEYS, "flags")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64 = ffi.sizeof("__u64")
_SK_LOOKUP_TAIL = offsetofend(SK_LOOKUP_CTX, "local_port")
_ETH_PROTO = slice(ETH_HLEN - ffi.sizeof("__be16"), ETH_HLEN)


class FlowDissectorCtx:
    """struct bpf_flow_dissector: the run's kernel ctx (``skb`` is NULL in a test run)."""

    # no skb behind a test run: bpf_flow_dissector_load_bytes() finds no byte to load (-EFAULT,
    # the buffer zeroed), which the skb_load_bytes runtime gives for an empty skb
    len = 0

    def __init__(self, data_region, keys_region, size: int):
        self.skb = None
        self.data = data_region
        self.keys = keys_region
        self.size = size


def verify_user_bpf_flow_keys(buf: bytearray) -> None:
    """Only ``flags`` may be set in ctx_in."""
    if any(buf[:_FLAGS_LO]) or any(buf[_FLAGS_HI:]):
        raise KernelError(Errno.EINVAL, "ctx_in sets a flow key other than flags")


def _clamp_u16(v: int, lo: int, hi: int) -> int:
    v, lo, hi = v & _U16_MAX, lo & _U16_MAX, hi & _U16_MAX
    return max(lo, min(v, hi))


def bpf_flow_dissect(kern, prog, data: bytearray, proto: bytes, nhoff: int, hlen: int,
                     flags: int) -> tuple[int, bytes]:
    """bpf_flow_dissect(): one run on `data`; returns (r0, the flow keys)."""
    keys = ffi.new(_KEYS + " *")
    ffi.memmove(ffi.addressof(keys[0], "n_proto"), proto, len(proto))
    keys.nhoff = keys.thoff = nhoff
    keys.flags = flags
    mem = kern.mem
    pkt = mem.map_region(data, "packet", "flow dissector data")
    kregion = mem.map_region(bytearray(ffi.buffer(keys)), "flow_keys", "bpf_flow_keys")
    kctx = bytearray(FD_KCTX_SIZE)
    for off, value in ((FLOW_KEYS_OFF, kregion.base), (FD_PTR_SLOTS[ffi.offsetof("struct __sk_buff", "data")],
                                                       pkt.base),
                       (FD_PTR_SLOTS[ffi.offsetof("struct __sk_buff", "data_end")], pkt.base + hlen)):
        kctx[off:off + _U64] = value.to_bytes(_U64, "little")
    cregion = mem.map_region(kctx, "ctx", "bpf_flow_dissector", writable=False)
    try:
        r0 = bpf_prog_run(kern, prog, cregion.base, ctx=FlowDissectorCtx(pkt, kregion, hlen))
        out = ffi.new(_KEYS + " *")
        ffi.memmove(out, bytes(mem.read(kregion.base, _KEYS_SIZE)), _KEYS_SIZE)
    finally:
        for r in (cregion, kregion, pkt):
            mem.unmap(r)
    hlen = min(hlen, _U16_MAX)
    out.nhoff = _clamp_u16(out.nhoff, nhoff, hlen)
    out.thoff = _clamp_u16(out.thoff, out.nhoff, hlen)
    return r0 & _U32_MAX, bytes(ffi.buffer(out))


def bpf_prog_test_run_flow_dissector(kern, task, prog, attr, ctx) -> int:
    t = attr.test
    size = t.data_size_in
    if t.flags or t.cpu or t.batch_size:
        raise KernelError(Errno.EINVAL, "flags, cpu and batch_size are not for flow dissectors")
    if size < ETH_HLEN:
        raise KernelError(Errno.EINVAL, "data_size_in shorter than an Ethernet header")
    data = bpf_test_init(task, attr, size, size, 0, 0)
    repeat = max(t.repeat, 1)
    user_ctx = bpf_ctx_init(task, attr, _KEYS_SIZE)
    flags = 0
    if user_ctx is not None:
        verify_user_bpf_flow_keys(user_ctx)
        flags = ffi.from_buffer(_KEYS + " *", user_ctx).flags
    start = kern.ktime_get_ns()
    frame = data[:size]
    for _ in range(repeat):
        retval, keys = bpf_flow_dissect(kern, prog, bytearray(frame), bytes(frame[_ETH_PROTO]), ETH_HLEN,
                                        size, flags)
    duration = min((kern.ktime_get_ns() - start) // repeat, _U32_MAX)
    bpf_test_finish(task, attr, ctx, keys, None, _KEYS_SIZE, retval, duration)
    bpf_ctx_finish(task, attr, ctx, user_ctx, _KEYS_SIZE)
    return 0


# ---------------------------------------------------------------- sk_lookup

def _sk_lookup_kctx(user) -> bytearray:
    """The bpf_sk_lookup a program reads for `user` (see fakekernel.progs.sk_lookup)."""
    buf = bytearray(SK_LOOKUP_CTX_SIZE)
    c = ffi.from_buffer(SK_LOOKUP_CTX + " *", buf)
    c.family = user.family & _U16_MAX
    c.protocol = user.protocol & _U16_MAX
    c.local_port = user.local_port & _U16_MAX
    c.remote_port = user.remote_port
    if c.family == AF_INET:
        c.remote_ip4, c.local_ip4 = user.remote_ip4, user.local_ip4
    else:
        ffi.memmove(c.remote_ip6, user.remote_ip6, ffi.sizeof(c.remote_ip6))
        ffi.memmove(c.local_ip6, user.local_ip6, ffi.sizeof(c.local_ip6))
    return buf


def bpf_prog_test_run_sk_lookup(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_sk_lookup(): one lookup described by ctx_in, through a one-prog array."""
    t = attr.test
    if t.flags or t.cpu or t.batch_size:
        raise KernelError(Errno.EINVAL, "flags, cpu and batch_size are not for sk_lookup")
    if t.data_in or t.data_size_in or t.data_out or t.data_size_out:
        raise KernelError(Errno.EINVAL, "sk_lookup test runs take no packet")
    repeat = max(t.repeat, 1)
    user_buf = bpf_ctx_init(task, attr, SK_LOOKUP_CTX_SIZE)
    if user_buf is None:
        raise KernelError(Errno.EINVAL, "sk_lookup test runs need ctx_in")
    user = ffi.from_buffer(SK_LOOKUP_CTX + " *", user_buf)
    if user.cookie or any(user_buf[_SK_LOOKUP_TAIL:]):
        raise KernelError(Errno.EINVAL, "ctx_in sets sk or fields past local_port")
    if user.local_port > _U16_MAX:
        raise KernelError(Errno.ERANGE, "local_port beyond a u16")
    if user.family & _U16_MAX not in (AF_INET, AF_INET6):
        raise KernelError(Errno.EAFNOSUPPORT, "family is neither AF_INET nor AF_INET6")
    kbuf = _sk_lookup_kctx(user)
    mem = kern.mem
    start = kern.ktime_get_ns()
    for _ in range(repeat):
        lookup = SkLookupKern(family=user.family & _U16_MAX, protocol=user.protocol & _U16_MAX)
        region = mem.map_region(bytearray(kbuf), "ctx", "bpf_sk_lookup", writable=False)
        try:
            r0 = bpf_prog_run(kern, prog, region.base, ctx=lookup) & _U32_MAX
        finally:
            mem.unmap(region)
        # BPF_PROG_SK_LOOKUP_RUN_ARRAY() of one program
        retval = SK_PASS if r0 != SK_DROP or lookup.selected_sk is not None else SK_DROP
    duration = min((kern.ktime_get_ns() - start) // repeat, _U32_MAX)
    user.cookie = 0
    bpf_test_finish(task, attr, ctx, b"", None, 0, retval, duration)
    bpf_ctx_finish(task, attr, ctx, user_buf, SK_LOOKUP_CTX_SIZE)
    return 0


# ---------------------------------------------------------------- netfilter

_NF_STATE_SIZE = nf_ffi.sizeof(NF_HOOK_STATE)
_NF_IN_HOOKS = frozenset({NfInetHook.PRE_ROUTING, NfInetHook.LOCAL_IN, NfInetHook.FORWARD})
_NF_OUT_HOOKS = frozenset({NfInetHook.FORWARD, NfInetHook.LOCAL_OUT, NfInetHook.POST_ROUTING})
_NF_ETH = {NfProto.IPV4: ETH_P_IP, NfProto.IPV6: ETH_P_IPV6}


def verify_and_copy_hook_state(kern, state, user) -> None:
    """verify_and_copy_hook_state(): no pointers from the user; pf IPv4/IPv6; the devices the hook has."""
    if getattr(user, "in") or user.out or user.net or user.sk or user.okfn:
        raise KernelError(Errno.EINVAL, "ctx_in sets a pointer of nf_hook_state")
    if user.pf not in _NF_ETH:
        raise KernelError(Errno.EINVAL, "pf is neither NFPROTO_IPV4 nor NFPROTO_IPV6")
    dev = nf_ffi.cast("void *", kern.mem.map_object(LOOPBACK))
    # the switch looks at the hook the state holds so far (LOCAL_OUT), as the kernel's does
    if state.hook in _NF_IN_HOOKS:
        setattr(state, "in", dev)
    if state.hook in _NF_OUT_HOOKS:
        state.out = dev
    state.pf, state.hook = user.pf, user.hook


def bpf_prog_test_run_nf(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_nf(): an IP packet (or an Ethernet frame for hooks other than LOCAL_OUT)
    through the program with the hook state from ctx_in (default: IPv4 LOCAL_OUT on lo)."""
    t = attr.test
    size = t.data_size_in
    if t.flags or t.cpu or t.batch_size:
        raise KernelError(Errno.EINVAL, "flags, cpu and batch_size are not for netfilter")
    if size < IPV4_HDR_LEN:
        raise KernelError(Errno.EINVAL, "data_size_in shorter than an IPv4 header")
    headroom = NET_SKB_PAD + NET_IP_ALIGN
    head = bpf_test_init(task, attr, size, size, headroom, SKB_SHARED_INFO_SIZE)
    repeat = max(t.repeat, 1)
    state = nf_ffi.new(NF_HOOK_STATE + " *")
    state.pf, state.hook = NfProto.IPV4, NfInetHook.LOCAL_OUT
    user_buf = bpf_ctx_init(task, attr, _NF_STATE_SIZE)
    if user_buf is not None:
        verify_and_copy_hook_state(kern, state, nf_ffi.from_buffer(NF_HOOK_STATE + " *", user_buf))
    skb = SkBuff(head=head, data_off=0)
    skb.reserve(headroom)
    skb.put(size)
    if state.hook != NfInetHook.LOCAL_OUT:
        if size < ETH_HLEN + IPV4_HDR_LEN:
            raise KernelError(Errno.EINVAL, "frame shorter than Ethernet + IPv4 headers")
        skb.protocol = eth_type_trans(skb, LOOPBACK)
        if skb.protocol == ETH_P_IP:
            if state.pf != NfProto.IPV4:
                raise KernelError(Errno.EINVAL, "IPv4 frame for a non-IPv4 hook")
        elif skb.protocol == ETH_P_IPV6:
            if size < ETH_HLEN + IPV6_HDR_LEN or state.pf != NfProto.IPV6:
                raise KernelError(Errno.EINVAL, "IPv6 frame too short or for a non-IPv6 hook")
        else:
            raise KernelError(Errno.EPROTO, "neither IPv4 nor IPv6")
        skb.network_header = skb.data_off
    else:
        skb.protocol = _NF_ETH.get(state.pf, 0)
    retval, duration = nf_prog_run(kern, prog, state, skb, repeat)
    bpf_test_finish(task, attr, ctx, b"", None, 0, retval, duration)
    return 0


def nf_prog_run(kern, prog, state, skb, repeat: int = 1) -> tuple[int, int]:
    """Run a netfilter program on a ``struct bpf_nf_ctx`` of `state` (a ``struct nf_hook_state``)
    and `skb` (an opaque handle: its kernel layout is not modelled); (retval, duration)."""
    mem = kern.mem
    sregion = mem.map_region(bytearray(nf_ffi.buffer(state)), "nf_hook_state", "nf_hook_state",
                             writable=False)
    nf_ctx = ffi.new(NF_CTX + " *")
    nf_ctx.state = ffi.cast("void *", sregion.base)
    nf_ctx.skb = ffi.cast("void *", mem.map_object(skb))
    cregion = mem.map_region(bytearray(ffi.buffer(nf_ctx)), "ctx", "bpf_nf_ctx", writable=False)
    try:
        return bpf_test_run(kern, prog, cregion.base, skb, repeat)
    finally:
        mem.unmap(cregion)
        mem.unmap(sregion)


def nf_hook_state(kern, pf: int, hooknum: int):
    """The nf_hook_state a real hook passes: the devices the hook has (lo here)."""
    state = nf_ffi.new(NF_HOOK_STATE + " *")
    state.pf, state.hook = pf, hooknum
    dev = nf_ffi.cast("void *", kern.mem.map_object(LOOPBACK))
    if hooknum in _NF_IN_HOOKS:
        setattr(state, "in", dev)
    if hooknum in _NF_OUT_HOOKS:
        state.out = dev
    return state
