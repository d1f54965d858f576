"""BPF_PROG_TYPE_LWT_IN / LWT_OUT / LWT_XMIT / LWT_SEG6LOCAL, fakekernel vs the real kernel:
the __sk_buff access matrix (every field offset x size x read/write, verdict and log), the
helper sets, direct packet writes, and PROG_TEST_RUN (no Ethernet header for the program,
data_out with a zeroed one, ctx_in/ctx_out, checksum-complete, bpf_lwt_push_encap with IP
headers on LWT_IN and LWT_XMIT byte for byte; LWT_SEG6LOCAL cannot be test-run)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_B, BPF_DW, BPF_H, BPF_JGT, BPF_RSH, BPF_W, AttachType, BpfCmd, FuncId,
                      LwtEncapMode, ProgType,
                      TestRunFlags as RunFlags)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_REG, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns, s32)
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

LWT = (ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT, ProgType.LWT_SEG6LOCAL)
RUNNABLE = LWT[:3]
SKB = "struct __sk_buff"
SKB_SIZE = ffi.sizeof(SKB)
DATA, DATA_END, MARK, PROTOCOL, LEN = (ffi.offsetof(SKB, f) for f in ("data", "data_end", "mark",
                                                                       "protocol", "len"))
CB0, CB1, CB2 = (ffi.offsetof(SKB, "cb", i) for i in range(3))


def load(b, ptype, insns, lic=b"GPL", eat=0):
    return calls.prog_load(b, ptype, assemble_insns(insns), lic, log_level=1, log_size=1 << 16, strict=False,
                           expected_attach_type=eat)


def loaded(b, ptype, insns):
    r = load(b, ptype, insns)
    assert r.ret >= 0, r.log
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def verdict(b, ptype, insns, eat=0):
    r = load(b, ptype, insns, eat=eat)
    if r.ret >= 0:
        b.close(r.ret)
    return (r.ret >= 0 or r.ret, error_lines(r.log))


# ---------------------------------------------------------------- loading

SIZES = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}


def access_matrix(b, ptype, ctx_size=SKB_SIZE, eat=0):
    """Every 2-byte-aligned ctx offset up to one past the end (4-byte-aligned ones for the wide
    sizes) x size x load / store-imm / store-reg: verdict and error lines."""
    out = {}
    for off in range(0, ctx_size + 4, 2):
        for size, code in SIZES.items():
            if off % 4 and size > 2:
                continue
            out[(off, size, "ldx")] = verdict(b, ptype, [BPF_LDX_MEM(code, 0, 1, off)] + ret(0), eat)
            out[(off, size, "st")] = verdict(b, ptype, [BPF_ST_MEM(code, 1, off, 7)] + ret(0), eat)
            out[(off, size, "stx")] = verdict(b, ptype, [BPF_MOV64_IMM(2, 7), BPF_STX_MEM(code, 1, 2, off)]
                                              + ret(0), eat)
    return out


@pytest.mark.parametrize("ptype", LWT, ids=[t.name for t in LWT])
def test_lwt_ctx_access_matrix_matches_kernel(both, ptype):
    fake, host = both
    f, h = access_matrix(fake, ptype), access_matrix(host, ptype)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


@pytest.mark.parametrize("ptype", LWT, ids=[t.name for t in LWT])
def test_lwt_helper_set_matches_kernel(both, ptype):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, ptype, 0), _helper_verdicts(host, ptype, 0)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


PKT_WRITE = [BPF_LDX_MEM(BPF_W, 2, 1, DATA), BPF_LDX_MEM(BPF_W, 3, 1, DATA_END), BPF_MOV64_REG(4, 2),
             BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_JMP_REG(BPF_JGT, 4, 3, 1), BPF_ST_MEM(BPF_B, 2, 0, 0x5A)] + ret(0)
PKT_READ = [BPF_LDX_MEM(BPF_W, 2, 1, DATA), BPF_LDX_MEM(BPF_W, 3, 1, DATA_END), BPF_MOV64_REG(4, 2),
            BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_JMP_REG(BPF_JGT, 4, 3, 2), BPF_LDX_MEM(BPF_B, 0, 2, 0),
            BPF_EXIT_INSN()] + ret(0)


@pytest.mark.parametrize("name", ["write", "read"])
@pytest.mark.parametrize("ptype", LWT, ids=[t.name for t in LWT])
def test_lwt_direct_packet_access_only_xmit_writes(both, ptype, name):
    fake, host = both
    insns = PKT_WRITE if name == "write" else PKT_READ
    assert verdict(fake, ptype, insns) == verdict(host, ptype, insns)


# ---------------------------------------------------------------- PROG_TEST_RUN

def ip4(n=60, proto=17, check=0):
    eth = bytes(6) + bytes(range(1, 7)) + b"\x08\x00"
    ip = bytes([0x45, 0, 0, n - 14, 0, 0, 0, 0, 64, proto]) + check.to_bytes(2, "big") + \
        bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return (eth + ip + b"\x12\x34\x56\x78" + bytes(range(n)))[:n]


def ip6(n=80, nexthdr=17):
    eth = bytes(6) + bytes(range(1, 7)) + b"\x86\xdd"
    ip = bytes([0x60, 0, 0, 0]) + (n - 54).to_bytes(2, "big") + bytes([nexthdr, 64]) + \
        bytes(15) + b"\1" + bytes(15) + b"\2"
    return (eth + ip + bytes(range(n)))[:n]


def tr(b, fd, data=None, **kw):
    r = calls.prog_test_run(b, fd, data, strict=False, **kw)
    if r.ret == 0:
        assert 0 <= r.duration < 2**32
    return (r.ret, r.retval, r.data_size_out, r.data_out, r.ctx_size_out, r.ctx_out)


def skb_ctx(**fields):
    c = ffi.new(SKB + " *")
    for k, v in fields.items():
        if k == "cb":
            for i, x in enumerate(v):
                c.cb[i] = x
        else:
            setattr(c, k, v)
    return bytes(ffi.buffer(c))


# first byte, len, protocol into cb; mark += 1; returns the first packet byte (or 99 if none)
PEEK = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_W, 2, 6, LEN), BPF_STX_MEM(BPF_W, 6, 2, CB0),
        BPF_LDX_MEM(BPF_W, 2, 6, PROTOCOL), BPF_STX_MEM(BPF_W, 6, 2, CB1),
        BPF_LDX_MEM(BPF_W, 2, 6, MARK), BPF_ALU64_IMM(BPF_ADD, 2, 1), BPF_STX_MEM(BPF_W, 6, 2, MARK),
        BPF_LDX_MEM(BPF_W, 2, 6, DATA), BPF_LDX_MEM(BPF_W, 3, 6, DATA_END), BPF_MOV64_REG(4, 2),
        BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_JMP_REG(BPF_JGT, 4, 3, 2), BPF_LDX_MEM(BPF_B, 0, 2, 0),
        BPF_EXIT_INSN()] + ret(99)
LOAD_BYTES = [BPF_MOV64_IMM(2, 0), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8),
              BPF_MOV64_IMM(4, 4), BPF_CALL_HELPER(FuncId.skb_load_bytes), BPF_EXIT_INSN()]


def scenario_test_run(b, ptype):
    p = loaded(b, ptype, PEEK)
    lb = loaded(b, ptype, LOAD_BYTES)
    w = loaded(b, ptype, PKT_WRITE) if ptype == ProgType.LWT_XMIT else None
    arp = ip4()[:12] + b"\x08\x06" + ip4()[14:]
    out = [tr(b, p, ip4(), data_size_out=100), tr(b, p, ip6(), data_size_out=100),
           tr(b, p, arp, data_size_out=100), tr(b, p, ip4(14), data_size_out=100),
           tr(b, p, ip4(), data_size_out=8), tr(b, p, ip4()), tr(b, p, ip4(), repeat=3, data_size_out=100),
           tr(b, p, ip4(), data_size_out=100, ctx_in=skb_ctx(mark=7, priority=3, cb=[1, 2, 3, 4, 5]),
              ctx_size_out=SKB_SIZE),
           tr(b, p, ip4(), ctx_in=skb_ctx(mark=1, tstamp=5, wire_len=100), ctx_size_out=SKB_SIZE),
           tr(b, p, ip4(), ctx_in=skb_ctx(len=1)), tr(b, p, ip4(), ctx_in=skb_ctx(ifindex=1),
                                                     ctx_size_out=SKB_SIZE),
           tr(b, p, ip4(), ctx_in=skb_ctx(ifindex=999)), tr(b, p, ip4(), ctx_size_out=8),
           tr(b, p, ip4(), flags=int(RunFlags.TEST_SKB_CHECKSUM_COMPLETE), data_size_out=100),
           tr(b, lb, ip4()), tr(b, lb, ip4(14)),
           tr(b, p, ip4()[:13]), tr(b, p), tr(b, p, ip4(), flags=4), tr(b, p, ip4(), cpu=1),
           tr(b, p, ip4(), batch_size=1), tr(b, p, bytes(4096)), tr(b, p, ip4(16))]
    if w is not None:
        out.append(tr(b, w, ip4(), data_size_out=100))
        b.close(w)
    b.close(p)
    b.close(lb)
    return out


@pytest.mark.parametrize("ptype", RUNNABLE, ids=[t.name for t in RUNNABLE])
def test_lwt_test_run(both, ptype):
    fake, host = both
    assert scenario_test_run(fake, ptype) == scenario_test_run(host, ptype)


def test_lwt_seg6local_test_run_enotsupp(both):
    def scenario(b):
        fd = loaded(b, ProgType.LWT_SEG6LOCAL, ret(0))
        out = tr(b, fd, ip6(), data_size_out=100)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
    assert scenario(fake)[0] == -Errno.ENOTSUPP


# ---------------------------------------------------------------- bpf_lwt_push_encap

def push_encap(hdr: bytes, mode=LwtEncapMode.IP, length=None):
    """Copy hdr to the stack, lwt_push_encap(ctx, mode, hdr, length); the helper's result in cb[0],
    then protocol in cb[1] and len in cb[2]; returns the helper's result."""
    room = max(8, -(-len(hdr) // 8) * 8)
    padded = hdr + bytes(room - len(hdr))
    insns = [BPF_MOV64_REG(6, 1)]
    for i in range(0, room, 4):
        insns.append(BPF_ST_MEM(BPF_W, 10, -room + i, s32(int.from_bytes(padded[i:i + 4], "little"))))
    insns += [BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, int(mode)), BPF_MOV64_REG(3, 10),
              BPF_ALU64_IMM(BPF_ADD, 3, -room), BPF_MOV64_IMM(4, len(hdr) if length is None else length),
              BPF_CALL_HELPER(FuncId.lwt_push_encap), BPF_STX_MEM(BPF_W, 6, 0, CB0),
              BPF_LDX_MEM(BPF_W, 2, 6, PROTOCOL), BPF_STX_MEM(BPF_W, 6, 2, CB1),
              BPF_LDX_MEM(BPF_W, 2, 6, LEN), BPF_STX_MEM(BPF_W, 6, 2, CB2), BPF_EXIT_INSN()]
    return insns


OUTER4 = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2])
OUTER4_CHECKED = OUTER4[:10] + b"\xab\xcd" + OUTER4[12:]
OUTER4_OPTS = bytes([0x46]) + OUTER4[1:] + b"\1\1\1\0"
OUTER4_UDP = OUTER4[:9] + b"\x11" + OUTER4[10:] + b"\x12\x34\x17\xc1\x00\x00\x00\x00"
OUTER6 = bytes([0x60, 0, 0, 0, 0, 0, 41, 64]) + bytes(15) + b"\3" + bytes(15) + b"\4"
OUTER6_UDP = OUTER6[:6] + b"\x11" + OUTER6[7:] + b"\x12\x34\x17\xc1\x00\x00\x00\x00"
ENCAPS = {
    "ipv4": (OUTER4, LwtEncapMode.IP, None), "ipv4_checked": (OUTER4_CHECKED, LwtEncapMode.IP, None),
    "ipv4_options": (OUTER4_OPTS, LwtEncapMode.IP, None), "ipv4_udp": (OUTER4_UDP, LwtEncapMode.IP, None),
    "ipv4_udp_short": (OUTER4_UDP[:24], LwtEncapMode.IP, None),
    "ipv4_ihl_past_len": (OUTER4_OPTS[:20], LwtEncapMode.IP, None),
    "ipv6": (OUTER6, LwtEncapMode.IP, None), "ipv6_udp": (OUTER6_UDP, LwtEncapMode.IP, None),
    "ipv6_short": (OUTER6[:36], LwtEncapMode.IP, None), "ipv6_udp_short": (OUTER6_UDP[:44], LwtEncapMode.IP, None),
    "version5": (bytes([0x55]) + OUTER4[1:], LwtEncapMode.IP, None),
    "too_short": (OUTER4[:16], LwtEncapMode.IP, None), "too_long": (OUTER4 + bytes(240), LwtEncapMode.IP, None),
    "max_headroom": (OUTER6 + bytes(216), LwtEncapMode.IP, None),
    "mode_3": (OUTER4, 3, None), "seg6_on_xmit_or_bad_srh": (bytes(8), LwtEncapMode.SEG6, None),
}


