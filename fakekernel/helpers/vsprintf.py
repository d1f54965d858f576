"""printf formatting of the simulated kernel — lib/vsprintf.c (bstr_printf, number, string,
pointer, symbol_string) and lib/ctype.c (the Latin-1 character classes).

`bstr_printf` renders a format that `fakekernel.helpers.printf.bpf_bprintf_prepare` parsed:
literal bytes and conversions whose arguments are already in their binary form.  ``%p`` hashes
the pointer to 32 bits (NULL and error pointers print as themselves), ``%pK`` follows
``kernel.kptr_restrict``, ``%ps``/``%pS``/``%pB`` look the address up in the simulated
kallsyms and print ``0x<hex>`` without a symbol, pre-formatted conversions ignore the width.
"""
from __future__ import annotations

import hashlib

from uapi.ffi import ffi
from uapi.insn import u64

__all__ = ["isascii", "isprint", "isspace", "ispunct", "isalnum", "bstr_printf", "format_ip",
           "symbol_string", "kallsyms_lookup"]

_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_PTR = ffi.sizeof("void *")
_IPV6 = 16
MAX_ERRNO = 4095

# ---- lib/ctype.c over Latin-1 ----
_C, _U_, _L_, _D, _S, _P, _SP = 1, 2, 4, 8, 16, 32, 64


def _build_ctype() -> list[int]:
    t = [0] * 256
    for c in range(32):
        t[c] = _C | (_S if 9 <= c <= 13 else 0)
    t[127] = _C
    t[32] = _S | _SP
    for c in range(33, 127):
        ch = chr(c)
        t[c] = _D if ch.isdigit() else _U_ if ch.isupper() else _L_ if ch.islower() else _P
    t[160] = _S | _SP
    for c in range(161, 192):
        t[c] = _P
    for c in range(192, 256):
        t[c] = _U_ if c < 223 else _L_
    t[215] = t[247] = _P
    return t


_CTYPE = _build_ctype()


def isascii(c: int) -> bool:
    return c < 0x80


def isprint(c: int) -> bool:
    return bool(_CTYPE[c] & (_P | _U_ | _L_ | _D | _SP))


def isspace(c: int) -> bool:
    return bool(_CTYPE[c] & _S)


def ispunct(c: int) -> bool:
    return bool(_CTYPE[c] & _P)


def isalnum(c: int) -> bool:
    return bool(_CTYPE[c] & (_U_ | _L_ | _D))



def format_ip(kind: bytes, ip: bytes) -> bytes:
    if kind == b"I4":
        return ".".join(str(b) for b in ip).encode()
    if kind == b"i4":
        return ".".join("%03d" % b for b in ip).encode()
    if kind == b"I6":
        return ":".join(ip[i:i + 2].hex() for i in range(0, _IPV6, 2)).encode()
    return ip.hex().encode()


# ---- lib/vsprintf.c ----

def _number(num: int, flags: bytes, width: int, base: int = 10, signed: bool = False,
            upper: bool = False) -> bytes:
    """number(): sign/space/plus only for signed conversions, zero padding unless left-aligned."""
    left = ord("-") in flags
    zero = ord("0") in flags and not left
    sign = b""
    if signed:
        if num < 0:
            sign, num = b"-", -num
        elif ord("+") in flags:
            sign = b"+"
        elif ord(" ") in flags:
            sign = b" "
    digits = (format(num, "X" if upper else "x") if base == 16 else str(num)).encode()
    pad = max(width - len(sign) - len(digits), 0)
    if left:
        return sign + digits + b" " * pad
    if zero:
        return sign + b"0" * pad + digits
    return b" " * pad + sign + digits


def _widen(s: bytes, flags: bytes, width: int) -> bytes:
    pad = max(width - len(s), 0)
    return s + b" " * pad if ord("-") in flags else b" " * pad + s


def _pointer_string(ptr: int, flags: bytes, width: int) -> bytes:
    """pointer_string(): 16 zero-padded hex digits unless a width was given."""
    if width == -1:
        return _number(u64(ptr), flags + b"0", 2 * _PTR, 16)
    return _number(u64(ptr), flags, width, 16)


#: ptr_to_id()'s siphash key is random per boot; the simulated machine boots with this one
_PTR_KEY = b"fakekernel ptr_to_id"


def _ptr_to_id(ptr: int) -> int:
    """ptr_to_id(): a keyed 32-bit hash of the pointer."""
    return int.from_bytes(hashlib.blake2b(u64(ptr).to_bytes(_U64, "little"), key=_PTR_KEY,
                                          digest_size=_U32).digest(), "little")


def _default_pointer(env, ptr: int, flags: bytes, width: int) -> bytes:
    ptr = u64(ptr)
    if ptr == 0 or ptr >= u64(-MAX_ERRNO):                 # IS_ERR_OR_NULL: printed as is
        return _pointer_string(ptr, flags, width)
    return _pointer_string(_ptr_to_id(ptr), flags, width)


def kallsyms_lookup(kern, addr: int):
    """(name, offset, size) of the simulated kernel symbol containing `addr`, or None."""
    syms = kern.world.trace.kallsyms
    funcs = sorted(syms.by_addr.values(), key=lambda f: f.addr)
    for f, nxt in zip(funcs, funcs[1:] + [None]):
        end = nxt.addr if nxt is not None else syms._next
        if f.addr <= addr < end:
            return f.name, addr - f.addr, end - f.addr
    return None


def symbol_string(env, addr: int, kind: str) -> str:
    """symbol_string(): %ps name, %pS name+off/size, %pB the same for a return address."""
    addr = u64(addr)
    look = addr - 1 if kind == "B" else addr
    hit = kallsyms_lookup(env.kernel, look) if env is not None and env.kernel is not None else None
    if hit is None:
        return "0x%x" % addr
    name, off, size = hit
    if kind == "s":
        return name
    return "%s+0x%x/0x%x" % (name, off + (1 if kind == "B" else 0), size)


def _render_ptr(env, ptype: str, ptr: int, flags: bytes, width: int) -> bytes:
    if ptype == "x":
        return _pointer_string(ptr, flags, width)
    if ptype in ("s", "S"):
        return _widen(symbol_string(env, ptr, ptype).encode(), flags, width)
    if ptype == "K":
        restrict = env.kernel.sysctls.get("kernel.kptr_restrict", 0) if env is not None else 0
        if restrict == 0:
            return _default_pointer(env, ptr, flags, width)
        return _pointer_string(ptr if restrict == 1 else 0, flags, width)
    return _default_pointer(env, ptr, flags, width)


def bstr_printf(env, prepared: list) -> bytes:
    """bstr_printf(): the whole text (the caller truncates to its buffer)."""
    out = bytearray()
    for item in prepared:
        if isinstance(item, bytes):
            out += item
            continue
        kind, flags, width, value = item
        if kind == "int":
            arg, size, conv = value
            bits = 8 * size
            v = arg & ((1 << bits) - 1)
            if conv in "di":
                v = v - (1 << bits) if v >> (bits - 1) else v
                out += _number(v, flags, width, 10, signed=True)
            elif conv == "u":
                out += _number(v, flags, width, 10)
            else:
                out += _number(v, flags, width, 16, upper=conv == "X")
        elif kind == "char":
            out += _widen(bytes([value]), flags, width)
        elif kind == "str":
            out += _widen(value, flags, width)
        elif kind == "pre":
            out += value
        else:
            ptype, ptr = value
            out += _render_ptr(env, ptype, ptr, flags, width)
    return bytes(out)
