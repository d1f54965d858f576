"""Kernel function calls, fakekernel vs the real kernel: which program types may call which kfunc
(the generated set table), add_kfunc_call's load-time checks, and the bodies of the open-coded
number/bit iterators and the string kfuncs run through PROG_TEST_RUN."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakekernel.btf_vmlinux import BtfIndex
from kfuncutil import VMLINUX, kcall, kfunc_id, stream_read
from fakekernel.kfuncs import KFUNC_PROG_TYPES, kfunc_allowed
from uapi import calls
from uapi.bpf import BPF_PSEUDO_KFUNC_CALL, BpfCmd, MapType, ProgLoadFlags, ProgType
from uapi.ffi import ffi
from uapi.btf import BtfKind
from uapi.bpf import BPF_ADD, BPF_AND, BPF_CALL, BPF_DW, BPF_JEQ, BPF_JMP, BPF_LSH, BPF_OR, BPF_RSH, BPF_W
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM, Insn, encode_prog)

pytestmark = pytest.mark.differential

PKT = bytes(range(64))
FP = 10


def load(b, insns, prog_type=ProgType.SCHED_CLS, **kw):
    return calls.prog_load(b, prog_type, encode_prog(insns), "GPL", log_level=1, log_size=1 << 20,
                           strict=False, **kw)


def run(b, insns, prog_type=ProgType.SCHED_CLS):
    r = load(b, insns, prog_type)
    assert r.ret >= 0, r.log
    try:
        return calls.prog_test_run(b, r.ret, PKT).retval
    finally:
        b.close(r.ret)


def verdict(b, insns, **kw):
    r = load(b, insns, **kw)
    if r.ret >= 0:
        b.close(r.ret)
        return "ok"
    return r.ret, r.log.splitlines()[-2:]


# ---------------------------------------------------------------- which types may call what

SAMPLE = ["bpf_iter_num_new", "bpf_cgroup_acquire", "bpf_xdp_metadata_rx_hash", "bpf_dynptr_from_skb",
          "bpf_task_from_pid", "bpf_cast_to_kern_ctx", "bpf_sock_addr_set_sun_path", "bpf_ct_release",
          "bpf_strlen", "bpf_cpumask_create", "bpf_sk_assign_tcp_reqsk", "bbr_init"]
TYPES = [ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.XDP, ProgType.TRACEPOINT, ProgType.CGROUP_SKB,
         ProgType.SK_SKB, ProgType.RAW_TRACEPOINT, ProgType.SYSCALL]


@pytest.mark.parametrize("name", SAMPLE)
def test_kfunc_set_membership_matches_kernel(both, name):
    """A bare call gets "calling kernel function X is not allowed" on exactly the same types."""
    fake, host = both
    prog = [kcall(name), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    for pt in TYPES:
        flags = ProgLoadFlags.SLEEPABLE if pt == ProgType.SYSCALL else 0
        h = load(host, prog, pt, prog_flags=flags)
        if h.ret >= 0:
            host.close(h.ret)
        denied = f"calling kernel function {name} is not allowed" in h.log
        assert kfunc_allowed(pt, name) == (not denied), (pt, name)
        if denied:
            f = load(fake, prog, pt, prog_flags=flags)
            assert (f.ret, f.log.splitlines()[-2:]) == (h.ret, h.log.splitlines()[-2:])


def test_kfunc_table_names_every_tagged_kfunc_of_vmlinux():
    idx = BtfIndex(VMLINUX.read_bytes())
    for name in KFUNC_PROG_TYPES:
        assert idx.find_by_name_kind(name.encode(), BtfKind.FUNC) > 0, name


@pytest.mark.parametrize("case", ["not_func", "zero", "neg_off", "off_no_fd_array", "non_gpl"])
def test_add_kfunc_call_rejections_match_kernel(both, case):
    fake, host = both
    imm, off, lic = kfunc_id("bpf_strlen"), 0, "GPL"
    if case == "not_func":
        imm = BtfIndex(VMLINUX.read_bytes()).find_by_name_kind(b"task_struct", BtfKind.STRUCT)
    elif case == "zero":
        imm = 0
    elif case == "neg_off":
        off = -1
    elif case == "off_no_fd_array":
        off = 1
    elif case == "non_gpl":
        lic = "MIT"
    prog = encode_prog([Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, off, imm), BPF_MOV64_IMM(0, 0),
                        BPF_EXIT_INSN()])
    out = []
    for b in (fake, host):
        r = calls.prog_load(b, ProgType.SCHED_CLS, prog, lic, log_level=1, log_size=1 << 16, strict=False)
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret if r.ret < 0 else "ok", r.log if r.ret < 0 else ""))
    assert out[0] == out[1]


# ---------------------------------------------------------------- bpf_iter_num

def iter_num_prog(start: int, end: int) -> list:
    """sum of bpf_for(i, start, end); r0 = new's result << 24 | (sum & 0xffffff)."""
    it = [BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -8)]
    p = it + [BPF_MOV64_IMM(2, start), BPF_MOV64_IMM(3, end), kcall("bpf_iter_num_new"), BPF_MOV64_REG(6, 0)]
    loop = it + [kcall("bpf_iter_num_next"), BPF_JMP_IMM(BPF_JEQ, 0, 0, 3), BPF_LDX_MEM(BPF_W, 1, 0, 0),
                 BPF_ALU64_REG(BPF_ADD, 7, 1), Insn(0x05, 0, 0, -(len(it) + 5), 0)]
    return p + [BPF_MOV64_IMM(7, 0)] + loop + it + [
        kcall("bpf_iter_num_destroy"), BPF_ALU64_IMM(BPF_AND, 7, 0xFFFFFF), BPF_ALU64_IMM(BPF_AND, 6, 0xFF),
        BPF_ALU64_IMM(BPF_LSH, 6, 24), BPF_ALU64_REG(BPF_OR, 7, 6), BPF_MOV64_REG(0, 7), BPF_EXIT_INSN()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(-300, 300), length=st.integers(-5, 300))
