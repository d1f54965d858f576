"""bpf_sk_lookup_tcp/udp, bpf_skc_lookup_tcp, bpf_sk_release, bpf_sk_fullsock, bpf_tcp_sock,
bpf_get_listener_sock, fakekernel vs the real kernel, through PROG_TEST_RUN of SCHED_CLS and XDP
programs.

Both kernels get the same sockets on loopback (the real one in a fresh network namespace, so no
host socket answers): TCP listeners on 127.0.0.1, on 0.0.0.0 and on :: (dual stack), an
established connection, UDP sockets bound to an address, to the wildcard and connected.  Each
program looks a tuple up, dumps what ``struct bpf_sock`` shows of the result (or that there
was none) and what sk_fullsock / tcp_sock / get_listener_sock say, then releases it.
Ephemeral ports differ between the kernels and are compared as "EPH".
"""
from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings, strategies as st

from backends import FakeBackend
from fakekernel import Kernel
from netnsutil import in_netns
from sklookuputil import (LO4, LO6, LPORT, TUPLE, UCPORT, UPORT, UWPORT, V6PORT, WPORT, setup_sockets, tuple4,
                          tuple6)
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_H, BPF_JEQ, BPF_JNE, BPF_OR, BPF_W, FuncId, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

SOCK = "struct bpf_sock"
W_FIELDS = ["bound_dev_if", "family", "type", "protocol", "mark", "priority", "state", "src_ip4", "src_port", "dst_ip4",
            "rx_queue_mapping"] + \
    [f"src_ip6[{i}]" for i in range(4)] + [f"dst_ip6[{i}]" for i in range(4)]
SLOTS = ["found"] + W_FIELDS + ["dst_port", "fullsock", "tcp_sock", "listener", "snd_cwnd"]
VAL = 4 * len(SLOTS)


def _off(field):
    name, _, idx = field.partition("[")
    return ffi.offsetof(SOCK, name) + (4 * int(idx[:-1]) if idx else 0)


def _slot(name):
    return 4 * SLOTS.index(name)


def lookup_prog(mfd, helper, tup: bytes, length, netns, flags, full=True, casts=True):
    """value = map[0]; sk = helper(ctx, tuple, length, netns, flags); dump sk (and, with
    `casts`, what sk_fullsock / get_listener_sock / tcp_sock make of it); release it."""
    b = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
         *BPF_LD_MAP_FD(1, mfd), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
         BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN(), BPF_MOV64_REG(8, 0)]
    tup = tup.ljust(TUPLE, b"\0")
    for i in range(TUPLE // 8):
        b += [*BPF_LD_IMM64(1, int.from_bytes(tup[8 * i:8 * i + 8], "little")),
              BPF_STX_MEM(BPF_DW, 10, 1, -48 + 8 * i)]
    b += [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -48), BPF_MOV64_IMM(3, length),
          *BPF_LD_IMM64(4, netns), *BPF_LD_IMM64(5, flags), BPF_CALL_HELPER(helper)]
    tail = [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    body = [BPF_MOV64_REG(7, 0), BPF_ST_MEM(BPF_W, 8, _slot("found"), 1)]
    fields = W_FIELDS if full else ["family"]
    for f in fields:
        body += [BPF_LDX_MEM(BPF_W, 1, 7, _off(f)), BPF_STX_MEM(BPF_W, 8, 1, _slot(f))]
    if full:
        body += [BPF_LDX_MEM(BPF_H, 1, 7, ffi.offsetof(SOCK, "dst_port")), BPF_STX_MEM(BPF_W, 8, 1, _slot("dst_port"))]
    for helper2, slot in ((FuncId.sk_fullsock, "fullsock"), (FuncId.get_listener_sock, "listener")):
        body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(helper2), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1),
                 BPF_ST_MEM(BPF_W, 8, _slot(slot), 1)] if casts else []
    body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(FuncId.tcp_sock), BPF_JMP_IMM(BPF_JEQ, 0, 0, 3),
             BPF_ST_MEM(BPF_W, 8, _slot("tcp_sock"), 1), BPF_LDX_MEM(BPF_W, 1, 0, ffi.offsetof(
                 "struct bpf_tcp_sock", "snd_cwnd")), BPF_STX_MEM(BPF_W, 8, 1, _slot("snd_cwnd"))] if casts else []
    body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(FuncId.sk_release)]
    b += [BPF_JMP_IMM(BPF_JEQ, 0, 0, len(body))] + body + tail
    return b


