"""Building and reading `union bpf_attr` — the attr side of the ABI.

`make_attr(**fields)` fills a fresh zeroed attr from (possibly dotted) field names;
bytes values for pointer fields are kept alive in the returned `Attr` and their address is
stored.  `Attr.size(last_field)` is libbpf's ``offsetofend(union bpf_attr, last)``.
"""
from __future__ import annotations

from uapi.ffi import ffi, offsetofend

__all__ = ["Attr", "make_attr", "ATTR_SIZE"]

ATTR_SIZE = ffi.sizeof("union bpf_attr")


class Attr:
    """A zero-filled union bpf_attr plus the buffers its pointer fields refer to."""

    def __init__(self):
        self.c = ffi.new("union bpf_attr *")
        self.keep: list = []

    def ptr(self, data) -> int:
        """Keep `data` alive and return its address (bytes are copied into a buffer)."""
        if data is None:
            return 0
        if isinstance(data, int):
            return data
        if isinstance(data, (bytes, str)):
            if isinstance(data, str):
                data = data.encode() + b"\0"
            buf = ffi.new("char[]", len(data) or 1)
            ffi.memmove(buf, data, len(data))
        elif isinstance(data, bytearray):
            buf = ffi.from_buffer(data)
        else:
            buf = data
        self.keep.append(buf)
        return int(ffi.cast("uintptr_t", buf))

    def set(self, field: str, value) -> None:
        obj = self.c
        parts = field.split(".")
        for p in parts[:-1]:
            obj = getattr(obj, p)
        last = parts[-1]
        if value is None:           # an absent pointer/buffer: NULL
            value = 0
        cur = getattr(obj, last)
        if isinstance(cur, ffi.CData) and ffi.typeof(cur).kind == "array":
            data = value.encode() if isinstance(value, str) else bytes(value)
            ffi.memmove(getattr(obj, last), data, min(len(data), ffi.sizeof(cur)))
            return
        if value is None:
            value = 0
        if isinstance(value, (bytes, bytearray, str)) or (isinstance(value, ffi.CData)):
            value = self.ptr(value)
        bits = 8 * _field_size(field)
        v = int(value) & ((1 << bits) - 1)
        try:
            setattr(obj, last, v)
        except OverflowError:       # a signed field (e.g. __s32 priority): two's complement
            setattr(obj, last, v - (1 << bits))

    def get(self, field: str) -> int:
        obj = self.c
        for p in field.split("."):
            obj = getattr(obj, p)
        return obj

    @property
    def addr(self) -> int:
        return int(ffi.cast("uintptr_t", self.c))

    def bytes(self) -> bytes:
        return bytes(ffi.buffer(self.c))

    @staticmethod
    def size(last_field: str) -> int:
        return offsetofend("union bpf_attr", *last_field.split("."))


def _field_size(field: str) -> int:
    t = ffi.typeof("union bpf_attr")
    for part in field.split("."):
        t = dict(t.fields)[part].type
    return ffi.sizeof(t)


def make_attr(**fields) -> Attr:
    """make_attr(map_type=1, key_size=4, ...); dotted names as test__prog_fd (use __ for '.')."""
    a = Attr()
    for k, v in fields.items():
        a.set(k.replace("__", "."), v)
    return a
