"""BPF_PROG_TEST_RUN, fakekernel vs the real kernel: SOCKET_FILTER, SCHED_CLS, SCHED_ACT,
CGROUP_SKB and XDP programs — results, every __sk_buff / xdp_md field a program reads,
ctx_in / ctx_out, data_out, and each failure path (sizes, flags, ctx checks, user pointers).

Programs are loaded with PROG_LOAD on both kernels.  Until a prog type is registered in the
fake (fakekernel/bpf_types.PROG_TYPES) its tests skip; nothing here is fake-only.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakekernel import bpf_types
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_B, BPF_DW, BPF_H, BPF_JEQ, BPF_JGT, BPF_RSH, BPF_SUB, BPF_W, AttachType,
                      BpfCmd, MapType, ProgType, XdpAction)
from uapi.bpf import TestRunFlags as RunFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_EXIT_INSN, BPF_JMP_IMM,
                       BPF_JMP_REG, BPF_LD_ABS, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG,
                       BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

SKB = "struct __sk_buff"
XMD = "struct xdp_md"
SOCK = "struct bpf_sock"
SKB_SIZE = ffi.sizeof(SKB)
XMD_SIZE = ffi.sizeof(XMD)
SKF_LL_OFF = -0x200000
TC_ACT_SHOT = 2
BAD_PTR = 8                  # an address nothing is mapped at
SKB_TYPES = {"sf": ProgType.SOCKET_FILTER, "cls": ProgType.SCHED_CLS, "act": ProgType.SCHED_ACT,
             "cg": ProgType.CGROUP_SKB}


def O(f):
    return ffi.offsetof(SKB, f)


def X(f):
    return ffi.offsetof(XMD, f)


CB0 = O("cb")


def need(*types):
    missing = [t for t in types if t not in bpf_types.PROG_TYPES]
    if missing:
        pytest.skip(f"prog types not registered in the fake yet: {missing}")


def load(b, prog_type, insns, eat=0):
    r = calls.prog_load(b, prog_type, assemble_insns(insns), expected_attach_type=eat, strict=False)
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def pkt(n=64, proto=0x0800, dst=bytes(6)):
    eth = dst + bytes(range(7, 13)) + proto.to_bytes(2, "big")
    ip = bytes([0x45, 0, 0, (n - 14) & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    body = bytes((i * 7) & 0xFF for i in range(max(0, n - 34)))
    return (eth + ip + body)[:n]


def ip6pkt(n=80):
    p = pkt(n, 0x86DD)
    return p[:14] + bytes([0x60, 0, 0, 0, 0, n - 54, 17, 64]) + bytes(range(0x10, 0x30)) + p[54:]


PACKETS = {"ip4": pkt(), "ip6": ip6pkt(), "arp": pkt(64, 0x0806), "bcast": pkt(dst=b"\xff" * 6),
           "mcast": pkt(dst=b"\x01\0\x5e\0\0\1"), "other": pkt(dst=b"\x02\0\0\0\0\1"),
           "8023": pkt(64, 0x40)[:14] + b"\xff\xff" + bytes(48),
           "8022": pkt(64, 0x40)[:14] + b"\xaa\xaa" + bytes(48)}


def skb_ctx(**fields) -> bytes:
    c = ffi.new(SKB + " *")
    for k, v in fields.items():
        if k == "cb":
            for i, x in enumerate(v):
                c.cb[i] = x
        else:
            setattr(c, k, v)
    return bytes(ffi.buffer(c))


def xdp_md(**fields) -> bytes:
    c = ffi.new(XMD + " *")
    for k, v in fields.items():
        setattr(c, k, v)
    return bytes(ffi.buffer(c))


CTX_SET = skb_ctx(mark=5, priority=6, ingress_ifindex=7, ifindex=1, cb=[0, 2, 3, 4, 5], tstamp=99,
                  wire_len=100, gso_segs=3, gso_size=1400, hwtstamp=77)


def tr(b, fd, data=None, **kw):
    """PROG_TEST_RUN reduced to what both kernels must agree on (duration only checked to be a u32: no timing assertions)."""
    r = calls.prog_test_run(b, fd, data, strict=False, **kw)
    if r.ret == 0:
        assert 0 <= r.duration < 2**32, f"duration out of its u32 range: {r.duration}"  # no timing claims
    return (r.ret, r.retval, r.data_size_out, r.data_out, r.ctx_size_out, r.ctx_out)


def raw_tr(b, **fields):
    ret, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, **fields)
    return ret, a.get("test.retval"), a.get("test.data_size_out"), a.get("test.ctx_size_out")


# ---------------------------------------------------------------- programs

def store_field(field, size=BPF_W):
    """r2 = ctx->field; cb[0] (and cb[1]) = r2; return 1 — readable through ctx_out by every type."""
    off = O(field)
    body = [BPF_LDX_MEM(size, 2, 1, off), BPF_STX_MEM(BPF_W, 1, 2, CB0)]
    if size == BPF_DW:
        body += [BPF_ALU64_IMM(BPF_RSH, 2, 32), BPF_STX_MEM(BPF_W, 1, 2, CB0 + 4)]
    return body + ret(1)


def store_span(hi, lo):
    """cb[0] = ctx->hi - ctx->lo (packet pointers differ between kernels, their distance does not)."""
    return [BPF_LDX_MEM(BPF_W, 2, 1, O(lo)), BPF_LDX_MEM(BPF_W, 3, 1, O(hi)),
            BPF_ALU64_REG(BPF_SUB, 3, 2), BPF_STX_MEM(BPF_W, 1, 3, CB0)] + ret(1)


def store_sock_field(field, size=BPF_W):
    """cb[0] = skb->sk ? skb->sk->field : 0xdead."""
    return [BPF_LDX_MEM(BPF_DW, 2, 1, O("sk")), BPF_MOV64_IMM(3, 0xDEAD),
            BPF_JMP_IMM(BPF_JEQ, 2, 0, 1), BPF_LDX_MEM(size, 3, 2, ffi.offsetof(SOCK, field)),
            BPF_STX_MEM(BPF_W, 1, 3, CB0)] + ret(1)


SKB_FIELD_PROGS = {
    **{f: store_field(f) for f in ("len", "pkt_type", "mark", "queue_mapping", "protocol",
                                   "vlan_present", "vlan_tci", "vlan_proto", "priority",
                                   "ingress_ifindex", "ifindex", "tc_index", "hash", "tc_classid",
                                   "napi_id", "family", "remote_ip4", "local_ip4", "remote_port",
                                   "local_port", "wire_len", "gso_segs", "gso_size")},
    **{f"remote_ip6[{i}]": [BPF_LDX_MEM(BPF_W, 2, 1, O("remote_ip6") + 4 * i),
                            BPF_STX_MEM(BPF_W, 1, 2, CB0)] + ret(1) for i in range(4)},
    "local_ip6[3]": [BPF_LDX_MEM(BPF_W, 2, 1, O("local_ip6") + 12), BPF_STX_MEM(BPF_W, 1, 2, CB0)] + ret(1),
    "cb[1]": [BPF_LDX_MEM(BPF_W, 2, 1, CB0 + 4), BPF_STX_MEM(BPF_W, 1, 2, CB0)] + ret(1),
    "tstamp": store_field("tstamp", BPF_DW), "hwtstamp": store_field("hwtstamp", BPF_DW),
    "data_end-data": store_span("data_end", "data"), "data-data_meta": store_span("data", "data_meta"),
    **{f"sk->{f}": store_sock_field(f) for f in ("bound_dev_if", "family", "src_ip4", "dst_ip4",
                                                   "src_port", "state", "rx_queue_mapping")},
    "sk->src_ip6[0]": store_sock_field("src_ip6"),
}


# ---------------------------------------------------------------- scenarios: skb

def test_prog_test_run_constant_verdicts(both):
    need(*SKB_TYPES.values(), ProgType.XDP)

    def scenario(b):
        out = []
        for t, v in [(ProgType.SOCKET_FILTER, 0), (ProgType.SOCKET_FILTER, 0xFFFF),
                     (ProgType.SCHED_CLS, TC_ACT_SHOT), (ProgType.SCHED_ACT, TC_ACT_SHOT),
                     (ProgType.CGROUP_SKB, 1), (ProgType.CGROUP_SKB, 0), (ProgType.XDP, XdpAction.PASS),
                     (ProgType.XDP, XdpAction.DROP), (ProgType.XDP, XdpAction.TX)]:
            fd = load(b, t, ret(v))
            out.append(tr(b, fd, pkt(), data_size_out=128))
            out.append(tr(b, fd, pkt(), repeat=0))
            out.append(tr(b, fd, pkt(), repeat=7))
            b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("tname", list(SKB_TYPES))
def test_prog_test_run_skb_fields_as_the_program_reads_them(both, tname):
    need(SKB_TYPES[tname])
    prog_type = SKB_TYPES[tname]

    def scenario(b):
        out = {}
        for name, insns in SKB_FIELD_PROGS.items():
            fd = load(b, prog_type, insns)
            if fd < 0:
                out[name] = fd
                continue
            rows = []
            for pname, p in PACKETS.items():
                r = tr(b, fd, p, ctx_size_out=SKB_SIZE)
                rows.append((pname, r[0], r[5][CB0:CB0 + 8]))
            for cname, c in (("set", CTX_SET), ("ifindex1", skb_ctx(ifindex=1)),
                             ("gso_size17", skb_ctx(gso_size=0x12345))):
                r = tr(b, fd, pkt(), ctx_in=c, ctx_size_out=SKB_SIZE)
                rows.append((cname, r[0], r[5][CB0:CB0 + 8]))
            r = tr(b, fd, pkt())           # no ctx at all: wire_len stays 0
            rows.append(("noctx", r[0], r[1]))
            out[name] = rows
            b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("tname", ["sf", "cls", "cg"])
def test_prog_test_run_skb_data_out_and_ctx_out(both, tname):
    need(SKB_TYPES[tname])
    prog_type = SKB_TYPES[tname]

    def scenario(b):
        fd = load(b, prog_type, ret(1))
        out = [tr(b, fd, p, data_size_out=256, ctx_size_out=SKB_SIZE) for p in PACKETS.values()]
        out.append(tr(b, fd, pkt(), ctx_in=CTX_SET, ctx_size_out=SKB_SIZE, data_size_out=64))
        out.append(tr(b, fd, pkt(1500), data_size_out=2000))
        out.append(tr(b, fd, pkt(), data_size_out=10))              # ENOSPC, full size reported
        out.append(tr(b, fd, pkt(), ctx_in=bytes(24), ctx_size_out=24))   # ctx ENOSPC
        out.append(tr(b, fd, pkt(), ctx_size_out=4))
        out.append(raw_tr(b, test__prog_fd=fd, test__data_in=pkt(), test__data_size_in=64,
                          test__data_size_out=10))                  # size hint without a buffer
        b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


def _ctx_write_scenario(writes):
    def scenario(b):
        out = []
        for t in (ProgType.SCHED_CLS, ProgType.CGROUP_SKB, ProgType.SOCKET_FILTER):
            for f, (size, values) in writes.items():
                for v in values:
                    # ctx->f = v; cb[4] = ctx->f (read back in the same run); return 1
                    insns = [BPF_MOV64_IMM(2, v), BPF_STX_MEM(size, 1, 2, O(f)),
                             BPF_LDX_MEM(size, 2, 1, O(f)), BPF_STX_MEM(BPF_W, 1, 2, CB0 + 16)] + ret(1)
                    fd = load(b, t, insns)
                    if fd < 0:
                        out.append((t, f, v, fd))
                        continue
                    out.append((t, f, v, tr(b, fd, pkt(), ctx_size_out=SKB_SIZE, repeat=3)))
                    b.close(fd)
        return out
    return scenario


def test_prog_test_run_skb_ctx_writes(both):
    need(ProgType.SCHED_CLS, ProgType.CGROUP_SKB, ProgType.SOCKET_FILTER)
    scenario = _ctx_write_scenario({
        "mark": (BPF_W, (7, 0xFFFFFFFF)), "priority": (BPF_W, (3,)), "tc_index": (BPF_W, (7,)),
        "queue_mapping": (BPF_W, (5,)), "tc_classid": (BPF_W, (9,)), "tstamp": (BPF_DW, (1234,)),
        "cb": (BPF_W, (0xABCD,))})
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_test_run_skb_ctx_writes_to_narrow_fields(both):
    """tc_index and tc_classid are 16-bit in the skb; queue_mapping ignores NO_QUEUE_MAPPING and up.
    What the program reads back depends on the verifier's ctx rewrite (convert_ctx_access)."""
    need(ProgType.SCHED_CLS, ProgType.CGROUP_SKB, ProgType.SOCKET_FILTER)
    scenario = _ctx_write_scenario({
        "tc_index": (BPF_W, (0x12345,)), "tc_classid": (BPF_W, (0x12345,)),
        "queue_mapping": (BPF_W, (0xFFFF, 0x12345))})
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_test_run_packet_access_and_ld_abs(both):
    need(ProgType.SCHED_CLS, ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB)
    # r0 = data[12] (ethertype high byte for tc) if 40 bytes are there, else 0xee
    direct = [BPF_LDX_MEM(BPF_W, 2, 1, O("data")), BPF_LDX_MEM(BPF_W, 3, 1, O("data_end")),
              BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 40), BPF_MOV64_IMM(0, 0xEE),
              BPF_JMP_REG(BPF_JGT, 4, 3, 2), BPF_LDX_MEM(BPF_B, 0, 2, 12),
              BPF_ALU64_IMM(BPF_ADD, 0, 0), BPF_EXIT_INSN()]
    ld_abs = [BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_H, SKF_LL_OFF + 12), BPF_MOV64_REG(7, 0),
              BPF_LD_ABS(BPF_B, 9), BPF_ALU64_REG(BPF_ADD, 0, 7), BPF_EXIT_INSN()]
    beyond = [BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_W, 1000), BPF_MOV64_IMM(0, 5), BPF_EXIT_INSN()]

    def scenario(b):
        out = []
        for t, insns in ((ProgType.SCHED_CLS, direct), (ProgType.CGROUP_SKB, direct),
                         (ProgType.SOCKET_FILTER, ld_abs), (ProgType.SOCKET_FILTER, beyond),
                         (ProgType.SCHED_CLS, ld_abs)):
            fd = load(b, t, insns)
            if fd < 0:
                out.append(fd)
                continue
            out += [tr(b, fd, p, data_size_out=128)[:3] for p in (pkt(), pkt(40), pkt(39), ip6pkt())]
            b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_test_run_checksum_complete(both):
    need(ProgType.SCHED_CLS, ProgType.SOCKET_FILTER)

    def writer(off):
        return [BPF_LDX_MEM(BPF_W, 2, 1, O("data")), BPF_LDX_MEM(BPF_W, 3, 1, O("data_end")),
                BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 40), BPF_JMP_REG(BPF_JGT, 4, 3, 1),
                BPF_ST_MEM(BPF_B, 2, off, 0x55)] + ret(0)

    def scenario(b):
        out = []
        for insns in (writer(30), writer(10), ret(0)):
            fd = load(b, ProgType.SCHED_CLS, insns)
            for flags in (0, RunFlags.TEST_SKB_CHECKSUM_COMPLETE):
                out.append(tr(b, fd, pkt(), flags=flags, data_size_out=128)[:4])
            b.close(fd)
        fd = load(b, ProgType.SOCKET_FILTER, ret(0))
        out.append(tr(b, fd, pkt(), flags=RunFlags.TEST_SKB_CHECKSUM_COMPLETE)[:3])
        b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("tname", ["sf", "cls", "cg"])
