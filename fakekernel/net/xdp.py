"""XDP buffers and the program's view of them — include/net/xdp.h (struct xdp_buff,
xdp_init_buff, xdp_prepare_buff), net/core/filter.c (xdp_convert_ctx_access).

`XdpBuff` is the kernel-side frame: one buffer starting at data_hard_start with headroom
(XDP_PACKET_HEADROOM by default), the linear frame and tailroom; ``data``/``data_end``/
``data_meta`` are offsets into it; the rx queue is ``ingress_ifindex``/``rx_queue_index``;
``frags`` hold the bytes past the linear part of a multi-buffer frame (test runs with a
data_size_in beyond a page).  A program runs on a kernel ctx region (`build_xdp_ctx`)
holding the uapi ``struct xdp_md`` bytes followed by 8-byte pointer slots for data /
data_end / data_meta (the verifier turns the program's 32-bit loads of those fields into
64-bit loads of the slots, as it does for ``__sk_buff``).  After the run `sync_back` reads
the slots back: a helper such as bpf_xdp_adjust_head/meta/tail moved them.

Used by the XDP hook (fakekernel/net/rx.py: `from_frame`) and by BPF_PROG_TEST_RUN
(fakekernel/test_run.py: `prepare`, fragments, `linear`).
"""
from __future__ import annotations

import attrs

from fakekernel.interp.memory import PAGE_SIZE, Region
from uapi.bpf import XDP_PACKET_HEADROOM
from uapi.ffi import ffi

from fakekernel.progs.ctx import XDP_KCTX_SIZE, XDP_PTR_SLOTS

__all__ = ["XdpBuff", "build_xdp_ctx", "unmap_xdp_ctx", "XDP_PACKET_HEADROOM",
           "XDP_KCTX_SIZE", "XDP_PTR_SLOTS"]

_PTR = ffi.sizeof("__u64")
_U32_MASK = 0xFFFFFFFF
_XDP_MD_SIZE = ffi.sizeof("struct xdp_md")
_SLOTS = ("data", "data_end", "data_meta")


@attrs.define(eq=False)
class XdpBuff:
    """struct xdp_buff: a linear frame plus optional fragments."""

    buf: bytearray                  # data_hard_start .. frame end + tailroom
    data: int                       # offsets into buf
    data_end: int
    data_meta: int
    ingress_ifindex: int = 0        # rxq->dev->ifindex
    rx_queue_index: int = 0         # rxq->queue_index
    egress_ifindex: int = 0         # txq->dev->ifindex (devmap programs only)
    frame_sz: int = PAGE_SIZE
    frags: list = attrs.field(factory=list)      # bytearrays: skb_shared_info frags
    # struct bpf_redirect_info as bpf_redirect() leaves it (net/rx.py reads the target)
    redirect_ifindex: int = 0
    redirect_flags: int = 0
    redirect_map: object = None     # a bpf_redirect_map() hit (fakekernel.helpers.redirect)
    kctx: Region | None = None
    pkt: Region | None = None

    @classmethod
    def from_frame(cls, frame: bytes, *, ifindex: int, rx_queue: int = 0,
                   headroom: int = XDP_PACKET_HEADROOM, tailroom: int = 0) -> "XdpBuff":
        buf = bytearray(headroom) + bytearray(frame) + bytearray(tailroom)
        return cls(buf=buf, data=headroom, data_end=headroom + len(frame), data_meta=headroom,
                   ingress_ifindex=ifindex, rx_queue_index=rx_queue)

    @classmethod
    def prepare(cls, buf: bytearray, headroom: int, data_len: int, *, ifindex: int,
                rx_queue: int = 0, frame_sz: int = PAGE_SIZE) -> "XdpBuff":
        """xdp_init_buff() + xdp_prepare_buff(meta_valid=true) over an existing buffer."""
        return cls(buf=buf, data=headroom, data_end=headroom + data_len, data_meta=headroom,
                   ingress_ifindex=ifindex, rx_queue_index=rx_queue, frame_sz=frame_sz)

    def frame(self) -> bytes:
        return bytes(self.buf[self.data:self.data_end])

    def linear(self) -> bytes:
        """data_meta .. data_end: what a test run hands back before the fragments."""
        return bytes(self.buf[self.data_meta:self.data_end])

    @property
    def frags_size(self) -> int:
        """skb_shared_info.xdp_frags_size."""
        return sum(len(f) for f in self.frags)

    def write_ctx(self) -> None:
        c = ffi.new("struct xdp_md *")
        base = self.pkt.base
        c.data = (base + self.data) & _U32_MASK
        c.data_end = (base + self.data_end) & _U32_MASK
        c.data_meta = (base + self.data_meta) & _U32_MASK
        c.ingress_ifindex = self.ingress_ifindex
        c.rx_queue_index = self.rx_queue_index
        c.egress_ifindex = self.egress_ifindex
        buf = self.kctx.buf
        buf[:_XDP_MD_SIZE] = ffi.buffer(c)
        for name in _SLOTS:
            slot = XDP_PTR_SLOTS[name]
            buf[slot:slot + _PTR] = (base + getattr(self, name)).to_bytes(_PTR, "little")

    def sync_back(self) -> None:
        """The pointer slots after the run, as offsets (adjust_head/meta/tail move them)."""
        base, buf = self.pkt.base, self.kctx.buf
        for name in _SLOTS:
            slot = XDP_PTR_SLOTS[name]
            setattr(self, name, int.from_bytes(buf[slot:slot + _PTR], "little") - base)

    def update_ctx(self) -> None:
        """For helpers that move the frame pointers: refresh the program's view."""
        self.write_ctx()


def build_xdp_ctx(kern, xdp: XdpBuff) -> tuple[Region, Region]:
    """Map the frame buffer and the kernel ctx of `xdp` into ``kern.mem``."""
    pkt = kern.mem.map_region(xdp.buf, "packet", "xdp->data_hard_start")
    kctx = kern.mem.map_region(bytearray(XDP_KCTX_SIZE), "ctx", "xdp_md")
    xdp.kctx, xdp.pkt = kctx, pkt
    xdp.write_ctx()
    return kctx, pkt


def unmap_xdp_ctx(kern, xdp: XdpBuff) -> None:
    for region in (xdp.kctx, xdp.pkt):
        if region is not None:
            kern.mem.unmap(region)
    xdp.kctx = xdp.pkt = None
