"""Tunnel metadata and xfrm state for programs — net/core/filter.c (bpf_skb_set_tunnel_key,
bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_opt, bpf_skb_get_tunnel_opt, bpf_skb_get_xfrm_state)
over include/net/ip_tunnels.h's ``struct ip_tunnel_info`` carried by a metadata dst.

bpf_skb_set_tunnel_key attaches the CPU's metadata dst (`IpTunnelInfo`, reset each time) to
the skb (``SkBuff.tun_info``); the getters read it back as the kernel does — note that the
kernel stores ``remote`` as the tunnel's destination and reports its source as ``remote``, so
a key read back after setting it has remote and local swapped.  No skb here ever carries a
sec_path, so bpf_skb_get_xfrm_state always fails with EINVAL.
"""
from __future__ import annotations

import attrs

from fakekernel.helpers.base import neg_errno
from uapi.bpf import FuncId, TunInfoFlags, TunInfoFlags2, TunnelKeyFlags
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["TUNNEL_RUNTIME", "IpTunnelInfo"]

_KEY = "struct bpf_tunnel_key"
_KEY_SIZE = ffi.sizeof(_KEY)
_U32 = ffi.sizeof("__u32")
_IP6 = 16
#: the deprecated, shorter struct bpf_tunnel_key layouts both directions still accept
_LOCAL_IPV6 = ffi.offsetof(_KEY, "local_ipv6")
_LABEL = ffi.offsetof(_KEY, "tunnel_label")
_EXT = ffi.offsetof(_KEY, "tunnel_ext")
_REMOTE_IPV6_1 = ffi.offsetof(_KEY, "remote_ipv6") + _U32
_COMPAT_SIZES = (_LOCAL_IPV6, _LABEL, _EXT, _REMOTE_IPV6_1)
_SET_FLAGS = int(TunInfoFlags.TUNINFO_IPV6 | TunnelKeyFlags.ZERO_CSUM_TX | TunnelKeyFlags.DONT_FRAGMENT
                 | TunnelKeyFlags.SEQ_NUMBER | TunnelKeyFlags.NO_TUNNEL_KEY)
_GET_FLAGS = int(TunInfoFlags.TUNINFO_IPV6 | TunInfoFlags2.TUNINFO_FLAGS)
IPV6_FLOWLABEL_MASK = 0x000FFFFF
IP_TUNNEL_OPTS_MAX = 255                       # options_len is a u8

# enum ip_tunnel flag bits (include/net/ip_tunnels.h)
IP_TUNNEL_CSUM_BIT, IP_TUNNEL_KEY_BIT, IP_TUNNEL_SEQ_BIT = 0, 2, 3
IP_TUNNEL_DONT_FRAGMENT_BIT, IP_TUNNEL_GENEVE_OPT_BIT, IP_TUNNEL_VXLAN_OPT_BIT = 8, 11, 12
IP_TUNNEL_NOCACHE_BIT, IP_TUNNEL_ERSPAN_OPT_BIT, IP_TUNNEL_GTP_OPT_BIT, IP_TUNNEL_PFCP_OPT_BIT = 13, 14, 15, 17
_OPTIONS_PRESENT = (1 << IP_TUNNEL_GENEVE_OPT_BIT | 1 << IP_TUNNEL_VXLAN_OPT_BIT | 1 << IP_TUNNEL_ERSPAN_OPT_BIT
                    | 1 << IP_TUNNEL_GTP_OPT_BIT | 1 << IP_TUNNEL_PFCP_OPT_BIT)
_BE16_BITS = 16


@attrs.define(eq=False)
class IpTunnelInfo:
    """struct ip_tunnel_info (mode, key) plus its options."""

    ipv6: bool = False                 # mode & IP_TUNNEL_INFO_IPV6
    tun_id: int = 0
    tos: int = 0
    ttl: int = 0
    src: bytes = bytes(4)              # key.u.ipv4/ipv6.src, network order
    dst: bytes = bytes(4)
    label: int = 0                     # host order (stored big-endian by the kernel)
    flags: int = 0                     # IP_TUNNEL_*_BIT set
    options: bytes = b""


def _skb(env):
    return env.ctx


def _compat_size(size: int) -> bool:
    return size in _COMPAT_SIZES


