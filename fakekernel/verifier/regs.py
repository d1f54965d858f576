"""Register state — struct bpf_reg_state, enum bpf_reg_type, tnum.c and the bounds logic of verifier.c.

A scalar carries the kernel's representation (tnum ``var_off`` plus 64- and 32-bit signed and
unsigned bounds) so that branch decisions and log lines come out as Linux's.  Operations this
first pass does not model exactly produce a scalar with ``exact=False``: the kernel may know more
about it, so no rejection may ever be based on it (see `env.GiveUp`).
"""
from __future__ import annotations

import enum

from fakekernel.helpers.proto import TypeFlag, base_type
from fakekernel.verifier.tnum import TNUM_UNKNOWN, Tnum
from uapi.insn import s32, s64, u32, u64

__all__ = ["RegType", "Reg", "Tnum", "reg_type_str", "U64_MAX", "S64_MIN", "S64_MAX"]

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
S64_MAX = (1 << 63) - 1
S64_MIN = -(1 << 63)
S32_MAX = (1 << 31) - 1
S32_MIN = -(1 << 31)
_UNUM_MAX_DECIMAL = (1 << 16) - 1
_SNUM_MAX_DECIMAL = (1 << 15) - 1
_SNUM_MIN_DECIMAL = -(1 << 15)


class RegType(enum.IntEnum):
    """enum bpf_reg_type (base types; PTR_MAYBE_NULL etc. are `TypeFlag` bits on top)."""

    NOT_INIT = 0
    SCALAR_VALUE = 1
    PTR_TO_CTX = 2
    CONST_PTR_TO_MAP = 3
    PTR_TO_MAP_VALUE = 4
    PTR_TO_MAP_KEY = 5
    PTR_TO_STACK = 6
    PTR_TO_PACKET_META = 7
    PTR_TO_PACKET = 8
    PTR_TO_PACKET_END = 9
    PTR_TO_FLOW_KEYS = 10
    PTR_TO_SOCKET = 11
    PTR_TO_SOCK_COMMON = 12
    PTR_TO_TCP_SOCK = 13
    PTR_TO_TP_BUFFER = 14
    PTR_TO_XDP_SOCK = 15
    PTR_TO_BTF_ID = 16
    PTR_TO_MEM = 17
    PTR_TO_ARENA = 18
    PTR_TO_BUF = 19
    PTR_TO_FUNC = 20
    CONST_PTR_TO_DYNPTR = 21
    #: fakekernel only: a value this first pass does not track (never the cause of a rejection)
    UNTRACKED = 0x7F


_TYPE_STR = {
    RegType.NOT_INIT: "?", RegType.SCALAR_VALUE: "scalar", RegType.PTR_TO_CTX: "ctx",
    RegType.CONST_PTR_TO_MAP: "map_ptr", RegType.PTR_TO_MAP_VALUE: "map_value",
    RegType.PTR_TO_STACK: "fp", RegType.PTR_TO_PACKET: "pkt", RegType.PTR_TO_PACKET_META: "pkt_meta",
    RegType.PTR_TO_PACKET_END: "pkt_end", RegType.PTR_TO_FLOW_KEYS: "flow_keys",
    RegType.PTR_TO_SOCKET: "sock", RegType.PTR_TO_SOCK_COMMON: "sock_common",
    RegType.PTR_TO_TCP_SOCK: "tcp_sock", RegType.PTR_TO_TP_BUFFER: "tp_buffer",
    RegType.PTR_TO_XDP_SOCK: "xdp_sock", RegType.PTR_TO_BTF_ID: "ptr_", RegType.PTR_TO_MEM: "mem",
    RegType.PTR_TO_ARENA: "arena", RegType.PTR_TO_BUF: "buf", RegType.PTR_TO_FUNC: "func",
    RegType.PTR_TO_MAP_KEY: "map_key", RegType.CONST_PTR_TO_DYNPTR: "dynptr_ptr",
    RegType.UNTRACKED: "?",
}
_PREFIXES = ((TypeFlag.MEM_RDONLY, "rdonly_"), (TypeFlag.MEM_RINGBUF, "ringbuf_"), (TypeFlag.MEM_USER, "user_"),
             (TypeFlag.MEM_PERCPU, "percpu_"), (TypeFlag.MEM_RCU, "rcu_"),
             (TypeFlag.PTR_UNTRUSTED, "untrusted_"), (TypeFlag.PTR_TRUSTED, "trusted_"))