def cases(eph):
    """(prog types, helper, tuple, len, netns, flags, full) — `eph` is the client's port."""
    tcp, udp, skc = FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp, FuncId.skc_lookup_tcp
    both = (ProgType.SCHED_CLS, ProgType.XDP)
    t4 = tuple4
    cur = (1 << 64) - 1
    out = [
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, cur, 0),            # the listener
        (tcp, t4(LO4, eph, LO4, LPORT), 12, cur, 0),              # the accepted connection
        (tcp, t4(LO4, LPORT, LO4, eph), 12, cur, 0),              # the client side
        (tcp, t4(LO4, 40000, LO4, WPORT), 12, cur, 0),            # the 0.0.0.0 listener
        (tcp, t4("127.0.0.2", 40000, "127.0.0.9", WPORT), 12, cur, 0),
        (tcp, t4(LO4, 40000, LO4, V6PORT), 12, cur, 0),           # the dual-stack :: listener
        (tcp, tuple6(LO6, 40000, LO6, V6PORT), 36, cur, 0),
        (tcp, tuple6(LO6, 40000, LO6, LPORT), 36, cur, 0),        # no IPv6 listener there
        (tcp, t4(LO4, 40000, LO4, 5999), 12, cur, 0),             # nobody
        (tcp, t4(LO4, 40000, LO4, UPORT), 12, cur, 0),            # a UDP port
        (tcp, t4(LO4, 40000, "127.0.0.2", LPORT), 12, cur, 0),    # listener bound elsewhere
        (udp, t4(LO4, 40000, LO4, UPORT), 12, cur, 0),
        (udp, t4(LO4, 40000, LO4, UWPORT), 12, cur, 0),           # dual-stack :: UDP
        (udp, tuple6(LO6, 40000, LO6, UWPORT), 36, cur, 0),
        (udp, t4(LO4, 7777, LO4, UCPORT), 12, cur, 0),            # the connected UDP socket
        (udp, t4(LO4, 7778, LO4, UCPORT), 12, cur, 0),            # its peer does not match
        (udp, t4(LO4, 40000, LO4, LPORT), 12, cur, 0),            # a TCP port
        (tcp, t4(LO4, 40000, LO4, LPORT), 0, cur, 0),             # bad tuple sizes
        (tcp, t4(LO4, 40000, LO4, LPORT), 13, cur, 0),
        (tcp, t4(LO4, 40000, LO4, LPORT), 36, cur, 0),
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, cur, 1),            # flags
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, 0, 0),              # netns ids
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, 0x7FFFFFFF, 0),
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, 0xFFFFFFFF, 0),
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, 0x1_0000_0000, 0),
        (tcp, t4(LO4, 40000, LO4, LPORT), 12, 0x1_FFFF_FFFF, 0),
        (udp, t4(LO4, 40000, LO4, UPORT), 12, 0x8000_0000, 0),
    ]
    res = [(both, h, tup, ln, ns, fl, True) for h, tup, ln, ns, fl in out]
    res += [(both, skc, t4(LO4, 40000, LO4, LPORT), 12, cur, 0, False),
            (both, skc, t4(LO4, eph, LO4, LPORT), 12, cur, 0, False),
            (both, skc, t4(LO4, 40000, LO4, 5999), 12, cur, 0, False)]
    return res


def scenario(b):
    eph, fds = setup_sockets(b)
    out = []
    for prog_types, helper, tup, length, netns, flags, full in cases(eph):
        for pt in prog_types:
            mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
            r = calls.prog_load(b, pt, assemble_insns(lookup_prog(mfd, helper, tup, length, netns, flags, full,
                                                              casts=pt != ProgType.XDP)),
                                b"GPL", strict=False, log_level=1, log_size=1 << 16)
            if r.ret < 0:
                out.append(("load", r.ret, r.log[-200:]))
                b.close(mfd)
                continue
            t = calls.prog_test_run(b, r.ret, bytes(12) + b"\x08\x00" + bytes(50), strict=False)
            val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
            b.close(r.ret)
            b.close(mfd)
            words = [int.from_bytes(val[i:i + 4], "little") for i in range(0, VAL, 4)]
            got = dict(zip(SLOTS, words))
            if got["src_port"] == eph:
                got["src_port"] = "EPH"
            if got["dst_port"] == int.from_bytes(eph.to_bytes(2, "big"), "little"):
                got["dst_port"] = "EPH"
            out.append((pt.name, helper.name, length, netns, flags, t.ret, t.retval, got))
    for fd in fds:
        b.close(fd)
    return out


