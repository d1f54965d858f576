"""bpf_bprintf_prepare / bstr_printf (fakekernel.helpers.printf): the format rules, the
512-byte argument buffer, pointer conversions on the simulated kernel, and a Python reference
model for the integer conversions."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakekernel import Kernel
from fakekernel.helpers.printf import (MAX_BPRINTF_BUF, bpf_bprintf_prepare, bpf_snprintf,
                                       bpf_trace_vprintk, bstr_printf)
from fakekernel.interp.run import RunEnv
from uapi.errno import Errno


@pytest.fixture
def env():
    k = Kernel()
    return RunEnv(mem=k.mem, kernel=k)


def fmt_text(env, fmt: bytes, args: list[int]) -> bytes | int:
    prepared = bpf_bprintf_prepare(fmt, len(args), args, env)
    return prepared if isinstance(prepared, int) else bstr_printf(env, prepared)


@pytest.mark.parametrize("fmt,nargs", [
    (b"%.2d", 1), (b"%#x", 1), (b"%hd", 1), (b"%z", 1), (b"%n", 1), (b"%pa", 1), (b"%pI5", 1),
    (b"%s1", 1), (b"%pks", 0), (b"%d", 0), (b"\x07", 0), (b"%\x80", 1), (b"%*d", 2), (b"%lc", 1),
    (b"%llld", 1), (b"%", 1),
])
def test_bprintf_prepare_bad_format_einval(fmt, nargs):
    assert bpf_bprintf_prepare(fmt, nargs) == -Errno.EINVAL


@pytest.mark.parametrize("fmt,nargs", [
    (b"%d%i%u%x%X", 5), (b"%ld%lld%lu%llx", 4), (b"%-+ 05d", 1), (b"%p %pK %px %ps %pS %pB", 6),
    (b"%pI4 %pi6 %pks %pus", 4), (b"%s. %c", 2), ("é%%\t\n".encode(), 0), (b"%p", 1),
])
def test_bprintf_prepare_good_format_ok(fmt, nargs):
    assert isinstance(bpf_bprintf_prepare(fmt, nargs), list)


def test_bin_args_budget_enospc(env):
    s = env.kernel.mem.map_region(bytearray(b"A" * 600 + b"\0"), "arg", "s")
    # 511 bytes of string + NUL fill the buffer: the int after it has no room
    assert fmt_text(env, b"%s %d", [s.base, 1]) == -Errno.ENOSPC
    assert fmt_text(env, b"%s %c", [s.base, 66]) == -Errno.ENOSPC
    assert fmt_text(env, b"%s", [s.base]) == b"A" * 511


def test_pointer_conversions(env):
    kern = env.kernel
    f = kern.world.trace.kallsyms.lookup_name("vfs_read")
    assert fmt_text(env, b"%ps|%pS|%pB", [f.addr, f.addr + 5, f.addr + 5]) == \
        b"vfs_read|vfs_read+0x5/0x40|vfs_read+0x5/0x40"
    assert fmt_text(env, b"%ps", [0x1234]) == b"0x1234"
    assert fmt_text(env, b"%px|%p|%p", [0x12, 0, 2**64 - 1]) == \
        b"0000000000000012|0000000000000000|ffffffffffffffff"
    hashed = fmt_text(env, b"%p", [0xFFFF888000001234])
    assert len(hashed) == 16 and hashed.startswith(b"00000000") and hashed != b"ffff888000001234"
    assert fmt_text(env, b"%pK", [0xFFFF888000001234]) == hashed        # kptr_restrict 0
    kern.sysctls["kernel.kptr_restrict"] = 1
    assert fmt_text(env, b"%pK", [0xFFFF888000001234]) == b"ffff888000001234"
    kern.sysctls["kernel.kptr_restrict"] = 2
    assert fmt_text(env, b"%pK", [0xFFFF888000001234]) == b"0000000000000000"


def test_ip_and_string_conversions(env):
    ip = env.kernel.mem.map_region(bytearray(bytes([10, 0, 0, 1]) + bytes(range(16))), "arg", "ip")
    assert fmt_text(env, b"%pI4 %pi4", [ip.base, ip.base]) == b"10.0.0.1 010.000.000.001"
    assert fmt_text(env, b"%pI6c!", [ip.base + 4]) == \
        b"0001:0203:0405:0607:0809:0a0b:0c0d:0e0f!"
    assert fmt_text(env, b"[%pI4]", [0]) == b"[0.0.0.0]"               # unreadable: zeros
    assert fmt_text(env, b"[%s][%pks][%pus]", [0, 0xFFFF888000000000, ip.base]) == b"[][][]"


def test_string_width_and_unreadable(env):
    s = env.kernel.mem.map_region(bytearray(b"hey\0"), "arg", "s")
    assert fmt_text(env, b"[%5s][%-5s][%s][%3pks]", [s.base, s.base, 0, s.base]) == b"[  hey][hey  ][][hey]"


_INT_FLAGS = st.sampled_from(["", "-", "0", "+", " ", "-0", "+0", "- ", "+-"])
_CONV = st.sampled_from(["d", "i", "u", "x", "X"])
_LEN = st.sampled_from(["", "l", "ll"])


def _model(flags: str, width: str, length: str, conv: str, arg: int) -> bytes:
    """C printf semantics via Python's %: signs only for d/i, the argument cut to its size."""
    bits = 32 if not length else 64
    v = arg & ((1 << bits) - 1)
    if conv in "di":
        v -= (1 << bits) if v >> (bits - 1) else 0
        return ("%" + flags + width + "d") % v
    flags = flags.replace("+", "").replace(" ", "")
    return ("%" + flags + width + ("d" if conv == "u" else conv)) % v