def reg_type_str(t: int) -> str:
    """reg_type_str()."""
    prefix = "".join(s for f, s in _PREFIXES if t & f)
    post = ""
    if t & TypeFlag.PTR_MAYBE_NULL:
        post = "or_null_" if base_type(t) == RegType.PTR_TO_BTF_ID else "_or_null"
    return prefix + _TYPE_STR[RegType(base_type(t))] + post


def _unum(v: int) -> str:
    return str(v) if v <= _UNUM_MAX_DECIMAL else f"{v:#x}"


def _snum(v: int) -> str:
    return str(v) if _SNUM_MIN_DECIMAL <= v <= _SNUM_MAX_DECIMAL else f"{u64(v):#x}"


# ---------------------------------------------------------------- bpf_reg_state

class Reg:
    """struct bpf_reg_state (the fields this pass uses).

    ``exact`` is False when this pass's knowledge of a scalar may be coarser than the kernel's.
    """

    __slots__ = ("type", "off", "var_off", "smin", "smax", "umin", "umax", "s32_min", "s32_max",
                 "u32_min", "u32_max", "id", "map", "range", "exact", "weak_null", "frameno", "btf",
                 "ref_obj_id", "mem_size", "subprogno")

    def __init__(self, type_: int = RegType.NOT_INIT):
        self.type = type_
        self.off = 0
        self.id = 0
        self.map = None
        self.range = 0
        self.exact = True
        self.weak_null = False
        self.frameno = 0
        self.btf = None               # PTR_TO_BTF_ID: the pointed-to type (verifier.btf_access.BtfRef)
        self.ref_obj_id = 0           # the acquired reference this pointer carries
        self.mem_size = 0             # PTR_TO_MEM: the accessible size
        self.subprogno = 0            # PTR_TO_FUNC: the callback's subprog
        self.set_unknown_bounds()

    # -- constructors
    @classmethod
    def const(cls, v: int) -> "Reg":
        r = cls(RegType.SCALAR_VALUE)
        r.set_const(v)
        return r

    @classmethod
    def unknown(cls, exact: bool = True) -> "Reg":
        r = cls(RegType.SCALAR_VALUE)
        r.exact = exact
        return r

    @classmethod
    def ptr(cls, type_: int, off: int = 0, bpf_map=None, id_: int = 0) -> "Reg":
        r = cls(type_)
        r.set_const_bounds(0)
        r.off = off
        r.map = bpf_map
        r.id = id_
        return r

    def copy(self) -> "Reg":
        r = Reg.__new__(Reg)
        for k in Reg.__slots__:
            setattr(r, k, getattr(self, k))
        return r

    def key(self) -> tuple:
        return tuple(getattr(self, k) if k != "map" else id(self.map) for k in Reg.__slots__)

    # -- bounds
    def set_unknown_bounds(self) -> None:
        self.var_off = TNUM_UNKNOWN
        self.smin, self.smax, self.umin, self.umax = S64_MIN, S64_MAX, 0, U64_MAX
        self.s32_min, self.s32_max, self.u32_min, self.u32_max = S32_MIN, S32_MAX, 0, U32_MAX

    def set_const_bounds(self, v: int) -> None:
        v = u64(v)
        self.var_off = Tnum(v, 0)
        self.smin = self.smax = s64(v)
        self.umin = self.umax = v
        self.s32_min = self.s32_max = s32(v)
        self.u32_min = self.u32_max = u32(v)

    def set_const(self, v: int) -> None:
        self.type = RegType.SCALAR_VALUE
        self.off = 0
        self.id = 0
        self.map = None
        self.exact = True
        self.set_const_bounds(v)

    def is_const(self) -> bool:
        return self.type == RegType.SCALAR_VALUE and self.var_off.is_const()

    @property
    def const_value(self) -> int:
        return self.var_off.value

    def set_from_tnum(self, t: Tnum) -> None:
        self.var_off = t
        self.set_unknown_bounds_keep_tnum()
        self.sync()

    def set_unknown_bounds_keep_tnum(self) -> None:
        self.smin, self.smax, self.umin, self.umax = S64_MIN, S64_MAX, 0, U64_MAX
        self.s32_min, self.s32_max, self.u32_min, self.u32_max = S32_MIN, S32_MAX, 0, U32_MAX

    def sync(self) -> None:
        """reg_bounds_sync(): tnum <-> bounds <-> 32/64-bit."""
        # __update_reg_bounds
        t = self.var_off
        sub = t.subreg()
        self.s32_min = max(self.s32_min, s32(sub.value | (sub.mask & (1 << 31))))
        self.s32_max = min(self.s32_max, s32(sub.value | (sub.mask & ~(1 << 31) & U32_MAX)))
        self.u32_min = max(self.u32_min, sub.value)
        self.u32_max = min(self.u32_max, sub.value | sub.mask)
        self.smin = max(self.smin, t.smin())
        self.smax = min(self.smax, t.smax())
        self.umin = max(self.umin, t.umin())
        self.umax = min(self.umax, t.umax())
        self._deduce()
        self._deduce()
        # __reg_bound_offset
        t64 = t.intersect(Tnum.range(self.umin, self.umax))
        t32 = t64.subreg().intersect(Tnum.range(self.u32_min, self.u32_max))
        self.var_off = t64.with_subreg(t32)
        # __update_reg_bounds again
        t = self.var_off
        sub = t.subreg()
        self.s32_min = max(self.s32_min, s32(sub.value | (sub.mask & (1 << 31))))
        self.s32_max = min(self.s32_max, s32(sub.value | (sub.mask & ~(1 << 31) & U32_MAX)))
        self.u32_min = max(self.u32_min, sub.value)
        self.u32_max = min(self.u32_max, sub.value | sub.mask)
        self.smin = max(self.smin, t.smin())
        self.smax = min(self.smax, t.smax())
        self.umin = max(self.umin, t.umin())
        self.umax = min(self.umax, t.umax())

    def _deduce(self) -> None:
        # 32-bit from 64-bit when the upper halves agree
        if (self.umin >> 32) == (self.umax >> 32):
            self.u32_min = max(self.u32_min, u32(self.umin))
            self.u32_max = min(self.u32_max, u32(self.umax))
            if s32(self.umin) <= s32(self.umax):
                self.s32_min = max(self.s32_min, s32(self.umin))
                self.s32_max = min(self.s32_max, s32(self.umax))
        if (u64(self.smin) >> 32) == (u64(self.smax) >> 32):
            if u32(self.smin) <= u32(self.smax):
                self.u32_min = max(self.u32_min, u32(self.smin))
                self.u32_max = min(self.u32_max, u32(self.smax))
            if s32(self.smin) <= s32(self.smax):
                self.s32_min = max(self.s32_min, s32(self.smin))
                self.s32_max = min(self.s32_max, s32(self.smax))
        if s32(self.u32_min) <= s32(self.u32_max):
            self.s32_min = max(self.s32_min, s32(self.u32_min))
            self.s32_max = min(self.s32_max, s32(self.u32_max))
        if u32(self.s32_min) <= u32(self.s32_max):
            self.u32_min = max(self.u32_min, u32(self.s32_min))
            self.u32_max = min(self.u32_max, u32(self.s32_max))
        # 64-bit from 32-bit
        new_umin = (self.umin & ~U32_MAX) | self.u32_min
        new_umax = (self.umax & ~U32_MAX) | self.u32_max
        self.umin = max(self.umin, new_umin)
        self.umax = min(self.umax, new_umax)
        new_smin = s64((u64(self.smin) & ~U32_MAX) | self.u32_min)
        new_smax = s64((u64(self.smax) & ~U32_MAX) | self.u32_max)
        self.smin = max(self.smin, new_smin)
        self.smax = min(self.smax, new_smax)
        if self.s32_min >= 0 and self.smin >= 0 and False:
            pass
        # signed <-> unsigned 64
        if u64(self.smin) <= u64(self.smax):
            self.umin = max(self.umin, u64(self.smin))
            self.umax = min(self.umax, u64(self.smax))
        if s64(self.umin) <= s64(self.umax):
            self.smin = max(self.smin, s64(self.umin))
            self.smax = min(self.smax, s64(self.umax))

    # -- log text
    def state_str(self, state_frameno: int = 0) -> str:
        """print_reg_state()."""
        t = self.type
        if t == RegType.SCALAR_VALUE and self.var_off.is_const():
            return _snum(s64(self.var_off.value))
        out = reg_type_str(t)
        if base_type(t) == RegType.PTR_TO_BTF_ID and self.btf is not None:
            out += self.btf.name
        if t == RegType.PTR_TO_STACK:
            if state_frameno != self.frameno:
                out += f"[{self.frameno}]"
            if self.var_off.is_const():
                return out + _snum(s64(self.var_off.value) + self.off)
        attrs_ = []
        if self.id:
            attrs_.append(f"id={self.id}")
        if self.ref_obj_id:
            attrs_.append(f"ref_obj_id={self.ref_obj_id}")
        bt = base_type(t)
        if bt in (RegType.CONST_PTR_TO_MAP, RegType.PTR_TO_MAP_KEY, RegType.PTR_TO_MAP_VALUE) and self.map is not None:
            name = self.map.name.split(b"\0", 1)[0]
            if name:
                attrs_.append(f"map={name.decode(errors='replace')}")
            attrs_.append(f"ks={self.map.key_size},vs={self.map.value_size}")
        if t != RegType.SCALAR_VALUE and self.off:
            attrs_.append("off=" + _snum(self.off))
        if bt in (RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META):
            attrs_.append("r=" + _unum(u64(self.range)))
        if bt == RegType.PTR_TO_MEM:
            attrs_.append("sz=" + _unum(self.mem_size))
        if self.var_off.is_const():
            if self.var_off.value:
                attrs_.append("imm=" + _snum(s64(self.var_off.value)))
        else:
            attrs_.extend(self._ranges())
            if not self.var_off.is_unknown():
                attrs_.append("var_off=" + self.var_off.strn())
        return out + "(" + ",".join(attrs_) + ")"

    def _ranges(self) -> list[str]:
        """print_scalar_ranges(): equal neighbours share one value (smin=umin=...)."""
        def s32v(v):
            return v if _SNUM_MIN_DECIMAL <= v <= _SNUM_MAX_DECIMAL else u32(v)
        m = [["smin", self.smin, self.smin == S64_MIN], ["smax", self.smax, self.smax == S64_MAX],
             ["umin", self.umin, self.umin == 0], ["umax", self.umax, self.umax == U64_MAX],
             ["smin32", s32v(self.s32_min), self.s32_min == S32_MIN],
             ["smax32", s32v(self.s32_max), self.s32_max == S32_MAX],
             ["umin32", self.u32_min, self.u32_min == 0], ["umax32", self.u32_max, self.u32_max == U32_MAX]]
        out = []
        for i, (name, val, omit) in enumerate(m):
            if omit:
                continue
            neg1 = name[0] == "s" and s64(val) < 0
            names = [name]
            for j in range(i + 2, len(m), 2):
                n2, v2, o2 = m[j]
                if o2 or u64(v2) != u64(val):
                    continue
                if (n2[0] == "s" and s64(v2) < 0) != neg1:
                    continue
                m[j][2] = True
                names.append(n2)
            out.append("=".join(names) + "=" + (_snum(s64(val)) if name[0] == "s" else _unum(val)))
        return out
