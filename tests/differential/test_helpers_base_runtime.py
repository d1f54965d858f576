"""Runtime of the kernel/bpf/helpers.c helpers (bpf_snprintf, bpf_strtol/strtoul, bpf_strncmp,
per-CPU lookups, clocks, pid namespaces) against the real kernel: socket-filter test runs that
write each helper's result and output into a map value, compared byte for byte."""
from __future__ import annotations

import os
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import CGROUP2, FakeBackend
from helperutil import HelperProg
from maputil import possible_cpus
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapFlags, MapType, ProgType
from uapi.errno import Errno

pytestmark = pytest.mark.differential

_HYP = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------- bpf_snprintf

OUT, ARGS, STRS = 8, 8 + 512, 8 + 512 + 96


def _snprintf_body(nargs: int, str_slots: dict[int, int], size: int) -> str:
    fix = "".join(f"r1 = r6\nr1 += {off}\n*(u64 *)(r6 +{ARGS + 8 * k}) = r1\n" for k, off in str_slots.items())
    return fix + f"""
    r1 = r6
    r1 += {OUT}
    r2 = {size}
    r3 = map[id:{{ro}}][0]+0
    r4 = r6
    r4 += {ARGS}
    r5 = {8 * nargs}
    call bpf_snprintf
    *(u64 *)(r6 +0) = r0
"""


def snprintf(b, fmt: bytes, args: list, size: int = 256):
    """(load errno or (ret, output)) of bpf_snprintf(out, size, fmt, args); an arg given as
    bytes becomes a pointer to that string (or IP address) in the map value."""
    value = bytearray(4096)
    slots, off = {}, STRS
    for k, a in enumerate(args):
        if isinstance(a, bytes):
            value[off:off + len(a)] = a
            slots[k] = off
            off += len(a) + 1
        else:
            value[ARGS + 8 * k:ARGS + 8 * k + 8] = (a % 2**64).to_bytes(8, "little")
    p = HelperProg(b, _snprintf_body(len(args), slots, size), ro_data=fmt, strict=False)
    with p:
        if p.fd < 0:
            return p.fd
        _, v = p.run(value)
    ret = int.from_bytes(v[:8], "little", signed=True)
    return ret, v[OUT:OUT + size]


SNPRINTF_CASES = {
    "ints": (b"%d %5d %-5d| %05d %+d % d %u %x %X %lld %llu", [-3, 42, 42, -42, 5, 5, -1, 255, 255, -1, -1]),
    "long": (b"%ld %li %lu %lx", [-1, -1, -1, -1]),
    "unsigned_ignores_sign_flags": (b"%+u %+x % x %-05d|", [5, 5, 5, 7]),
    "chars": (b"%c|%5c|%-3c|", [65, 66, 67]),
    "strings": (b"%s|%10s|%-6s|%pks|%pus|%5pks", [b"hi", b"hey", b"yo", b"k", b"u", b"w"]),
    "ip": (b"%pI4 %pi4 %pI6 %pi6 %pI6c", [bytes([1, 2, 3, 4]), bytes([1, 2, 3, 4]), bytes(range(1, 17)),
                                           bytes(range(1, 17)), bytes(range(1, 17))]),
    "pointers": (b"%p|%p|%px|%ps|%pS|%pB", [0, -14, 0x1234, 0x1234, 0x1234, 0x1234]),
    "pointer_width": (b"%20px|%-20p|%020px", [0x12, 0, 0x34]),
    "pointer_eats_alnum": (b"%pxabc%pI4xyz", [5, bytes([1, 2, 3, 4])]),
    "bad_string_pointers": (b"[%s][%s]", [0, 0xFFFF888000001234]),
    "percent": (b"%%d%%%d", [3]),
    "utf8_text": ("café %d".encode(), [1]),
    "twelve": (b"%d %d %d %d %d %d %d %d %d %d %d %d", list(range(12))),
    "sign_flags": (b"% 05d|%+05d|%-+5d|", [3, 3, 3]),
    "bin_args_full_string": (b"%s %s %s %s", [b"A" * 200, b"B" * 200, b"C" * 200, b"D" * 10]),
    "bin_args_full_int": (b"%s %d", [b"A" * 508, 7]),
    "bin_args_full_char": (b"%s %c", [b"A" * 511, 66]),
    "bin_args_full_ip": (b"%s%pI4", [b"A" * 508, bytes([1, 2, 3, 4])]),
    "truncated": (b"%s and more", [b"0123456789"]),
    # refused by the verifier (check_bpf_snprintf_call): EINVAL at load
    "control_byte": (b"a\x01b", []),
    "precision": (b"%.3d", [1]),
    "hash_flag": (b"%#x", [1]),
    "short": (b"%hd", [1]),
    "unknown_p": (b"%pa", [1]),
    "s_then_alnum": (b"%sa", [b"x"]),
    "too_few_args": (b"%d %d", [1]),
    "non_ascii_conversion": (b"%\xc3", [1]),
    "lone_percent": (b"%", [1]),
}