def scenario_push_encap(b, ptype, name, flags=0, ctx_in=None):
    hdr, mode, length = ENCAPS[name]
    if mode != LwtEncapMode.IP and ptype == ProgType.LWT_IN:
        return None     # LWT_IN's SEG6 encapsulations need the segment-routing model
    fd = loaded(b, ptype, push_encap(hdr, mode, length))
    out = [tr(b, fd, ip4(), data_size_out=400, ctx_size_out=SKB_SIZE, flags=flags, ctx_in=ctx_in),
           tr(b, fd, ip6(), data_size_out=400, ctx_size_out=SKB_SIZE, flags=flags, ctx_in=ctx_in)]
    b.close(fd)
    return out


@pytest.mark.parametrize("name", sorted(ENCAPS))
@pytest.mark.parametrize("ptype", [ProgType.LWT_IN, ProgType.LWT_XMIT], ids=["LWT_IN", "LWT_XMIT"])
def test_lwt_push_encap_ip(both, ptype, name):
    fake, host = both
    assert scenario_push_encap(fake, ptype, name) == scenario_push_encap(host, ptype, name)


@pytest.mark.parametrize("ptype", [ProgType.LWT_IN, ProgType.LWT_XMIT], ids=["LWT_IN", "LWT_XMIT"])
def test_lwt_push_encap_checksum_complete(both, ptype):
    """LWT_IN adds the outer header to CHECKSUM_COMPLETE (then fills iph->check: EBADMSG unless
    the header came with a checksum); LWT_XMIT does not update it at all."""
    fake, host = both
    flags = int(RunFlags.TEST_SKB_CHECKSUM_COMPLETE)
    for name in ("ipv4", "ipv4_checked", "ipv6"):
        assert scenario_push_encap(fake, ptype, name, flags) == scenario_push_encap(host, ptype, name, flags)


