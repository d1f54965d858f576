"""bpf_tcp_gen_syncookie / bpf_tcp_check_syncookie on listeners and the raw
bpf_tcp_raw_gen/check_syncookie_ipv4/ipv6, fakekernel vs the real kernel, through PROG_TEST_RUN.

Cookies are keyed by a secret (the real kernel's random, fakekernel's fixed), so a cookie's value
is never compared: its MSS half is, and each kernel's own cookie must check out in an ACK built
from it while one from the next MSS slot or three minutes old must not.  The socket helpers'
checks (state, flags, header sizes, IP version) are compared on the loopback listeners.
"""
from __future__ import annotations

import pytest

from backends import FakeBackend
from fakekernel import Kernel
from netnsutil import in_netns
from sklookuputil import LO4, LO6, LPORT, V6PORT, run_r0, setup_sockets, tuple4, tuple6
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_W, FuncId, ProgType
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

IPH4 = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
IPH6 = bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + bytes(range(16)) + bytes(range(16, 32))


def tcph(flags=0x02, seq=1000, ack=0, opts=b"", doff=None):
    doff = doff if doff is not None else (20 + len(opts)) // 4
    return ((1234).to_bytes(2, "big") + (80).to_bytes(2, "big") + seq.to_bytes(4, "big") + ack.to_bytes(4, "big")
            + bytes([doff << 4, flags]) + (65535).to_bytes(2, "big") + bytes(4) + opts)


def raw_cookie_prog(mfd, func, iph: bytes, th: bytes, th_len=None):
    """r0 = func(iph on the stack, th on the stack[, th_len]); map[0] = r0."""
    b = [BPF_MOV64_REG(6, 1)]
    for off, data in ((-48, iph.ljust(48, b"\0")), (-96, th.ljust(48, b"\0"))):
        for i in range(0, 48, 8):
            b += [*BPF_LD_IMM64(1, int.from_bytes(data[i:i + 8], "little")), BPF_STX_MEM(BPF_DW, 10, 1, off + i)]
    b += [BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -48), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -96)]
    if th_len is not None:
        b += [BPF_MOV64_IMM(3, th_len)]
    b += [BPF_CALL_HELPER(func), BPF_STX_MEM(BPF_DW, 10, 0, -104), BPF_ST_MEM(BPF_W, 10, -108, 0),
          BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -108), *BPF_LD_MAP_FD(1, mfd),
          BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 2),
          BPF_LDX_MEM(BPF_DW, 1, 10, -104), BPF_STX_MEM(BPF_DW, 0, 1, 0), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    return b


MSS = b"\x02\x04"


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP])
def test_tcp_raw_syncookies_same_as_kernel(both, prog_type):
    """The MSS half of a raw cookie, the EINVAL cases, and each kernel's own cookie checking out
    (an ACK built from it) while a wrong one does not."""
    gen4, gen6 = FuncId.tcp_raw_gen_syncookie_ipv4, FuncId.tcp_raw_gen_syncookie_ipv6
    chk4, chk6 = FuncId.tcp_raw_check_syncookie_ipv4, FuncId.tcp_raw_check_syncookie_ipv6
    syns = [tcph(), tcph(opts=MSS + (1460).to_bytes(2, "big")), tcph(opts=MSS + (1400).to_bytes(2, "big")),
            tcph(opts=MSS + (9000).to_bytes(2, "big")), tcph(opts=MSS + (100).to_bytes(2, "big")),
            tcph(opts=b"\x01\x01" + MSS[:1] + b"\x04" + (1300).to_bytes(2, "big") + b"\x00\x00\x00\x00"),
            tcph(opts=b"\x08\x01\x00\x00"), tcph(doff=6), tcph(doff=4)]
    results = []
    for b in both:
        out = []
        for gen, chk, iph in ((gen4, chk4, IPH4), (gen6, chk6, IPH6)):
            for th in syns:
                r = run_r0(b, prog_type, lambda m: raw_cookie_prog(m, gen, iph, th, len(th)))
                if r[0] == "load" or r[1] >> 63:
                    out.append(r)
                    continue
                cookie, mss = r[1] & 0xFFFFFFFF, r[1] >> 32
                good = tcph(0x10, seq=1001, ack=(cookie + 1) & 0xFFFFFFFF)
                other = tcph(0x10, seq=1001, ack=(cookie + 2) & 0xFFFFFFFF)     # the next MSS slot
                stale = tcph(0x10, seq=1001, ack=(cookie + 1 + (3 << 24)) & 0xFFFFFFFF)
                out.append((r[0], mss) + tuple(run_r0(b, prog_type, lambda m: raw_cookie_prog(m, chk, iph, th))
                                               for th in (good, other, stale)))
            out.append(run_r0(b, prog_type, lambda m: raw_cookie_prog(m, gen, iph, tcph(), 16)))
        results.append(out)
    fake, host = results
    assert all(r[0] != "load" for r in host), host
    assert fake == host


