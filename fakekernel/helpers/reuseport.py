"""SK_REUSEPORT program runs — net/core/filter.c (struct sk_reuseport_kern,
bpf_init_reuseport_kern, bpf_run_sk_reuseport, sk_select_reuseport).

`bpf_run_sk_reuseport` maps a ``struct sk_reuseport_md`` the way convert_ctx_access presents
the kernel's ``struct sk_reuseport_kern`` (packet pointers at skb->data, the group's socket as
a ``struct bpf_sock``), runs the program, and returns the selected socket, None (SK_PASS
without a selection: the caller falls back to the hash) or `ECONNREFUSED_SK` (SK_DROP).
The run's ctx object (`SkReuseportKern`) answers the skb helpers' questions with its skb, as
sk_reuseport_load_bytes(_relative) hand reuse_kern->skb to the skb versions.
Not modelled: migrating_sk (no SELECT_OR_MIGRATE migration happens: it is always NULL).
"""
from __future__ import annotations

import attrs

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType
from uapi.bpf import SK_PASS, FuncId, MapType
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["REUSEPORT_PROTOS", "REUSEPORT_RUNTIME", "SkReuseportKern", "bpf_run_sk_reuseport",
           "ECONNREFUSED_SK", "SK_SELECT_REUSEPORT_PROTO"]

_MD = "struct sk_reuseport_md"
ECONNREFUSED_SK = object()          # ERR_PTR(-ECONNREFUSED)

SK_SELECT_REUSEPORT_PROTO = FuncProto(      # sk_select_reuseport_proto
    func=FuncId.sk_select_reuseport, gpl_only=False, ret_type=RetType.INTEGER,
    arg_types=(ArgType.PTR_TO_CTX, ArgType.CONST_MAP_PTR, ArgType.PTR_TO_MAP_KEY, ArgType.ANYTHING))
REUSEPORT_PROTOS = {FuncId.sk_select_reuseport: SK_SELECT_REUSEPORT_PROTO}


def _be16_as_loaded(v: int) -> int:
    return int.from_bytes(v.to_bytes(2, "big"), "little")


@attrs.define(eq=False)
class SkReuseportKern:
    """struct sk_reuseport_kern."""

    skb: object                     # the SkBuff, data at the transport header
    sk: object                      # the group's socket the lookup found (an InetSocket)
    reuseport_id: int
    bind_inany: bool
    hash: int
    selected_sk: object = None
    migrating_sk: object = None

    def __getattr__(self, name):
        # the skb helpers (skb_load_bytes / _relative) read the packet through the ctx
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.skb, name)


def bpf_run_sk_reuseport(kern, reuse, sk, prog, skb, hash_: int, local_addr: bytes):
    """bpf_run_sk_reuseport(): the selected socket, None, or ECONNREFUSED_SK."""
    from fakekernel.bpf.core import bpf_prog_run
    run = SkReuseportKern(skb=skb, sk=sk, reuseport_id=reuse.reuseport_id,
                          bind_inany=reuse.bind_inany, hash=hash_)
    mem = kern.mem
    pkt = mem.map_region(skb.head, "packet", "skb->head", writable=False)
    sock = mem.map_region(bytearray(sk.rx_entry.sock(local_addr).bpf_sock_bytes()), "sock",
                          "reuse_kern->sk", writable=False)
    md = ffi.new(_MD + " *")
    md.data = ffi.cast("void *", pkt.base + skb.data_off)
    md.data_end = ffi.cast("void *", pkt.base + skb.data_off + skb.len)
    md.len = skb.len
    md.eth_protocol = _be16_as_loaded(skb.protocol)
    md.ip_protocol = sk.protocol
    md.bind_inany = int(reuse.bind_inany)
    md.hash = hash_ & 0xFFFFFFFF
    md.sk = ffi.cast("struct bpf_sock *", sock.base)
    ctx = mem.map_region(bytearray(ffi.buffer(md)), "ctx", "struct sk_reuseport_kern", writable=False)
    try:
        action = bpf_prog_run(kern, prog, ctx.base, ctx=run) & 0xFFFFFFFF
    finally:
        for region in (ctx, sock, pkt):
            mem.unmap(region)
    if action == SK_PASS:
        return run.selected_sk
    return ECONNREFUSED_SK


def sk_select_reuseport(env, r1, r2, r3, r4, r5) -> int:
    """sk_select_reuseport(): pick the socket at `key` of a REUSEPORT_SOCKARRAY / SOCKMAP /
    SOCKHASH if it is in the running group (ENOENT / EINVAL / EPROTOTYPE / EAFNOSUPPORT /
    EBADFD otherwise)."""
    run = env.ctx
    bpf_map = env.mem.object_at(r2)
    is_sockarray = bpf_map.map_type == MapType.REUSEPORT_SOCKARRAY
    selected = bpf_map.lookup_sk(env.mem.read(r3, bpf_map.key_size))
    if selected is None:
        return neg_errno(Errno.ENOENT)
    reuse = getattr(selected, "reuseport_cb", None) or None
    if reuse is None:
        return neg_errno(Errno.ENOENT if is_sockarray else Errno.EINVAL)
    if reuse.reuseport_id != run.reuseport_id:
        sk = run.sk
        if sk.protocol != selected.protocol:
            return neg_errno(Errno.EPROTOTYPE)
        if sk.family != selected.family:
            return neg_errno(Errno.EAFNOSUPPORT)
        return neg_errno(Errno.EBADFD)
    run.selected_sk = selected
    return 0


REUSEPORT_RUNTIME = {FuncId.sk_select_reuseport: sk_select_reuseport}
