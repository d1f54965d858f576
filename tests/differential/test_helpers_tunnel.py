"""bpf_skb_set/get_tunnel_key, bpf_skb_set/get_tunnel_opt and bpf_skb_get_xfrm_state, fakekernel
vs the real kernel, through PROG_TEST_RUN of SCHED_CLS programs.

A test-run skb carries no tunnel metadata: each program sets a key (and options) and reads them
back within the run, with the full, the deprecated short and bad sizes and every flag; the
buffers the getters fill (or clear) and every return code are compared.  hypothesis draws the
key bytes, sizes and flags.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JNE, BPF_W, FuncId, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

KEY = "struct bpf_tunnel_key"
KSZ = ffi.sizeof(KEY)                      # 44
KIN, KOUT, OIN, OOUT = -48, -96, -160, -224
OPT = 64
RCS = 5
VAL = 8 * RCS + 48 + OPT
PATTERN = 0x5A5A5A5A
SHORT = [ffi.offsetof(KEY, "local_ipv6"), ffi.offsetof(KEY, "tunnel_label"), ffi.offsetof(KEY, "tunnel_ext"),
         ffi.offsetof(KEY, "remote_ipv6") + 4]
V6, CSUM0, DF, SEQ, NOKEY, FLAGS = 1, 2, 4, 8, 16, 16


def _fill(off, data: bytes, size: int):
    data = data.ljust(size, b"\0")
    return [x for i in range(0, size, 8)
            for x in (*BPF_LD_IMM64(1, int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little")),
                      BPF_STX_MEM(BPF_DW, 10, 1, off + i))]


def _ptr(reg, off):
    return [BPF_MOV64_REG(reg, 10), BPF_ALU64_IMM(BPF_ADD, reg, off)]


def tunnel_prog(mfd, key: bytes, set_size, set_flags, opt: bytes | None, get_size, get_flags, opt_size,
                xfrm=(0, 0)):
    b = [BPF_MOV64_REG(6, 1)]
    b += [BPF_ST_MEM(BPF_DW, 10, off, PATTERN) for off in range(-224, 0, 8)]
    b += _fill(KIN, key, 48)
    rc = 0
    calls_ = []
    if set_size is not None:
        calls_.append([BPF_MOV64_REG(1, 6), *_ptr(2, KIN), BPF_MOV64_IMM(3, set_size), *BPF_LD_IMM64(4, set_flags),
                       BPF_CALL_HELPER(FuncId.skb_set_tunnel_key)])
    if opt is not None:
        b += _fill(OIN, opt, OPT)
        calls_.append([BPF_MOV64_REG(1, 6), *_ptr(2, OIN), BPF_MOV64_IMM(3, len(opt)),
                       BPF_CALL_HELPER(FuncId.skb_set_tunnel_opt)])
    calls_.append([BPF_MOV64_REG(1, 6), *_ptr(2, KOUT), BPF_MOV64_IMM(3, get_size), *BPF_LD_IMM64(4, get_flags),
                   BPF_CALL_HELPER(FuncId.skb_get_tunnel_key)])
    calls_.append([BPF_MOV64_REG(1, 6), *_ptr(2, OOUT), BPF_MOV64_IMM(3, opt_size),
                   BPF_CALL_HELPER(FuncId.skb_get_tunnel_opt)])
    calls_.append([BPF_MOV64_REG(1, 6), *BPF_LD_IMM64(2, xfrm[0]), *_ptr(3, OOUT + 32), BPF_MOV64_IMM(4, 24),
                   *BPF_LD_IMM64(5, xfrm[1]), BPF_CALL_HELPER(FuncId.skb_get_xfrm_state)])
    for c in calls_:
        b += c + [BPF_STX_MEM(BPF_DW, 10, 0, -232 - 8 * rc)]
        rc += 1
    b += [BPF_ST_MEM(BPF_W, 10, -236 - 8 * RCS, 0), *_ptr(2, -236 - 8 * RCS), *BPF_LD_MAP_FD(1, mfd),
          BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    out = 0
    for i in range(rc):
        b += [BPF_LDX_MEM(BPF_DW, 1, 10, -232 - 8 * i), BPF_STX_MEM(BPF_DW, 0, 1, out)]
        out += 8
    out = 8 * RCS
    for off in list(range(KOUT, KOUT + 48, 8)) + list(range(OOUT, OOUT + OPT, 8)):
        b += [BPF_LDX_MEM(BPF_DW, 1, 10, off), BPF_STX_MEM(BPF_DW, 0, 1, out)]
        out += 8
    return b + [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


def run(b, *args):
    mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
    r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(tunnel_prog(mfd, *args)), b"GPL", strict=False,
                        log_level=1, log_size=1 << 16)
    if r.ret < 0:
        b.close(mfd)
        return ("load", r.ret, r.log[-300:])
    t = calls.prog_test_run(b, r.ret, bytes(12) + b"\x08\x00" + bytes(50), strict=False)
    val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
    b.close(r.ret)
    b.close(mfd)
    rcs = [int.from_bytes(val[8 * i:8 * i + 8], "little", signed=True) for i in range(RCS)]
    return (t.ret, t.retval, rcs, val[8 * RCS:8 * RCS + 48].hex(), val[8 * RCS + 48:].hex())


def same(both, *args):
    fake, host = both
    want = run(host, *args)
    assert want[0] != "load", want
    assert run(fake, *args) == want
    return want


def key(tid=0x11223344, r4=0x0A000001, tos=0x12, ttl=64, ext=0, label=0, l4=0xC0A80001, r6=None, l6=None):
    k = ffi.new(KEY + " *")
    k.tunnel_id, k.tunnel_tos, k.tunnel_ttl, k.tunnel_ext, k.tunnel_label = tid, tos, ttl, ext, label
    if r6 is None:
        k.remote_ipv4, k.local_ipv4 = r4, l4
    else:
        ffi.memmove(k.remote_ipv6, r6, 16)
        ffi.memmove(k.local_ipv6, l6, 16)
    return bytes(ffi.buffer(k))


V6KEY = dict(r6=bytes(range(16)), l6=bytes(range(100, 116)), label=0xABCDEF12)


def test_tunnel_key_without_metadata_einval(both):
    same(both, key(), None, 0, None, KSZ, 0, OPT)


@pytest.mark.parametrize("set_flags", [0, CSUM0, DF, SEQ, NOKEY, CSUM0 | DF | SEQ | NOKEY, 32, 1 << 40])
@pytest.mark.parametrize("get_flags", [0, FLAGS, V6, 2])
def test_tunnel_key_ipv4_roundtrip_flags(both, set_flags, get_flags):
    same(both, key(), KSZ, set_flags, None, KSZ, get_flags, OPT)


@pytest.mark.parametrize("get_flags", [V6, V6 | FLAGS, 0])
def test_tunnel_key_ipv6_roundtrip(both, get_flags):
    same(both, key(**V6KEY), KSZ, V6 | DF, None, KSZ, get_flags, OPT)


@pytest.mark.parametrize("size", SHORT + [4, 40, 48])
def test_tunnel_key_short_layouts(both, size):
    same(both, key(), size, 0, None, size, 0, OPT)
    same(both, key(), KSZ, 0, None, size, 0, OPT)
    same(both, key(**V6KEY), KSZ, V6, None, size, V6, OPT)


def test_tunnel_key_zero_size_refused_by_verifier_eacces(both):
    fake, host = both
    want = run(host, key(), 0, 0, None, KSZ, 0, OPT)
    assert want[:2] == ("load", -13)
    assert run(fake, key(), 0, 0, None, KSZ, 0, OPT)[:2] == want[:2]


def test_tunnel_key_label_or_ext_without_ipv6_einval(both):
    same(both, key(label=5), KSZ, 0, None, KSZ, 0, OPT)
    same(both, key(ext=1), KSZ, V6, None, KSZ, V6, OPT)
    same(both, key(label=5), ffi.offsetof(KEY, "tunnel_label"), 0, None, KSZ, 0, OPT)


@pytest.mark.parametrize("opt", [bytes(range(4)), bytes(range(40)), bytes(range(3)), bytes(range(64))])
@pytest.mark.parametrize("opt_size", [4, 8, 40, 64])
def test_tunnel_opt_roundtrip_sizes(both, opt, opt_size):
    same(both, key(), KSZ, 0, opt, KSZ, FLAGS, opt_size)


def test_tunnel_opt_without_key_einval(both):
    same(both, key(), None, 0, bytes(8), KSZ, 0, 8)


@pytest.mark.parametrize("xfrm", [(0, 0), (1, 0), (0, 1)])
def test_skb_get_xfrm_state_no_sec_path_einval(both, xfrm):
    same(both, key(), None, 0, None, KSZ, 0, OPT, xfrm)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=44, max_size=44), st.sampled_from([KSZ] + SHORT), st.integers(0, 31),
       st.sampled_from([KSZ] + SHORT), st.integers(0, 17))
def test_tunnel_key_hypothesis_same_as_kernel(both, raw, set_size, set_flags, get_size, get_flags):
    same(both, raw, set_size, set_flags, None, get_size, get_flags, OPT)