@pytest.mark.parametrize("case", SNPRINTF_CASES.values(), ids=SNPRINTF_CASES.keys())
def test_snprintf_output_and_errno(both, case):
    fake, host = both
    fmt, args = case
    size = 16 if fmt == b"%s and more" else 256
    assert snprintf(fake, fmt, args, size) == snprintf(host, fmt, args, size)


def test_snprintf_bad_format_load_einval(fake):
    assert snprintf(fake, b"%hd", [1]) == -Errno.EINVAL


def test_snprintf_null_buffer_returns_length(both):
    """str NULL, size 0: only the length (+1) comes back."""
    body = """
    r1 = 0
    r2 = 0
    r3 = map[id:{ro}][0]+0
    r4 = 0
    r5 = 0
    call bpf_snprintf
    *(u64 *)(r6 +0) = r0
"""

    def scenario(b):
        with HelperProg(b, body, ro_data=b"hello world") as p:
            return p.run()[1][:8]
    fake, host = both
    assert scenario(fake) == scenario(host)


_fmt_piece = st.one_of(
    st.text(alphabet="abc XYZ.,:-", min_size=0, max_size=4).map(str.encode),
    st.builds(lambda fl, w, ln, c: b"%" + fl + w + ln + c,
              st.sampled_from([b"", b"-", b"0", b"+", b" ", b"-0", b"+ "]),
              st.sampled_from([b"", b"1", b"5", b"12"]),
              st.sampled_from([b"", b"l", b"ll"]),
              st.sampled_from([b"d", b"i", b"u", b"x", b"X"])),
    st.sampled_from([b"%c", b"%s", b"%px", b"%%", b"%5s", b"%-4c"]),
)


@_HYP
@given(pieces=st.lists(_fmt_piece, max_size=6), data=st.data())
def test_snprintf_random_formats_match(both, pieces, data):
    fake, host = both
    fmt = b"".join(pieces)
    args = []
    for piece in pieces:
        if piece.startswith(b"%") and piece != b"%%":
            strategy = (st.binary(max_size=12).map(lambda s: s.replace(b"\0", b"."))
                        if piece.endswith(b"s") else st.integers(-2**63, 2**64 - 1))
            args.append(data.draw(strategy, label=f"arg{len(args)}"))
    args = args[:12]
    size = data.draw(st.sampled_from([1, 7, 64, 256]), label="size")
    assert snprintf(fake, fmt, args, size) == snprintf(host, fmt, args, size)


# ---------------------------------------------------------------- bpf_strtol / bpf_strtoul

_STR_LEN = 24


def _strtox_body(helper: str, buf_len: int) -> str:
    """value: [0] flags, [8] result, [16] ret, [32..] the string."""
    return f"""
    r1 = r6
    r1 += 32
    r2 = {buf_len}
    r3 = *(u64 *)(r6 +0)
    r4 = r6
    r4 += 8
    call bpf_{helper}
    *(u64 *)(r6 +16) = r0
"""


