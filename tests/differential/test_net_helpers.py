"""Networking helpers, fakekernel vs the real kernel, through BPF_PROG_TEST_RUN: the same
program on the same packet gives the same retval, data_out, ctx_out and helper results.

Every program here runs one helper call with constant arguments against a 64-byte stack
buffer pre-filled with a pattern, then copies that buffer and the helper's return value into
an ARRAY map, so both what the helper wrote (or cleared) and what it returned are compared.
hypothesis draws packets, offsets, lengths and flags; a new program is loaded per example.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_JEQ, BPF_JGT, BPF_LSH, BPF_SUB, BPF_W, FuncId,
                      MapType, ProgType)
from uapi.bpf import TestRunFlags as RunFlags
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG,
                       BPF_LD_IMM64,
                       BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM,
                       BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

BUF = 64                         # the stack buffer helpers read from / write into: fp-64
VAL = BUF + 8                    # map value: the buffer, then the helper's r0
PATTERN = 0x5A5A5A5A
SKB = "struct __sk_buff"
XMD = "struct xdp_md"
CB0 = ffi.offsetof(SKB, "cb")
SKB_SIZE = ffi.sizeof(SKB)
XMD_SIZE = ffi.sizeof(XMD)
HYP = settings(max_examples=60, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def pkt(n=64, proto=0x0800, ip_proto=17):
    eth = bytes(6) + bytes(range(7, 13)) + proto.to_bytes(2, "big")
    ip = bytes([0x45, 0, 0, (n - 14) & 0xFF, 0, 0, 0, 0, 64, ip_proto, 0x12, 0x34, 10, 0, 0, 1, 10, 0, 0, 2])
    body = bytes((i * 7 + 3) & 0xFF for i in range(max(0, n - 34)))
    return (eth + ip + body)[:n]


def imm64(reg, v):
    return list(BPF_LD_IMM64(reg, v & (1 << 64) - 1))


def buf_ptr(reg):
    return [BPF_MOV64_REG(reg, 10), BPF_ALU64_IMM(BPF_ADD, reg, -BUF)]


def harness(mfd, call, verdict=None):
    """Fill fp-64.. with PATTERN, run `call` (r6 = ctx), dump the buffer and r0 into map[0];
    return r0 (or `verdict` for types whose return range is fixed)."""
    body = [BPF_MOV64_REG(6, 1)]
    body += [BPF_ST_MEM(BPF_DW, 10, -BUF + 8 * i, PATTERN) for i in range(BUF // 8)]
    body += call
    body += [BPF_MOV64_REG(7, 0), BPF_ST_MEM(BPF_W, 10, -BUF - 4, 0), BPF_MOV64_REG(2, 10),
             BPF_ALU64_IMM(BPF_ADD, 2, -BUF - 4), *BPF_LD_MAP_FD(1, mfd),
             BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 2 * (BUF // 8) + 1)]
    for i in range(BUF // 8):
        body += [BPF_LDX_MEM(BPF_DW, 1, 10, -BUF + 8 * i), BPF_STX_MEM(BPF_DW, 0, 1, 8 * i)]
    body += [BPF_STX_MEM(BPF_DW, 0, 7, BUF), BPF_MOV64_REG(0, 7)]
    return body + ([] if verdict is None else [BPF_MOV64_IMM(0, verdict)]) + [BPF_EXIT_INSN()]


def helper_call(func, *args):
    """r1 = ctx; r2.. = args: ints (64-bit immediates) or "buf" (the stack buffer)."""
    insns = [BPF_MOV64_REG(1, 6)]
    for reg, a in enumerate(args, start=2):
        insns += buf_ptr(reg) if a == "buf" else imm64(reg, a)
    return insns + [BPF_CALL_HELPER(func)]


def plain_call(func, *args):
    """r1.. = args (no ctx): ints or "buf"."""
    insns = []
    for reg, a in enumerate(args, start=1):
        insns += buf_ptr(reg) if a == "buf" else imm64(reg, a)
    return insns + [BPF_CALL_HELPER(func)]


def run(b, prog_type, call, data, *, extra=(), **kw):
    """Load the harnessed program, test-run it; (load result, run result, map value)."""
    mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
    verdict = 1 if prog_type == ProgType.CGROUP_SKB else None
    r = calls.prog_load(b, prog_type, assemble_insns(harness(mfd, list(extra) + call, verdict)), strict=False)
    if r.ret < 0:
        b.close(mfd)
        return ("load", r.ret)
    t = calls.prog_test_run(b, r.ret, data, data_size_out=len(data) + 512, strict=False, **kw)
    val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
    b.close(r.ret)
    b.close(mfd)
    return (t.ret, t.retval, t.data_size_out, t.data_out[:t.data_size_out] if t.ret == 0 else b"",
            t.ctx_out, val[:BUF], int.from_bytes(val[BUF:], "little"))


def same(both, *a, loads=True, **kw):
    fake, host = both
    got, want = run(fake, *a, **kw), run(host, *a, **kw)
    assert got == want
    if loads:
        assert want[0] != "load", f"the real kernel refused the program: {want}"
    return want


def u32s():
    return st.one_of(st.integers(0, 140), st.sampled_from([0x7FFFFFFF, 0x80000000, 0xFFFF, 0x10000,
                                                           0xFFFFFFFF, 0x1_0000_0000]))


packets = st.one_of(st.builds(pkt, st.integers(34, 160), st.sampled_from([0x0800, 0x86DD, 0x0806]),
                              st.sampled_from([6, 17, 1])),
                    st.binary(min_size=14, max_size=120))

# ---------------------------------------------------------------- packet bytes


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB])
@HYP
@given(data=packets, off=u32s(), n=st.integers(1, BUF))
def test_skb_load_bytes(both, ptype, data, off, n):
    same(both, ptype, helper_call(FuncId.skb_load_bytes, off, "buf", n), data)


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.SOCKET_FILTER])
@HYP
@given(data=packets, off=st.one_of(st.integers(0, 130), st.sampled_from([0xFFFF, 0x10000])),
       n=st.integers(1, BUF), hdr=st.sampled_from([0, 1, 2, 0xFFFFFFFF]))
def test_skb_load_bytes_relative(both, ptype, data, off, n, hdr):
    same(both, ptype, helper_call(FuncId.skb_load_bytes_relative, off, "buf", n, hdr), data)


@HYP
@given(data=packets, off=u32s(), n=st.integers(1, BUF),
       flags=st.sampled_from([0, 1, 2, 3, 4, 1 << 32]), complete=st.booleans())
def test_skb_store_bytes(both, data, off, n, flags, complete):
    """Includes BPF_F_RECOMPUTE_CSUM under TEST_SKB_CHECKSUM_COMPLETE: without it a changed
    packet fails the run's skb->csum check (EBADMSG), with it the csum follows."""
    fill = [BPF_ST_MEM(BPF_DW, 10, -BUF + 8 * i, 0x01020304 * (i + 1)) for i in range(BUF // 8)]
    same(both, ProgType.SCHED_CLS, helper_call(FuncId.skb_store_bytes, off, "buf", n, flags), data,
         extra=fill, flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


@HYP
@given(data=packets, n=u32s())
def test_skb_pull_data(both, data, n):
    same(both, ProgType.SCHED_CLS, helper_call(FuncId.skb_pull_data, n), data)


@HYP
@given(data=st.binary(min_size=14, max_size=300), off=u32s(), n=st.integers(1, BUF))
def test_xdp_load_bytes(both, data, off, n):
    same(both, ProgType.XDP, helper_call(FuncId.xdp_load_bytes, off, "buf", n), data)


@HYP
@given(data=st.binary(min_size=14, max_size=300), off=u32s(), n=st.integers(1, BUF))
def test_xdp_store_bytes(both, data, off, n):
    fill = [BPF_ST_MEM(BPF_DW, 10, -BUF + 8 * i, 0x0A0B0C0D * (i + 1)) for i in range(BUF // 8)]
    same(both, ProgType.XDP, helper_call(FuncId.xdp_store_bytes, off, "buf", n), data, extra=fill)


@pytest.mark.parametrize("helper", [FuncId.xdp_load_bytes, FuncId.xdp_store_bytes])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.integers(4096, 9000), off=st.integers(0, 9000), n=st.integers(1, BUF))
def test_xdp_bytes_across_fragments(both, helper, size, off, n):
    data = bytes((i * 13) & 0xFF for i in range(size))
    same(both, ProgType.XDP, helper_call(helper, off, "buf", n), data)


# ---------------------------------------------------------------- checksums

sizes = st.sampled_from([0, 4, 8, 12, 20, 32, 1, 2, 3, 6, 31])


@HYP
@given(fsz=sizes, tsz=sizes, seed=st.integers(0, (1 << 64) - 1),
       words=st.lists(st.integers(0, 0xFFFFFFFF), min_size=16, max_size=16))
def test_csum_diff(both, fsz, tsz, seed, words):
    """from = the buffer's first fsz bytes, to = tsz bytes from its middle."""
    fill = [BPF_ST_MEM(BPF_W, 10, -BUF + 4 * i, w - (1 << 32) * (w >> 31)) for i, w in enumerate(words)]
    call = (buf_ptr(1) + [BPF_MOV64_IMM(2, fsz)] + buf_ptr(3)
            + [BPF_ALU64_IMM(BPF_ADD, 3, BUF // 2), BPF_MOV64_IMM(4, tsz)] + imm64(5, seed)
            + [BPF_CALL_HELPER(FuncId.csum_diff)])
    same(both, ProgType.SCHED_CLS, call, pkt(), extra=fill)


csum_offsets = st.one_of(st.integers(0, 70), st.sampled_from([0x10000, 0xFFFE, 0xFFFFFFFE]))
csum_values = st.one_of(st.integers(0, 0xFFFF), st.integers(0, (1 << 64) - 1), st.just(0))


@HYP
@given(data=packets, off=csum_offsets, frm=csum_values, to=csum_values,
       flags=st.one_of(st.sampled_from([0, 2, 4, 1, 3, 8, 16]), st.integers(0, 0xFF)))
def test_l3_csum_replace(both, data, off, frm, to, flags):
    same(both, ProgType.SCHED_CLS, helper_call(FuncId.l3_csum_replace, off, frm, to, flags), data)


@HYP
@given(data=packets, off=csum_offsets, frm=csum_values, to=csum_values,
       size=st.sampled_from([0, 2, 4, 1]), extra=st.sampled_from([0, 0x10, 0x20, 0x40, 0x80, 0x30, 0x70,
                                                                 0xB0, 0x100]),
       complete=st.booleans())
def test_l4_csum_replace(both, data, off, frm, to, size, extra, complete):
    same(both, ProgType.SCHED_CLS, helper_call(FuncId.l4_csum_replace, off, frm, to, size | extra), data,
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


def test_l4_csum_replace_mangled_zero(both):
    """A UDP checksum of 0 is left alone with MARK_MANGLED_0; a result of 0 becomes 0xffff."""
    udp = pkt(64)[:34] + bytes([0, 1, 0, 2, 0, 30, 0, 0]) + bytes(22)
    for off in (40, 24):
        for flags in (0x20 | 2, 0x20 | 0x40 | 2, 2):
            for frm, to in ((0, 0), (0x1234, 0x1234), (0, 0xFFFF), (0xFFFF, 0)):
                same(both, ProgType.SCHED_CLS, helper_call(FuncId.l4_csum_replace, off, frm, to, flags), udp)


# ---------------------------------------------------------------- hash

def hash_prog(*steps):
    """Run each (helper, arg) in order; cb[0..] = each r0, cb[4] = skb->hash at the end."""
    insns = []
    for i, (func, arg) in enumerate(steps):
        insns += [BPF_MOV64_REG(1, 6)] + ([] if arg is None else imm64(2, arg))
        insns += [BPF_CALL_HELPER(func), BPF_STX_MEM(BPF_W, 6, 0, CB0 + 4 * i)]
    insns += [BPF_LDX_MEM(BPF_W, 1, 6, ffi.offsetof(SKB, "hash")), BPF_STX_MEM(BPF_W, 6, 1, CB0 + 16)]
    return insns + [BPF_MOV64_IMM(0, 0)]


@HYP
@given(v=st.integers(0, (1 << 64) - 1), data=packets)
def test_set_hash_then_get_hash_recalc(both, v, data):
    """Values a program set are reproducible; a recomputed hash is seeded randomly per boot,
    so only its presence is compared (see test_get_hash_recalc_is_stable)."""
    steps = [(FuncId.set_hash, v), (FuncId.get_hash_recalc, None),
             (FuncId.set_hash_invalid, None), (FuncId.set_hash, v ^ 0xFFFF)]
    same(both, ProgType.SCHED_CLS, hash_prog(*steps), data, ctx_in=bytes(SKB_SIZE), ctx_size_out=SKB_SIZE)


def test_get_hash_recalc_is_stable(both):
    """Recomputed twice gives the same non-zero value, as skb->hash; invalidating reads 0."""
    steps = [(FuncId.get_hash_recalc, None), (FuncId.get_hash_recalc, None), (FuncId.set_hash_invalid, None)]
    for b in both:
        for data in (pkt(), pkt(80, 0x86DD), pkt(64, 0x0806)):
            r = run(b, ProgType.SCHED_CLS, hash_prog(*steps), data, ctx_in=bytes(SKB_SIZE), ctx_size_out=SKB_SIZE)
            cb = r[4][CB0:CB0 + 20]
            h1, h2, inv, _, final = (int.from_bytes(cb[i:i + 4], "little") for i in range(0, 20, 4))
            assert r[0] == 0 and h1 == h2 != 0 and inv == 0 and final == 0


# ---------------------------------------------------------------- XDP head / meta / tail

def xdp_steps(*steps):
    """Run the (helper, s32 offset) steps in order; r0 = sum over steps of (r0_i & 0xff) << 8i.
    Each errno fits a byte; data_out / ctx_out show the geometry at the end."""
    insns = [BPF_MOV64_IMM(8, 0)]
    for i, (func, off) in enumerate(steps):
        insns += [BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, off), BPF_CALL_HELPER(func),
                  BPF_ALU64_IMM(BPF_AND, 0, 0xFF), BPF_ALU64_IMM(BPF_LSH, 0, 8 * i),
                  BPF_ALU64_REG(BPF_ADD, 8, 0)]
    return insns + [BPF_MOV64_REG(0, 8)]


xdp_offsets = st.one_of(st.integers(-300, 300), st.sampled_from([-4096, 4096, -0x80000000, 0x7FFFFFFF,
                                                                 -256, -216, -212, 3000, 3700]))
xdp_funcs = st.sampled_from([FuncId.xdp_adjust_head, FuncId.xdp_adjust_meta, FuncId.xdp_adjust_tail])


def xmd(data=0, data_end=0):
    c = ffi.new(XMD + " *")
    c.data, c.data_end = data, data_end
    return bytes(ffi.buffer(c))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(min_size=14, max_size=200), meta=st.sampled_from([0, 4, 8, 32]),
       steps=st.lists(st.tuples(xdp_funcs, xdp_offsets), min_size=1, max_size=4))
def test_xdp_adjust_head_meta_tail(both, data, meta, steps):
    kw = {"ctx_in": xmd(meta, len(data)), "ctx_size_out": XMD_SIZE} if meta else {}
    same(both, ProgType.XDP, xdp_steps(*steps), data, **kw)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.integers(4000, 9000), steps=st.lists(st.tuples(st.just(FuncId.xdp_adjust_tail),
                                                                st.integers(-6000, 4096)), min_size=1, max_size=3))
def test_xdp_adjust_tail_fragments(both, size, steps):
    data = bytes((i * 13) & 0xFF for i in range(size))
    same(both, ProgType.XDP, xdp_steps(*steps) + helper_call(FuncId.xdp_get_buff_len), data)


# ---------------------------------------------------------------- redirect

@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.XDP])
@HYP
@given(ifindex=st.sampled_from([0, 1, 2, 999, 0xFFFFFFFF]),
       flags=st.one_of(st.sampled_from([0, 1, 2, 16, 1 << 16, 1 << 17, 1 << 18, 1 << 32, 1 << 63]),
                       st.integers(0, (1 << 64) - 1)))
def test_redirect_return_values(both, ptype, ifindex, flags):
    same(both, ptype, plain_call(FuncId.redirect, ifindex, flags), pkt())


# ---------------------------------------------------------------- skb geometry

SKB_VIEW = ("len", "protocol", "pkt_type", "vlan_present", "vlan_tci", "vlan_proto", "gso_size",
            "data_end-data", "data-data_meta")


def skb_steps(*steps):
    """Run the (helper, args...) steps in order; r0 = sum of (r0_i & 0xffff) << 16i; then the
    __sk_buff fields the geometry helpers change go into the stack buffer."""
    insns = [BPF_MOV64_IMM(8, 0)]
    for i, (func, *args) in enumerate(steps):
        insns += [BPF_MOV64_REG(1, 6)]
        for reg, a in enumerate(args, start=2):
            insns += imm64(reg, a)
        insns += [BPF_CALL_HELPER(func), BPF_ALU64_IMM(BPF_AND, 0, 0xFFFF), BPF_ALU64_IMM(BPF_LSH, 0, 16 * i),
                  BPF_ALU64_REG(BPF_ADD, 8, 0)]
    for i, f in enumerate(SKB_VIEW):
        if "-" in f:
            hi, lo = f.split("-")
            insns += [BPF_LDX_MEM(BPF_W, 1, 6, ffi.offsetof(SKB, hi)), BPF_LDX_MEM(BPF_W, 2, 6, ffi.offsetof(SKB, lo)),
                      BPF_ALU64_REG(BPF_SUB, 1, 2)]
        else:
            insns += [BPF_LDX_MEM(BPF_W, 1, 6, ffi.offsetof(SKB, f))]
        insns += [BPF_STX_MEM(BPF_W, 10, 1, -BUF + 4 * i)]
    return insns + [BPF_MOV64_REG(0, 8)]


def htons(v):
    return int.from_bytes(v.to_bytes(2, "big"), "little")


def vlan_pkt(n=64, inner=0x0800, tags=(0x8100,)):
    p = pkt(n, inner)
    for t in reversed(tags):
        p = p[:12] + t.to_bytes(2, "big") + (0x0123 + t % 7).to_bytes(2, "big") + p[12:]
    return p


geom_packets = st.one_of(st.builds(pkt, st.integers(34, 120), st.sampled_from([0x0800, 0x86DD, 0x0806])),
                         st.builds(lambda n: pkt(n, 0x86DD)[:14] + bytes([0x60]) + bytes(n), st.integers(40, 100)),
                         st.builds(vlan_pkt, st.integers(34, 80), st.sampled_from([0x0800, 0x86DD]),
                                   st.sampled_from([(0x8100,), (0x88A8, 0x8100), (0x8100, 0x8100)])),
                         st.binary(min_size=14, max_size=60))
any_u64 = st.one_of(st.integers(0, 70), st.sampled_from([0, 1, 1 << 32, 0xFFFFFFFF]))
geom_steps = st.one_of(
    st.tuples(st.just(FuncId.skb_change_proto),
              st.sampled_from([htons(0x0800), htons(0x86DD), 0x0800, htons(0x0806)]), st.sampled_from([0, 0, 1])),
    st.tuples(st.just(FuncId.skb_change_type), st.sampled_from([0, 1, 2, 3, 4, 0xFFFFFFFF])),
    st.tuples(st.just(FuncId.skb_change_tail),
              st.one_of(st.integers(0, 200), st.sampled_from([16064, 16065, 3000, 0xFFFFFFFF])),
              st.sampled_from([0, 0, 1])),
    st.tuples(st.just(FuncId.skb_change_head),
              st.one_of(st.integers(0, 100), st.sampled_from([16064, 0xFFFFFFFF, 500])), st.sampled_from([0, 0, 1])),
    st.tuples(st.just(FuncId.skb_vlan_push),
              st.sampled_from([htons(0x8100), htons(0x88A8), 0x8100, 0]), st.integers(0, 0x1FFFF)),
    st.tuples(st.just(FuncId.skb_vlan_pop)),
    st.tuples(st.just(FuncId.skb_adjust_room),
              st.one_of(st.integers(-60, 60), st.sampled_from([0x1000, -0x1000, 0xFFF, 16000])),
              st.sampled_from([0, 1, 2, 0xFFFFFFFF]),
              st.sampled_from([0, 0, 1, 2, 4, 6, 8, 2 | 8, 2 | 16, 8 | 16, 32, 64, 2 | 64, (14 << 56) | 2 | 64,
                               (20 << 56) | 2 | 64, 128, 256, 384, 128 | 32, 1 << 40, 2 | (4 << 56)])),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=geom_packets, steps=st.lists(geom_steps, min_size=1, max_size=4), complete=st.booleans(),
       gso=st.sampled_from([0, 0, 0, 1400]))
def test_skb_geometry_helpers(both, data, steps, complete, gso):
    """change_proto/type/tail/head, adjust_room, vlan_push/pop in sequence: data_out, the
    __sk_buff view (len, protocol, vlan, gso_size, data span), each step's return value."""
    ctx = ffi.new(SKB + " *")
    ctx.gso_size = gso
    same(both, ProgType.SCHED_CLS, skb_steps(*steps), data, ctx_in=bytes(ffi.buffer(ctx)), ctx_size_out=SKB_SIZE,
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


adjust_flags = st.sampled_from([0, 0, 0, 1, 2, 4, 2 | 8, 2 | 16, 4 | 16, 2 | 64 | (14 << 56), 2 | 64 | (20 << 56),
                                32, 128, 256, 128 | 32, 2 | 4, 8 | 16 | 2, 64])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.one_of(st.builds(pkt, st.integers(34, 140)), st.builds(lambda n: pkt(n, 0x86DD), st.integers(54, 140))),
       steps=st.lists(st.tuples(st.just(FuncId.skb_adjust_room), st.integers(-70, 70), st.sampled_from([0, 1]),
                                adjust_flags), min_size=1, max_size=3),
       complete=st.booleans())
def test_skb_adjust_room_on_ip_packets(both, data, steps, complete):
    same(both, ProgType.SCHED_CLS, skb_steps(*steps), data, ctx_in=bytes(SKB_SIZE), ctx_size_out=SKB_SIZE,
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.SCHED_ACT])
@pytest.mark.parametrize("gso", [0, 1400])
@pytest.mark.parametrize("ifindex,flags", [(1, 0), (1, 1), (999, 0), (0, 0), (1, 2), (1, 1 << 16), (1, 16),
                                           (1, 1 << 32), (0xFFFFFFFF, 1)])
def test_clone_redirect_return_values(both, ptype, gso, ifindex, flags):
    ctx = ffi.new(SKB + " *")
    ctx.gso_size = gso
    same(both, ptype, helper_call(FuncId.clone_redirect, ifindex, flags), pkt(), ctx_in=bytes(ffi.buffer(ctx)))


@pytest.mark.parametrize("func,args", [(FuncId.skb_store_bytes, (0, "buf", 4, 0)), (FuncId.skb_pull_data, (0,)),
                                       (FuncId.l3_csum_replace, (24, 0, 0, 2)), (FuncId.skb_vlan_pop, ()),
                                       (FuncId.skb_change_tail, (60, 0)), (FuncId.skb_load_bytes, (0, "buf", 4)),
                                       (FuncId.csum_diff, None)])
def test_packet_pointers_after_helper_calls(both, func, args):
    """A packet pointer checked before a call that may move the data is unusable after it
    (bpf_helper_changes_pkt_data): the same programs load, or fail to load, on both kernels."""
    pre = [BPF_LDX_MEM(BPF_W, 7, 6, ffi.offsetof(SKB, "data")), BPF_LDX_MEM(BPF_W, 8, 6, ffi.offsetof(SKB, "data_end")),
           BPF_MOV64_IMM(0, 0), BPF_MOV64_REG(2, 7), BPF_ALU64_IMM(BPF_ADD, 2, 8), BPF_JMP_REG(BPF_JGT, 2, 8, 0)]
    call = plain_call(FuncId.csum_diff, 0, 0, 0, 0, 0) if args is None else helper_call(func, *args)
    post = [BPF_LDX_MEM(BPF_B, 1, 7, 0)]
    n = len(call) + len(post)
    pre[-1] = BPF_JMP_REG(BPF_JGT, 2, 8, n)
    results = [run(b, ProgType.SCHED_CLS, call + post, pkt(), extra=pre) for b in both]
    assert results[0] == results[1]
    assert (results[1][0] == "load") == (args is not None and func != FuncId.skb_load_bytes)


# ---------------------------------------------------------------- checksum state, ECN, metadata

csum_level_steps = st.one_of(st.tuples(st.just(FuncId.csum_level), st.sampled_from([0, 1, 2, 3, 4, 1 << 32])),
                             st.tuples(st.just(FuncId.csum_update), st.integers(0, (1 << 64) - 1)),
                             st.tuples(st.just(FuncId.skb_adjust_room), st.sampled_from([4, -4]), st.just(0),
                                       st.sampled_from([0, 32])))


@HYP
@given(steps=st.lists(csum_level_steps, min_size=1, max_size=4), complete=st.booleans())
def test_csum_level_and_csum_update(both, steps, complete):
    """Each step's r0 (16 bits of it) and a final BPF_CSUM_LEVEL_QUERY."""
    same(both, ProgType.SCHED_CLS, skb_steps(*steps) + helper_call(FuncId.csum_level, 0), pkt(),
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


@HYP
@given(v=st.integers(0, (1 << 64) - 1), complete=st.booleans())
def test_csum_update_return_value(both, v, complete):
    same(both, ProgType.SCHED_CLS, helper_call(FuncId.csum_update, v), pkt(),
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


def ecn_pkt(tos, check, v6, n=60):
    if v6:
        p = pkt(n, 0x86DD)
        return p[:14] + bytes([0x60 | tos >> 4, (tos & 0xF) << 4]) + p[16:]
    p = pkt(n)
    return p[:15] + bytes([tos]) + p[16:24] + check.to_bytes(2, "big") + p[26:]


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.CGROUP_SKB])
@HYP
@given(tos=st.integers(0, 255), check=st.integers(0, 0xFFFF), v6=st.booleans(), complete=st.booleans(),
       n=st.sampled_from([60, 33, 53]))
def test_skb_ecn_set_ce(both, ptype, tos, check, v6, complete, n):
    same(both, ptype, helper_call(FuncId.skb_ecn_set_ce), ecn_pkt(tos, check, v6, n),
         flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE if complete else 0)


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB])
@pytest.mark.parametrize("func", [FuncId.get_route_realm, FuncId.get_cgroup_classid, FuncId.skb_cgroup_classid,
                                  FuncId.get_socket_uid, FuncId.skb_cgroup_id])
