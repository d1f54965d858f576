"""Socket buffers — include/linux/skbuff.h (struct sk_buff), net/ethernet/eth.c (eth_type_trans),
and the __sk_buff view a program gets (net/core/filter.c: bpf_convert_ctx_access).

`SkBuff` is the kernel-side packet: one linear head buffer (headroom, data, tailroom) with
``data_off``/``len`` marking skb->data and skb->len, the header offsets, and the metadata
fields programs read or write.  A program never touches the SkBuff itself: it runs on a
kernel ctx region (`build_skb_ctx`) holding a ``struct sk_buff`` image filled from the SkBuff
(with the net_device, sock_common and skb_shared_info images its fields point to), as the
verifier rewrites __sk_buff accesses into sk_buff ones (fakekernel/progs/skb_convert.py).
After the program ran, `sync_back` copies the fields a program may write back into the
SkBuff.  Helpers reach the SkBuff as ``env.ctx``; one that changes it calls
`SkBuff.update_ctx` so the program sees the change.
"""
from __future__ import annotations

import attrs

from fakekernel.interp.memory import Region
from fakekernel.interp.run import SKF_LL_OFF, SKF_NET_OFF, SkbData
from fakekernel.net.headers import (AF_UNSPEC, CHECKSUM_NONE, ETH_ALEN, ETH_HLEN,
                                    ETH_P_802_2, ETH_P_802_3, ETH_P_802_3_MIN, NO_QUEUE_MAPPING,
                                    PACKET_BROADCAST, PACKET_HOST, PACKET_MULTICAST,
                                    PACKET_OTHERHOST, QDISC_CB_PRIV_LEN, TCP_CLOSE)
from fakekernel.net.netdev import LOOPBACK, NetDevice
from uapi.ffi import ffi

from fakekernel import kernel_layout as kl
from fakekernel.kernel_layout import KImage
from fakekernel.progs.ctx import SKB_KCTX_SIZE, SKB_PTR_SLOTS, SKB_SK_SLOT

__all__ = ["SkBuff", "Sock", "SkbLoadView", "build_skb_ctx", "sync_back", "unmap_skb_ctx",
           "eth_type_trans", "SKB_KCTX_SIZE", "SKB_PTR_SLOTS"]

_SKB_SIZE = ffi.sizeof("struct __sk_buff")
_SOCK_SIZE = ffi.sizeof("struct bpf_sock")
_PTR = ffi.sizeof("__u64")
_U16_MASK = 0xFFFF
_U32_MASK = 0xFFFFFFFF
_IP6_WORDS = 4
_WORD = ffi.sizeof("__u32")


def _be16_as_loaded(v: int) -> int:
    """A __be16 kernel field as a program's load sees it on little-endian: the bytes swapped."""
    return int.from_bytes(v.to_bytes(2, "big"), "little")


@attrs.define(eq=False)
class Sock:
    """The socket a test-run skb carries (test_run.c's bpf_dummy_proto sock) — struct sock fields
    that `struct bpf_sock` and the __sk_buff family/ip/port fields expose."""

    family: int = AF_UNSPEC
    rcv_saddr: bytes = bytes(4)        # network order
    daddr: bytes = bytes(4)
    v6_rcv_saddr: bytes = bytes(16)
    v6_daddr: bytes = bytes(16)
    num: int = 0                       # local port, host order
    dport: int = 0                     # remote port, host order
    state: int = TCP_CLOSE             # sock_init_data()
    bound_dev_if: int = 0
    rx_queue_mapping: int = NO_QUEUE_MAPPING

    def sock_common_bytes(self) -> bytes:
        """The struct sock_common the __sk_buff family/ip/port rewrites read through skb->sk."""
        c = KImage("sock_common")
        c["skc_family"] = self.family
        c.put_bytes("skc_daddr", self.daddr)
        c.put_bytes("skc_rcv_saddr", self.rcv_saddr)
        c.put_bytes("skc_v6_daddr", self.v6_daddr)
        c.put_bytes("skc_v6_rcv_saddr", self.v6_rcv_saddr)
        c.put_bytes("skc_dport", self.dport.to_bytes(2, "big"))
        c["skc_num"] = self.num
        return bytes(c.buf)

    def bpf_sock_bytes(self) -> bytes:
        """The uapi `struct bpf_sock` a program reads through skb->sk."""
        s = ffi.new("struct bpf_sock *")
        s.bound_dev_if = self.bound_dev_if
        s.family = self.family
        s.state = self.state
        s.src_ip4 = int.from_bytes(self.rcv_saddr, "little")
        s.dst_ip4 = int.from_bytes(self.daddr, "little")
        for i in range(_IP6_WORDS):
            s.src_ip6[i] = int.from_bytes(self.v6_rcv_saddr[i * _WORD:(i + 1) * _WORD], "little")
            s.dst_ip6[i] = int.from_bytes(self.v6_daddr[i * _WORD:(i + 1) * _WORD], "little")
        s.src_port = self.num
        s.dst_port = _be16_as_loaded(self.dport)
        # sk_rx_queue_get(): NO_QUEUE_MAPPING reads as -1
        s.rx_queue_mapping = -1 if self.rx_queue_mapping == NO_QUEUE_MAPPING else self.rx_queue_mapping
        return bytes(ffi.buffer(s))