@pytest.mark.parametrize("ptype", [ProgType.LWT_IN, ProgType.LWT_XMIT], ids=["LWT_IN", "LWT_XMIT"])
def test_lwt_push_encap_on_gso_skb_enotsupp(both, ptype):
    """A ctx_in gso_size makes the skb GSO without a TCP gso_type: the header goes on, then -ENOTSUPP."""
    fake, host = both
    ctx = skb_ctx(gso_size=1000, gso_segs=2)
    out = scenario_push_encap(fake, ptype, "ipv4", 0, ctx)
    assert out == scenario_push_encap(host, ptype, "ipv4", 0, ctx)


def test_lwt_push_encap_not_for_lwt_out(both):
    fake, host = both
    insns = push_encap(OUTER4)
    assert verdict(fake, ProgType.LWT_OUT, insns) == verdict(host, ProgType.LWT_OUT, insns)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hdr=st.one_of(st.binary(min_size=20, max_size=64),
                     st.builds(lambda o, tail: o + tail, st.sampled_from([OUTER4, OUTER6, OUTER4_UDP, OUTER6_UDP]),
                               st.binary(max_size=16))),
       ptype=st.sampled_from([ProgType.LWT_IN, ProgType.LWT_XMIT]), v6=st.booleans())
def test_lwt_push_encap_random_headers_same_on_both(both, hdr, ptype, v6):
    def scenario(b):
        fd = loaded(b, ptype, push_encap(hdr))
        out = tr(b, fd, ip6() if v6 else ip4(), data_size_out=400, ctx_size_out=SKB_SIZE)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- helpers in a test run

