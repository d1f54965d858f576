"""AF_XDP helpers for tests: the same socket calls on the fake kernel and on the host.

Python's socket module cannot wrap an AF_XDP fd (its getsockname is EOPNOTSUPP), so on the
host bind / setsockopt / getsockopt / getsockname go through libc with ctypes.
"""
from __future__ import annotations

import ctypes
import mmap

from backends import FakeBackend

AF_XDP = 44
SOL_XDP = 283
XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 2, 3, 4, 5, 6
XDP_COPY, XDP_ZEROCOPY = 2, 4
_UMEM_PAGES = 16
_UMEM = None


def _umem_area():
    """One page-aligned area for every UMEM (the fake kernel only checks the numbers)."""
    global _UMEM
    if _UMEM is None:
        area = mmap.mmap(-1, 4096 * _UMEM_PAGES)
        _UMEM = (area, ctypes.addressof(ctypes.c_char.from_buffer(area)))
    return _UMEM[1]


def umem_reg(length=4096 * _UMEM_PAGES, chunk=4096, headroom=0, flags=0, addr=None) -> bytes:
    base = _umem_area() if addr is None else addr
    return (base.to_bytes(8, "little") + length.to_bytes(8, "little") + chunk.to_bytes(4, "little")
            + headroom.to_bytes(4, "little") + flags.to_bytes(4, "little") + bytes(4))


def sockaddr_xdp(ifindex, queue, flags=0, family=AF_XDP, length=16) -> bytes:
    return (family.to_bytes(2, "little") + flags.to_bytes(2, "little") + ifindex.to_bytes(4, "little")
            + queue.to_bytes(4, "little") + bytes(4))[:length]


def xsk_bind(b, fd, addr: bytes) -> int:
    if isinstance(b, FakeBackend):
        return b.kern.bind(fd, addr)
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(addr, len(addr))
    return 0 if libc.bind(fd, buf, len(addr)) == 0 else -ctypes.get_errno()


def sso(b, fd, opt, value) -> int:
    """setsockopt(SOL_XDP) (on the host through libc: Python's socket module cannot wrap an
    AF_XDP fd, getsockname fails)."""
    if isinstance(value, int):
        value = value.to_bytes(4, "little")
    if isinstance(b, FakeBackend):
        return b.setsockopt(fd, SOL_XDP, opt, value)
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(value, len(value))
    return 0 if libc.setsockopt(fd, SOL_XDP, opt, buf, len(value)) == 0 else -ctypes.get_errno()


def xsk_ready(b, fd, rx=64):
    """Rings and a UMEM, as an application sets them up before bind."""
    assert sso(b, fd, XDP_RX_RING, rx) == 0
    assert sso(b, fd, XDP_UMEM_REG, umem_reg()) == 0
    assert sso(b, fd, XDP_UMEM_FILL_RING, 64) == 0
    assert sso(b, fd, XDP_UMEM_COMPLETION_RING, 64) == 0


def getsockname(b, fd):
    """0 (an address came back) or -errno."""
    if isinstance(b, FakeBackend):
        ret = b.getsockname(fd)
        return ret if isinstance(ret, int) else 0
    libc = ctypes.CDLL(None, use_errno=True)
    buf, ln = ctypes.create_string_buffer(64), ctypes.c_uint32(64)
    return 0 if libc.getsockname(fd, buf, ctypes.byref(ln)) == 0 else -ctypes.get_errno()


def getsockopt(b, fd, opt, n):
    """(0, bytes) or -errno for getsockopt(SOL_XDP, opt) with an n-byte buffer."""
    if isinstance(b, FakeBackend):
        ret = b.getsockopt(fd, SOL_XDP, opt, n)
        return ret if isinstance(ret, int) else (0, bytes(ret))
    libc = ctypes.CDLL(None, use_errno=True)
    buf, ln = ctypes.create_string_buffer(n), ctypes.c_uint32(n)
    if libc.getsockopt(fd, SOL_XDP, opt, buf, ctypes.byref(ln)):
        return -ctypes.get_errno()
    return 0, buf.raw[:ln.value]
