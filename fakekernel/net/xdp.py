"""XDP buffers and the program's view of them — include/net/xdp.h (struct xdp_buff,
xdp_init_buff, xdp_prepare_buff), net/core/filter.c (xdp_convert_ctx_access).

`XdpBuff` is the kernel-side frame: one buffer starting at data_hard_start with headroom
(XDP_PACKET_HEADROOM by default), the linear frame and tailroom; ``data``/``data_end``/
``data_meta`` are offsets into it; the rx queue is ``ingress_ifindex``/``rx_queue_index``;
``frags`` hold the bytes past the linear part of a multi-buffer frame (test runs with a
data_size_in beyond a page).  A program runs on a kernel ctx region (`build_xdp_ctx`)
holding a ``struct xdp_buff`` image (plus the xdp_rxq_info / xdp_txq_info and net_device
images its ifindex rewrites chase), as the verifier rewrites xdp_md loads into xdp_buff
ones.  After the run `sync_back` reads data / data_end / data_meta back: a helper such as
bpf_xdp_adjust_head/meta/tail moved them.

Used by the XDP hook (fakekernel/net/rx.py: `from_frame`) and by BPF_PROG_TEST_RUN
(fakekernel/test_run.py: `prepare`, fragments, `linear`).
"""
from __future__ import annotations

import attrs

from fakekernel.interp.memory import PAGE_SIZE, Region
from uapi.bpf import XDP_PACKET_HEADROOM

from fakekernel import kernel_layout as kl
from fakekernel.kernel_layout import KImage
from fakekernel.progs.ctx import XDP_KCTX_SIZE, XDP_PTR_SLOTS

__all__ = ["XdpBuff", "build_xdp_ctx", "unmap_xdp_ctx", "XDP_PACKET_HEADROOM",
           "XDP_KCTX_SIZE", "XDP_PTR_SLOTS"]

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
    rxq: Region | None = None       # struct xdp_rxq_info, its net_device, and the txq's
    rx_dev: Region | None = None
    txq: Region | None = None
    tx_dev: Region | None = None

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
        """Fill the struct xdp_buff image and the rxq/txq and net_device images it points to."""
        base = self.pkt.base
        img = KImage("xdp_buff")
        for name in _SLOTS:
            img[name] = base + getattr(self, name)
        img["data_hard_start"] = base
        img["frame_sz"] = self.frame_sz
        for region, ifindex in ((self.rx_dev, self.ingress_ifindex), (self.tx_dev, self.egress_ifindex)):
            dev = KImage("net_device", len(region.buf))
            dev["ifindex"] = ifindex
            region.buf[:] = dev.buf
        rxq = KImage("xdp_rxq_info")
        rxq["dev"] = self.rx_dev.base
        rxq["queue_index"] = self.rx_queue_index
        self.rxq.buf[:] = rxq.buf
        txq = KImage("xdp_txq_info")
        txq["dev"] = self.tx_dev.base
        self.txq.buf[:] = txq.buf
        img["rxq"] = self.rxq.base
        img["txq"] = self.txq.base
        self.kctx.buf[:] = img.buf

    def sync_back(self) -> None:
        """The frame pointers after the run, as offsets (adjust_head/meta/tail move them)."""
        img = KImage("xdp_buff")
        img.buf[:] = self.kctx.buf
        for name in _SLOTS:
            setattr(self, name, img[name] - self.pkt.base)

    def update_ctx(self) -> None:
        """For helpers that move the frame pointers: refresh the program's view."""
        self.write_ctx()


def build_xdp_ctx(kern, xdp: XdpBuff) -> tuple[Region, Region]:
    """Map the frame buffer and the kernel ctx of `xdp` into ``kern.mem``."""
    pkt = kern.mem.map_region(xdp.buf, "packet", "xdp->data_hard_start")
    mem = kern.mem
    xdp.rx_dev = mem.map_region(bytearray(kl.sizeof("net_device")), "netdev", "rxq->dev", writable=False)
    xdp.rxq = mem.map_region(bytearray(kl.sizeof("xdp_rxq_info")), "rxq", "xdp->rxq", writable=False)
    xdp.tx_dev = mem.map_region(bytearray(kl.sizeof("net_device")), "netdev", "txq->dev", writable=False)
    xdp.txq = mem.map_region(bytearray(kl.sizeof("xdp_txq_info")), "txq", "xdp->txq", writable=False)
    kctx = mem.map_region(bytearray(XDP_KCTX_SIZE), "ctx", "struct xdp_buff")
    xdp.kctx, xdp.pkt = kctx, pkt
    xdp.write_ctx()
    return kctx, pkt


def unmap_xdp_ctx(kern, xdp: XdpBuff) -> None:
    for region in (xdp.kctx, xdp.pkt, xdp.rxq, xdp.rx_dev, xdp.txq, xdp.tx_dev):
        if region is not None:
            kern.mem.unmap(region)
    xdp.kctx = xdp.pkt = xdp.rxq = xdp.rx_dev = xdp.txq = xdp.tx_dev = None