def test_iter_num_sums_like_kernel(both, start, length):
    fake, host = both
    prog = iter_num_prog(start, start + length)
    assert run(fake, prog) == run(host, prog)


@pytest.mark.parametrize("start,end", [(0, 0), (5, 1), (-2**31, 2**31 - 1), (0, 8 * 1024 * 1024 + 1), (7, 9),
                                       (2**31 - 3, 2**31 - 1)])
def test_iter_num_new_errors_match_kernel(both, start, end):
    fake, host = both
    prog = iter_num_prog(start, end)
    assert run(fake, prog) == run(host, prog)


# ---------------------------------------------------------------- string kfuncs

def stack_str(s: bytes, base: int) -> list:
    """Store s (NUL padded to a multiple of 8) at fp+base."""
    data = s + b"\0" * (8 - len(s) % 8)
    out = []
    for k in range(0, len(data), 8):
        out += [*BPF_LD_IMM64(1, int.from_bytes(data[k:k + 8], "little")), BPF_STX_MEM(BPF_DW, FP, 1, base + k)]
    return out


def str_prog(name: str, s1: bytes, s2: bytes | None, extra: list[int]) -> list:
    """name(fp-128 [, fp-256], *extra) with s1 (and s2) on the stack; r0 is its result."""
    p = stack_str(s1, -128) + [BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -128)]
    nxt = 2
    if s2 is not None:
        p = stack_str(s2, -256) + p + [BPF_MOV64_REG(2, FP), BPF_ALU64_IMM(BPF_ADD, 2, -256)]
        nxt = 3
    p += [BPF_MOV64_IMM(nxt + i, v) for i, v in enumerate(extra)]
    return p + [kcall(name), BPF_EXIT_INSN()]


TWO = ["bpf_strcmp", "bpf_strcasecmp", "bpf_strspn", "bpf_strcspn", "bpf_strstr"]
ONE_CHAR = ["bpf_strchr", "bpf_strchrnul", "bpf_strrchr"]
_text = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\0", b"a"))
_small = st.sampled_from([b"", b"a", b"ab", b"abc", b"ABC", b"b", b"hello", b"Hello", b"lo", b"xyz", b"\x80\xff"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(TWO), s1=st.one_of(_small, _text), s2=st.one_of(_small, _text))
def test_two_string_kfuncs_match_kernel(both, name, s1, s2):
    fake, host = both
    prog = str_prog(name, s1, s2, [])
    assert run(fake, prog) == run(host, prog)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(ONE_CHAR + ["bpf_strlen", "bpf_strnlen", "bpf_strnchr", "bpf_strnstr"]),
       s1=st.one_of(_small, _text), c=st.integers(0, 255), n=st.integers(0, 50))
def test_one_string_kfuncs_match_kernel(both, name, s1, c, n):
    fake, host = both
    if name == "bpf_strlen":
        prog = str_prog(name, s1, None, [])
    elif name == "bpf_strnlen":
        prog = str_prog(name, s1, None, [n])
    elif name == "bpf_strnchr":
        prog = str_prog(name, s1, None, [n, c])
    elif name == "bpf_strnstr":
        prog = str_prog(name, s1, s1[c % 7: c % 7 + 3], [n])
    else:
        prog = str_prog(name, s1, None, [c])
    assert run(fake, prog) == run(host, prog)


