"""Hypothesis strategies for raw BTF: random type graphs of every kind (mostly well-formed,
with edge values drawn often) and mutations of them (flipped bytes, rewritten words,
truncation, header fields, bad name offsets, bad kinds, vlen overflows).
"""
from __future__ import annotations

import struct

from hypothesis import strategies as st

from btfutil import HDR_LEN, BtfWriter, btf_info
from uapi.btf import BtfKind as K

__all__ = ["btf_writers", "btf_blobs", "mutated_blobs", "wellformed_writers"]

NAMES = [b"", b"a", b"int", b"x1", b"_", b".data", b"foo_bar", b"9x", b"a-b", b".rodata.str1.1",
         b"\xc0", b"s p", b"long_" * 4, b"kptr", b"tag", b"bpf_spin_lockx"]
INT_SIZES = [0, 1, 2, 3, 4, 8, 16, 17]
SMALL = st.sampled_from([0, 1, 2, 4, 8, 16, 31, 32, 64, 127, 128, 0xFFFFFF, 0x1000000, 0xFFFFFFFF])


@st.composite
def _type(draw, w: BtfWriter, n: int):
    """Append one type to `w`; `n` is the number of types the graph will have."""
    ref = st.integers(0, n + 1)
    some_ref = lambda: draw(st.one_of(ref, st.just(1), SMALL))        # noqa: E731
    name = lambda: w.s(draw(st.sampled_from(NAMES)))                   # noqa: E731
    kflag = draw(st.sampled_from([0, 0, 0, 1]))
    kind = draw(st.sampled_from(list(K)[1:]))
    if kind == K.INT:
        size = draw(st.sampled_from(INT_SIZES))
        bits = draw(st.one_of(st.just(size * 8), st.integers(0, 130)))
        enc = draw(st.sampled_from([0, 0, 1, 2, 4, 3, 8]))
        off = draw(st.sampled_from([0, 0, 0, 1, 7, 8, 120]))
        hi = draw(st.sampled_from([0, 0, 0, 0, 1]))
        w.raw_type(name(), kind, draw(st.sampled_from([0, 0, 0, 1])), kflag, size,
                   struct.pack("<I", (hi << 28) | (enc << 24) | (off << 16) | (bits & 0xFF)))
    elif kind in (K.PTR, K.TYPEDEF, K.VOLATILE, K.CONST, K.RESTRICT, K.TYPE_TAG):
        named = kind in (K.TYPEDEF, K.TYPE_TAG) or draw(st.integers(0, 9)) == 0
        nm = name() if named else 0
        w.raw_type(nm, kind, 0, kflag, some_ref())
    elif kind == K.ARRAY:
        w.raw_type(0, kind, 0, kflag, draw(st.sampled_from([0, 0, 0, 4])),
                   struct.pack("<III", some_ref(), some_ref(),
                               draw(st.sampled_from([0, 1, 2, 4, 0x10000, 0xFFFFFFFF]))))
    elif kind in (K.STRUCT, K.UNION):
        nmem = draw(st.integers(0, 4))
        size = draw(st.sampled_from([0, 1, 4, 8, 12, 16, 24, 0xFFFFFFFF]))
        extra, off = b"", 0
        for _ in range(nmem):
            off = draw(st.sampled_from([off, off + 8, off + 32, off + 64, off + 3, 0]))
            if kind == K.UNION and draw(st.integers(0, 3)):
                off = 0
            bf = draw(st.sampled_from([0, 0, 0, 1, 5, 32, 64])) if kflag else 0
            extra += struct.pack("<III", name(), some_ref(), (bf << 24) | (off & 0xFFFFFF)
                                 if kflag else off)
        w.raw_type(name(), kind, nmem, kflag, size, extra)
    elif kind in (K.ENUM, K.ENUM64):
        nval = draw(st.integers(0, 3))
        rec = "<III" if kind == K.ENUM64 else "<II"
        vals = [draw(st.sampled_from([0, 1, 0xFFFFFFFF, 0x80000000])) for _ in range(nval)]
        extra = b"".join(struct.pack(rec, name(), v, *([v] if kind == K.ENUM64 else []))
                         for v in vals)
        w.raw_type(name(), kind, nval, kflag, draw(st.sampled_from([1, 2, 4, 8, 0, 3, 16])), extra)
    elif kind == K.FWD:
        w.raw_type(name(), kind, 0, kflag, draw(st.sampled_from([0, 0, 0, 1])))
    elif kind == K.FUNC:
        w.raw_type(name(), kind, draw(st.sampled_from([0, 1, 2])), kflag, some_ref())
    elif kind == K.FUNC_PROTO:
        nparam = draw(st.integers(0, 3))
        extra = b"".join(struct.pack("<II", name(), draw(st.one_of(ref, st.just(0))))
                         for _ in range(nparam))
        w.raw_type(draw(st.sampled_from([0, 0, 0, 1])), kind, nparam, kflag, some_ref(), extra)
    elif kind == K.VAR:
        w.raw_type(name(), kind, 0, kflag, some_ref(),
                   struct.pack("<I", draw(st.sampled_from([0, 1, 2, 3]))))
    elif kind == K.DATASEC:
        nvar = draw(st.integers(0, 3))
        size = draw(st.sampled_from([0, 4, 8, 16]))
        extra, off = b"", 0
        for _ in range(nvar):
            sz = draw(st.sampled_from([0, 4, 8]))
            off = draw(st.sampled_from([off, off + 4, 0, 100]))
            extra += struct.pack("<III", some_ref(), off, sz)
            off += sz
        w.raw_type(name(), kind, nvar, kflag, size, extra)
    elif kind == K.FLOAT:
        w.raw_type(name(), kind, 0, kflag, draw(st.sampled_from([2, 4, 8, 12, 16, 3, 0])))
    elif kind == K.DECL_TAG:
        w.raw_type(name(), kind, 0, kflag, some_ref(),
                   struct.pack("<i", draw(st.sampled_from([-1, -1, 0, 1, 2, -2]))))