def call(func, *setup):
    """r6 = ctx; setup (r1 = ctx unless set); call; cb[0] = r0 (low 32 bits), cb[1] = r0 >> 32;
    return 0."""
    return ([BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_DW, 10, -8, 0), BPF_ST_MEM(BPF_DW, 10, -16, 0),
             BPF_ST_MEM(BPF_DW, 10, -24, 0), BPF_ST_MEM(BPF_DW, 10, -32, 0), BPF_ST_MEM(BPF_DW, 10, -40, 0),
             BPF_ST_MEM(BPF_DW, 10, -48, 0), BPF_MOV64_REG(1, 6)] + list(setup)
            + [BPF_CALL_HELPER(func), BPF_STX_MEM(BPF_W, 6, 0, CB0), BPF_ALU64_IMM(BPF_RSH, 0, 32),
               BPF_STX_MEM(BPF_W, 6, 0, CB1)] + ret(0))


STACK = [BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -48)]
HELPER_RUNS = {
    "get_route_realm": (RUNNABLE, call(FuncId.get_route_realm)),
    "get_cgroup_classid": (RUNNABLE, call(FuncId.get_cgroup_classid)),
    "pull_data": (RUNNABLE, call(FuncId.skb_pull_data, BPF_MOV64_IMM(2, 30))),
    "pull_data_too_much": (RUNNABLE, call(FuncId.skb_pull_data, BPF_MOV64_IMM(2, 3000))),
    "csum_diff": (RUNNABLE, call(FuncId.csum_diff, BPF_MOV64_IMM(1, 0), BPF_MOV64_IMM(2, 0),
                                 BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8), BPF_MOV64_IMM(4, 8),
                                 BPF_MOV64_IMM(5, 0x1234))),
    "tunnel_key": ([ProgType.LWT_XMIT], call(FuncId.skb_get_tunnel_key, BPF_MOV64_REG(2, 10),
                                             BPF_ALU64_IMM(BPF_ADD, 2, -48), BPF_MOV64_IMM(3, 44),
                                             BPF_MOV64_IMM(4, 0))),
    "tunnel_opt": ([ProgType.LWT_XMIT], call(FuncId.skb_get_tunnel_opt, BPF_MOV64_REG(2, 10),
                                             BPF_ALU64_IMM(BPF_ADD, 2, -48), BPF_MOV64_IMM(3, 48))),
    "change_head": ([ProgType.LWT_XMIT], call(FuncId.skb_change_head, BPF_MOV64_IMM(2, 14), BPF_MOV64_IMM(3, 0))),
    "change_tail": ([ProgType.LWT_XMIT], call(FuncId.skb_change_tail, BPF_MOV64_IMM(2, 80), BPF_MOV64_IMM(3, 0))),
    "store_bytes": ([ProgType.LWT_XMIT], call(FuncId.skb_store_bytes, BPF_MOV64_IMM(2, 2), *STACK,
                                              BPF_MOV64_IMM(4, 4), BPF_MOV64_IMM(5, 0))),
    "l3_csum_replace": ([ProgType.LWT_XMIT], call(FuncId.l3_csum_replace, BPF_MOV64_IMM(2, 10),
                                                  BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 0x0102),
                                                  BPF_MOV64_IMM(5, 2))),
    "redirect": ([ProgType.LWT_XMIT], call(FuncId.redirect, BPF_MOV64_IMM(1, 1), BPF_MOV64_IMM(2, 0))),
    "clone_redirect": ([ProgType.LWT_XMIT], call(FuncId.clone_redirect, BPF_MOV64_IMM(2, 1), BPF_MOV64_IMM(3, 0))),
    "set_hash_invalid": ([ProgType.LWT_XMIT], call(FuncId.set_hash_invalid)),
    "csum_level": ([ProgType.LWT_XMIT], call(FuncId.csum_level, BPF_MOV64_IMM(2, 3))),
}
_HELPER_CASES = [(t, n) for n, (types, _) in sorted(HELPER_RUNS.items()) for t in types]