def _strtox(p, s: bytes, flags: int) -> bytes:
    value = flags.to_bytes(8, "little") + (0xAA55).to_bytes(8, "little") + bytes(16) + s
    return p.run(value)[1][:24]


STRTOX_CASES = [
    (b"123", 10), (b"  -42xyz", 0), (b"0x1f", 0), (b"0x1f", 16), (b"0x", 16), (b"0x", 0), (b"017", 0),
    (b"-", 10), (b"   ", 10), (b"9223372036854775807", 10), (b"9223372036854775808", 10),
    (b"-9223372036854775808", 10), (b"-9223372036854775809", 10), (b"18446744073709551615", 10),
    (b"18446744073709551616", 10), (b"ff", 8), (b"12", 3), (b"12", 10 | 0x20), (b"\xa0 7", 10),
    (b"\t\n\v\f\r5", 0), (b"0X1A", 16), (b"-0", 10), (b"+5", 10), (b"00000000000000000000000000000000000000000000000000000000000000001", 10),
]


@pytest.mark.parametrize("helper", ["strtol", "strtoul"])
def test_strtox_cases_match(both, helper):
    def scenario(b):
        with HelperProg(b, _strtox_body(helper, _STR_LEN)) as p:
            return [_strtox(p, s.ljust(_STR_LEN, b"\0")[:_STR_LEN] if len(s) <= _STR_LEN else s, f)
                    for s, f in STRTOX_CASES if len(s) <= _STR_LEN]
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("helper", ["strtol", "strtoul"])
def test_strtox_long_string_and_short_len(both, helper):
    """buf_len bounds the parse (a digit past it is not read); 63 bytes at most are parsed."""
    def scenario(b):
        out = []
        for buf_len in (1, 2, 70):
            with HelperProg(b, _strtox_body(helper, buf_len)) as p:
                out.append(_strtox(p, b"1" * 64 + b"99999", 10))
                out.append(_strtox(p, b" " * 10 + b"0" * 60 + b"7", 10))
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@_HYP
@given(strs=st.lists(st.one_of(
    st.binary(max_size=_STR_LEN),
    st.text(alphabet=" \t-+0123456789abcdefxX", max_size=_STR_LEN).map(str.encode)), min_size=1, max_size=8),
    flags=st.lists(st.sampled_from([0, 8, 10, 16, 2, 0x20, 0x30]), min_size=8, max_size=8))
def test_strtox_random_strings_match(both, strs, flags):
    fake, host = both

    def scenario(b, helper):
        with HelperProg(b, _strtox_body(helper, _STR_LEN)) as p:
            return [_strtox(p, s.ljust(_STR_LEN, b"\0"), f) for s, f in zip(strs, flags)]
    for helper in ("strtol", "strtoul"):
        assert scenario(fake, helper) == scenario(host, helper)


# ---------------------------------------------------------------- bpf_strncmp

def _strncmp(b, s1: bytes, size: int, s2: bytes) -> int:
    body = f"""
    r1 = r6
    r1 += 16
    r2 = {size}
    r3 = map[id:{{ro}}][0]+0
    call bpf_strncmp
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body, ro_data=s2) as p:
        v = p.run(bytes(16) + s1)[1]
    return int.from_bytes(v[:8], "little", signed=True)


STRNCMP_CASES = [(b"abc", 3, b"abc"), (b"abd", 3, b"abc"), (b"abb", 3, b"abc"), (b"ab", 8, b"abc"),
                 (b"abcdef", 3, b"abcxyz"), (b"\xff", 1, b"a"), (b"", 4, b""), (b"abc", 4, b"ab")]


@pytest.mark.parametrize("case", STRNCMP_CASES, ids=[repr(c) for c in STRNCMP_CASES])
def test_strncmp_result_matches(both, case):
    fake, host = both
    assert _strncmp(fake, *case) == _strncmp(host, *case)


# ---------------------------------------------------------------- the current task

def _own_pid(b) -> int:
    return b.kern.current.pid if isinstance(b, FakeBackend) else os.getpid()


def test_current_cgroup_ids_match(both):
    """The caller sits in the root cgroup on both: id 1, ancestor 0 is the root, deeper is 0."""
    body = "".join(f"""
    r1 = {level}
    call bpf_get_current_ancestor_cgroup_id
    *(u64 *)(r6 +{8 + 8 * k}) = r0
