"""Bob Jenkins' lookup3 hash as the kernel uses it — include/linux/jhash.h (jhash, jhash2).

Hash maps pick their bucket with it, so reproducing it reproduces the kernel's
GET_NEXT_KEY order for maps created with BPF_F_ZERO_SEED.
"""
from __future__ import annotations

__all__ = ["jhash", "jhash2", "JHASH_INITVAL"]

JHASH_INITVAL = 0xDEADBEEF
_M = 0xFFFFFFFF
_WORD = 4


def _rol32(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & _M


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M; a ^= _rol32(c, 4); c = (c + b) & _M
    b = (b - a) & _M; b ^= _rol32(a, 6); a = (a + c) & _M
    c = (c - b) & _M; c ^= _rol32(b, 8); b = (b + a) & _M
    a = (a - c) & _M; a ^= _rol32(c, 16); c = (c + b) & _M
    b = (b - a) & _M; b ^= _rol32(a, 19); a = (a + c) & _M
    c = (c - b) & _M; c ^= _rol32(b, 4); b = (b + a) & _M
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol32(b, 14)) & _M
    a ^= c; a = (a - _rol32(c, 11)) & _M
    b ^= a; b = (b - _rol32(a, 25)) & _M
    c ^= b; c = (c - _rol32(b, 16)) & _M
    a ^= c; a = (a - _rol32(c, 4)) & _M
    b ^= a; b = (b - _rol32(a, 14)) & _M
    c ^= b; c = (c - _rol32(b, 24)) & _M
    return c


def _final_inline(a: int, b: int, c: int) -> int:
    """__jhash_final() with the rotations written out (the per-element cost of a hash
    table walk is mostly this)."""
    m = _M
    c = ((c ^ b) - (((b << 14) | (b >> 18)) & m)) & m
    a = ((a ^ c) - (((c << 11) | (c >> 21)) & m)) & m
    b = ((b ^ a) - (((a << 25) | (a >> 7)) & m)) & m
    c = ((c ^ b) - (((b << 16) | (b >> 16)) & m)) & m
    a = ((a ^ c) - (((c << 4) | (c >> 28)) & m)) & m
    b = ((b ^ a) - (((a << 14) | (a >> 18)) & m)) & m
    return ((c ^ b) - (((b << 24) | (b >> 8)) & m)) & m


def jhash2(key: bytes, initval: int) -> int:
    """jhash2(): `key` is a whole number of little-endian u32 words."""
    n = len(key) // _WORD
    if n == 1:                      # u32 keys, the common case: one word into a
        a = b = c = (JHASH_INITVAL + _WORD + initval) & _M
        return _final_inline((a + int.from_bytes(key, "little")) & _M, b, c)
    if n == 2:
        a = b = c = (JHASH_INITVAL + 2 * _WORD + initval) & _M
        return _final_inline((a + int.from_bytes(key[:_WORD], "little")) & _M,
                             (b + int.from_bytes(key[_WORD:], "little")) & _M, c)
    words = [int.from_bytes(key[i * _WORD:(i + 1) * _WORD], "little") for i in range(n)]
    a = b = c = (JHASH_INITVAL + (n << 2) + initval) & _M
    i = 0
    while n > 3:
        a = (a + words[i]) & _M
        b = (b + words[i + 1]) & _M
        c = (c + words[i + 2]) & _M
        a, b, c = _mix(a, b, c)
        n -= 3
        i += 3
    if n == 0:
        return c
    if n == 3:
        c = (c + words[i + 2]) & _M
    if n >= 2:
        b = (b + words[i + 1]) & _M
    a = (a + words[i]) & _M
    return _final(a, b, c)


def jhash(key: bytes, initval: int) -> int:
    """jhash(): any length; the tail bytes are added little-endian into a, b, c."""
    length = len(key)
    a = b = c = (JHASH_INITVAL + length + initval) & _M
    k = 0
    while length > 12:
        a = (a + int.from_bytes(key[k:k + 4], "little")) & _M
        b = (b + int.from_bytes(key[k + 4:k + 8], "little")) & _M
        c = (c + int.from_bytes(key[k + 8:k + 12], "little")) & _M
        a, b, c = _mix(a, b, c)
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = key[k:k + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    return _final(a, b, c)
