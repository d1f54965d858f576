"""Simulated kernel address space — what ___bpf_prog_run (kernel/bpf/core.c) dereferences.

A BPF program only ever sees addresses. Here every address belongs to a :class:`Region` (a stack
frame, the ctx, packet data, a map value, ...) backed by a bytearray or memoryview, or to an opaque
object handle (a ``struct bpf_map *`` produced by LD_IMM64 with BPF_PSEUDO_MAP_FD). Every access is
bounds-checked against exactly one region, so a verifier hole shows up as :class:`InterpreterFault`
instead of touching host memory. Addresses are handed out from kernel-looking arenas with an
unmapped guard gap between regions, and are never reused, so off-by-one and use-after-unmap
accesses fault.
"""
from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence

import attrs

from uapi.ffi import ffi

__all__ = [
    "AddressSpace",
    "InterpreterFault",
    "Region",
    "DIRECT_MAP_BASE",
    "VMALLOC_BASE",
    "PAGE_SIZE",
]

#: x86_64 direct-map base (page_offset_base without KASLR): kmalloc'ed ctx, map values, objects
DIRECT_MAP_BASE = 0xFFFF888000000000
#: x86_64 vmalloc area (VMALLOC_START without KASLR): program stacks live here, as vmapped stacks do
VMALLOC_BASE = 0xFFFFC90000000000
PAGE_SIZE = 4096

_REGS_PER_LINE = 4
_U64_SIZE = ffi.sizeof("__u64")
_MASKS = {n: (1 << (8 * n)) - 1 for n in (ffi.sizeof("__u8"), ffi.sizeof("__u16"), ffi.sizeof("__u32"), _U64_SIZE)}
_ARENAS = {"stack": VMALLOC_BASE}


class InterpreterFault(Exception):
    """An access or instruction the verifier should have rejected: an emulator bug, never an errno.

    ``insn_idx`` and ``registers`` are filled in by the interpreter when the fault crosses the
    instruction boundary (memory accessors raise it with ``None``).
    """

    def __init__(self, insn_idx: int | None, message: str, registers: Sequence[int] | None = None):
        super().__init__(message)
        self.insn_idx = insn_idx
        self.message = message
        self.registers = list(registers) if registers is not None else None

    def __str__(self) -> str:
        where = f"insn {self.insn_idx}: " if self.insn_idx is not None else ""
        text = f"{where}{self.message}"
        if self.registers is not None:
            cells = [f"r{i}=0x{v:x}" for i, v in enumerate(self.registers)]
            lines = [" ".join(cells[i : i + _REGS_PER_LINE]) for i in range(0, len(cells), _REGS_PER_LINE)]
            text += "\n  " + "\n  ".join(lines)
        return text


@attrs.define(eq=False, repr=False)
class Region:
    """One mapped range ``[base, end)`` of the simulated address space."""

    name: str
    base: int
    buf: memoryview
    writable: bool
    kind: str
    size: int
    end: int

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Region {self.kind}:{self.name} 0x{self.base:x}-0x{self.end:x} {mode}>"

    def __contains__(self, addr: int) -> bool:
        return self.base <= addr < self.end