@attrs.define(eq=False)
class SkBuff:
    head: bytearray                    # skb->head .. skb->end (the shared info is not modelled)
    data_off: int                      # skb->data - skb->head
    len: int = 0                       # linear only: skb->len == skb_headlen()
    dev: NetDevice = LOOPBACK
    mac_header: int = -1               # offsets from head; -1 = unset
    network_header: int = -1
    transport_header: int = -1
    encapsulation: bool = False        # skb->encapsulation: inner headers are set
    meta_len: int = 0                  # skb_metadata_len(): bytes right before mac/data
    protocol: int = 0                  # host order ETH_P_*
    pkt_type: int = PACKET_HOST
    skb_iif: int = 0
    mark: int = 0
    priority: int = 0
    queue_mapping: int = 0
    tc_index: int = 0
    hash: int = 0
    l4_hash: bool = False              # the hash covers the 4-tuple (or was set by a program)
    sw_hash: bool = False              # the hash was computed in software
    vlan_present: int = 0
    vlan_tci: int = 0
    vlan_proto: int = 0                # host order
    napi_id: int = 0
    tstamp: int = 0
    tstamp_type: int = 0
    hwtstamp: int = 0
    gso_segs: int = 0
    gso_size: int = 0
    csum: int = 0
    ip_summed: int = CHECKSUM_NONE
    csum_level: int = 0                # CHECKSUM_UNNECESSARY: how many checksums were verified
    # struct qdisc_skb_cb
    pkt_len: int = 0                   # __sk_buff.wire_len
    tc_classid: int = 0
    cb: bytearray = attrs.field(factory=lambda: bytearray(QDISC_CB_PRIV_LEN))
    sk: Sock | None = None
    # struct bpf_redirect_info as bpf_redirect() leaves it for the caller (tgt_index, flags)
    redirect_ifindex: int = 0
    redirect_flags: int = 0
    tun_info: object = None            # skb_tunnel_info(): a metadata dst's ip_tunnel_info (helpers/tunnel.py)
    # the regions of the run in progress (build_skb_ctx / unmap_skb_ctx)
    kctx: Region | None = None
    pkt: Region | None = None
    mapped: list = attrs.field(factory=list)
    _mem: object = None                # the address space of the run in progress

    # ---- skb_put / skb_push / skb_pull / skb_reserve ----
    @property
    def tail(self) -> int:
        return self.data_off + self.len

    def headroom(self) -> int:
        return self.data_off

    def reserve(self, n: int) -> None:
        self.data_off += n

    def put(self, n: int) -> None:
        if self.tail + n > len(self.head):
            raise ValueError("skb_put past the end of the buffer")
        self.len += n

    def push(self, n: int) -> None:
        if n > self.data_off:
            raise ValueError("skb_push under the head")
        self.data_off -= n
        self.len += n

    def pull(self, n: int) -> None:
        if n > self.len:
            raise ValueError("skb_pull beyond the data")
        self.data_off += n
        self.len -= n

    def data(self) -> bytes:
        """The skb->data .. tail bytes."""
        return bytes(self.head[self.data_off:self.tail])

    def network_offset(self) -> int:
        return self.network_header - self.data_off

    # ---- the program's view ----
    def _region(self, kind: str):
        return next((r for r in self.mapped if r.kind == kind), None)

    def _shinfo_region(self, mem) -> Region:
        """skb_shinfo(): the skb_shared_info right after the buffer (skb->head + skb->end); mapped
        again when a reallocated head now lies above it."""
        shinfo = self._region("shinfo")
        if shinfo is None or shinfo.base < self.pkt.base:
            if shinfo is not None:
                mem.unmap(shinfo)
                self.mapped.remove(shinfo)
            shinfo = mem.map_region(bytearray(kl.sizeof("skb_shared_info")), "shinfo", "skb_shinfo(skb)")
            self.mapped.append(shinfo)
        return shinfo

    def write_ctx(self, mem=None) -> None:
        """Fill the mapped struct sk_buff image (and the structs its rewrites chase) from this skb."""
        kctx, pkt = self.kctx, self.pkt
        mem = mem if mem is not None else self._mem
        img = KImage("sk_buff", len(kctx.buf))
        img.buf[:] = kctx.buf
        if mem is not None:
            shinfo = self._shinfo_region(mem)
            sh = KImage("skb_shared_info")
            sh["gso_size"] = self.gso_size
            sh["gso_segs"] = self.gso_segs
            sh["hwtstamps"] = self.hwtstamp
            shinfo.buf[:] = sh.buf
            img["end"] = self._region("shinfo").base - pkt.base
        dev = self._region("netdev")
        if dev is not None:
            nd = KImage("net_device", len(dev.buf))
            nd["ifindex"] = self.dev.ifindex
            dev.buf[:] = nd.buf
            img["dev"] = dev.base
        img["len"] = self.len
        img["data_len"] = 0
        img["pkt_type"] = self.pkt_type
        img["tstamp_type"] = self.tstamp_type
        img["queue_mapping"] = self.queue_mapping
        img.put_bytes("protocol", self.protocol.to_bytes(2, "big"))
        img.put_bytes("vlan_proto", self.vlan_proto.to_bytes(2, "big"))
        img["vlan_tci"] = self.vlan_tci
        img["priority"] = self.priority
        img["skb_iif"] = self.skb_iif
        img["tc_index"] = self.tc_index
        img["hash"] = self.hash
        img["napi_id"] = self.napi_id
        img["mark"] = self.mark
        img["tstamp"] = self.tstamp
        for name in ("mac_header", "network_header", "transport_header"):
            img[name] = getattr(self, name)         # ~0 when unset
        cb = KImage("qdisc_skb_cb")
        cb["pkt_len"] = self.pkt_len
        cb["tc_classid"] = self.tc_classid
        cb.put_bytes("data", bytes(self.cb))
        img.put_bytes("cb", bytes(cb.buf))
        data = pkt.base + self.data_off
        img["head"] = pkt.base
        img["data"] = data
        ends = KImage("bpf_skb_data_end")
        ends["data_end"] = data + self.len
        ends["data_meta"] = data - self.meta_len
        img.put_bytes("cb", ends.get_bytes("data_meta", 2 * _PTR), kl.offsetof("bpf_skb_data_end.data_meta"))
        common = self._region("sock_common")
        if common is not None and self.sk is not None:
            common.buf[:] = self.sk.sock_common_bytes()
        img["sk"] = common.base if common is not None else 0
        sk_region = self._region("sock")
        img.buf[SKB_SK_SLOT:SKB_SK_SLOT + _PTR] = (sk_region.base if sk_region else 0).to_bytes(_PTR, "little")
        kctx.buf[:] = img.buf

    def sync_back(self) -> None:
        """Copy the fields a program may have written from the sk_buff image into the skb."""
        img = KImage("sk_buff", len(self.kctx.buf))
        img.buf[:] = self.kctx.buf
        self.mark = img["mark"]
        self.priority = img["priority"]
        self.tc_index = img["tc_index"]
        self.queue_mapping = img["queue_mapping"]
        self.tstamp = img["tstamp"]
        self.tstamp_type = img["tstamp_type"]
        cb = KImage("qdisc_skb_cb")
        cb.buf[:] = img.get_bytes("cb", len(cb.buf))
        self.tc_classid = cb["tc_classid"]
        self.cb[:] = cb.get_bytes("data", QDISC_CB_PRIV_LEN)

    def update_ctx(self) -> None:
        """For helpers that change the skb: keep the program's writes, then refresh its view."""
        self.sync_back()
        self.write_ctx(self._mem)

    def ld_abs_view(self) -> "SkbLoadView":
        return SkbLoadView(data=b"", skb=self)