""" for k, level in enumerate((0, 1, 2, -1))) + """
    call bpf_get_current_cgroup_id
    *(u64 *)(r6 +0) = r0
"""

    def scenario(b):
        with HelperProg(b, body) as p:
            return p.run()[1][:40]
    fake, host = both
    assert scenario(fake) == scenario(host)


def _ns_pid_tgid(b, dev: int, ino: int, size: int):
    body = f"""
    r1 = *(u64 *)(r6 +16)
    r2 = *(u64 *)(r6 +24)
    r3 = r6
    r3 += 32
    r4 = {size}
    call bpf_get_ns_current_pid_tgid
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body) as p:
        v = p.run(bytes(16) + dev.to_bytes(8, "little") + ino.to_bytes(8, "little") + b"\xaa" * 16)[1]
    ret = int.from_bytes(v[:8], "little", signed=True)
    own = _own_pid(b)
    data = v[32:32 + 16]
    return ret, data == (own.to_bytes(4, "little") * 2 + b"\xaa" * 8), data[:size] == bytes(size)


NS_CASES = {"match": (0, 0, 8), "wrong_ino": (0, 1, 8), "dev_past_u32": (1 << 32, 0, 8),
            "size_12": (0, 0, 12), "size_4": (0, 0, 4)}


@pytest.mark.parametrize("case", NS_CASES.values(), ids=NS_CASES.keys())
def test_get_ns_current_pid_tgid_result_and_einval(both, case):
    st_ = os.stat("/proc/self/ns/pid")
    ddev, dino, size = case
    fake, host = both
    assert _ns_pid_tgid(fake, st_.st_dev + ddev, st_.st_ino + dino, size) == \
        _ns_pid_tgid(host, st_.st_dev + ddev, st_.st_ino + dino, size)


def test_get_ns_current_pid_tgid_fake_pid(fake):
    st_ = os.stat("/proc/self/ns/pid")
    assert _ns_pid_tgid(fake, st_.st_dev, st_.st_ino, 8) == (0, True, False)


@pytest.mark.parametrize("helper", ["send_signal", "send_signal_thread"])
def test_send_signal_zero_and_invalid_einval(both, helper):
    """Signal 0 only checks (nothing is delivered); past SIGRTMAX is -EINVAL."""
    body = "".join(f"""
    r1 = {sig}
    call bpf_{helper}
    *(u64 *)(r6 +{8 * k}) = r0
""" for k, sig in enumerate((0, 65, 0xFFFFFFFF, "0x100000000 ll")))

    def scenario(b):
        with HelperProg(b, body) as p:
            return p.run()[1][:32]
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_send_signal_queues_on_fake_task(fake):
    with HelperProg(fake, "r1 = 10\ncall bpf_send_signal\n*(u64 *)(r6 +0) = r0\n") as p:
        assert p.run()[1][:8] == bytes(8)
    assert fake.kern.current.pending_signals == [(10, 1)]


