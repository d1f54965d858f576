"""BTF blobs for tests: a tiny raw-BTF writer (as libbpf's btf__add_*), BTF_LOAD through any
backend, and libbpf 1.1's eight BTF feature-probe blobs (src/libbpf.c probe_kern_btf*).

Everything here builds bytes the way userspace does; nothing validates (that is the
kernel's job, which is what the tests compare).
"""
from __future__ import annotations

import struct

import attrs

from uapi.attr import Attr
from uapi.bpf import BpfCmd
from uapi.btf import BTF_MAGIC, BTF_VERSION, BtfKind

__all__ = ["BtfWriter", "btf_info", "btf_load", "BtfLoadResult", "LIBBPF_PROBES", "raw_btf", "LIBBPF_PROBE_ATTR_SIZE",
           "elf_sections", "fixup_datasec_sizes",
           "HDR_LEN"]

HDR_LEN = 24


def btf_info(kind: int, vlen: int = 0, kflag: int = 0) -> int:
    return ((kflag & 1) << 31) | ((kind & 0x1F) << 24) | (vlen & 0xFFFF)


def raw_btf(types: bytes, strs: bytes, *, magic: int = BTF_MAGIC, version: int = BTF_VERSION,
            flags: int = 0, hdr_len: int = HDR_LEN, type_off: int = 0, type_len: int | None = None,
            str_off: int | None = None, str_len: int | None = None, hdr_tail: bytes = b"") -> bytes:
    """Header + types + strings (libbpf's libbpf__load_raw_btf layout), every field overridable."""
    type_len = len(types) if type_len is None else type_len
    str_off = len(types) if str_off is None else str_off
    str_len = len(strs) if str_len is None else str_len
    hdr = struct.pack("<HBBIIIII", magic, version, flags, hdr_len, type_off, type_len,
                      str_off, str_len) + hdr_tail
    return hdr + types + strs