@attrs.frozen
class SkbLoadView(SkbData):
    """LD_ABS / LD_IND on a live skb: bpf_skb_load_helper_{8,16,32} and
    bpf_internal_load_pointer_neg_helper() (offsets relative to skb->data, or to the network /
    mac header for SKF_NET_OFF / SKF_LL_OFF), reading the current packet bytes."""

    skb: SkBuff | None = None

    def load_be(self, offset: int, size: int) -> int | None:
        skb = self.skb
        off = offset & _U32_MASK
        off = off - (1 << 32) if off >> 31 else off
        if off >= 0:
            if skb.len - off < size:
                return None
            start = skb.data_off + off
        else:
            if off >= SKF_NET_OFF:
                start = skb.network_header + off - SKF_NET_OFF
            elif off >= SKF_LL_OFF and skb.mac_header >= 0:
                start = skb.mac_header + off - SKF_LL_OFF
            else:
                return None
            if start < 0 or start + size > skb.tail:
                return None
        return int.from_bytes(skb.head[start:start + size], "big")


def eth_type_trans(skb: SkBuff, dev: NetDevice) -> int:
    """net/ethernet/eth.c: eth_type_trans(): set dev, mac header and pkt_type, pull the
    Ethernet header, and return the protocol (host order)."""
    skb.dev = dev
    skb.mac_header = skb.data_off
    eth = skb.head[skb.data_off:skb.data_off + ETH_HLEN]
    skb.pull(ETH_HLEN)
    dest = bytes(eth[:ETH_ALEN])
    if dest != dev.dev_addr:
        if dest[0] & 1:
            skb.pkt_type = PACKET_BROADCAST if dest == dev.broadcast else PACKET_MULTICAST
        else:
            skb.pkt_type = PACKET_OTHERHOST
    proto = int.from_bytes(eth[2 * ETH_ALEN:ETH_HLEN], "big")
    if proto >= ETH_P_802_3_MIN:
        return proto
    # a length field: raw 802.3 (IPX) starts with 0xFFFF, anything else is 802.2 LLC
    if skb.len >= 2 and skb.head[skb.data_off:skb.data_off + 2] == b"\xff\xff":
        return ETH_P_802_3
    return ETH_P_802_2