def test_current_task_under_cgroup_matches(both):
    def scenario(b):
        base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        _cg_mkdir(b, base)
        cgs = [b.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in (CGROUP2, base)]
        try:
            arr = calls.map_create(b, MapType.CGROUP_ARRAY, 4, 4, 4)
            calls.map_update_elem(b, arr, (0).to_bytes(4, "little"), cgs[0].to_bytes(4, "little"))
            calls.map_update_elem(b, arr, (1).to_bytes(4, "little"), cgs[1].to_bytes(4, "little"))
            body = "".join(f"""
    r1 = map[id:{arr}]
    r2 = {idx}
    call bpf_current_task_under_cgroup
    *(u64 *)(r6 +{8 * k}) = r0
""" for k, idx in enumerate((0, 1, 2, 4, -1)))
            with HelperProg(b, body) as p:
                out = p.run()[1][:40]
            b.close(arr)
            return out
        finally:
            for c in cgs:
                b.close(c)
            _cg_rmdir(b, base)
    fake, host = both
    assert scenario(fake) == scenario(host)


def _cg_mkdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.mkdir(path)
    else:
        os.mkdir(path)


def _cg_rmdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.rmdir(path)
    else:
        os.rmdir(path)


# ---------------------------------------------------------------- per-CPU lookups, clocks

