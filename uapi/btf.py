"""BTF records — include/uapi/linux/btf.h.

Only the wire format: header, kinds, per-kind trailing records, and a decoder that
turns a raw BTF blob into a list of `BtfType` values.  Validation with the kernel's
rules and errnos is the simulated kernel's job (``fakekernel/btf.py``).
"""
from __future__ import annotations

import enum
import struct

import attrs

__all__ = ["BTF_MAGIC", "BTF_VERSION", "BtfKind", "BtfType", "BtfMember", "BtfParam",
           "BtfEnumVal", "BtfVarSecinfo", "BtfHeader", "decode_btf", "BtfFormatError"]

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1

_HDR = struct.Struct("<HBBIIIII")          # struct btf_header
_TYPE = struct.Struct("<III")              # struct btf_type
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")
_ARRAY = struct.Struct("<III")             # struct btf_array
_MEMBER = struct.Struct("<III")            # struct btf_member
_ENUM = struct.Struct("<Ii")               # struct btf_enum
_ENUM64 = struct.Struct("<III")            # struct btf_enum64
_PARAM = struct.Struct("<II")              # struct btf_param
_SECINFO = struct.Struct("<III")           # struct btf_var_secinfo


class BtfKind(enum.IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# BTF_INT_ENCODING bits
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1
BTF_INT_BOOL = 1 << 2


class BtfFormatError(ValueError):
    """The blob is not well-formed enough to decode (truncated, bad magic, ...)."""


@attrs.frozen
class BtfHeader:
    magic: int
    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


@attrs.frozen
class BtfMember:
    name: str
    type: int
    bit_offset: int
    bitfield_size: int


@attrs.frozen
class BtfEnumVal:
    name: str
    value: int


@attrs.frozen
class BtfParam:
    name: str
    type: int


@attrs.frozen
class BtfVarSecinfo:
    type: int
    offset: int
    size: int


@attrs.frozen
class BtfType:
    id: int
    kind: BtfKind
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    # kind-specific extras
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    array: tuple[int, int, int] | None = None          # (type, index_type, nelems)
    members: tuple[BtfMember, ...] = ()
    enum_values: tuple[BtfEnumVal, ...] = ()
    params: tuple[BtfParam, ...] = ()
    secinfo: tuple[BtfVarSecinfo, ...] = ()
    linkage: int = 0
    component_idx: int = 0

    @property
    def size(self) -> int:
        return self.size_or_type

    @property
    def type(self) -> int:
        return self.size_or_type


def _string(strs: bytes, off: int) -> str:
    if off >= len(strs):
        raise BtfFormatError(f"string offset {off} out of range")
    end = strs.find(b"\0", off)
    if end < 0:
        raise BtfFormatError("unterminated string")
    return strs[off:end].decode("utf-8", "replace")


def decode_header(blob: bytes) -> BtfHeader:
    if len(blob) < _HDR.size:
        raise BtfFormatError("blob shorter than btf_header")
    return BtfHeader(*_HDR.unpack_from(blob, 0))


def decode_btf(blob: bytes, base_count: int = 1) -> list[BtfType]:
    """Decode every type of a raw BTF blob.  Index 0 of the result is the void type.

    `base_count` is the number of types that precede this blob (split BTF); ids start there.
    """
    hdr = decode_header(blob)
    if hdr.magic != BTF_MAGIC:
        raise BtfFormatError("bad magic")
    t0 = hdr.hdr_len + hdr.type_off
    s0 = hdr.hdr_len + hdr.str_off
    types_raw = blob[t0:t0 + hdr.type_len]
    strs = blob[s0:s0 + hdr.str_len]
    if len(types_raw) != hdr.type_len or len(strs) != hdr.str_len:
        raise BtfFormatError("sections out of range")
    out: list[BtfType] = [BtfType(id=0, kind=BtfKind.UNKN, name="void", vlen=0,
                                  kind_flag=False, size_or_type=0)] if base_count == 1 else []
    pos = 0
    tid = base_count
    n = len(types_raw)
    while pos < n:
        if pos + _TYPE.size > n:
            raise BtfFormatError("truncated btf_type")
        name_off, info, st = _TYPE.unpack_from(types_raw, pos)
        pos += _TYPE.size
        vlen = info & 0xFFFF
        kind_v = (info >> 24) & 0x1F
        kflag = bool(info >> 31)
        try:
            kind = BtfKind(kind_v)
        except ValueError:
            raise BtfFormatError(f"unknown kind {kind_v}") from None
        name = _string(strs, name_off)
        extra: dict = {}
        if kind == BtfKind.INT:
            (v,) = _U32.unpack_from(types_raw, pos)
            pos += 4
            extra = dict(int_encoding=(v >> 24) & 0xF, int_offset=(v >> 16) & 0xFF, int_bits=v & 0xFF)
        elif kind == BtfKind.ARRAY:
            extra = dict(array=_ARRAY.unpack_from(types_raw, pos))
            pos += _ARRAY.size
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            mems = []
            for _ in range(vlen):
                mn, mt, mo = _MEMBER.unpack_from(types_raw, pos)
                pos += _MEMBER.size
                if kflag:
                    mems.append(BtfMember(_string(strs, mn), mt, mo & 0xFFFFFF, mo >> 24))
                else:
                    mems.append(BtfMember(_string(strs, mn), mt, mo, 0))
            extra = dict(members=tuple(mems))
        elif kind == BtfKind.ENUM:
            vals = []
            for _ in range(vlen):
                en, ev = _ENUM.unpack_from(types_raw, pos)
                pos += _ENUM.size
                if not kflag:   # unsigned enum when kind_flag is clear? kind_flag set = signed
                    pass
                vals.append(BtfEnumVal(_string(strs, en), ev if kflag else ev & 0xFFFFFFFF))
            extra = dict(enum_values=tuple(vals))
        elif kind == BtfKind.ENUM64:
            vals = []
            for _ in range(vlen):
                en, lo, hi = _ENUM64.unpack_from(types_raw, pos)
                pos += _ENUM64.size
                v = (hi << 32) | lo
                if kflag and v >> 63:
                    v -= 1 << 64
                vals.append(BtfEnumVal(_string(strs, en), v))
            extra = dict(enum_values=tuple(vals))
        elif kind == BtfKind.FUNC_PROTO:
            ps = []
            for _ in range(vlen):
                pn, pt = _PARAM.unpack_from(types_raw, pos)
                pos += _PARAM.size
                ps.append(BtfParam(_string(strs, pn), pt))
            extra = dict(params=tuple(ps))
        elif kind == BtfKind.VAR:
            (lk,) = _U32.unpack_from(types_raw, pos)
            pos += 4
            extra = dict(linkage=lk)
        elif kind == BtfKind.DATASEC:
            si = []
            for _ in range(vlen):
                si.append(BtfVarSecinfo(*_SECINFO.unpack_from(types_raw, pos)))
                pos += _SECINFO.size
            extra = dict(secinfo=tuple(si))
        elif kind == BtfKind.DECL_TAG:
            (ci,) = _S32.unpack_from(types_raw, pos)
            pos += 4
            extra = dict(component_idx=ci)
        elif kind == BtfKind.FUNC:
            extra = dict(linkage=vlen)
        out.append(BtfType(id=tid, kind=kind, name=name, vlen=vlen, kind_flag=kflag,
                           size_or_type=st, **extra))
        tid += 1
    return out
