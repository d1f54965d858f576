"""The BTF verifier's environment — kernel/bpf/btf.c: struct btf_verifier_env, the type
accessors (btf_type_by_id, btf_type_id_size, the btf_type_is_* predicates), name rules
(btf_name_offset_valid, btf_name_valid_identifier, btf_name_valid_section) and the log
helpers (btf_verifier_log, btf_verifier_log_type/_member/_vsi).

Types are read straight from the user's blob: a `BtfT` is the fixed `struct btf_type`
header at a byte offset, with accessors for the kind-specific records after it.  The log
is the verifier log of kernel/bpf/log.c (`VerifierLog`), written in bytes because BTF
names are arbitrary bytes and the kernel prints them raw.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.verifier.log import BPF_LOG_FIXED, UINT_MAX, VerifierLog
from uapi.btf import BtfKind
from uapi.ffi import ffi

__all__ = ["BtfT", "VOID", "BtfLog", "BtfEnv", "Member", "BTF_MAX_TYPE", "BTF_MAX_NAME_OFFSET",
           "BTF_MAX_SIZE", "KSYM_NAME_LEN", "MAX_RESOLVE_DEPTH", "U32_MAX", "BITS_PER_BYTE",
           "BITS_PER_U128", "PTR_SIZE", "u32_at", "CHECK_META", "CHECK_TYPE", "RESOLVE_TBD",
           "RESOLVE_PTR", "RESOLVE_STRUCT_OR_ARRAY", "NOT_VISITED", "VISITED", "RESOLVED",
           "is_modifier", "is_struct", "is_resolve_source_only", "needs_resolve", "has_size",
           "nosize_or_null", "is_decl_tag_target", "int_data", "int_is_regular", "BTF_KIND_STR",
           "fail"]

# include/uapi/linux/btf.h and kernel/bpf/btf.c limits
BTF_MAX_TYPE = 0x000FFFFF
BTF_MAX_NAME_OFFSET = 0x00FFFFFF
BTF_MAX_SIZE = 16 * 1024 * 1024
KSYM_NAME_LEN = 512
MAX_RESOLVE_DEPTH = 32
U32_MAX = (1 << 32) - 1
BITS_PER_BYTE = 8
BITS_PER_U128 = 2 * 8 * BITS_PER_BYTE
PTR_SIZE = ffi.sizeof("void *")
BPF_VERIFIER_TMP_LOG_SIZE = 1024          # include/linux/bpf_verifier.h: one vscnprintf()

_TYPE_SIZE = ffi.sizeof("struct btf_type")
_U32 = ffi.sizeof("__u32")

CHECK_META, CHECK_TYPE = 0, 1                                     # enum verifier_phase
RESOLVE_TBD, RESOLVE_PTR, RESOLVE_STRUCT_OR_ARRAY = 0, 1, 2       # enum resolve_mode
NOT_VISITED, VISITED, RESOLVED = 0, 1, 2                          # enum visit_state

BTF_KIND_STR = {k: ("UNKNOWN" if k == BtfKind.UNKN else k.name).encode() for k in BtfKind}


def u32_at(data: bytes, off: int) -> int:
    return int.from_bytes(data[off:off + _U32], "little")


def s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def fail(errno: int, why: str):
    """A check failed (its log line is already written): the kernel's -errno."""
    raise KernelError(errno, why)


@attrs.define(eq=False, slots=True)
class BtfT:
    """One struct btf_type at `off` in `data` (the blob); `VOID` is the kernel's btf_void."""

    data: bytes
    off: int
    name_off: int
    info: int
    size: int                # the size/type union

    @classmethod
    def at(cls, data: bytes, off: int) -> "BtfT":
        return cls(data, off, u32_at(data, off), u32_at(data, off + 4), u32_at(data, off + 8))

    @property
    def type(self) -> int:
        return self.size

    @property
    def kind(self) -> int:
        return (self.info >> 24) & 0x1F

    @property
    def vlen(self) -> int:
        return self.info & 0xFFFF

    @property
    def kflag(self) -> bool:
        return bool(self.info >> 31)

    def word(self, i: int) -> int:
        """The i-th u32 after the btf_type header (the kind's trailing records)."""
        return u32_at(self.data, self.off + _TYPE_SIZE + i * _U32)

    def records(self, nwords: int) -> list[tuple]:
        """vlen records of `nwords` u32 each (members, enums, params, secinfos)."""
        return [tuple(self.word(i * nwords + j) for j in range(nwords)) for i in range(self.vlen)]


VOID = BtfT(b"", 0, 0, 0, 0)


@attrs.frozen
class Member:
    """struct btf_member; ``offset`` is the raw word (bitfield size in the top byte with kflag)."""

    name_off: int
    type: int
    offset: int


def is_modifier(t: BtfT) -> bool:
    return t is not VOID and t.kind in (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST,
                                        BtfKind.RESTRICT, BtfKind.TYPE_TAG)


def _is(t: BtfT | None, *kinds) -> bool:
    return t is not None and t is not VOID and t.kind in kinds


