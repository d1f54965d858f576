"""Kernel-internal struct layouts — include/linux/skbuff.h (struct sk_buff, skb_shared_info),
include/net/xdp.h (struct xdp_buff, xdp_rxq_info), include/linux/netdevice.h (net_device),
include/net/sock.h (sock_common), include/net/sch_generic.h (qdisc_skb_cb).

convert_ctx_access rewrites a program's ``__sk_buff`` / ``xdp_md`` loads into loads from these
structs, so the simulated kernel lays out memory images of them for a run: `KImage` is a
bytearray sized like the struct with the fields the rewrites reach.  Offsets come from the
generated `fakekernel._kernel_layout` (tools/gen_kernel_layout.py, from the 6.18 vmlinux BTF).
"""
from __future__ import annotations

from fakekernel._kernel_layout import FIELDS, SIZEOF

__all__ = ["offsetof", "sizeof_field", "sizeof", "bit_mask", "KImage"]


def offsetof(path: str) -> int:
    """offsetof(struct, member) for ``"sk_buff.len"``."""
    return FIELDS[path][0]


def sizeof_field(path: str) -> int:
    return FIELDS[path][1]


def sizeof(struct: str) -> int:
    return SIZEOF[struct]


def bit_mask(path: str) -> int:
    """The mask of a bitfield within its byte (``sk_buff.pkt_type`` -> PKT_TYPE_MAX)."""
    _off, _size, bit_off, bits = FIELDS[path]
    return ((1 << bits) - 1) << bit_off


class KImage:
    """A kernel struct as bytes: ``img["len"] = 60``; bitfields read-modify-write their byte."""

    def __init__(self, struct: str, size: int | None = None):
        self.struct = struct
        self.buf = bytearray(SIZEOF[struct] if size is None else size)

    def _spec(self, name: str):
        return FIELDS[f"{self.struct}.{name}"]

    def __setitem__(self, name: str, value: int) -> None:
        off, size, bit_off, bits = self._spec(name)
        if bits:
            mask = ((1 << bits) - 1) << bit_off
            self.buf[off] = (self.buf[off] & ~mask) | ((value << bit_off) & mask)
            return
        self.buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def __getitem__(self, name: str) -> int:
        off, size, bit_off, bits = self._spec(name)
        if bits:
            return (self.buf[off] >> bit_off) & ((1 << bits) - 1)
        return int.from_bytes(self.buf[off:off + size], "little")

    def put_bytes(self, name: str, data: bytes, at: int = 0) -> None:
        off = self._spec(name)[0] + at
        self.buf[off:off + len(data)] = data

    def get_bytes(self, name: str, n: int, at: int = 0) -> bytes:
        off = self._spec(name)[0] + at
        return bytes(self.buf[off:off + n])