class BtfWriter:
    """Appends types and strings; ``blob()`` gives the raw BTF.  Ids start at 1."""

    def __init__(self):
        self.types = bytearray()
        self.strs = bytearray(b"\0")
        self._str_off: dict[bytes, int] = {b"": 0}
        self.nr = 0

    def s(self, name: bytes | str) -> int:
        if isinstance(name, str):
            name = name.encode()
        if name not in self._str_off:
            self._str_off[name] = len(self.strs)
            self.strs += name + b"\0"
        return self._str_off[name]

    def _add(self, name_off: int, info: int, size_or_type: int, extra: bytes = b"") -> int:
        self.types += struct.pack("<III", name_off, info, size_or_type) + extra
        self.nr += 1
        return self.nr

    def raw_type(self, name_off, kind, vlen, kflag, size_or_type, extra=b"") -> int:
        return self._add(name_off, btf_info(kind, vlen, kflag), size_or_type, extra)

    def int_(self, name, size, bits=None, encoding=0, offset=0) -> int:
        bits = size * 8 if bits is None else bits
        return self._add(self.s(name), btf_info(BtfKind.INT), size,
                         struct.pack("<I", (encoding << 24) | (offset << 16) | bits))

    def ptr(self, t) -> int:
        return self._add(0, btf_info(BtfKind.PTR), t)

    def array(self, elem, index, nelems) -> int:
        return self._add(0, btf_info(BtfKind.ARRAY), 0, struct.pack("<III", elem, index, nelems))

    def struct(self, name, size, members, union=False, kflag=0) -> int:
        """members: (name, type, bit_offset[, bitfield_size])."""
        extra = b""
        for m in members:
            off = m[2] | ((m[3] << 24) if len(m) > 3 else 0)
            extra += struct.pack("<III", self.s(m[0]), m[1], off)
        kind = BtfKind.UNION if union else BtfKind.STRUCT
        return self._add(self.s(name), btf_info(kind, len(members), kflag), size, extra)

    def enum(self, name, size, values, signed=0) -> int:
        """values: (name, value); `signed` is the kind_flag."""
        extra = b"".join(struct.pack("<II", self.s(n), v & 0xFFFFFFFF) for n, v in values)
        return self._add(self.s(name), btf_info(BtfKind.ENUM, len(values), signed), size, extra)

    def enum64(self, name, size, values, signed=0) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)
                         for n, v in values)
        return self._add(self.s(name), btf_info(BtfKind.ENUM64, len(values), signed), size, extra)

    def fwd(self, name, union=0) -> int:
        return self._add(self.s(name), btf_info(BtfKind.FWD, 0, union), 0)

    def typedef(self, name, t) -> int:
        return self._add(self.s(name), btf_info(BtfKind.TYPEDEF), t)

    def modifier(self, kind, t) -> int:
        return self._add(0, btf_info(kind), t)

    def func_proto(self, ret, params) -> int:
        """params: (name, type)."""
        extra = b"".join(struct.pack("<II", self.s(n), t) for n, t in params)
        return self._add(0, btf_info(BtfKind.FUNC_PROTO, len(params)), ret, extra)

    def func(self, name, proto, linkage=0) -> int:
        return self._add(self.s(name), btf_info(BtfKind.FUNC, linkage), proto)

    def var(self, name, t, linkage=0) -> int:
        return self._add(self.s(name), btf_info(BtfKind.VAR), t, struct.pack("<I", linkage))

    def datasec(self, name, size, vars_) -> int:
        """vars_: (type, offset, size)."""
        extra = b"".join(struct.pack("<III", *v) for v in vars_)
        return self._add(self.s(name), btf_info(BtfKind.DATASEC, len(vars_)), size, extra)

    def float_(self, name, size) -> int:
        return self._add(self.s(name), btf_info(BtfKind.FLOAT), size)

    def decl_tag(self, value, t, component_idx=-1, kflag=0) -> int:
        return self._add(self.s(value), btf_info(BtfKind.DECL_TAG, 0, kflag), t,
                         struct.pack("<i", component_idx))

    def type_tag(self, value, t, kflag=0) -> int:
        return self._add(self.s(value), btf_info(BtfKind.TYPE_TAG, 0, kflag), t)

    def blob(self, **hdr) -> bytes:
        return raw_btf(bytes(self.types), bytes(self.strs), **hdr)


@attrs.frozen
class BtfLoadResult:
    ret: int            # fd or -errno
    log: bytes          # the user's log buffer up to its first NUL
    log_true_size: int


def btf_load(b, blob: bytes, *, log_level: int = 0, log_size: int = 0, btf_size: int | None = None,
             size: int | None = None, btf_flags: int = 0, btf_token_fd: int = 0,
             log_buf: bool = True, btf_addr: int | None = None) -> BtfLoadResult:
    """BPF_BTF_LOAD as libbpf's bpf_btf_load() (attr size up to btf_log_true_size)."""
    data = bytearray(blob) if blob else bytearray(1)
    logbuf = bytearray(log_size) if (log_size and log_buf) else None
    a = Attr()
    a.set("btf", btf_addr if btf_addr is not None else data)
    a.set("btf_size", len(blob) if btf_size is None else btf_size)
    if logbuf is not None:
        a.set("btf_log_buf", logbuf)
    a.set("btf_log_size", log_size)
    a.set("btf_log_level", log_level)
    a.set("btf_flags", btf_flags)
    a.set("btf_token_fd", btf_token_fd)
    if size is None:
        size = Attr.size("btf_log_true_size")
    ret = b.bpf(BpfCmd.BTF_LOAD, a.c, size)
    log = bytes(logbuf).split(b"\0", 1)[0] if logbuf is not None else b""
    return BtfLoadResult(ret, log, a.get("btf_log_true_size"))


def _probe(types: bytes, strs: bytes) -> bytes:
    return raw_btf(types, strs)


def _t(name_off, info, st, *extra) -> bytes:
    return struct.pack("<III", name_off, info, st) + b"".join(struct.pack("<I", e & 0xFFFFFFFF)
                                                              for e in extra)