@pytest.mark.parametrize("ptr", [0x1000, 1 << 63, (1 << 64) - 4096])
@pytest.mark.parametrize("name", ["bpf_strlen", "bpf_strcmp"])
def test_string_kfunc_bad_pointers_match_kernel(both, name, ptr):
    """A user address and a non-canonical one are -ERANGE, an unmapped kernel one -EFAULT."""
    fake, host = both
    prog = stack_str(b"abc", -128) + [*BPF_LD_IMM64(1, ptr), BPF_MOV64_REG(2, FP), BPF_ALU64_IMM(BPF_ADD, 2, -128),
                                       kcall(name), BPF_EXIT_INSN()]
    assert run(fake, prog) == run(host, prog)


# ---------------------------------------------------------------- program streams

def test_prog_stream_read_errors_match_kernel(both):
    def scenario(b):
        fd = calls.prog_load(b, ProgType.SOCKET_FILTER, encode_prog([BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]))
        mfd = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = [stream_read(b, fd, sid, 64) for sid in (0, 1, 2, 3, 0xFFFFFFFF)]
        out += [stream_read(b, mfd, 1, 64), stream_read(b, 9999, 1, 64), stream_read(b, fd, 1, 0),
                stream_read(b, fd, 1, 64, buf=8), stream_read(b, fd, 2, 0xFFFFFFFF)]
        ret, _ = calls.raw(b, BpfCmd.PROG_STREAM_READ_BY_FD, None, size=ffi.sizeof("union bpf_attr"),
                           prog_stream_read__prog_fd=fd, prog_stream_read__stream_id=1,
                           test__duration=1)         # a non-zero byte past the command's last field
        out.append(ret)
        b.close(mfd)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("case", ["strlen_null", "iter_num_einval", "strcmp_less", "strlen_ok"])
def test_kfunc_int_result_upper_half_matches_kernel(both, case):
    """An int kfunc leaves 32 bits in r0 (no sign extension): return r0 >> 32."""
    fake, host = both
    it = [BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -8)]
    if case == "strlen_null":
        call = [BPF_MOV64_IMM(1, 0), kcall("bpf_strlen")]
    elif case == "iter_num_einval":
        call = it + [BPF_MOV64_IMM(2, 5), BPF_MOV64_IMM(3, 1), kcall("bpf_iter_num_new"), BPF_MOV64_REG(6, 0)] + \
            it + [kcall("bpf_iter_num_destroy"), BPF_MOV64_REG(0, 6)]
    elif case == "strcmp_less":
        call = stack_str(b"a", -128) + stack_str(b"b", -256) + [
            BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -128), BPF_MOV64_REG(2, FP),
            BPF_ALU64_IMM(BPF_ADD, 2, -256), kcall("bpf_strcmp")]
    else:
        call = stack_str(b"abc", -128) + [BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -128), kcall("bpf_strlen")]
    prog = call + [BPF_ALU64_IMM(BPF_RSH, 0, 32), BPF_EXIT_INSN()]
    assert run(fake, prog) == run(host, prog)


@pytest.mark.parametrize("words", [[0x8000000000000011], [1, 0, 0x8000000000000000], [0, 0]])
def test_iter_bits_walks_set_bits_like_kernel(both, words):
    """sum and count of the set bit indexes of `words` (on the stack): count << 16 | sum."""
    fake, host = both
    base = -8 * (len(words) + 2)
    p = []
    for i, w in enumerate(words):
        p += [*BPF_LD_IMM64(1, w), BPF_STX_MEM(BPF_DW, FP, 1, base + 8 * i)]
    it = [BPF_MOV64_REG(1, FP), BPF_ALU64_IMM(BPF_ADD, 1, -16)]
    p += it + [BPF_MOV64_REG(2, FP), BPF_ALU64_IMM(BPF_ADD, 2, base), BPF_MOV64_IMM(3, len(words)),
               kcall("bpf_iter_bits_new"), BPF_MOV64_IMM(6, 0), BPF_MOV64_IMM(7, 0)]
    loop = it + [kcall("bpf_iter_bits_next"), BPF_JMP_IMM(BPF_JEQ, 0, 0, 4), BPF_LDX_MEM(BPF_W, 1, 0, 0),
                 BPF_ALU64_REG(BPF_ADD, 6, 1), BPF_ALU64_IMM(BPF_ADD, 7, 1), Insn(0x05, 0, 0, -(len(it) + 6), 0)]
    p += loop + it + [kcall("bpf_iter_bits_destroy"), BPF_ALU64_IMM(BPF_LSH, 7, 16), BPF_ALU64_REG(BPF_OR, 6, 7),
                      BPF_MOV64_REG(0, 6), BPF_EXIT_INSN()]
    assert run(fake, p) == run(host, p)