def bpf_skb_set_tunnel_key(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_set_tunnel_key(skb, from, size, flags)."""
    size, flags = r3 & 0xFFFFFFFF, r4
    if flags & ~_SET_FLAGS:
        return neg_errno(Errno.EINVAL)
    if size != _KEY_SIZE and not _compat_size(size):
        return neg_errno(Errno.EINVAL)
    raw = bytes(env.mem.read(r2, size)).ljust(_KEY_SIZE, b"\0")
    k = ffi.from_buffer(_KEY + " *", bytearray(raw))
    ipv6 = bool(flags & TunInfoFlags.TUNINFO_IPV6)
    if (not ipv6 and k.tunnel_label) or k.tunnel_ext:
        return neg_errno(Errno.EINVAL)
    bits = 1 << IP_TUNNEL_NOCACHE_BIT
    bits |= (1 << IP_TUNNEL_DONT_FRAGMENT_BIT) if flags & TunnelKeyFlags.DONT_FRAGMENT else 0
    bits |= 0 if flags & TunnelKeyFlags.ZERO_CSUM_TX else 1 << IP_TUNNEL_CSUM_BIT
    bits |= (1 << IP_TUNNEL_SEQ_BIT) if flags & TunnelKeyFlags.SEQ_NUMBER else 0
    bits |= 0 if flags & TunnelKeyFlags.NO_TUNNEL_KEY else 1 << IP_TUNNEL_KEY_BIT
    info = IpTunnelInfo(ipv6=ipv6, tun_id=k.tunnel_id, tos=k.tunnel_tos, ttl=k.tunnel_ttl, flags=bits)
    if ipv6:
        info.dst = bytes(ffi.buffer(k.remote_ipv6))
        info.src = bytes(ffi.buffer(k.local_ipv6))
        info.label = k.tunnel_label & IPV6_FLOWLABEL_MASK
    else:
        info.dst = k.remote_ipv4.to_bytes(_U32, "big")
        info.src = k.local_ipv4.to_bytes(_U32, "big")
    _skb(env).tun_info = info
    return 0


def _flags_to_be16(bits: int) -> int:
    """ip_tunnel_flags_to_be16(), as a program's 16-bit load sees the __be16."""
    v = bits & ((1 << _BE16_BITS) - 1)
    return int.from_bytes(v.to_bytes(2, "big"), "little")


def bpf_skb_get_tunnel_key(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_get_tunnel_key(skb, to, size, flags): `to` is cleared on every failure."""
    size, flags = r3 & 0xFFFFFFFF, r4
    info = getattr(_skb(env), "tun_info", None)
    err = 0
    if info is None or flags & ~_GET_FLAGS:
        err = Errno.EINVAL
    elif info.ipv6 != bool(flags & TunInfoFlags.TUNINFO_IPV6):
        err = Errno.EPROTO
    elif size != _KEY_SIZE and (not _compat_size(size) or (size == _REMOTE_IPV6_1 and info.ipv6)):
        err = Errno.EINVAL
    if err:
        env.mem.write(r2, bytes(size))
        return neg_errno(err)
    to = ffi.new(_KEY + " *")
    ffi.memmove(to, env.mem.read(r2, size), size)          # the compat copy keeps the rest as it was
    to.tunnel_id = info.tun_id & 0xFFFFFFFF
    to.tunnel_tos, to.tunnel_ttl = info.tos, info.ttl
    if flags & TunInfoFlags2.TUNINFO_FLAGS:
        to.tunnel_flags = _flags_to_be16(info.flags)
    else:
        to.tunnel_ext = 0
    if flags & TunInfoFlags.TUNINFO_IPV6:
        ffi.memmove(to.remote_ipv6, info.src, _IP6)
        ffi.memmove(to.local_ipv6, info.dst, _IP6)
        to.tunnel_label = info.label
    else:
        to.remote_ipv4 = int.from_bytes(info.src, "big")
        to.local_ipv4 = int.from_bytes(info.dst, "big")
        for i in range(1, 4):
            to.remote_ipv6[i] = to.local_ipv6[i] = 0
        to.tunnel_label = 0
    env.mem.write(r2, bytes(ffi.buffer(to))[:size])
    return 0


def bpf_skb_get_tunnel_opt(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_get_tunnel_opt(skb, to, size): the options' length; `to` zero-padded/cleared."""
    size = r3 & 0xFFFFFFFF
    info = getattr(_skb(env), "tun_info", None)
    err = 0
    if info is None or not info.flags & _OPTIONS_PRESENT:
        err = Errno.ENOENT
    elif size < len(info.options):
        err = Errno.ENOMEM
    if err:
        env.mem.write(r2, bytes(size))
        return neg_errno(err)
    env.mem.write(r2, info.options.ljust(size, b"\0"))
    return len(info.options)


def bpf_skb_set_tunnel_opt(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_set_tunnel_opt(skb, from, size): only onto a key bpf_skb_set_tunnel_key set."""
    size = r3 & 0xFFFFFFFF
    info = getattr(_skb(env), "tun_info", None)
    if info is None or size & (_U32 - 1):
        return neg_errno(Errno.EINVAL)
    if size > IP_TUNNEL_OPTS_MAX:
        return neg_errno(Errno.ENOMEM)
    info.options = bytes(env.mem.read(r2, size))
    info.flags = (info.flags & ~_OPTIONS_PRESENT) | _OPTIONS_PRESENT
    return 0


def bpf_skb_get_xfrm_state(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_get_xfrm_state(skb, index, to, size, flags): no skb has a sec_path here."""
    env.mem.write(r3, bytes(r4 & 0xFFFFFFFF))
    return neg_errno(Errno.EINVAL)


TUNNEL_RUNTIME = {
    FuncId.skb_set_tunnel_key: bpf_skb_set_tunnel_key,
    FuncId.skb_get_tunnel_key: bpf_skb_get_tunnel_key,
    FuncId.skb_set_tunnel_opt: bpf_skb_set_tunnel_opt,
    FuncId.skb_get_tunnel_opt: bpf_skb_get_tunnel_opt,
    FuncId.skb_get_xfrm_state: bpf_skb_get_xfrm_state,
}