def test_sk_lookup_family_same_as_kernel():
    kern = Kernel()
    fake = FakeBackend(kern)
    got = scenario(fake)
    assert not fake.cleanup()
    want = in_netns(["ip link set lo up"], scenario)
    for g, w in zip(got, want):
        assert w[0] != "load", f"the real kernel refused the program: {w}"
        assert g == w
    assert len(got) == len(want)
    assert all(s.bpf_refs == 0 for s in kern.world.net.socktab.socks)


CASTS = [FuncId.skc_to_tcp_sock, FuncId.skc_to_tcp6_sock, FuncId.skc_to_udp6_sock, FuncId.skc_to_unix_sock,
         FuncId.skc_to_tcp_timewait_sock, FuncId.skc_to_tcp_request_sock, FuncId.skc_to_mptcp_sock]


def cast_prog(mfd, helper, tup, length):
    """sk = helper(ctx, tuple); value[i] = skc_to_X(sk) != NULL for each cast; release."""
    b = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
         *BPF_LD_MAP_FD(1, mfd), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JNE, 0, 0, 2),
         BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN(), BPF_MOV64_REG(8, 0)]
    tup = tup.ljust(TUPLE, b"\0")
    for i in range(TUPLE // 8):
        b += [*BPF_LD_IMM64(1, int.from_bytes(tup[8 * i:8 * i + 8], "little")),
              BPF_STX_MEM(BPF_DW, 10, 1, -48 + 8 * i)]
    b += [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -48), BPF_MOV64_IMM(3, length),
          *BPF_LD_IMM64(4, (1 << 64) - 1), BPF_MOV64_IMM(5, 0), BPF_CALL_HELPER(helper)]
    body = [BPF_MOV64_REG(7, 0), BPF_ST_MEM(BPF_W, 8, 0, 1)]
    for i, cast in enumerate(CASTS, start=1):
        body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(cast), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1),
                 BPF_ST_MEM(BPF_W, 8, 4 * i, 1)]
    body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(FuncId.sk_release)]
    return b + [BPF_JMP_IMM(BPF_JEQ, 0, 0, len(body))] + body + [BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


def cast_scenario(b):
    eph, fds = setup_sockets(b)
    out = []
    tcp, udp = FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp
    for helper, tup, length in ((tcp, tuple4(LO4, 40000, LO4, LPORT), 12), (tcp, tuple4(LO4, eph, LO4, LPORT), 12),
                                (tcp, tuple6(LO6, 40000, LO6, V6PORT), 36), (udp, tuple4(LO4, 1, LO4, UPORT), 12),
                                (udp, tuple6(LO6, 1, LO6, UWPORT), 36)):
        mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
        r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(cast_prog(mfd, helper, tup, length)), b"GPL",
                            strict=False, log_level=1, log_size=1 << 16)
        if r.ret < 0:
            out.append(("load", r.ret, r.log[-200:]))
            b.close(mfd)
            continue
        t = calls.prog_test_run(b, r.ret, bytes(12) + b"\x08\x00" + bytes(50), strict=False)
        val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
        out.append((helper.name, length, t.ret, t.retval, val[:4 * (len(CASTS) + 1)].hex()))
        b.close(r.ret)
        b.close(mfd)
    for fd in fds:
        b.close(fd)
    return out


def test_skc_to_casts_same_as_kernel():
    fake = FakeBackend(Kernel())
    got = cast_scenario(fake)
    assert not fake.cleanup()
    want = in_netns(["ip link set lo up"], cast_scenario)
    assert all(w[0] != "load" for w in want), want
    assert got == want