@pytest.mark.parametrize("map_type", [MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH])
def test_map_lookup_percpu_elem_each_cpu(both, map_type):
    """Every CPU's slot (written from userspace), then NULL for a CPU past nr_cpu_ids."""
    def scenario(b):
        ncpu = possible_cpus()
        m = calls.map_create(b, map_type, 4, 8, 4)
        calls.map_update_elem(b, m, bytes(4), b"".join((0x100 + c).to_bytes(8, "little") for c in range(ncpu)))
        body = "".join(f"""
    r1 = 0
    *(u32 *)(r10 -8) = r1
    r1 = map[id:{m}]
    r2 = r10
    r2 += -8
    r3 = {cpu}
    call bpf_map_lookup_percpu_elem
    r1 = 1
    if r0 == 0x0 goto pc+1
    r1 = *(u64 *)(r0 +0)
    *(u64 *)(r6 +{8 * k}) = r1
""" for k, cpu in enumerate(list(range(ncpu)) + [ncpu, 4096, -1]))
        with HelperProg(b, body) as p:
            out = p.run()[1][:8 * (ncpu + 3)]
        b.close(m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_ktime_get_tai_ns_is_realtime_like(both):
    """CLOCK_TAI: within a minute of CLOCK_REALTIME (+ the TAI offset) on both."""
    body = "call bpf_ktime_get_tai_ns\n*(u64 *)(r6 +0) = r0\ncall bpf_ktime_get_tai_ns\n*(u64 *)(r6 +8) = r0\n"

    def scenario(b):
        with HelperProg(b, body) as p:
            v = p.run()[1]
        t0, t1 = int.from_bytes(v[:8], "little"), int.from_bytes(v[8:16], "little")
        return t0 <= t1, abs(t0 - time.clock_gettime_ns(time.CLOCK_TAI)) < 60 * 10**9
    fake, host = both
    assert scenario(fake) == scenario(host) == (True, True)


# ---------------------------------------------------------------- bpf_trace_printk

def _trace_printk(b, fmt: bytes, args: list[int]) -> int:
    body = f"""
    r1 = map[id:{{ro}}][0]+0
    r2 = {len(fmt) + 1}
""" + "".join(f"    r{3 + k} = {a}\n" for k, a in enumerate(args)) + """
    call bpf_trace_printk
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body, ro_data=fmt) as p:
        return int.from_bytes(p.run()[1][:8], "little", signed=True)


TRACE_PRINTK_CASES = [(b"hi %d\n", [5]), (b"hi", []), (b"%s", [0]), (b"%pI4", [0]), (b"%c%c", [65, 66]),
                      (b"%5d|", [3]), (b"%pK", [0]), (b"%px", [0]), (b"%u %u %u %u", [1, 2, 3]),
                      ("é".encode(), []), (b"%ld %lu", [-1, -1]), (b"%#x", [1])]


@pytest.mark.parametrize("case", TRACE_PRINTK_CASES, ids=[repr(c[0]) for c in TRACE_PRINTK_CASES])
def test_trace_printk_length_and_einval(both, case):
    """bstr_printf()'s length (no NUL counted), -EINVAL for a format the prepare pass refuses."""
    fake, host = both
    assert _trace_printk(fake, *case) == _trace_printk(host, *case)


@pytest.mark.parametrize("fmt", [b"%hd", b"%d", b"%d%d", b"%s", b"%pZ"])
def test_snprintf_verifier_log_invalid_format_einval(both, fmt):
    """check_bpf_snprintf_call(): the format is checked at load, "Invalid format string" (the
    log's tail is compared: earlier lines carry map addresses)."""
    body = """
    r1 = r6
    r2 = 8
    r3 = map[id:{ro}][0]+0
    r4 = r6
    r4 += 64
    r5 = 8
    call bpf_snprintf
"""

    def scenario(b):
        with HelperProg(b, body, ro_data=fmt, strict=False, log_level=1, log_size=1 << 16) as p:
            return min(p.fd, 0), p.log.split("processed ")[0].splitlines()[-3:]    # no map addresses
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- bpf_find_vma

_FIND_VMA_MAIN = """
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
    *(u64 *)(r10 -16) = 0
    *(u64 *)(r10 -24) = 0
    call bpf_get_current_task_btf
    r1 = r0
    r2 = *(u64 *)(r6 +0)
    r3 = subprog[+{cb}]
    r4 = r10
    r4 += -24
    r5 = {flags}
    call bpf_find_vma
    *(u64 *)(r6 +8) = r0
    r1 = *(u64 *)(r10 -24)
    *(u64 *)(r6 +16) = r1
    r1 = *(u64 *)(r10 -16)
    *(u64 *)(r6 +24) = r1
    r0 = 0
    exit
"""
_FIND_VMA_CB = """
    r1 = *(u64 *)(r2 +0)
    *(u64 *)(r3 +0) = r1
    r1 = *(u64 *)(r2 +8)
    *(u64 *)(r3 +8) = r1
    r0 = 0
    exit
"""


def _find_vma(b, addr: int, flags: int):
    from btfutil import BtfWriter, btf_load
    from uapi.asm import assemble_insns
    from uapi.bpf import BPF_DW, BPF_IMM, BPF_LD, BPF_PSEUDO_FUNC, BpfCmd
    LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW
    out = calls.map_create(b, MapType.ARRAY, 4, 32, 1)
    calls.map_update_elem(b, out, bytes(4), addr.to_bytes(8, "little") + bytes(24))
    main_insns = assemble_insns(_FIND_VMA_MAIN.format(out=out, cb=0, flags=flags))
    n_main = len(main_insns)
    ld_at = next(k for k, i in enumerate(main_insns) if i.src_reg == BPF_PSEUDO_FUNC and i.code == LD_IMM64)
    insns = assemble(_FIND_VMA_MAIN.format(out=out, cb=n_main - ld_at - 1, flags=flags) + _FIND_VMA_CB)
    w = BtfWriter()
    proto = w.func_proto(w.int_("int", 4, encoding=1), [])
    main, cb = w.func("main", proto), w.func("cb", proto)
    bfd = btf_load(b, w.blob()).ret
    fi = b"".join(x.to_bytes(4, "little") for x in (0, main, n_main, cb))
    fd, _ = calls.raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.SOCKET_FILTER,
                      insns=insns, insn_cnt=len(insns) // 8, license=b"GPL\0", prog_btf_fd=bfd,
                      func_info_rec_size=8, func_info=bytearray(fi), func_info_cnt=2)
    b.close(bfd)
    try:
        if fd < 0:
            return "load", fd
        calls.prog_test_run(b, fd, bytes(64))
        v = calls.map_lookup_elem(b, out, bytes(4), 32)
        b.close(fd)
        return tuple(int.from_bytes(v[k:k + 8], "little", signed=k == 8) for k in (8, 16, 24))
    finally:
        b.close(out)