def test_skb_metadata_helpers(both, ptype, func):
    for data in (pkt(), pkt(80, 0x86DD), pkt(64, 0x0806)):
        same(both, ptype, helper_call(func), data, loads=False)


@pytest.mark.parametrize("ptype", [ProgType.SCHED_CLS, ProgType.XDP])
@pytest.mark.parametrize("func,args", [
    (FuncId.redirect_peer, (1, 0)), (FuncId.redirect_peer, (1, 1)), (FuncId.redirect_peer, (7, 1 << 40)),
    (FuncId.redirect_neigh, (1, 0, 0, 0)), (FuncId.redirect_neigh, (1, 0, 0, 1)),
    (FuncId.redirect_neigh, (1, "buf", 20, 0)), (FuncId.redirect_neigh, (1, "buf", 8, 0)),
    (FuncId.redirect_neigh, (1, "buf", 32, 0)), (FuncId.redirect_neigh, (2, "buf", 20, 4))])
def test_redirect_peer_and_neigh_return_values(both, ptype, func, args):
    same(both, ptype, plain_call(func, *args), pkt(), loads=ptype == ProgType.SCHED_CLS)


@HYP
@given(data=st.sampled_from([pkt(), pkt(80, 0x86DD), pkt(64, 0x0806)]),
       tstamp=st.sampled_from([0, 1, 12345678901234, (1 << 64) - 1]), ttype=st.sampled_from([0, 1, 2, 3, 1 << 32]),
       pre=st.sampled_from([0, 777]))
def test_skb_set_tstamp(both, data, tstamp, ttype, pre):
    """The program's own earlier write of skb->tstamp and the helper's value, through ctx_out."""
    write = [*imm64(1, pre), BPF_STX_MEM(BPF_DW, 6, 1, ffi.offsetof(SKB, "tstamp"))] if pre else []
    call = helper_call(FuncId.skb_set_tstamp, tstamp, ttype)
    view = [BPF_MOV64_REG(7, 0), BPF_LDX_MEM(BPF_B, 1, 6, ffi.offsetof(SKB, "tstamp_type")),
            BPF_STX_MEM(BPF_W, 6, 1, CB0), BPF_MOV64_REG(0, 7)]
    same(both, ProgType.SCHED_CLS, write + call + view, data, ctx_in=bytes(SKB_SIZE), ctx_size_out=SKB_SIZE)