class AddressSpace:
    """The regions one program run can reach (stack frames, ctx, packet, map values, ...)."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._regions: dict[int, Region] = {}
        self._last: Region | None = None
        self._next = dict(_ARENAS)
        self._next_default = DIRECT_MAP_BASE
        self._handles: dict[int, object] = {}
        self._handle_of: dict[int, int] = {}

    # --- mapping ----------------------------------------------------------------------------------

    def _alloc(self, kind: str, size: int) -> int:
        """Page-aligned range preceded and followed by at least one unmapped guard page."""
        if kind in self._next:
            start = self._next[kind] + PAGE_SIZE
            self._next[kind] = start + _page_align(size)
        else:
            start = self._next_default + PAGE_SIZE
            self._next_default = start + _page_align(size)
        return start

    def map_region(self, buf, kind: str, name: str, writable: bool = True) -> Region:
        """Map ``buf`` (anything exporting a contiguous buffer) and return its region.

        Writes by the program land in ``buf`` itself: map values stay pointers into map storage.
        """
        view = memoryview(buf)
        if not view.c_contiguous:
            raise ValueError("region backing must be C-contiguous")
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if writable and view.readonly:
            raise ValueError(f"cannot map read-only buffer {name!r} writable")
        size = view.nbytes
        base = self._alloc(kind, size)
        region = Region(name=name, base=base, buf=view, writable=writable, kind=kind, size=size, end=base + size)
        insort(self._bases, base)
        self._regions[base] = region
        return region

    def unmap(self, region: Region) -> None:
        if self._regions.get(region.base) is not region:
            raise ValueError(f"{region!r} is not mapped")
        del self._regions[region.base]
        self._bases.remove(region.base)
        if self._last is region:
            self._last = None

    def map_object(self, obj: object) -> int:
        """An opaque kernel pointer for ``obj`` (same object, same address); never dereferenceable."""
        key = id(obj)
        addr = self._handle_of.get(key)
        if addr is None:
            place = getattr(obj, "kernel_object_address", None)      # an object with a chosen address
            addr = place(self) if place is not None else None
            if addr is None:
                addr = self._alloc("object", _U64_SIZE)
            self._handle_of[key] = addr
            self._handles[addr] = obj
        return addr

    def object_at(self, addr: int) -> object:
        try:
            return self._handles[addr]
        except KeyError:
            raise InterpreterFault(None, f"0x{addr:x} is not an object handle") from None

    @property
    def regions(self) -> list[Region]:
        return [self._regions[b] for b in self._bases]

    # --- lookup -----------------------------------------------------------------------------------

    def region_at(self, addr: int) -> Region | None:
        i = bisect_right(self._bases, addr) - 1
        if i < 0:
            return None
        region = self._regions[self._bases[i]]
        return region if addr < region.end else None

    def _find(self, addr: int, size: int, access: str) -> Region:
        region = self.region_at(addr)
        if region is None or addr + size > region.end:
            raise InterpreterFault(None, self._describe_bad_access(addr, size, access, region))
        self._last = region
        return region

    def _describe_bad_access(self, addr: int, size: int, access: str, region: Region | None) -> str:
        what = f"invalid {access} of {size} bytes at 0x{addr:x}"
        if region is not None:
            return f"{what}: crosses the end of {region!r} by {addr + size - region.end}"
        if addr in self._handles:
            return f"{what}: dereference of opaque handle to {type(self._handles[addr]).__name__}"
        return f"{what}: no region mapped there"

    # --- access -----------------------------------------------------------------------------------

    def load(self, addr: int, size: int) -> int:
        """Little-endian unsigned load of 1, 2, 4 or 8 bytes."""
        r = self._last
        if r is None or addr < r.base or addr + size > r.end:
            r = self._find(addr, size, "read")
        off = addr - r.base
        return int.from_bytes(r.buf[off : off + size], "little")

    def store(self, addr: int, size: int, value: int) -> None:
        """Little-endian store of the low ``size`` bytes of ``value``."""
        r = self._last
        if r is None or addr < r.base or addr + size > r.end:
            r = self._find(addr, size, "write")
        if not r.writable:
            raise InterpreterFault(None, f"write of {size} bytes at 0x{addr:x} into read-only {r!r}")
        off = addr - r.base
        r.buf[off : off + size] = (value & _MASKS[size]).to_bytes(size, "little")

    def read(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        r = self._find(addr, n, "read")
        off = addr - r.base
        return bytes(r.buf[off : off + n])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        r = self._find(addr, n, "write")
        if not r.writable:
            raise InterpreterFault(None, f"write of {n} bytes at 0x{addr:x} into read-only {r!r}")
        off = addr - r.base
        r.buf[off : off + n] = data

    def view(self, addr: int, n: int, *, write: bool = False) -> memoryview:
        """A bounds-checked window for helpers (``write=True`` also requires a writable region)."""
        r = self._find(addr, n, "write" if write else "read")
        if write and not r.writable:
            raise InterpreterFault(None, f"write of {n} bytes at 0x{addr:x} into read-only {r!r}")
        off = addr - r.base
        return r.buf[off : off + n]


def _page_align(size: int) -> int:
    return max(PAGE_SIZE, -(-size // PAGE_SIZE) * PAGE_SIZE)
