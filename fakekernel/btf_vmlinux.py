"""The kernel's own BTF, indexed — kernel/bpf/btf.c: btf_type_by_id(), btf_name_by_offset(),
btf_find_by_name_kind(), btf_type_skip_modifiers(), btf_distill_func_proto() (the argument
model of a FUNC_PROTO) and struct member lookup for BTF-typed pointers.

The vmlinux blob is ~6 MB with ~127k types, so nothing is done at boot: the first lookup
scans the type section once (one pass over the u32 words, no per-type objects) to record
each type's offset and a name-offset -> ids table, and the result is cached per blob
content, so every `Kernel` that boots on the same vmlinux shares one index.
"""
from __future__ import annotations

import functools
from array import array

import attrs

from fakekernel.btf_env import BTF_KIND_STR, PTR_SIZE, BtfT
from uapi.btf import BTF_MAGIC, BtfKind
from uapi.ffi import ffi

__all__ = ["BtfIndex", "btf_index", "FuncModel", "MAX_BPF_FUNC_ARGS", "BTF_TRACE_PREFIX",
           "BPF_ITER_PREFIX", "BPF_LSM_PREFIX"]

MAX_BPF_FUNC_ARGS = 12            # include/linux/bpf.h
_MAX_STRUCT_ARG_SIZE = 16         # btf_distill_func_proto(): larger struct args are refused
BTF_TRACE_PREFIX = b"btf_trace_"
BPF_ITER_PREFIX = b"bpf_iter_"
BPF_LSM_PREFIX = b"bpf_lsm_"

_HDR = "struct btf_header"
_HDR_SIZE = ffi.sizeof(_HDR)
_WORD = ffi.sizeof("__u32")
_TYPE_WORDS = ffi.sizeof("struct btf_type") // _WORD
# trailing u32 words per kind (include/uapi/linux/btf.h): fixed (INT's encoding word, struct
# btf_array, struct btf_var, struct btf_decl_tag) and per vlen record (struct btf_member,
# btf_enum, btf_enum64, btf_param, btf_var_secinfo)
_FIXED_WORDS = {BtfKind.INT: 1, BtfKind.ARRAY: 3, BtfKind.VAR: 1, BtfKind.DECL_TAG: 1}
_VLEN_WORDS = {BtfKind.STRUCT: 3, BtfKind.UNION: 3, BtfKind.ENUM: 2, BtfKind.ENUM64: 3,
               BtfKind.FUNC_PROTO: 2, BtfKind.DATASEC: 3}
_MODIFIERS = frozenset({BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT,
                        BtfKind.TYPE_TAG})
_SIZED = frozenset({BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64,
                    BtfKind.FLOAT, BtfKind.DATASEC})


@attrs.frozen
class FuncModel:
    """struct btf_func_model: argument and return sizes of a traced function."""

    ret_size: int
    arg_size: tuple[int, ...]
    ret_type: int = 0                  # the BTF id (modifiers skipped) of the return, 0 = void
    arg_types: tuple[int, ...] = ()    # the BTF ids (modifiers skipped) of the arguments

    @property
    def nr_args(self) -> int:
        return len(self.arg_size)