@pytest.mark.parametrize("ptype,name", _HELPER_CASES, ids=[f"{t.name}-{n}" for t, n in _HELPER_CASES])
def test_lwt_helpers_in_test_run(both, ptype, name):
    def scenario(b):
        fd = loaded(b, ptype, HELPER_RUNS[name][1])
        out = [tr(b, fd, ip4(), data_size_out=200, ctx_size_out=SKB_SIZE),
               tr(b, fd, ip6(), data_size_out=200, ctx_size_out=SKB_SIZE)]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("ptype", RUNNABLE, ids=[t.name for t in RUNNABLE])
def test_lwt_get_hash_recalc_nonzero_and_stable_per_flow(both, ptype):
    """The flow hash is keyed with a boot-time secret: only its shape is comparable."""
    def scenario(b):
        fd = loaded(b, ptype, call(FuncId.get_hash_recalc))
        hashes = [tr(b, fd, pkt, ctx_size_out=SKB_SIZE)[5][CB0:CB0 + 4] for pkt in (ip4(), ip4(), ip6())]
        b.close(fd)
        return [h != bytes(4) for h in hashes], hashes[0] == hashes[1], hashes[0] == hashes[2]
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- attach commands

_ATTACH_TYPES = [(ProgType.LWT_IN, 0), (ProgType.LWT_OUT, 0), (ProgType.LWT_XMIT, 0), (ProgType.LWT_SEG6LOCAL, 0),
                 (ProgType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT),
                 (ProgType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE),
                 (ProgType.PERF_EVENT, 0)]


@pytest.mark.parametrize("ptype,eat", _ATTACH_TYPES, ids=[f"{t.name}-{e}" for t, e in _ATTACH_TYPES])
def test_attach_commands_refuse_these_types(both, ptype, eat):
    """LWT, SK_REUSEPORT and PERF_EVENT programs attach through a route, a socket option or a perf
    event: PROG_ATTACH / LINK_CREATE errnos for their own attach type and a few others (the
    target fd is the program's own fd: neither a cgroup, a netns nor a perf event)."""
    def scenario(b):
        from uapi.calls import raw
        fd = loaded_eat(b, ptype, eat)
        out = []
        for at in dict.fromkeys([eat, AttachType.PERF_EVENT, AttachType.CGROUP_INET_INGRESS, AttachType.SK_LOOKUP]):
            out.append(raw(b, BpfCmd.PROG_ATTACH, "replace_bpf_fd", target_fd=fd, attach_bpf_fd=fd,
                           attach_type=at)[0])
            out.append(raw(b, BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=fd,
                           link_create__target_fd=fd, link_create__attach_type=at)[0])
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def loaded_eat(b, ptype, eat):
    r = load(b, ptype, ret(1), eat=eat)
    assert r.ret >= 0, r.log
    return r.ret