def is_struct(t) -> bool:
    return _is(t, BtfKind.STRUCT, BtfKind.UNION)


def is_resolve_source_only(t) -> bool:
    return _is(t, BtfKind.VAR, BtfKind.DECL_TAG, BtfKind.DATASEC)


def needs_resolve(t) -> bool:
    return is_modifier(t) or _is(t, BtfKind.PTR, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ARRAY,
                                 BtfKind.VAR, BtfKind.FUNC, BtfKind.DECL_TAG, BtfKind.DATASEC)


def has_size(t) -> bool:
    return _is(t, BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.DATASEC,
               BtfKind.FLOAT, BtfKind.ENUM64)


def nosize_or_null(t) -> bool:
    return t is None or t is VOID or _is(t, BtfKind.FWD, BtfKind.FUNC, BtfKind.FUNC_PROTO,
                                         BtfKind.DECL_TAG)


def is_decl_tag_target(t) -> bool:
    return _is(t, BtfKind.FUNC, BtfKind.STRUCT, BtfKind.UNION, BtfKind.VAR, BtfKind.TYPEDEF)


def int_data(t: BtfT) -> tuple[int, int, int]:
    """(encoding, offset, bits) of an INT's trailing word."""
    w = t.word(0)
    return (w >> 24) & 0x0F, (w >> 16) & 0xFF, w & 0xFF