class BtfIndex:
    """Random access to the types of one BTF blob (ids from 1)."""

    def __init__(self, data: bytes):
        hdr = ffi.from_buffer(_HDR + " *", data[:_HDR_SIZE]) if len(data) >= _HDR_SIZE else None
        if hdr is None or hdr.magic != BTF_MAGIC:
            raise ValueError("not a BTF blob")
        self.data = data
        self.type_start = hdr.hdr_len + hdr.type_off
        self.type_len = hdr.type_len
        s0 = hdr.hdr_len + hdr.str_off
        self.strings = data[s0:s0 + hdr.str_len]
        self.offsets = array("I", [0])            # id -> byte offset in data (0: void)
        self.by_name: dict[int, list[int]] = {}   # name_off -> ids
        self._found: dict[tuple[bytes, int], int] = {}    # find_by_name_kind answers
        self._scan()

    def _scan(self) -> None:
        words = memoryview(self.data)[self.type_start:self.type_start + self.type_len].cast("I")
        offsets, by_name = self.offsets, self.by_name
        fixed, per_vlen = _FIXED_WORDS, _VLEN_WORDS
        n, pos, tid = len(words), 0, 1
        while pos + _TYPE_WORDS <= n:
            name_off, info = words[pos], words[pos + 1]
            kind = (info >> 24) & 0x1F
            offsets.append(self.type_start + pos * _WORD)
            if name_off:
                ids = by_name.get(name_off)
                if ids is None:
                    by_name[name_off] = [tid]
                else:
                    ids.append(tid)
            pos += _TYPE_WORDS + fixed.get(kind, 0) + per_vlen.get(kind, 0) * (info & 0xFFFF)
            tid += 1
        words.release()

    # ---- btf_type_by_id / names ----
    @property
    def nr_types(self) -> int:
        return len(self.offsets)

    def type_by_id(self, type_id: int) -> BtfT | None:
        if type_id <= 0 or type_id >= len(self.offsets):
            return None
        return BtfT.at(self.data, self.offsets[type_id])

    def name_by_offset(self, off: int) -> bytes:
        if off >= len(self.strings):
            return b""
        return self.strings[off:self.strings.index(b"\0", off)]

    def name_of(self, type_id: int) -> bytes:
        t = self.type_by_id(type_id)
        return self.name_by_offset(t.name_off) if t is not None else b""

    def _name_offsets(self, name: bytes):
        """Every string-section offset holding exactly `name` (one in a deduplicated blob)."""
        if not name:
            return
        needle = b"\0" + name + b"\0"
        at = self.strings.find(needle)
        while at >= 0:
            yield at + 1
            at = self.strings.find(needle, at + 1)

    def find_by_name_kind(self, name: bytes, kind: int) -> int:
        """btf_find_by_name_kind(): the first id with that name and kind, or -1."""
        key = (bytes(name), int(kind))
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._find(*key)
        return found

    def _find(self, name: bytes, kind: int) -> int:
        best = -1
        for off in self._name_offsets(name):
            for tid in self.by_name.get(off, ()):
                if self.type_by_id(tid).kind == kind and (best < 0 or tid < best):
                    best = tid
                    break
        return best

    # ---- type walking ----
    def skip_modifiers(self, type_id: int) -> tuple[BtfT | None, int]:
        """btf_type_skip_modifiers(): follow typedef/const/volatile/restrict/type_tag."""
        t = self.type_by_id(type_id)
        while t is not None and t.kind in _MODIFIERS:
            type_id = t.type
            t = self.type_by_id(type_id)
        return t, type_id

    def type_size(self, type_id: int) -> int | None:
        """btf_resolve_size() for the types an argument can have; None if it has no size."""
        t, type_id = self.skip_modifiers(type_id)
        if t is None:
            return None
        if t.kind in _SIZED:
            return t.size
        if t.kind == BtfKind.PTR:
            return PTR_SIZE
        if t.kind == BtfKind.ARRAY:
            elem, nelems = t.word(0), t.word(2)      # struct btf_array: type, index_type, nelems
            esize = self.type_size(elem)
            return None if esize is None else esize * nelems
        return None

    def params(self, proto_id: int) -> list[tuple[bytes, int]]:
        """The (name, type id) parameters of a FUNC_PROTO."""
        t = self.type_by_id(proto_id)
        return [(self.name_by_offset(n), tid) for n, tid in t.records(2)]

    def members(self, struct_id: int) -> list[tuple[bytes, int, int]]:
        """(name, type id, bit offset) of a STRUCT/UNION's members."""
        t = self.type_by_id(struct_id)
        out = []
        for name_off, tid, off in t.records(3):
            bit_off = off & 0xFFFFFF if t.kflag else off
            out.append((self.name_by_offset(name_off), tid, bit_off))
        return out

    def members_full(self, struct_id: int) -> list[tuple[bytes, int, int, int]]:
        """(name, type id, bit offset, bitfield size in bits or 0) of a STRUCT/UNION's members."""
        t = self.type_by_id(struct_id)
        out = []
        for name_off, tid, off in t.records(3):
            if t.kflag:
                out.append((self.name_by_offset(name_off), tid, off & 0xFFFFFF, off >> 24))
            else:
                out.append((self.name_by_offset(name_off), tid, off, 0))
        return out

    def member_at(self, struct_id: int, byte_off: int) -> tuple[bytes, int, int] | None:
        """The member covering `byte_off` (name, type id, its byte offset), recursing into
        anonymous struct/union members as btf_struct_walk() does."""
        for name, tid, bit_off, bits in self.members_full(struct_id):
            if bits:
                if bit_off // 8 <= byte_off < -(-(bit_off + bits) // 8):
                    return name, tid, bit_off // 8
                continue
            start = bit_off // 8
            size = self.type_size(tid)
            if size is None or not (start <= byte_off < start + max(size, 1)):
                continue
            inner, inner_id = self.skip_modifiers(tid)
            if not name and inner is not None and inner.kind in (BtfKind.STRUCT, BtfKind.UNION):
                found = self.member_at(inner_id, byte_off - start)
                if found is not None:
                    return found[0], found[1], found[2] + start
            return name, tid, start
        return None

    def get_type_size(self, type_id: int) -> tuple[int, BtfT | None]:
        """__get_type_size(): (size or -1, the type after modifiers) for a model slot."""
        if not type_id:
            return 0, None
        t, _ = self.skip_modifiers(type_id)
        if t is None:
            return -1, None
        if t.kind == BtfKind.PTR:
            return PTR_SIZE, t
        if t.kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.STRUCT, BtfKind.UNION):
            return t.size, t
        return -1, t

    def distill_func_proto(self, proto_id: int, tname: bytes) -> FuncModel | bytes:
        """btf_distill_func_proto(): the FuncModel, or the verifier log line saying why not."""
        t = self.type_by_id(proto_id)
        params = t.records(2)
        if len(params) > MAX_BPF_FUNC_ARGS:
            return b"The function %s has %d arguments. Too many.\n" % (tname, len(params))
        ret_size, rt = self.get_type_size(t.type)
        if ret_size < 0 or (rt is not None and rt.kind in (BtfKind.STRUCT, BtfKind.UNION)):
            return b"The function %s return type %s is unsupported.\n" % (tname, _kind_str(rt))
        sizes, types = [], []
        for i, (_name, tid) in enumerate(params):
            if i == len(params) - 1 and tid == 0:
                return b"The function %s with variable args is unsupported.\n" % tname
            size, at = self.get_type_size(tid)
            if size < 0 or size > _MAX_STRUCT_ARG_SIZE:
                return b"The function %s arg%d type %s is unsupported.\n" % (tname, i, _kind_str(at))
            if size == 0:
                return b"The function %s has malformed void argument.\n" % tname
            sizes.append(size)
            types.append(self.skip_modifiers(tid)[1])
        return FuncModel(ret_size=ret_size, arg_size=tuple(sizes),
                         ret_type=self.skip_modifiers(t.type)[1] if t.type else 0,
                         arg_types=tuple(types))


def _kind_str(t: BtfT | None) -> bytes:
    return BTF_KIND_STR[t.kind if t is not None else BtfKind.UNKN]


@functools.lru_cache(maxsize=4)
def _index_for(data: bytes) -> BtfIndex:
    return BtfIndex(data)


def btf_index(btf) -> BtfIndex:
    """The index of a Btf object's blob (built on first use, cached per blob content)."""
    return _index_for(btf.data)
