"""Running one helper call on both kernels: a program whose body sees the output map value in
r6 (4 KiB, pre-filled by the test), the ctx in r9 and, when asked, a frozen BPF_F_RDONLY_PROG map holding
constant strings (``{ro}`` in the body: ``r3 = map[id:{ro}][0]+16``)."""
from __future__ import annotations

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapFlags, MapType, ProgType

__all__ = ["VAL", "RO_SIZE", "HelperProg", "prog_text"]

VAL = 4096
RO_SIZE = 1024
PKT = bytes(64)

_PROLOGUE = """
    r9 = r1
    r1 = 0
    *(u32 *)(r10 -4) = r1
    r1 = map[id:{out}]
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 != 0x0 goto pc+2
    r0 = 0
    exit
    r6 = r0
"""
_EPILOGUE = """
    r0 = 0
    exit
"""


def prog_text(body: str, out: int, ro: int | None) -> bytes:
    return assemble((_PROLOGUE + body + _EPILOGUE).format(out=out, ro=ro))


class HelperProg:
    """One loaded program + its maps on backend `b`; `run(value)` returns the value after a run."""

    def __init__(self, b, body: str, ro_data: bytes | None = None, prog_type=ProgType.SOCKET_FILTER,
                 strict: bool = True, **load):
        self.b = b
        self.out = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
        self.ro = None
        if ro_data is not None:
            self.ro = calls.map_create(b, MapType.ARRAY, 4, RO_SIZE, 1, map_flags=MapFlags.RDONLY_PROG)
            calls.map_update_elem(b, self.ro, bytes(4), ro_data.ljust(RO_SIZE, b"\0"))
            calls.map_freeze(b, self.ro)
        self.prog_type = prog_type
        res = calls.prog_load(b, prog_type, prog_text(body, self.out, self.ro), strict=False, **load)
        self.fd = res if isinstance(res, int) else res.ret
        self.log = "" if isinstance(res, int) else res.log
        if strict and self.fd < 0:
            self.close()
            raise OSError(-self.fd, f"PROG_LOAD: {self.log}")

    def run(self, value: bytes = b"", **kw) -> tuple[int, bytes]:
        calls.map_update_elem(self.b, self.out, bytes(4), bytes(value).ljust(VAL, b"\0"))
        if self.prog_type in (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.XDP):
            kw.setdefault("data_in", PKT)
        res = calls.prog_test_run(self.b, self.fd, **kw)
        return res.retval, calls.map_lookup_elem(self.b, self.out, bytes(4), VAL)

    def close(self) -> None:
        if self.fd >= 0:
            self.b.close(self.fd)
            self.fd = -1
        for fd in (self.out, self.ro):
            if fd is not None:
                self.b.close(fd)
        self.out = self.ro = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