@st.composite
def btf_writers(draw, max_types: int = 8) -> BtfWriter:
    n = draw(st.integers(1, max_types))
    w = BtfWriter()
    for _ in range(n):
        draw(_type(w, n))
    return w


@st.composite
def btf_blobs(draw, max_types: int = 8) -> bytes:
    return draw(btf_writers(max_types)).blob()


_INTERESTING = [0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0xFFFFF, 0x100000, 0xFFFFFF,
                0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                btf_info(K.STRUCT, 0xFFFF), btf_info(K.ENUM, 0x8000), btf_info(20), btf_info(31),
                btf_info(K.INT, 0, 1) | 0x00FF0000]


@st.composite
def _mutation(draw, blob: bytearray) -> None:
    op = draw(st.sampled_from(["flip", "word", "truncate", "append", "hdr", "hdr"]))
    if op == "flip" and blob:
        i = draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << draw(st.integers(0, 7))
    elif op == "word" and len(blob) >= HDR_LEN + 4:
        i = draw(st.integers(HDR_LEN // 4, len(blob) // 4 - 1)) * 4
        blob[i:i + 4] = struct.pack("<I", draw(st.sampled_from(_INTERESTING)))
    elif op == "truncate" and blob:
        del blob[draw(st.integers(0, len(blob) - 1)):]
    elif op == "append":
        blob += draw(st.binary(min_size=1, max_size=8))
    elif op == "hdr" and len(blob) >= HDR_LEN:
        field = draw(st.sampled_from([(0, "<H"), (2, "<B"), (3, "<B"), (4, "<I"), (8, "<I"),
                                      (12, "<I"), (16, "<I"), (20, "<I")]))
        off, fmt = field
        cur = struct.unpack_from(fmt, blob, off)[0]
        size = struct.calcsize(fmt)
        new = draw(st.sampled_from([cur + 1, cur - 1, cur + 4, cur - 4, 0, 25, 28, 32,
                                    len(blob), 0xFFFFFFFF, 0x80000000])) % (1 << (8 * size))
        blob[off:off + size] = new.to_bytes(size, "little")


@st.composite
def mutated_blobs(draw, max_types: int = 6) -> bytes:
    base = st.one_of(btf_blobs(max_types), wellformed_writers(max_types).map(lambda w: w.blob()))
    blob = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        draw(_mutation(blob))
    return bytes(blob)


@st.composite
def wellformed_writers(draw, max_types: int = 14) -> BtfWriter:
    """BTF a compiler could emit: every reference points at a type of the right kind and
    sizes and offsets add up; edge values (bitfields, flexible arrays, self-referencing
    pointers, forward references, tags) are drawn often."""
    w = BtfWriter()
    sized: dict[int, int] = {}                 # id -> size, for types a member may have
    int_id = w.int_("int", 4, encoding=1)
    sized[int_id] = 4
    sized[w.int_("char", 1, encoding=2)] = 1
    sized[w.int_("unsigned long", 8)] = 8
    if draw(st.booleans()):
        sized[w.int_("__int128", 16, encoding=1)] = 16
    if draw(st.booleans()):
        sized[w.float_("double", 8)] = 8
    structs, funcs, vars_, typedefs = [], [], [], []
    for _ in range(draw(st.integers(1, max_types))):
        what = draw(st.sampled_from(["ptr", "typedef", "mods", "array", "struct", "union", "enum",
                                     "enum64", "fwd", "func", "var", "self_ptr"]))
        some = lambda: draw(st.sampled_from(sorted(sized)))            # noqa: E731
        if what == "ptr":
            sized[w.ptr(draw(st.sampled_from([0] + sorted(sized))))] = 8
        elif what == "self_ptr":                                       # struct s { struct s *next; }
            sid = w.nr + 2
            p = w.ptr(sid)
            structs.append(w.struct(f"node{sid}", 16, [("next", p, 0), ("v", int_id, 64)]))
            sized[p], sized[sid] = 8, 16
        elif what == "typedef":
            t = some()
            typedefs.append(w.typedef(f"t{w.nr + 1}", t))
            sized[typedefs[-1]] = sized[t]
        elif what == "mods":
            base = some()
            chain = draw(st.lists(st.sampled_from([K.CONST, K.VOLATILE, K.RESTRICT]), max_size=2))
            cur = base
            for k in chain:
                cur = w.modifier(k, cur)
            if draw(st.booleans()):
                cur = w.type_tag("user", cur, kflag=draw(st.sampled_from([0, 1])))
            sized[w.ptr(cur)] = 8
        elif what == "array":
            elem = some()
            n = draw(st.sampled_from([0, 1, 3, 16]))
            sized[w.array(elem, int_id, n)] = sized[elem] * n
        elif what in ("struct", "union"):
            members, off, size = [], 0, 0
            kflag = draw(st.sampled_from([0, 1]))
            for i in range(draw(st.integers(0, 4))):
                t = some()
                bits = 0
                if kflag and sized[t] in (1, 4, 8) and draw(st.booleans()):
                    bits = draw(st.integers(1, sized[t] * 8))
                if what == "union":
                    members.append((f"m{i}", t, 0, bits) if kflag else (f"m{i}", t, 0))
                    size = max(size, sized[t])
                    continue
                align = 1 if bits else min(sized[t], 8) or 1
                off = -(-off // (align * 8)) * align * 8
                members.append((f"m{i}", t, off, bits) if kflag else (f"m{i}", t, off))
                off += bits or sized[t] * 8
                size = -(-off // 8)
            size += draw(st.sampled_from([0, 0, 4]))
            sid = w.struct(draw(st.sampled_from(["", f"s{w.nr + 1}"])), size, members,
                           union=what == "union", kflag=kflag)
            sized[sid] = size
            structs.append(sid)
        elif what in ("enum", "enum64"):
            vals = [(f"E{w.nr}_{i}", draw(st.sampled_from([0, 1, -1, 1 << 31])))
                    for i in range(draw(st.integers(0, 3)))]
            signed = draw(st.sampled_from([0, 1]))
            add = w.enum if what == "enum" else w.enum64
            sized[add(draw(st.sampled_from(["", f"e{w.nr + 1}"])),
                      draw(st.sampled_from([4, 8] if what == "enum64" else [1, 2, 4, 8])),
                      vals, signed)] = 4 if what == "enum" else 8
        elif what == "fwd":
            w.fwd(f"f{w.nr + 1}", draw(st.sampled_from([0, 1])))
        elif what == "func":
            params = [(f"a{i}", some()) for i in range(draw(st.integers(0, 3)))]
            if draw(st.integers(0, 4)) == 0:
                params.append(("", 0))                                  # vararg
            proto = w.func_proto(draw(st.sampled_from([0] + sorted(sized))), params)
            funcs.append(w.func(f"fn{w.nr + 1}", proto, draw(st.sampled_from([0, 1]))))
        elif what == "var":
            t = some()
            vars_.append((w.var(f"v{w.nr + 1}", t, draw(st.sampled_from([0, 1]))), sized[t]))
    if vars_ and draw(st.booleans()):
        secinfo, off = [], 0
        for vid, size in vars_:
            secinfo.append((vid, off, size))
            off += size
        if off:
            w.datasec(draw(st.sampled_from([".data", ".bss", ".rodata.str1.1", "license"])), off,
                      [s for s in secinfo if s[2]])
    for target in draw(st.lists(st.sampled_from(structs + funcs + [v for v, _ in vars_]
                                                + typedefs or [int_id]), max_size=2)):
        w.decl_tag("tag", target, draw(st.sampled_from([-1, -1, 0])))
    return w
