"""AF_XDP sockets — net/xdp/xsk.c (xsk_create, xsk_setsockopt, xsk_bind, xsk_release,
xsk_rcv / xsk_generic_rcv), reduced to what XSKMAP and bpf_redirect_map need.

A socket is created as SOCK_RAW with protocol 0, gets its rings (XDP_RX_RING / XDP_TX_RING,
a power-of-two number of entries, once each) and a UMEM (XDP_UMEM_REG, then the fill and
completion rings) with setsockopt(SOL_XDP), and binds to one queue of one device with a
`struct sockaddr_xdp` (bytes, or a tuple ``(ifindex, queue_id[, flags])``).  Copy mode
works on every device; zero-copy needs a driver with native XDP.  One socket per device
queue (EBUSY).  The UMEM's memory is not modelled: only its registration.

A frame an XDP program redirects to a bound socket through an XSKMAP (`xsk_rcv`) must have
arrived on the socket's device and queue (else EINVAL, dropped) and is appended to the
socket's ``rx`` list while the rx ring has room (ENOBUFS otherwise).  Closing the socket
removes it from every XSKMAP slot holding it (xsk_delete_from_maps).  Not modelled: the
shared-UMEM bind (XDP_SHARED_UMEM answers EOPNOTSUPP), transmit, mmap of the rings (their
offsets are answered, XDP_MMAP_OFFSETS).
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.socket import AF_XDP, SOCK_RAW, Socket
from uapi.capability import Cap
from uapi.ffi import ffi

__all__ = ["XdpSock", "xsk_create", "xsk_rcv", "SOL_XDP", "XdpSockOpt", "XdpBindFlags", "XskState"]

SOL_XDP = 283                   # include/linux/socket.h
_SOCKADDR_XDP = "struct sockaddr_xdp"
_UMEM_REG = "struct xdp_umem_reg"
_INT = ffi.sizeof("int")
XDP_UMEM_MIN_CHUNK_SIZE = 2048  # include/net/xdp_sock.h
PAGE_SIZE = 4096


class XdpSockOpt:
    """The SOL_XDP option names of include/uapi/linux/if_xdp.h."""

    MMAP_OFFSETS, RX_RING, TX_RING, UMEM_REG, UMEM_FILL_RING, UMEM_COMPLETION_RING = 1, 2, 3, 4, 5, 6
    STATISTICS, OPTIONS = 7, 8


class XdpBindFlags:
    """sxdp_flags of include/uapi/linux/if_xdp.h."""

    SHARED_UMEM, COPY, ZEROCOPY, USE_NEED_WAKEUP, USE_SG = 1, 2, 4, 8, 16
    ALL = SHARED_UMEM | COPY | ZEROCOPY | USE_NEED_WAKEUP | USE_SG


class XskState:
    """enum xsk_state (include/net/xdp_sock.h)."""

    READY, BOUND, UNBOUND = 0, 1, 2


# struct xdp_statistics is six __u64 counters, its v1 the first three (if_xdp.h / xsk.c)
_U64 = ffi.sizeof("__u64")
_STATS_SIZE, _STATS_V1_SIZE = 6 * _U64, 3 * _U64
XDP_OPTIONS_ZEROCOPY = 1
# where a ring's producer / consumer / flags / descriptors sit in its mmap (measured on 6.18
# x86_64: the same for the rx/tx and the fill/completion rings)
_RING_OFFSETS = {"producer": 0, "consumer": 128, "flags": 196, "desc": 320}
_RINGS = ("rx", "tx", "fr", "cr")
_RING_OFFSET_V1_SIZE = 3 * _U64       # struct xdp_ring_offset_v1: no flags


def _mmap_offsets(optlen: int) -> bytes:
    """XDP_MMAP_OFFSETS: struct xdp_mmap_offsets, or its v1 when the buffer is smaller."""
    off = ffi.new("struct xdp_mmap_offsets *")
    for ring in _RINGS:
        for field, value in _RING_OFFSETS.items():
            setattr(getattr(off, ring), field, value)
    if optlen >= ffi.sizeof(off[0]):
        return bytes(ffi.buffer(off))
    if optlen >= len(_RINGS) * _RING_OFFSET_V1_SIZE:
        return b"".join(getattr(off, r).producer.to_bytes(_U64, "little")
                        + getattr(off, r).consumer.to_bytes(_U64, "little")
                        + getattr(off, r).desc.to_bytes(_U64, "little") for r in _RINGS)
    raise KernelError(Errno.EINVAL, "short xdp_mmap_offsets")


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@attrs.define(eq=False)
class XdpSock(Socket):
    """struct xdp_sock."""

    xsk_state: int = XskState.READY
    rx_entries: int = 0             # ring sizes (0 = no ring)
    tx_entries: int = 0
    fq_entries: int = 0
    cq_entries: int = 0
    umem: bytes | None = None       # the struct xdp_umem_reg registered
    dev: object = None              # bound device and queue
    queue_id: int = 0
    zc: bool = False
    rx: list = attrs.field(factory=list)        # frames received (the rx ring's descriptors)
    rx_dropped: int = 0
    rx_queue_full: int = 0
    map_list: list = attrs.field(factory=list)  # (XskMap, index) slots holding this socket
    # what a program's XSKMAP lookup points at: struct bpf_xdp_sock (queue_id), read-only
    bpf_view: bytearray = attrs.field(factory=lambda: bytearray(ffi.sizeof("struct bpf_xdp_sock")))
    bpf_region: object = None

    def bpf_xdp_sock_addr(self, kern) -> int:
        """The address programs get from an XSKMAP lookup (mapped on first use)."""
        if self.bpf_region is None:
            self.bpf_region = kern.mem.map_region(self.bpf_view, "xdp_sock", "bpf_xdp_sock",
                                                  writable=False)
        return self.bpf_region.base

    # ---- setsockopt(SOL_XDP) ----
    def setsockopt(self, level: int, optname: int, value) -> None:
        """xsk_setsockopt()."""
        if level != SOL_XDP:
            return super().setsockopt(level, optname, value)
        if isinstance(value, int):
            value = (value & 0xFFFFFFFF).to_bytes(_INT, "little")
        if optname in (XdpSockOpt.RX_RING, XdpSockOpt.TX_RING):
            self._set_ring(optname, value, "rx_entries" if optname == XdpSockOpt.RX_RING else "tx_entries")
        elif optname == XdpSockOpt.UMEM_REG:
            self._umem_reg(value)
        elif optname in (XdpSockOpt.UMEM_FILL_RING, XdpSockOpt.UMEM_COMPLETION_RING):
            # the socket keeps them until bind (fq_tmp / cq_tmp): no UMEM needed yet
            attr = "fq_entries" if optname == XdpSockOpt.UMEM_FILL_RING else "cq_entries"
            self._set_ring(optname, value, attr)
        else:
            raise KernelError(Errno.ENOPROTOOPT, f"SOL_XDP option {optname} not modelled")

    def _set_ring(self, optname: int, value: bytes, attr: str) -> None:
        """xsk_init_queue(): one ring of a power-of-two size, before bind."""
        if len(value) < _INT:
            raise KernelError(Errno.EINVAL, "option shorter than an int")
        if self.xsk_state != XskState.READY:
            raise KernelError(Errno.EBUSY, "socket already bound")
        entries = int.from_bytes(value[:_INT], "little")
        if getattr(self, attr) or not _is_power_of_2(entries):
            raise KernelError(Errno.EINVAL, "ring exists or size is not a power of two")
        setattr(self, attr, entries)

    def _umem_reg(self, value: bytes) -> None:
        """xdp_umem_create() checks, the aligned-chunk mode only."""
        size = ffi.sizeof(_UMEM_REG)
        if len(value) < ffi.offsetof(_UMEM_REG, "flags"):
            raise KernelError(Errno.EINVAL, "short xdp_umem_reg")
        if self.xsk_state != XskState.READY:
            raise KernelError(Errno.EBUSY, "socket already bound")
        if self.umem is not None:
            raise KernelError(Errno.EBUSY, "UMEM already registered")
        reg = ffi.from_buffer(_UMEM_REG + " *", bytes(value[:size]).ljust(size, b"\0"))
        chunk = reg.chunk_size
        if (chunk < XDP_UMEM_MIN_CHUNK_SIZE or chunk > PAGE_SIZE or not _is_power_of_2(chunk)
                or reg.addr % PAGE_SIZE or not reg.len or reg.len % chunk or reg.headroom >= chunk):
            raise KernelError(Errno.EINVAL, "bad UMEM geometry")
        self.umem = bytes(value[:size])

    # ---- getsockopt(SOL_XDP) ----
    def getsockopt(self, level: int, optname: int, optlen: int) -> bytes:
        """xsk_getsockopt(): the ring offsets (v2, or v1 without the flags word), the
        statistics (v2, or the 3-counter v1) and the options."""
        if level != SOL_XDP:
            return super().getsockopt(level, optname, optlen)
        if optname == XdpSockOpt.MMAP_OFFSETS:
            return _mmap_offsets(optlen)
        if optname == XdpSockOpt.STATISTICS:
            if optlen < _STATS_V1_SIZE:
                raise KernelError(Errno.EINVAL, "short xdp_statistics")
            counters = [self.rx_dropped, 0, 0, self.rx_queue_full, 0, 0]
            if optlen < _STATS_SIZE:     # v1: a full rx ring counts as a drop
                counters = [self.rx_dropped + self.rx_queue_full, 0, 0]
            return b"".join(c.to_bytes(_U64, "little") for c in counters)
        if optname == XdpSockOpt.OPTIONS:
            if optlen < _INT:
                raise KernelError(Errno.EINVAL, "short xdp_options")
            return int(XDP_OPTIONS_ZEROCOPY if self.zc else 0).to_bytes(_INT, "little")
        raise KernelError(Errno.EOPNOTSUPP, f"SOL_XDP option {optname} cannot be read")

    # ---- bind ----
    def bind(self, addr) -> None:
        """xsk_bind()."""
        if isinstance(addr, tuple):
            ifindex, queue_id, flags = (tuple(addr) + (0, 0))[:3]
            addr = (AF_XDP.to_bytes(2, "little") + flags.to_bytes(2, "little")
                    + ifindex.to_bytes(4, "little") + queue_id.to_bytes(4, "little") + bytes(4))
        addr = bytes(addr)
        if len(addr) < ffi.sizeof(_SOCKADDR_XDP):
            raise KernelError(Errno.EINVAL, "short sockaddr_xdp")
        sxdp = ffi.from_buffer(_SOCKADDR_XDP + " *", addr)
        flags = sxdp.sxdp_flags
        if sxdp.sxdp_family != AF_XDP:
            raise KernelError(Errno.EINVAL, "not AF_XDP")
        if flags & ~XdpBindFlags.ALL:
            raise KernelError(Errno.EINVAL, "unknown bind flags")
        if self.xsk_state != XskState.READY:
            raise KernelError(Errno.EBUSY, "already bound")
        net = self.net.kern.world.net
        dev = net.dev_get_by_index(sxdp.sxdp_ifindex)
        if dev is None:
            raise KernelError(Errno.ENODEV, "no such device")
        if not self.rx_entries and not self.tx_entries:
            raise KernelError(Errno.EINVAL, "neither rx nor tx ring")
        qid = sxdp.sxdp_queue_id
        if qid >= dev.real_num_rx_queues:
            raise KernelError(Errno.EINVAL, "no such queue")
        if flags & XdpBindFlags.SHARED_UMEM:
            raise KernelError(Errno.EOPNOTSUPP, "shared UMEM is not modelled")
        if self.umem is None or not self.fq_entries or not self.cq_entries:
            raise KernelError(Errno.EINVAL, "no UMEM or no fill/completion ring")
        if flags & XdpBindFlags.COPY and flags & XdpBindFlags.ZEROCOPY:
            raise KernelError(Errno.EINVAL, "copy and zero-copy")
        if any(isinstance(s, XdpSock) and s.dev is dev and s.queue_id == qid for s in self.net.socks):
            raise KernelError(Errno.EBUSY, "queue already has an AF_XDP socket")
        if flags & XdpBindFlags.ZEROCOPY and not dev.ndo_bpf:
            raise KernelError(Errno.EOPNOTSUPP, "driver has no zero-copy AF_XDP")
        self.dev, self.queue_id = dev, qid
        sk = ffi.from_buffer("struct bpf_xdp_sock *", self.bpf_view)
        sk.queue_id = qid
        self.zc = bool(flags & XdpBindFlags.ZEROCOPY)
        self.xsk_state = XskState.BOUND

    def netdev_unregister(self, dev) -> None:
        """xsk_notifier(NETDEV_UNREGISTER): a socket bound to the device is unbound (ENETDOWN)."""
        if self.dev is not None and self.dev.ifindex == dev.ifindex:
            self.err = Errno.ENETDOWN
            self.dev = None
            self.xsk_state = XskState.UNBOUND

    # ---- release ----
    def release(self) -> None:
        """xsk_release(): leave every map, unbind."""
        if self.released:
            return
        for xmap, index in list(self.map_list):
            xmap.xsk_map_try_sock_delete(self, index)
        self.dev = None
        self.xsk_state = XskState.UNBOUND
        if self.bpf_region is not None:
            self.net.kern.mem.unmap(self.bpf_region)
            self.bpf_region = None
        super().release()


def xsk_create(net, sock_type: int, protocol: int) -> XdpSock:
    """xsk_create(): SOCK_RAW only, protocol 0, CAP_NET_RAW."""
    if sock_type != SOCK_RAW:
        raise KernelError(Errno.ESOCKTNOSUPPORT, "AF_XDP sockets are SOCK_RAW")
    if protocol:
        raise KernelError(Errno.EPROTONOSUPPORT, "AF_XDP takes protocol 0")
    if not net.kern.current.capable(Cap.NET_RAW):
        raise KernelError(Errno.EPERM, "AF_XDP needs CAP_NET_RAW")
    return XdpSock(net=net, family=AF_XDP, type=sock_type, protocol=protocol)


def xsk_rcv(kern, xs: XdpSock, frame: bytes, dev, rx_queue: int) -> int:
    """xsk_rcv() / xsk_generic_rcv(): 0, or -errno (the frame is dropped)."""
    if xs.xsk_state != XskState.BOUND or xs.dev is None or xs.dev.ifindex != dev.ifindex \
            or xs.queue_id != rx_queue:
        return -Errno.EINVAL
    if not xs.rx_entries or len(xs.rx) >= xs.rx_entries:
        xs.rx_queue_full += 1
        return -Errno.ENOBUFS
    xs.rx.append(bytes(frame))
    return 0