def test_find_vma_file_mapping_and_errnos(both, tmp_path):
    """The callback sees the vma holding the address (a private mapping of a 2-page file);
    -ENOENT for an unmapped address, -EINVAL for flags."""
    import ctypes
    import mmap
    path = tmp_path / "two_pages"
    path.write_bytes(bytes(2 * mmap.PAGESIZE))
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 2 * mmap.PAGESIZE)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        fake, host = both
        for addr, flags in ((base + 100, 0), (base + mmap.PAGESIZE, 0), (8, 0), (base, 1)):
            got = _find_vma(fake, addr, flags)
            assert got == _find_vma(host, addr, flags)
            if got[0] == 0:
                assert got[1:] == (base, base + 2 * mmap.PAGESIZE)
    finally:
        del base
        m.close()


# ---------------------------------------------------------------- ARG_PTR_TO_CONST_STR

def _const_str_load(b, case: str):
    ro = calls.map_create(b, MapType.ARRAY, 4, 16, 1, map_flags=0 if case == "rw" else MapFlags.RDONLY_PROG)
    calls.map_update_elem(b, ro, bytes(4), (b"x" * 16 if case == "no_nul" else b"abc").ljust(16, b"\0"))
    if case != "not_frozen":
        calls.map_freeze(b, ro)
    s2 = "r3 = r10\nr3 += -8" if case == "stack" else f"r3 = map[id:{ro}][0]+{12 if case == 'off_12' else 0}"
    text = f"""
    r1 = 0
    *(u64 *)(r10 -8) = r1
    r1 = r10
    r1 += -8
    r2 = 4
    {s2}
    call bpf_strncmp
    r0 = 0
    exit"""
    r = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble(text), log_level=1, log_size=1 << 16, strict=False)
    if r.ret >= 0:
        b.close(r.ret)
    b.close(ro)
    return min(r.ret, 0), r.log.split("processed ")[0].strip().splitlines()[-1:]


@pytest.mark.parametrize("case", ["ok", "rw", "not_frozen", "no_nul", "stack", "off_12"])
def test_const_str_arg_rules_eacces_einval(both, case):
    """check_reg_const_str(): a frozen read-only map value, NUL-terminated, else EACCES/EINVAL."""
    fake, host = both
    assert _const_str_load(fake, case) == _const_str_load(host, case)


# ---------------------------------------------------------------- bpf_copy_from_user_task

def _copy_from_user_task(b, addr: int, size: int, flags: int):
    from uapi.bpf import ProgLoadFlags
    body = f"""
    call bpf_get_current_task_btf
    r4 = r0
    r1 = r6
    r1 += 64
    r2 = {size}
    r3 = {addr:#x} ll
    r5 = {flags}
    call bpf_copy_from_user_task
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body, prog_type=ProgType.SYSCALL, prog_flags=ProgLoadFlags.SLEEPABLE) as p:
        v = p.run(bytes(64) + b"\xaa" * 64)[1]
    return int.from_bytes(v[:8], "little", signed=True), v[64:64 + size]


def test_copy_from_user_task_reads_own_memory_efault_einval(both):
    """The caller's memory (a ctypes buffer) on both; an unmapped address is -EFAULT with dst
    cleared; flags are -EINVAL."""
    import ctypes
    buf = ctypes.create_string_buffer(b"from user space!", 32)
    addr = ctypes.addressof(buf)
    fake, host = both
    for a, size, flags in ((addr, 16, 0), (addr + 4, 8, 0), (8, 16, 0), (addr, 16, 1), (addr, 0, 0)):
        got = _copy_from_user_task(fake, a, size, flags)
        assert got == _copy_from_user_task(host, a, size, flags)
    assert _copy_from_user_task(fake, addr, 16, 0) == (0, b"from user space!")