def build_skb_ctx(kern, skb: SkBuff) -> tuple[Region, Region]:
    """Map the packet, the socket and the kernel ctx of `skb` into ``kern.mem``.

    Returns (kctx region, packet region); `unmap_skb_ctx` releases them after the run.
    """
    mem = kern.mem
    pkt = mem.map_region(skb.head, "packet", "skb->head")
    skb.mapped = [pkt]
    if skb.sk is not None:
        skb.mapped.append(mem.map_region(bytearray(skb.sk.bpf_sock_bytes()), "sock", "skb->sk",
                                         writable=False))
        common = bytearray(kl.sizeof("sock_common"))
        skb.mapped.append(mem.map_region(common, "sock_common", "skb->sk (struct sock)", writable=False))
    skb.mapped.append(mem.map_region(bytearray(kl.sizeof("net_device")), "netdev", "skb->dev", writable=False))
    kctx = mem.map_region(bytearray(SKB_KCTX_SIZE), "ctx", "struct sk_buff")
    skb.mapped.append(kctx)
    skb.kctx, skb.pkt, skb._mem = kctx, pkt, mem
    skb.write_ctx(mem)
    return kctx, pkt


def sync_back(skb: SkBuff, kctx: Region) -> None:
    """Copy the ctx fields a program may write back into `skb`."""
    if kctx is not skb.kctx:
        raise ValueError("ctx region does not belong to this skb")
    skb.sync_back()


def unmap_skb_ctx(kern, skb: SkBuff) -> None:
    for region in skb.mapped:
        kern.mem.unmap(region)
    skb.mapped = []
    skb.kctx = skb.pkt = skb._mem = None