def reuseport_scenario(b):
    """Four SO_REUSEPORT listeners on one port: a lookup finds one of them (which one depends on
    the kernel's hash secret), the members' common fields are compared."""
    fds = []
    for _ in range(4):
        fd = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        fds.append(fd)
        assert b.setsockopt(fd, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1) == 0
        assert b.bind(fd, (LO4, LPORT)) == 0 and b.listen(fd) == 0
    out = []
    for sport in (1, 2, 3, 40000, 65535):
        mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
        insns = lookup_prog(mfd, FuncId.sk_lookup_tcp, tuple4(LO4, sport, LO4, LPORT), 12, (1 << 64) - 1, 0)
        r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(insns), b"GPL", strict=False)
        t = calls.prog_test_run(b, r.ret, bytes(64), strict=False)
        val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
        out.append((t.ret, t.retval, val.hex()))
        b.close(r.ret)
        b.close(mfd)
    for fd in fds:
        b.close(fd)
    return out


def test_sk_lookup_reuseport_group_member_same_as_kernel():
    fake = FakeBackend(Kernel())
    got = reuseport_scenario(fake)
    assert not fake.cleanup()
    assert got == in_netns(["ip link set lo up"], reuseport_scenario)


def test_casts_of_the_test_run_skb_sock_same_as_kernel(both):
    """skb->sk of a test run (a full, protocol-less dummy sock) through sk_fullsock, tcp_sock,
    get_listener_sock and the skc_to_* casts: a bit per non-NULL result."""
    sk_off = ffi.offsetof("struct __sk_buff", "sk")
    insns = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_DW, 7, 6, sk_off), BPF_MOV64_IMM(8, 0),
             BPF_JMP_IMM(BPF_JEQ, 7, 0, 0)]
    body = []
    for bit, func in enumerate([FuncId.sk_fullsock, FuncId.tcp_sock, FuncId.get_listener_sock] + CASTS):
        body += [BPF_MOV64_REG(1, 7), BPF_CALL_HELPER(func), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1),
                 BPF_ALU64_IMM(BPF_OR, 8, 1 << bit)]
    insns[-1] = BPF_JMP_IMM(BPF_JEQ, 7, 0, len(body))
    insns += body + [BPF_MOV64_REG(0, 8), BPF_EXIT_INSN()]
    res = []
    for b in both:
        r = calls.prog_load(b, ProgType.SCHED_CLS, assemble_insns(insns), b"GPL", strict=False,
                            log_level=1, log_size=1 << 16)
        assert r.ret >= 0, r.log[-300:]
        t = calls.prog_test_run(b, r.ret, bytes(12) + b"\x08\x00" + bytes(50))
        b.close(r.ret)
        res.append((t.ret, t.retval))
    assert res[0] == res[1]


ADDRS4 = [LO4, "127.0.0.2", "0.0.0.0", "10.0.0.1"]
PORTS = [LPORT, WPORT, V6PORT, UPORT, UWPORT, UCPORT, 7777, 40000, 0, 65535]


def drawn_scenario(draws):
    def scenario_(b):
        eph, fds = setup_sockets(b)
        out = []
        for udp, is6, sa, sp, da, dp, pt in draws:
            sport, dport = (eph if sp == "EPH" else sp), (eph if dp == "EPH" else dp)
            tup = tuple6(LO6 if sa else "::", sport, LO6 if da else "::2", dport) if is6 else \
                tuple4(sa, sport, da, dport)
            helper = FuncId.sk_lookup_udp if udp else FuncId.sk_lookup_tcp
            mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
            insns = lookup_prog(mfd, helper, tup, 36 if is6 else 12, (1 << 64) - 1, 0, casts=pt != ProgType.XDP)
            r = calls.prog_load(b, pt, assemble_insns(insns), b"GPL", strict=False)
            t = calls.prog_test_run(b, r.ret, bytes(64), strict=False)
            val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
            b.close(r.ret)
            b.close(mfd)
            got = dict(zip(SLOTS, (int.from_bytes(val[i:i + 4], "little") for i in range(0, VAL, 4))))
            for k in ("src_port", "dst_port"):
                if got[k] in (eph, int.from_bytes(eph.to_bytes(2, "big"), "little")):
                    got[k] = "EPH"
            out.append((t.ret, t.retval, got))
        for fd in fds:
            b.close(fd)
        return out
    return scenario_


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from(ADDRS4), st.sampled_from(PORTS + ["EPH"]),
                          st.sampled_from(ADDRS4), st.sampled_from(PORTS + ["EPH"]),
                          st.sampled_from([ProgType.SCHED_CLS, ProgType.XDP])), min_size=6, max_size=6))