def test_prog_test_run_skb_errors(both, tname):
    need(SKB_TYPES[tname])
    prog_type = SKB_TYPES[tname]

    def scenario(b):
        fd = load(b, prog_type, ret(1))
        out = {}
        for n in (0, 13, 14, 33, 34, 3712, 3713, 5000):
            out[f"size{n}"] = tr(b, fd, pkt(n, proto=0x1234) if n else None)[:3]
        for n in (19, 20, 33, 34):
            out[f"ip4-{n}"] = tr(b, fd, pkt(n))[0]
        for n in (53, 54):
            out[f"ip6-{n}"] = tr(b, fd, ip6pkt(80)[:n])[0]
        for flags in (RunFlags.TEST_RUN_ON_CPU, RunFlags.TEST_XDP_LIVE_FRAMES, 8):
            out[f"flags{flags}"] = tr(b, fd, pkt(), flags=flags)[0]
        out["oncpu"] = tr(b, fd, pkt(), flags=RunFlags.TEST_RUN_ON_CPU, cpu=0)[0]
        out["cpu"] = tr(b, fd, pkt(), cpu=1)[0]
        out["batch"] = tr(b, fd, pkt(), batch_size=1)[0]
        for f in ("len", "pkt_type", "queue_mapping", "protocol", "vlan_present", "vlan_tci",
                  "vlan_proto", "tc_index", "hash", "tc_classid", "data", "data_end", "napi_id",
                  "family", "remote_ip4", "local_port", "data_meta", "tstamp_type"):
            out[f"ctx-{f}"] = tr(b, fd, pkt(), ctx_in=skb_ctx(**{f: 1}))[0]
        for w in (49, 50, 63, 64, 65, 65536, 65537):
            out[f"wire{w}"] = tr(b, fd, pkt(), ctx_in=skb_ctx(wire_len=w), ctx_size_out=SKB_SIZE)[:1] + \
                tr(b, fd, pkt(), ctx_in=skb_ctx(wire_len=w), ctx_size_out=SKB_SIZE)[5:]
        for g in (65535, 65536):
            out[f"gso{g}"] = tr(b, fd, pkt(), ctx_in=skb_ctx(gso_segs=g))[0]
        out["gso_size"] = tr(b, fd, pkt(), ctx_in=skb_ctx(gso_size=0xFFFFFFFF), ctx_size_out=SKB_SIZE)
        out["ifindex99"] = tr(b, fd, pkt(), ctx_in=skb_ctx(ifindex=99))[0]
        out["ctx200"] = tr(b, fd, pkt(), ctx_in=bytes(200))[0]
        out["ctx200nz"] = tr(b, fd, pkt(), ctx_in=bytes(199) + b"\1")[0]
        out["ctx5000"] = tr(b, fd, pkt(), ctx_in=bytes(5000))[0]
        base = dict(test__prog_fd=fd, test__data_in=pkt(), test__data_size_in=64)
        out["efault-data_in"] = raw_tr(b, test__prog_fd=fd, test__data_in=BAD_PTR, test__data_size_in=64)
        out["efault-data_out"] = raw_tr(b, **base, test__data_out=BAD_PTR)
        out["efault-ctx_in"] = raw_tr(b, **base, test__ctx_in=BAD_PTR, test__ctx_size_in=SKB_SIZE)
        out["efault-ctx_out"] = raw_tr(b, **base, test__ctx_out=BAD_PTR, test__ctx_size_out=SKB_SIZE)
        out["enospc-ctx_out"] = raw_tr(b, **base, test__ctx_out=BAD_PTR, test__ctx_size_out=24)
        b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_test_run_generic_errors(both):
    need(ProgType.SCHED_CLS)

    def scenario(b):
        fd = load(b, ProgType.SCHED_CLS, ret(0))
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = [raw_tr(b, test__prog_fd=fd, test__ctx_size_in=4),
               raw_tr(b, test__prog_fd=fd, test__ctx_in=b"1234"),
               raw_tr(b, test__prog_fd=fd, test__ctx_out=bytearray(4)),
               raw_tr(b, test__prog_fd=fd, test__ctx_size_out=4),
               raw_tr(b, test__prog_fd=999),
               raw_tr(b, test__prog_fd=999, test__ctx_size_in=4),
               raw_tr(b, test__prog_fd=m, test__data_in=pkt(), test__data_size_in=64)]
        b.close(m)
        b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("prog_type", [ProgType.KPROBE, ProgType.TRACEPOINT])
