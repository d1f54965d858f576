"""The simulated network stack — net/ (socket buffers, XDP buffers, devices)."""
from fakekernel.net.netdev import LOOPBACK, NetDevice, dev_get_by_index
from fakekernel.net.skbuff import SkBuff, Sock, build_skb_ctx, sync_back, unmap_skb_ctx
from fakekernel.net.xdp import XdpBuff, build_xdp_ctx, unmap_xdp_ctx

__all__ = ["LOOPBACK", "NetDevice", "dev_get_by_index", "SkBuff", "Sock", "build_skb_ctx",
           "sync_back", "unmap_skb_ctx", "XdpBuff", "build_xdp_ctx", "unmap_xdp_ctx"]