# libbpf 1.1 src/libbpf.c: probe_kern_btf(), probe_kern_btf_func(), ... (same types, same
# strings with sizeof()'s trailing NUL); libbpf__load_raw_btf sends them with attr size 28
# (offsetofend(btf_log_level)).
_INT = lambda name_off: _t(name_off, btf_info(BtfKind.INT), 4, (1 << 24) | 32)   # BTF_TYPE_INT_ENC(.., SIGNED, 0, 32, 4)
_FUNC_PROTO_A = _t(0, btf_info(BtfKind.FUNC_PROTO, 1), 0, 7, 1)                 # void (int a)
LIBBPF_PROBE_ATTR_SIZE = 28
LIBBPF_PROBES = {
    "btf": _probe(_INT(1), b"\0int\0"),
    "btf_func": _probe(_INT(1) + _FUNC_PROTO_A + _t(5, btf_info(BtfKind.FUNC), 2),
                       b"\0int\0x\0a\0"),
    "btf_global_func": _probe(_INT(1) + _FUNC_PROTO_A + _t(5, btf_info(BtfKind.FUNC, 1), 2),
                              b"\0int\0x\0a\0"),
    "btf_datasec": _probe(_INT(0) + _t(1, btf_info(BtfKind.VAR), 1, 0)
                          + _t(3, btf_info(BtfKind.DATASEC, 1), 4, 2, 0, 4), b"\0x\0.data\0"),
    "btf_float": _probe(_t(1, btf_info(BtfKind.FLOAT), 4), b"\0float\0"),
    "btf_decl_tag": _probe(_INT(0) + _t(1, btf_info(BtfKind.VAR), 1, 0)
                           + _t(1, btf_info(BtfKind.DECL_TAG), 2, 0xFFFFFFFF), b"\0tag\0"),
    "btf_type_tag": _probe(_INT(0) + _t(1, btf_info(BtfKind.TYPE_TAG), 1)
                           + _t(0, btf_info(BtfKind.PTR), 2), b"\0tag\0"),
    "btf_enum64": _probe(_t(1, btf_info(BtfKind.ENUM64), 8), b"\0enum64\0"),
}


# ---------------------------------------------------------------- clang objects

def elf_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of an ELF64 little-endian object."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = data[hdrs[shstrndx][4]:hdrs[shstrndx][4] + hdrs[shstrndx][5]]
    out = {}
    for h in hdrs:
        name = names[h[0]:names.index(b"\0", h[0])].decode()
        size = h[5]
        out[name] = data[h[4]:h[4] + size] if h[1] != 8 else bytes(size)     # SHT_NOBITS: .bss
    return out


def fixup_datasec_sizes(blob: bytes, sections: dict[str, bytes]) -> bytes:
    """libbpf's btf_fixup_datasec(), the part that matters here: a DATASEC's size is its ELF
    section's size (clang leaves it 0)."""
    from uapi.btf import decode_btf
    out = bytearray(blob)
    hdr_len, type_off = struct.unpack_from("<II", blob, 4)
    pos = hdr_len + type_off
    for t in decode_btf(blob)[1:]:
        name_off, info, size = struct.unpack_from("<III", blob, pos)
        if t.kind == BtfKind.DATASEC and not size and t.name in sections:
            struct.pack_into("<I", out, pos + 8, len(sections[t.name]))
        vlen = info & 0xFFFF
        extra = {BtfKind.INT: 4, BtfKind.ARRAY: 12, BtfKind.STRUCT: 12 * vlen,
                 BtfKind.UNION: 12 * vlen, BtfKind.ENUM: 8 * vlen, BtfKind.FUNC_PROTO: 8 * vlen,
                 BtfKind.VAR: 4, BtfKind.DATASEC: 12 * vlen, BtfKind.DECL_TAG: 4,
                 BtfKind.ENUM64: 12 * vlen}.get(t.kind, 0)
        pos += 12 + extra
    return bytes(out)