def test_prog_test_run_tracing_types_enotsupp(both, prog_type):
    need(prog_type)

    def scenario(b):
        fd = load(b, prog_type, ret(0))
        out = [tr(b, fd, pkt())[0], tr(b, fd)[0], tr(b, fd, ctx_in=bytes(8))[0]]
        b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host) == [-Errno.ENOTSUPP] * 3


# ---------------------------------------------------------------- scenarios: xdp

XDP_LEN = [BPF_LDX_MEM(BPF_W, 2, 1, X("data")), BPF_LDX_MEM(BPF_W, 0, 1, X("data_end")),
           BPF_ALU64_REG(BPF_SUB, 0, 2), BPF_EXIT_INSN()]
XDP_META = [BPF_LDX_MEM(BPF_W, 0, 1, X("data")), BPF_LDX_MEM(BPF_W, 2, 1, X("data_meta")),
            BPF_ALU64_REG(BPF_SUB, 0, 2), BPF_EXIT_INSN()]


def test_prog_test_run_xdp_fields_meta_and_frags(both):
    need(ProgType.XDP)
    progs = {"len": XDP_LEN, "meta": XDP_META,
             "ingress": [BPF_LDX_MEM(BPF_W, 0, 1, X("ingress_ifindex")), BPF_EXIT_INSN()],
             "rxq": [BPF_LDX_MEM(BPF_W, 0, 1, X("rx_queue_index")), BPF_EXIT_INSN()],
             "egress": [BPF_LDX_MEM(BPF_W, 0, 1, X("egress_ifindex")), BPF_EXIT_INSN()]}
    cases = [(None, 64), (xdp_md(), 64), (xdp_md(data=8, data_end=64), 64),
             (xdp_md(data=8, data_end=40), 64), (xdp_md(data=36, data_end=64), 64),
             (xdp_md(data=33, data_end=64), 64), (xdp_md(data=216, data_end=300), 400),
             (xdp_md(data=220, data_end=300), 400), (xdp_md(data_end=40), 64),
             (xdp_md(data_end=65), 64), (xdp_md(data=4, data_end=17), 64),
             (xdp_md(data_meta=1, data_end=64), 64), (xdp_md(ingress_ifindex=1, data_end=64), 64),
             (xdp_md(ingress_ifindex=1, rx_queue_index=1, data_end=64), 64),
             (xdp_md(rx_queue_index=1, data_end=64), 64), (xdp_md(ingress_ifindex=99, data_end=64), 64),
             (xdp_md(egress_ifindex=1, data_end=64), 64), (xdp_md(data=10, data_end=8), 64),
             (xdp_md(data_end=3600), 4000), (xdp_md(data=64, data_end=3600), 4000),
             (None, 3520), (None, 3521), (None, 5000), (None, 73152), (None, 73153)]

    def scenario(b):
        out = {}
        for name, insns in progs.items():
            fd = load(b, ProgType.XDP, insns)
            if fd < 0:
                out[name] = fd
                continue
            data = bytes(i * 13 & 0xFF for i in range(80000))
            out[name] = [tr(b, fd, data[:n], ctx_in=c, ctx_size_out=XMD_SIZE if c else 0,
                            data_size_out=80000) for c, n in cases]
            out[name].append(tr(b, fd, data[:5000], data_size_out=1000))      # frags don't fit
            out[name].append(tr(b, fd, data[:5000], data_size_out=4000))
            b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_test_run_xdp_flags_and_live_frames(both):
    need(ProgType.XDP)

    def scenario(b):
        fd = load(b, ProgType.XDP, XDP_LEN)
        live = RunFlags.TEST_XDP_LIVE_FRAMES
        out = [tr(b, fd, pkt(), flags=f)[:3] for f in (RunFlags.TEST_RUN_ON_CPU,
                                                       RunFlags.TEST_SKB_CHECKSUM_COMPLETE, 8)]
        out += [tr(b, fd, pkt(), cpu=1)[:3], tr(b, fd, pkt(), batch_size=1)[:3],
                tr(b, fd, pkt(13))[:3], tr(b, fd, pkt(14))[:3], tr(b, fd)[:3]]
        out += [tr(b, fd, pkt(), flags=live, **kw)[:4] for kw in (
            {}, dict(batch_size=256), dict(batch_size=257), dict(data_size_out=100),
            dict(repeat=10), dict(ctx_in=xdp_md(data_end=64)),
            dict(ctx_in=xdp_md(data_end=64), data_size_out=100),
            dict(ctx_in=xdp_md(data_end=64), ctx_size_out=XMD_SIZE))]
        out += [tr(b, fd, bytes(n), flags=live)[0] for n in (3408, 3409)]
        b.close(fd)
        for eat in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
            fd = load(b, ProgType.XDP, ret(XdpAction.PASS), eat=eat)
            out.append(tr(b, fd, pkt())[0] if fd >= 0 else ("load", fd))
            if fd >= 0:
                b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- property: random packets

