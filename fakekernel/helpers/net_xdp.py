"""XDP helpers — net/core/filter.c (bpf_xdp_adjust_head/meta/tail, bpf_xdp_load/store_bytes,
bpf_xdp_get_buff_len) over an `XdpBuff` (include/net/xdp.h).

Offsets in the XdpBuff are from data_hard_start; the frame ends where the kernel's
xdp_data_hard_end() does: frame_sz minus the skb_shared_info kept at the end of the buffer.
A helper that moves data / data_meta / data_end calls ``update_ctx()`` so the program's
ctx pointer slots follow.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.net.headers import ETH_HLEN, SKB_SHARED_INFO_SIZE, XDP_FRAME_SIZE
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.insn import s32, u32

__all__ = ["NET_XDP_RUNTIME", "xdp_get_buff_len"]

_U16_MAX = 0xFFFF
_META_ALIGN = 4                        # sizeof(u32)
_META_MAX = 0xFF                       # type_max(skb_shared_info.meta_len)


def xdp_data_meta_unsupported(xdp) -> bool:
    return xdp.data_meta > xdp.data


def xdp_get_metalen(xdp) -> int:
    return 0 if xdp_data_meta_unsupported(xdp) else xdp.data - xdp.data_meta


def xdp_metalen_invalid(metalen: int) -> bool:
    return metalen % _META_ALIGN != 0 or metalen > _META_MAX


def xdp_data_hard_end(xdp) -> int:
    return xdp.frame_sz - SKB_SHARED_INFO_SIZE


def xdp_get_buff_len(xdp) -> int:
    return xdp.data_end - xdp.data + xdp.frags_size


def bpf_xdp_get_buff_len(env, r1, r2, r3, r4, r5) -> int:
    return xdp_get_buff_len(env.ctx)


def bpf_xdp_adjust_head(env, r1, r2, r3, r4, r5) -> int:
    xdp, offset = env.ctx, s32(r2)
    metalen = xdp_get_metalen(xdp)
    data = xdp.data + offset
    if data < XDP_FRAME_SIZE + metalen or data > xdp.data_end - ETH_HLEN:
        return neg_errno(Errno.EINVAL)
    if metalen:
        xdp.buf[xdp.data_meta + offset:xdp.data_meta + offset + metalen] = \
            xdp.buf[xdp.data_meta:xdp.data_meta + metalen]
    xdp.data_meta += offset
    xdp.data = data
    xdp.update_ctx()
    return 0


def bpf_xdp_adjust_meta(env, r1, r2, r3, r4, r5) -> int:
    xdp, offset = env.ctx, s32(r2)
    meta = xdp.data_meta + offset
    if xdp_data_meta_unsupported(xdp):
        return neg_errno(Errno.ENOTSUPP)
    if meta < XDP_FRAME_SIZE or meta > xdp.data:
        return neg_errno(Errno.EINVAL)
    if xdp_metalen_invalid(xdp.data - meta):
        return neg_errno(Errno.EACCES)
    xdp.data_meta = meta
    xdp.update_ctx()
    return 0


def _adjust_frags_tail(xdp, offset: int) -> int:
    """bpf_xdp_frags_increase_tail() / bpf_xdp_frags_shrink_tail(): grow the last fragment
    within its page (rxq frag_size = frame_sz here; zero-filled) or release bytes from the
    end, dropping emptied fragments and, once none is left, trimming the linear part."""
    if offset >= 0:
        last = xdp.frags[-1]
        if offset > xdp.frame_sz - len(last):
            return neg_errno(Errno.EINVAL)
        last.extend(bytes(offset))
        return 0
    shrink = -offset
    if shrink > xdp_get_buff_len(xdp) - ETH_HLEN:
        return neg_errno(Errno.EINVAL)
    while xdp.frags and shrink > 0:
        last = xdp.frags[-1]
        n = min(shrink, len(last))
        shrink -= n
        if n == len(last):
            xdp.frags.pop()
        else:
            del last[len(last) - n:]
            break
    if not xdp.frags:
        xdp.data_end -= shrink
        xdp.update_ctx()
    return 0


def bpf_xdp_adjust_tail(env, r1, r2, r3, r4, r5) -> int:
    xdp, offset = env.ctx, s32(r2)
    if xdp.frags:
        return _adjust_frags_tail(xdp, offset)
    data_end = xdp.data_end + offset
    if data_end > xdp_data_hard_end(xdp) or data_end < xdp.data + ETH_HLEN:
        return neg_errno(Errno.EINVAL)
    if offset > 0:
        xdp.buf[xdp.data_end:data_end] = bytes(offset)
    xdp.data_end = data_end
    xdp.update_ctx()
    return 0


def _xdp_segments(xdp):
    """The frame as (buffer, start, length) pieces: the linear part, then each fragment."""
    yield xdp.buf, xdp.data, xdp.data_end - xdp.data
    for frag in xdp.frags:
        yield frag, 0, len(frag)


def _xdp_pointer_check(xdp, offset: int, length: int) -> int:
    """bpf_xdp_pointer()'s argument checks: 0, or the errno."""
    if offset > _U16_MAX or length > _U16_MAX:
        return Errno.EFAULT
    if offset + length > xdp_get_buff_len(xdp):
        return Errno.EINVAL
    return 0


def _xdp_copy(xdp, offset: int, data: bytearray | None, length: int) -> bytes:
    """bpf_xdp_copy_buf(): read `length` bytes at `offset` (data None) or write `data` there."""
    out = bytearray()
    for buf, start, size in _xdp_segments(xdp):
        if offset >= size:
            offset -= size
            continue
        n = min(size - offset, length - len(out))
        lo = start + offset
        if data is None:
            out += buf[lo:lo + n]
        else:
            buf[lo:lo + n] = data[len(out):len(out) + n]
            out += data[len(out):len(out) + n]
        offset = 0
        if len(out) == length:
            break
    return bytes(out)


def bpf_xdp_load_bytes(env, r1, r2, r3, r4, r5) -> int:
    xdp, offset, length = env.ctx, u32(r2), u32(r4)
    err = _xdp_pointer_check(xdp, offset, length)
    if err:
        return neg_errno(err)
    env.mem.write(r3, _xdp_copy(xdp, offset, None, length))
    return 0


def bpf_xdp_store_bytes(env, r1, r2, r3, r4, r5) -> int:
    xdp, offset, length = env.ctx, u32(r2), u32(r4)
    err = _xdp_pointer_check(xdp, offset, length)
    if err:
        return neg_errno(err)
    _xdp_copy(xdp, offset, bytearray(env.mem.read(r3, length)), length)
    return 0


NET_XDP_RUNTIME: dict = {
    FuncId.xdp_adjust_head: bpf_xdp_adjust_head,
    FuncId.xdp_adjust_meta: bpf_xdp_adjust_meta,
    FuncId.xdp_adjust_tail: bpf_xdp_adjust_tail,
    FuncId.xdp_load_bytes: bpf_xdp_load_bytes,
    FuncId.xdp_store_bytes: bpf_xdp_store_bytes,
    FuncId.xdp_get_buff_len: bpf_xdp_get_buff_len,
}
