"""Network constants — include/uapi/linux/if_ether.h, if_packet.h, socket.h, net/tcp_states.h,
and the x86_64 sizes of include/linux/skbuff.h / include/net/xdp.h that test runs depend on.

The uapi values are ABI; the kernel-internal sizes (``sizeof(struct skb_shared_info)``,
``sizeof(struct xdp_frame)``, ...) are those of the 6.18 x86_64 build the oracle runs, and
were confirmed by measuring where BPF_PROG_TEST_RUN's size limits fall.
"""
from __future__ import annotations

from fakekernel.interp.memory import PAGE_SIZE

__all__ = [
    "ETH_ALEN", "ETH_HLEN", "ETH_P_IP", "ETH_P_IPV6", "ETH_P_802_3", "ETH_P_802_2",
    "ETH_P_802_3_MIN", "PACKET_HOST", "PACKET_BROADCAST", "PACKET_MULTICAST",
    "PACKET_OTHERHOST", "AF_UNSPEC", "AF_INET", "AF_INET6", "TCP_CLOSE", "IPV4_HDR_LEN",
    "IPV6_HDR_LEN", "SMP_CACHE_BYTES", "NET_SKB_PAD", "NET_IP_ALIGN", "SKB_SHARED_INFO_SIZE",
    "SKB_DATA_ALIGN", "QDISC_CB_PRIV_LEN", "NO_QUEUE_MAPPING", "GSO_MAX_SEGS",
    "GSO_LEGACY_MAX_SIZE", "MAX_SKB_FRAGS", "XDP_FRAME_SIZE", "XDP_PAGE_HEAD_SIZE",
    "NAPI_POLL_WEIGHT", "PAGE_SIZE", "CHECKSUM_NONE", "CHECKSUM_COMPLETE", "TC_ACT_SHOT",
    "TC_ACT_REDIRECT", "CHECKSUM_UNNECESSARY", "SKB_MAX_CSUM_LEVEL",
]

# include/uapi/linux/if_ether.h
ETH_ALEN = 6
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_802_3 = 0x0001          # "dummy type for 802.3 frames" (raw 802.3, sap 0xFFFF)
ETH_P_802_2 = 0x0004          # 802.2 LLC frames
ETH_P_802_3_MIN = 0x0600      # below this the type field is an 802.3 length

# include/uapi/linux/if_packet.h
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3

# include/linux/socket.h
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10

# include/net/tcp_states.h
TCP_CLOSE = 7

# sizeof(struct iphdr) / sizeof(struct ipv6hdr)
IPV4_HDR_LEN = 20
IPV6_HDR_LEN = 40

# include/linux/skbuff.h (x86_64)
SMP_CACHE_BYTES = 64
NET_SKB_PAD = 64              # max(32, L1_CACHE_BYTES)
NET_IP_ALIGN = 0              # x86 sets it to 0
SKB_SHARED_INFO_SIZE = 320    # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
QDISC_CB_PRIV_LEN = 20        # include/net/sch_generic.h: the __sk_buff cb[5]
NO_QUEUE_MAPPING = 0xFFFF     # include/net/sock.h
GSO_MAX_SEGS = 65535          # include/linux/netdevice.h
GSO_LEGACY_MAX_SIZE = 65536
MAX_SKB_FRAGS = 17            # CONFIG_MAX_SKB_FRAGS default
CHECKSUM_NONE = 0
CHECKSUM_COMPLETE = 2

# include/net/xdp.h / net/bpf/test_run.c (x86_64)
XDP_FRAME_SIZE = 40           # sizeof(struct xdp_frame): metadata may use headroom minus this
XDP_PAGE_HEAD_SIZE = 112      # sizeof(struct xdp_page_head): two struct xdp_buff
NAPI_POLL_WEIGHT = 64         # include/linux/netdevice.h


def SKB_DATA_ALIGN(size: int) -> int:
    """Round up to the cache line, as SKB_DATA_ALIGN() does."""
    return (size + SMP_CACHE_BYTES - 1) // SMP_CACHE_BYTES * SMP_CACHE_BYTES

# include/uapi/linux/pkt_cls.h: the tc verdicts helpers return
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7

# include/linux/skbuff.h: ip_summed values and csum_level
CHECKSUM_UNNECESSARY = 1
SKB_MAX_CSUM_LEVEL = 3