def sum_first_bytes(n, off=O):
    """r0 = sum of the first n packet bytes (as many as there are); then swap bytes 0 and 1."""
    swap = 3 + 5 * n                       # index of the swap block
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, off("data")), BPF_LDX_MEM(BPF_W, 3, 1, off("data_end")),
             BPF_MOV64_IMM(0, 0)]
    for i in range(n):
        j = len(insns) + 2                 # index of this byte's bounds check
        insns += [BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, i + 1),
                  BPF_JMP_REG(BPF_JGT, 4, 3, swap - j - 1),
                  BPF_LDX_MEM(BPF_B, 5, 2, i), BPF_ALU64_REG(BPF_ADD, 0, 5)]
    insns += [BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 2), BPF_JMP_REG(BPF_JGT, 4, 3, 4),
              BPF_LDX_MEM(BPF_B, 5, 2, 0), BPF_LDX_MEM(BPF_B, 4, 2, 1),
              BPF_STX_MEM(BPF_B, 2, 4, 0), BPF_STX_MEM(BPF_B, 2, 5, 1), BPF_EXIT_INSN()]
    return insns


SUM_N = 48


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=14, max_size=1500))
def test_prog_test_run_random_packets_same_on_both(both, data):
    need(ProgType.SCHED_CLS, ProgType.XDP)
    tc = sum_first_bytes(SUM_N)
    xdp = sum_first_bytes(SUM_N, off=X)

    def scenario(b):
        out = []
        for t, insns in ((ProgType.SCHED_CLS, tc), (ProgType.XDP, xdp)):
            fd = load(b, t, insns)
            out.append(tr(b, fd, data, data_size_out=2048)[:4] if fd >= 0 else fd)
            if fd >= 0:
                b.close(fd)
        return out

    fake, host = both
    assert scenario(fake) == scenario(host)