@given(flags=_INT_FLAGS, width=st.sampled_from(["", "1", "7", "20"]), length=_LEN, conv=_CONV,
       arg=st.integers(0, 2**64 - 1))
def test_integer_conversions_match_model(flags, width, length, conv, arg):
    k = Kernel()
    e = RunEnv(mem=k.mem, kernel=k)
    fmt = f"<%{flags}{width}{length}{conv}>".encode()
    assert fmt_text(e, fmt, [arg]) == b"<" + _model(flags, width, length, conv, arg).encode() + b">"


def _call(env, fn, *regs):
    regs = list(regs) + [0] * (5 - len(regs))
    return fn(env, *regs)


def test_snprintf_truncates_and_returns_full_length(env):
    mem = env.kernel.mem
    fmt = mem.map_region(bytearray(b"n=%d!\0"), "arg", "fmt")
    args = mem.map_region(bytearray((12345).to_bytes(8, "little")), "arg", "args")
    out = mem.map_region(bytearray(b"\xff" * 8), "arg", "out")
    assert _call(env, bpf_snprintf, out.base, 4, fmt.base, args.base, 8) == len(b"n=12345!") + 1
    assert bytes(out.buf) == b"n=1\0" + b"\xff" * 4
    assert _call(env, bpf_snprintf, 0, 0, fmt.base, args.base, 8) == 9
    assert _call(env, bpf_snprintf, out.base, 4, fmt.base, args.base, 7) == 2**64 - Errno.EINVAL
    assert _call(env, bpf_snprintf, out.base, 4, fmt.base, 0, 8) == 2**64 - Errno.EINVAL
    assert _call(env, bpf_snprintf, out.base, 4, fmt.base, args.base, 13 * 8) == 2**64 - Errno.EINVAL


def test_trace_vprintk_line_and_length(env):
    mem = env.kernel.mem
    fmt = mem.map_region(bytearray(b"x=%u %s\n\0"), "arg", "fmt")
    s = mem.map_region(bytearray(b"ok\0"), "arg", "s")
    args = mem.map_region(bytearray((7).to_bytes(8, "little") + s.base.to_bytes(8, "little")), "arg", "a")
    assert _call(env, bpf_trace_vprintk, fmt.base, 9, args.base, 16) == len(b"x=7 ok\n")
    assert env.kernel.trace_lines[-1] == "x=7 ok"
    nonul = mem.map_region(bytearray(b"abc"), "arg", "nonul")
    assert _call(env, bpf_trace_vprintk, nonul.base, 3, 0, 0) == 2**64 - Errno.EINVAL
    big = mem.map_region(bytearray(b"%s%s\0"), "arg", "big")
    long = mem.map_region(bytearray(b"B" * 300 + b"\0"), "arg", "long")
    a2 = mem.map_region(bytearray(long.base.to_bytes(8, "little") * 2), "arg", "a2")
    n = _call(env, bpf_trace_vprintk, big.base, 5, a2.base, 16)
    assert n == 300 + 210 and len(env.kernel.trace_lines[-1]) == n < MAX_BPRINTF_BUF