def int_is_regular(t: BtfT) -> bool:
    """btf_type_int_is_regular(): a byte-aligned u8/u16/u32/u64/u128 with no bit offset."""
    _, offset, bits = int_data(t)
    nr_bytes = -(-bits // BITS_PER_BYTE)
    return not (bits % BITS_PER_BYTE or offset or nr_bytes not in (1, 2, 4, 8, 16))


# lib/ctype.c, Latin-1: the classes btf_name_valid_* look at
def _isalpha(c: int) -> bool:
    return (0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or 0xC0 <= c <= 0xFF) and c not in (0xD7, 0xF7)


def _isalnum(c: int) -> bool:
    return _isalpha(c) or 0x30 <= c <= 0x39


def _isprint(c: int) -> bool:
    return 0x20 <= c <= 0x7E or c >= 0xA0


class BtfLog(VerifierLog):
    """The verifier log with the kernel's per-call formatting limit, writing raw bytes.

    bpf_verifier_vlog() formats each call into a 1024-byte buffer (so one call adds at most
    1023 bytes) and BTF prints names byte for byte.
    """

    def write(self, text) -> None:
        data = text.encode() if isinstance(text, str) else bytes(text)
        data = data[:BPF_VERIFIER_TMP_LOG_SIZE - 1]
        if not self.level:
            return
        self.len_max = min(UINT_MAX, max(self.len_max, self.end_pos + len(data) + 1))
        self.buf += data
        if not self.level & BPF_LOG_FIXED:
            new_end = self.end_pos + 1
            if self.len_total and new_end - self.start_pos >= self.len_total:
                self.start_pos = new_end - self.len_total


@attrs.define(eq=False)
class BtfEnv:
    """struct btf_verifier_env + the struct btf being built."""

    data: bytes
    log: BtfLog
    hdr: dict = attrs.field(factory=dict)
    strings: bytes = b""
    types: list = attrs.field(factory=lambda: [VOID])
    resolved_ids: list = attrs.field(factory=list)
    resolved_sizes: list = attrs.field(factory=list)
    visit_states: list = attrs.field(factory=list)
    stack: list = attrs.field(factory=list)
    resolve_mode: int = RESOLVE_TBD
    phase: int = CHECK_META
    log_type_id: int = 0

    # ---- strings ----
    def name_offset_valid(self, off: int) -> bool:
        return off <= BTF_MAX_NAME_OFFSET and off < len(self.strings)

    def str_by_offset(self, off: int) -> bytes | None:
        if off < len(self.strings):
            return self.strings[off:self.strings.index(b"\0", off)]
        return None

    def name_by_offset(self, off: int) -> bytes:
        """__btf_name_by_offset(): what the log prints for a name."""
        if not off:
            return b"(anon)"
        s = self.str_by_offset(off)
        return b"(invalid-name-offset)" if s is None else s

    def name_valid_identifier(self, off: int) -> bool:
        s = self.strings[off:]
        if not s or not (_isalpha(s[0]) or s[0] in b"_."):
            return False
        i = 1
        while i < len(s) and s[i] and i < KSYM_NAME_LEN:
            if not (_isalnum(s[i]) or s[i] in b"_."):
                return False
            i += 1
        return i >= len(s) or s[i] == 0

    def name_valid_section(self, off: int) -> bool:
        s = self.strings[off:]
        if not s or not s[0]:
            return False
        i = 0
        while i < len(s) and s[i] and i < KSYM_NAME_LEN:
            if not _isprint(s[i]):
                return False
            i += 1
        return i >= len(s) or s[i] == 0

    # ---- types ----
    @property
    def nr_types(self) -> int:
        return len(self.types)

    def type_by_id(self, type_id: int) -> BtfT | None:
        return self.types[type_id] if type_id < len(self.types) else None

    def type_id_size(self, type_id: int) -> tuple[BtfT, int, int] | None:
        """btf_type_id_size(): (type with a size, its id, size) following modifiers/vars."""
        t = self.type_by_id(type_id)
        if nosize_or_null(t):
            return None
        if has_size(t):
            return t, type_id, t.size
        if t.kind == BtfKind.ARRAY:
            return t, type_id, self.resolved_sizes[type_id]
        if t.kind == BtfKind.PTR:
            return t, type_id, PTR_SIZE
        if not (is_modifier(t) or t.kind == BtfKind.VAR):
            return None
        type_id = self.resolved_ids[type_id]
        t = self.type_by_id(type_id)
        if nosize_or_null(t):
            return None
        if has_size(t):
            return t, type_id, t.size
        if t.kind == BtfKind.ARRAY:
            return t, type_id, self.resolved_sizes[type_id]
        if t.kind == BtfKind.PTR:
            return t, type_id, PTR_SIZE
        return None

    def type_id_resolve(self, type_id: int) -> tuple[BtfT | None, int]:
        type_id = self.resolved_ids[type_id]
        return self.type_by_id(type_id), type_id

    # ---- resolve stack ----
    def is_resolve_sink(self, t: BtfT) -> bool:
        if self.resolve_mode == RESOLVE_TBD:
            return not needs_resolve(t)
        if self.resolve_mode == RESOLVE_PTR:
            return not is_modifier(t) and not _is(t, BtfKind.PTR)
        return not is_modifier(t) and not _is(t, BtfKind.ARRAY) and not is_struct(t)

    def is_resolved(self, type_id: int) -> bool:
        return self.visit_states[type_id] == RESOLVED

    def push(self, t: BtfT, type_id: int) -> None:
        """env_stack_push(): E2BIG past MAX_RESOLVE_DEPTH, EEXIST on a type being visited."""
        if len(self.stack) == MAX_RESOLVE_DEPTH:
            raise KernelError(Errno.E2BIG, "resolve depth")
        if self.visit_states[type_id] != NOT_VISITED:
            raise KernelError(Errno.EEXIST, "resolve loop")
        self.visit_states[type_id] = VISITED
        self.stack.append(_Vertex(t, type_id))
        if self.resolve_mode == RESOLVE_TBD:
            if t.kind == BtfKind.PTR:
                self.resolve_mode = RESOLVE_PTR
            elif is_struct(t) or t.kind == BtfKind.ARRAY:
                self.resolve_mode = RESOLVE_STRUCT_OR_ARRAY

    def pop_resolved(self, resolved_type_id: int, resolved_size: int) -> None:
        v = self.stack.pop()
        self.resolved_sizes[v.type_id] = resolved_size & U32_MAX
        self.resolved_ids[v.type_id] = resolved_type_id
        self.visit_states[v.type_id] = RESOLVED

    # ---- log (btf_verifier_log*) ----
    def vlog(self, text: bytes) -> None:
        if self.log.level:
            self.log.write(text)

    def log_type(self, t: BtfT, msg: bytes | None = None, details: bool = True) -> None:
        """btf_verifier_log_type() (details=True) / btf_verifier_log_basic() (False)."""
        if not self.log.level:
            return
        from fakekernel.btf_check import KIND_OPS
        self.vlog(b"[%u] %s %s%s" % (self.log_type_id, BTF_KIND_STR[BtfKind(t.kind)],
                                     self.name_by_offset(t.name_off), b" " if details else b""))
        if details:
            KIND_OPS[t.kind].log_details(self, t)
        if msg:
            self.vlog(b" ")
            self.vlog(msg)
        self.vlog(b"\n")

    def log_member(self, struct_type: BtfT, m: Member, msg: bytes | None = None) -> None:
        if not self.log.level:
            return
        if self.phase != CHECK_META:
            self.log_type(struct_type)
        name = self.name_by_offset(m.name_off)
        if struct_type.kflag:
            self.vlog(b"\t%s type_id=%u bitfield_size=%u bits_offset=%u"
                      % (name, m.type, m.offset >> 24, m.offset & 0xFFFFFF))
        else:
            self.vlog(b"\t%s type_id=%u bits_offset=%u" % (name, m.type, m.offset))
        if msg:
            self.vlog(b" ")
            self.vlog(msg)
        self.vlog(b"\n")

    def log_vsi(self, datasec: BtfT, vsi: tuple, msg: bytes | None = None) -> None:
        if not self.log.level:
            return
        if self.phase != CHECK_META:
            self.log_type(datasec)
        self.vlog(b"\t type_id=%u offset=%u size=%u" % vsi)
        if msg:
            self.vlog(b" ")
            self.vlog(msg)
        self.vlog(b"\n")


@attrs.define(eq=False, slots=True)
class _Vertex:
    """struct resolve_vertex."""

    t: BtfT
    type_id: int
    next_member: int = 0
