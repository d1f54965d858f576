"""AF_XDP sockets, fakekernel vs the real kernel: socket(2) type/protocol rules, the SOL_XDP
ring / UMEM setsockopts and bind's checks in the kernel's order (copy mode on lo works,
zero-copy does not, one socket per queue), getsockname and the readable SOL_XDP options."""
from __future__ import annotations

import socket

import pytest

from maputil import both_equal
from xskutil import (AF_XDP, XDP_COPY, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_COMPLETION_RING,
                     XDP_UMEM_FILL_RING, XDP_UMEM_REG, XDP_ZEROCOPY, _umem_area, getsockname,
                     getsockopt, sockaddr_xdp, sso, umem_reg, xsk_bind, xsk_ready)

pytestmark = pytest.mark.differential


def test_af_xdp_socket_setup_and_bind_errnos(both):
    def scenario(b):
        out = [b.sym(b.socket(AF_XDP, t, p)) for t, p in ((socket.SOCK_DGRAM, 0), (socket.SOCK_RAW, 1),
                                                       (socket.SOCK_DGRAM, 1))]
        s = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 0)))                 # no rings
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 0, length=8)))
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 0, family=2)))
        for entries in (0, 3, 64, 64):
            out.append(("rx", entries, sso(b, s, XDP_RX_RING, entries)))
        out.append(sso(b, s, XDP_UMEM_FILL_RING, 64))                  # before the UMEM
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 0)))                 # no UMEM
        out.append(xsk_bind(b, s, sockaddr_xdp(0x7FFF0000, 0)))
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 5)))
        for reg in (umem_reg(chunk=1000), umem_reg(chunk=1024), umem_reg(length=4096 * 3 + 1),
                    umem_reg(headroom=4096), umem_reg(addr=_umem_area() + 8), umem_reg(), umem_reg()):
            out.append(("umem", sso(b, s, XDP_UMEM_REG, reg)))
        out.append(xsk_bind(b, s, sockaddr_xdp(1, 0)))                 # no fill ring
        out.append(sso(b, s, XDP_UMEM_FILL_RING, 64))
        out.append(sso(b, s, XDP_UMEM_COMPLETION_RING, 64))
        for flags in (0x100, XDP_COPY | XDP_ZEROCOPY, XDP_ZEROCOPY, XDP_COPY, XDP_COPY):
            out.append(("bind", flags, xsk_bind(b, s, sockaddr_xdp(1, 0, flags))))
        out.append(sso(b, s, XDP_TX_RING, 64))
        s2 = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        xsk_ready(b, s2)
        out.append(xsk_bind(b, s2, sockaddr_xdp(1, 0, XDP_COPY)))      # the queue is taken
        for fd in (s2, s):
            b.close(fd)
        return out
    both_equal(both, scenario)


def test_af_xdp_getsockname_eopnotsupp(both):
    def scenario(b):
        x = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        out = [getsockname(b, x)]
        b.close(x)
        return out
    assert both_equal(both, scenario) == [-95]


def test_af_xdp_getsockopt(both):
    """XDP_MMAP_OFFSETS (v2 / v1 by length), XDP_STATISTICS (v2 / v1), XDP_OPTIONS, and the
    options that cannot be read."""
    def scenario(b):
        x = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        out = [(opt, n, getsockopt(b, x, opt, n)) for opt, n in (
            (1, 128), (1, 96), (1, 127), (1, 200), (1, 95), (1, 4), (7, 48), (7, 24), (7, 47), (7, 100),
            (7, 23), (8, 4), (8, 8), (8, 2), (9, 4), (XDP_RX_RING, 4), (XDP_UMEM_REG, 32))]
        b.close(x)
        return out
    both_equal(both, scenario)
