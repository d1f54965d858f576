"""bpf_strtol / bpf_strtoul / bpf_strncmp (fakekernel.helpers.strings) against a Python
reference model of kstrtox's rules, plus the helpers' out-parameter handling."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakekernel import Kernel
from fakekernel.helpers.strings import (bpf_strncmp, bpf_strtol, bpf_strtoul, bpf_strtoll_parse,
                                        bpf_strtoull_parse, kernel_strncmp)
from fakekernel.interp.run import RunEnv
from uapi.errno import Errno

_SPACE = b" \t\n\v\f\r\xa0"
_DIGITS = {8: b"[0-7]", 10: b"[0-9]", 16: b"[0-9a-fA-F]"}


def model_strtoull(buf: bytes, flags: int):
    """(consumed or -errno, value, negative) by regular expressions and int()."""
    base = flags & 0x1F
    if base not in (0, 8, 10, 16) or flags & ~0x1F:
        return -Errno.EINVAL, 0, False
    i = len(buf) - len(buf.lstrip(_SPACE))
    neg = buf[i:i + 1] == b"-"
    i += neg
    if i == len(buf):
        return -Errno.EINVAL, 0, neg
    s = buf[i:i + 63].split(b"\0")[0]
    if base == 0:
        base = 16 if re.match(rb"0[xX][0-9a-fA-F]", s) else 8 if s[:1] == b"0" else 10
    prefix = 2 if base == 16 and re.match(rb"0[xX]", s) else 0
    m = re.match(_DIGITS[base] + b"*", s[prefix:])
    digits = m.group(0)
    if not digits:
        return -Errno.EINVAL, 0, neg
    v = int(digits, base)
    if v >= 2**64:
        return -Errno.ERANGE, 0, neg
    return i + prefix + len(digits), v, neg


_chars = st.sampled_from(list(b" \t-+0123456789abcdefxXgz\xa0\x00"))


@given(buf=st.lists(_chars, min_size=1, max_size=80).map(bytes),
       flags=st.sampled_from([0, 8, 10, 16, 2, 0x20, 0x10 | 0x20]))
def test_strtoull_matches_model(buf, flags):
    assert bpf_strtoull_parse(buf, flags) == model_strtoull(buf, flags)


@given(v=st.integers(-2**64, 2**64), base=st.sampled_from([8, 10, 16]))
def test_strtoll_range(v, base):
    text = (("-" if v < 0 else "") + {8: "%o", 10: "%d", 16: "%x"}[base] % abs(v)).encode()
    err, val = bpf_strtoll_parse(text, base)
    if -2**63 <= v < 2**63:
        assert (err, val) == (len(text), v)
    else:
        assert (err, val) == (-Errno.ERANGE, 0)


@pytest.fixture
def env():
    k = Kernel()
    return RunEnv(mem=k.mem, kernel=k)


def _buf(env, data: bytes):
    return env.kernel.mem.map_region(bytearray(data), "arg", "buf")


def test_strtol_writes_result_and_clears_on_error(env):
    s, res = _buf(env, b"-42 rest"), _buf(env, b"\xff" * 8)
    assert bpf_strtol(env, s.base, 8, 10, res.base, 0) == 3
    assert int.from_bytes(res.buf, "little", signed=True) == -42
    assert bpf_strtoul(env, s.base, 8, 10, res.base, 0) == 2**64 - Errno.EINVAL     # a sign
    assert bytes(res.buf) == bytes(8)
    assert bpf_strtol(env, s.base, 8, 3, res.base, 0) == 2**64 - Errno.EINVAL       # base 3


def test_strtoul_only_reads_buf_len(env):
    s, res = _buf(env, b"12345"), _buf(env, bytes(8))
    assert bpf_strtoul(env, s.base, 2, 0, res.base, 0) == 2
    assert int.from_bytes(res.buf, "little") == 12


@pytest.mark.parametrize("s1,n,s2,want", [
    (b"abc", 3, b"abc", 0), (b"abd", 3, b"abc", 1), (b"ab\xff", 3, b"abc", 1), (b"ab", 3, b"abc", -1),
    (b"abcX", 3, b"abcY", 0), (b"", 1, b"", 0),
])
def test_strncmp_kernel_semantics(s1, n, s2, want):
    assert kernel_strncmp(s1, s2, n) == want


def test_strncmp_helper_sign_extends(env):
    a, b = _buf(env, b"abc\0"), _buf(env, b"abd\0")
    assert bpf_strncmp(env, a.base, 4, b.base, 0, 0) == 2**64 - 1
    assert bpf_strncmp(env, b.base, 4, a.base, 0, 0) == 1