def test_sk_lookup_hypothesis_same_as_kernel(draws):
    draws = [(u, i6, (sa != "0.0.0.0") if i6 else sa, sp, (da != "0.0.0.0") if i6 else da, dp, pt)
             for u, i6, sa, sp, da, dp, pt in draws]
    fake = FakeBackend(Kernel())
    got = drawn_scenario(draws)(fake)
    assert not fake.cleanup()
    assert got == in_netns(["ip link set lo up"], drawn_scenario(draws))


SKL_CTX = "struct bpf_sk_lookup"


def sk_lookup_verdict_prog():
    """An sk_lookup program: drop TCP lookups of LPORT and UDP lookups of UPORT, pass the rest."""
    o = lambda f: ffi.offsetof(SKL_CTX, f)      # noqa: E731
    return [BPF_LDX_MEM(BPF_W, 2, 1, o("local_port")), BPF_LDX_MEM(BPF_W, 3, 1, o("protocol")),
            BPF_MOV64_IMM(0, 1),
            BPF_JMP_IMM(BPF_JNE, 2, LPORT, 2), BPF_JMP_IMM(BPF_JNE, 3, 6, 1), BPF_MOV64_IMM(0, 0),
            BPF_JMP_IMM(BPF_JNE, 2, UPORT, 2), BPF_JMP_IMM(BPF_JNE, 3, 17, 1), BPF_MOV64_IMM(0, 0),
            BPF_EXIT_INSN()]


def sk_lookup_prog_scenario(b):
    import os
    from uapi.bpf import AttachType
    eph, fds = setup_sockets(b)
    r = calls.prog_load(b, ProgType.SK_LOOKUP, assemble_insns(sk_lookup_verdict_prog()), b"GPL",
                        expected_attach_type=AttachType.SK_LOOKUP, strict=False, log_level=1, log_size=1 << 16)
    assert r.ret >= 0, r.log
    ns = b.open("/proc/self/ns/net", os.O_RDONLY)
    link = calls.link_create(b, r.ret, ns, AttachType.SK_LOOKUP)
    out = []
    tcp, udp = FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp
    for helper, tup, length in ((tcp, tuple4(LO4, 1, LO4, LPORT), 12), (tcp, tuple4(LO4, eph, LO4, LPORT), 12),
                                (tcp, tuple4(LO4, 1, LO4, WPORT), 12), (tcp, tuple4(LO4, 1, LO4, V6PORT), 12),
                                (tcp, tuple6(LO6, 1, LO6, V6PORT), 36), (udp, tuple4(LO4, 1, LO4, UPORT), 12),
                                (udp, tuple4(LO4, 7777, LO4, UCPORT), 12), (udp, tuple4(LO4, 1, LO4, UWPORT), 12)):
        for pt in (ProgType.SCHED_CLS, ProgType.XDP):
            mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
            insns = lookup_prog(mfd, helper, tup, length, (1 << 64) - 1, 0, casts=pt != ProgType.XDP)
            p = calls.prog_load(b, pt, assemble_insns(insns), b"GPL", strict=False)
            t = calls.prog_test_run(b, p.ret, bytes(64), strict=False)
            val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
            out.append((pt.name, helper.name, t.ret, val[:4 * 5].hex()))
            b.close(p.ret)
            b.close(mfd)
    for fd in (link, ns, r.ret, *fds):
        b.close(fd)
    return out


def test_sk_lookup_programs_see_helper_lookups_same_as_kernel():
    fake = FakeBackend(Kernel())
    got = sk_lookup_prog_scenario(fake)
    assert not fake.cleanup()
    want = in_netns(["ip link set lo up"], sk_lookup_prog_scenario)
    assert got == want
    assert [w[3][:8] for w in want[::2]] == ["00000000", "01000000", "01000000", "01000000", "01000000",
                                              "00000000", "01000000", "01000000"]