def sock_cookie_prog(mfd, func, tup, iph, th, iph_len, th_len):
    """sk = sk_lookup_tcp(tuple); map[0] = func(sk, iph, iph_len, th, th_len); release."""
    b = [BPF_MOV64_REG(6, 1)]
    for off, data in ((-48, iph.ljust(48, b"\0")), (-96, th.ljust(48, b"\0")), (-144, tup.ljust(48, b"\0"))):
        for i in range(0, 48, 8):
            b += [*BPF_LD_IMM64(1, int.from_bytes(data[i:i + 8], "little")), BPF_STX_MEM(BPF_DW, 10, 1, off + i)]
    b += [BPF_ST_MEM(BPF_DW, 10, -152, -1),
          BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -144), BPF_MOV64_IMM(3, len(tup)),
          *BPF_LD_IMM64(4, (1 << 64) - 1), BPF_MOV64_IMM(5, 0), BPF_CALL_HELPER(FuncId.sk_lookup_tcp)]
    body = [BPF_MOV64_REG(7, 0), BPF_MOV64_REG(1, 7), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -48),
            BPF_MOV64_IMM(3, iph_len), BPF_MOV64_REG(4, 10), BPF_ALU64_IMM(BPF_ADD, 4, -96), BPF_MOV64_IMM(5, th_len),
            BPF_CALL_HELPER(func), BPF_STX_MEM(BPF_DW, 10, 0, -152), BPF_MOV64_REG(1, 7),
            BPF_CALL_HELPER(FuncId.sk_release)]
    b += [BPF_JMP_IMM(BPF_JEQ, 0, 0, len(body))] + body
    b += [BPF_ST_MEM(BPF_W, 10, -156, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -156),
          *BPF_LD_MAP_FD(1, mfd), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 2),
          BPF_LDX_MEM(BPF_DW, 1, 10, -152), BPF_STX_MEM(BPF_DW, 0, 1, 0), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    return b


def sock_cookie_scenario(b):
    eph, fds = setup_sockets(b)
    gen, chk = FuncId.tcp_gen_syncookie, FuncId.tcp_check_syncookie
    lst, est, v6 = tuple4(LO4, 1, LO4, LPORT), tuple4(LO4, eph, LO4, LPORT), tuple6(LO6, 1, LO6, V6PORT)
    ack = tcph(0x10, seq=1001, ack=5)
    out = []
    for func, tup, iph, th, il, tl in (
            (gen, lst, IPH4, tcph(), 20, 20), (gen, lst, IPH4, tcph(0x12), 20, 20), (gen, lst, IPH4, tcph(), 20, 24),
            (gen, lst, IPH4, tcph(), 16, 20), (gen, lst, IPH6, tcph(), 40, 20), (gen, v6, IPH6, tcph(), 40, 20),
            (gen, v6, IPH6, tcph(), 20, 20), (gen, lst, bytes([0x55]) + IPH4[1:], tcph(), 20, 20),
            (gen, est, IPH4, tcph(), 20, 20), (gen, lst, IPH4, tcph(), 20, 16),
            (chk, lst, IPH4, ack, 20, 20), (chk, lst, IPH4, tcph(), 20, 20), (chk, lst, IPH4, tcph(0x14), 20, 20),
            (chk, lst, IPH4, ack, 16, 20), (chk, est, IPH4, ack, 20, 20), (chk, v6, IPH6, ack, 40, 20),
            (chk, lst, IPH4, ack, 20, 16)):
        out.append((func.name, run_r0(b, ProgType.SCHED_CLS, lambda m: sock_cookie_prog(m, func, tup, iph, th, il,
                                                                                           tl))))
    for fd in fds:
        b.close(fd)
    return out


def test_tcp_gen_check_syncookie_on_sockets_same_as_kernel():
    fake = FakeBackend(Kernel())
    got = sock_cookie_scenario(fake)
    assert not fake.cleanup()
    want = in_netns(["ip link set lo up"], sock_cookie_scenario)
    assert all(w[1][0] != "load" for w in want), want
    assert got == want
