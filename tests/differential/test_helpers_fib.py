"""bpf_fib_lookup and bpf_check_mtu, fakekernel vs the real kernel, through PROG_TEST_RUN of
SCHED_CLS and XDP programs.

The real kernel's FIB is made known by running its side in a forked child that unshares a
fresh network namespace and builds a topology with ``ip`` (veth pair, addresses, routes of
every type, neighbours, a second table, locked route MTUs, per-device forwarding); the fake
gets the same topology through `fakekernel.net.fib.Fib`.  Each program copies a
``struct bpf_fib_lookup`` onto its stack, calls the helper and dumps the struct and r0 into an
ARRAY map: return codes and every out field are compared.
"""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import FakeBackend
from fakekernel import Kernel
from fakekernel.net.fib import Nud
from fakekernel.net.socket import AF_INET, AF_INET6
from netnsutil import in_netns
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_DW, BPF_JEQ, BPF_W, FibLookupFlags, FuncId, MapType, ProgType)
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_IMM64, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

PARAMS = "struct bpf_fib_lookup"
PSIZE = ffi.sizeof(PARAMS)                 # 64
VAL = PSIZE + 8
V1, V0 = 2, 3                              # a veth pair: the peer registers first
MAC = {V0: bytes.fromhex("020000000002"), V1: bytes.fromhex("020000000003")}
NEIGH = [("10.0.0.2", "02000000a002", V0, "permanent"), ("10.0.0.3", "02000000a003", V0, "stale"),
         ("10.0.0.4", None, V0, "incomplete"), ("10.0.0.5", "02000000a005", V0, "failed"),
         ("10.1.0.2", "02000000a102", V1, "reachable"),
         ("2001:db8::2", "02000000b002", V0, "permanent"), ("2001:db8:1::2", "02000000b102", V1, "permanent")]
ROUTES = [  # (ip route args, fake add_route kwargs)
    ("192.168.0.0/16 via 10.0.0.2", dict(dst="192.168.0.0/16", via="10.0.0.2")),
    ("192.168.1.0/24 via 10.0.0.3 metric 5", dict(dst="192.168.1.0/24", via="10.0.0.3", metric=5)),
    ("172.16.0.0/12 via 10.1.0.2 dev v1", dict(dst="172.16.0.0/12", via="10.1.0.2", dev=V1)),
    ("blackhole 10.9.0.0/16", dict(dst="10.9.0.0/16", type="blackhole")),
    ("unreachable 10.8.0.0/16", dict(dst="10.8.0.0/16", type="unreachable")),
    ("prohibit 10.7.0.0/16", dict(dst="10.7.0.0/16", type="prohibit")),
    ("10.6.0.0/16 via 10.0.0.2 mtu lock 1300", dict(dst="10.6.0.0/16", via="10.0.0.2", mtu=1300, mtu_lock=True)),
    ("10.5.0.0/16 via 10.0.0.2 mtu 1200", dict(dst="10.5.0.0/16", via="10.0.0.2", mtu=1200)),
    ("10.4.0.0/16 dev v1 src 10.1.0.1 metric 7", dict(dst="10.4.0.0/16", dev=V1, src="10.1.0.1", metric=7)),
    ("10.3.0.0/16 via 10.0.0.4", dict(dst="10.3.0.0/16", via="10.0.0.4")),
    ("10.2.0.0/16 via 10.0.0.5", dict(dst="10.2.0.0/16", via="10.0.0.5")),
    ("203.0.113.0/24 via 10.0.0.9", dict(dst="203.0.113.0/24", via="10.0.0.9")),
    ("table 100 198.51.100.0/24 via 10.1.0.2", dict(dst="198.51.100.0/24", via="10.1.0.2", table=100)),
    ("table 100 blackhole 10.0.0.0/24", dict(dst="10.0.0.0/24", type="blackhole", table=100)),
    ("-6 2001:db8:9::/48 via 2001:db8::2", dict(dst="2001:db8:9::/48", via="2001:db8::2")),
    ("-6 blackhole 2001:db8:a::/48", dict(dst="2001:db8:a::/48", type="blackhole")),
    ("-6 unreachable 2001:db8:b::/48", dict(dst="2001:db8:b::/48", type="unreachable")),
    ("-6 prohibit 2001:db8:c::/48", dict(dst="2001:db8:c::/48", type="prohibit")),
    ("-6 table 100 2001:db8:d::/48 via 2001:db8:1::2 dev v1",
     dict(dst="2001:db8:d::/48", via="2001:db8:1::2", dev=V1, table=100)),
    ("-6 2001:db8:e::/48 via 2001:db8::2 mtu lock 1300", dict(dst="2001:db8:e::/48", via="2001:db8::2", mtu=1300,
                                                                mtu_lock=True)),
    ("-6 2001:db8:f::/48 via 2001:db8::7", dict(dst="2001:db8:f::/48", via="2001:db8::7")),
]
ADDRS = [(V0, "10.0.0.1/24"), (V1, "10.1.0.1/24"), (V0, "2001:db8::1/64"), (V1, "2001:db8:1::1/64")]


def _host_setup() -> list[str]:
    cmds = ["ip link set lo up", "ip link add v0 type veth peer name v1",
            f"ip link set v0 address {MAC[V0].hex(':')}", f"ip link set v1 address {MAC[V1].hex(':')}",
            "ip link set v0 mtu 1400", "ip link set v0 up", "ip link set v1 up"]
    names = {V0: "v0", V1: "v1"}
    for dev, cidr in ADDRS:
        cmds.append(f"ip addr add {cidr} dev {names[dev]}" + (" nodad" if ":" in cidr else ""))
    for addr, mac, dev, nud in NEIGH:
        ll = f" lladdr {bytes.fromhex(mac).hex(':')}" if mac else ""
        cmds.append(f"ip neigh add {addr}{ll} dev {names[dev]} nud {nud}")
    for args, _ in ROUTES:
        fam = "-6 " if args.startswith("-6 ") else ""
        cmds.append(f"ip {fam}route add {args.removeprefix('-6 ')}")
    cmds += ["sysctl -qw net.ipv4.conf.all.forwarding=1", "sysctl -qw net.ipv6.conf.all.forwarding=1",
             "sysctl -qw net.ipv4.conf.v1.forwarding=0"]
    return cmds


def _fake_setup(kern: Kernel) -> None:
    net = kern.world.net
    fib = net.fib
    assert net.add_device("v1", "veth", dev_addr=MAC[V1]) == V1
    assert net.add_device("v0", "veth", dev_addr=MAC[V0], mtu=1400) == V0
    fib.link_set_up(V0)
    fib.link_set_up(V1)
    for dev, cidr in ADDRS:
        fib.add_addr(dev, cidr)
    for addr, mac, dev, nud in NEIGH:
        fib.add_neigh(addr, bytes.fromhex(mac) if mac else bytes(6), dev, Nud[nud.upper()])
    for _, kw in ROUTES:
        fib.add_route(**kw)
    fib.set_forwarding(AF_INET, True)
    fib.set_forwarding(AF_INET6, True)
    fib.set_forwarding(AF_INET, False, V1)


def params(family=AF_INET, src="0.0.0.0", dst="0.0.0.0", ifindex=V0, tot_len=0, tbid=0, mark=0, l4=6,
           sport=1234, dport=80, tos=0):
    p = ffi.new(PARAMS + " *")
    p.family, p.l4_protocol, p.ifindex, p.tot_len = family, l4, ifindex, tot_len
    p.sport, p.dport = sport, dport
    if family == AF_INET6:
        ffi.memmove(p.ipv6_src, ipaddress.ip_address(src).packed, 16)
        ffi.memmove(p.ipv6_dst, ipaddress.ip_address(dst).packed, 16)
        p.flowinfo = tos
    else:
        p.ipv4_src = int.from_bytes(ipaddress.ip_address(src).packed, "little")
        p.ipv4_dst = int.from_bytes(ipaddress.ip_address(dst).packed, "little")
        p.tos = tos
    if tbid:
        p.tbid = tbid
    if mark:
        p.mark = mark
    return bytes(ffi.buffer(p))


def fib_prog(mfd, raw: bytes, flags: int, plen: int = PSIZE):
    """Copy `raw` to fp-64, fib_lookup(ctx, fp-64, plen, flags), store the struct and r0 into map[0]."""
    body = [BPF_MOV64_REG(6, 1)]
    for i in range(PSIZE // 8):
        body += [*BPF_LD_IMM64(1, int.from_bytes(raw[8 * i:8 * i + 8], "little")),
                 BPF_STX_MEM(BPF_DW, 10, 1, -PSIZE + 8 * i)]
    body += [BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -PSIZE),
             BPF_MOV64_IMM(3, plen), *BPF_LD_IMM64(4, flags), BPF_CALL_HELPER(FuncId.fib_lookup)]
    return body + _dump(mfd, -PSIZE, PSIZE // 8)


def _dump(mfd, off, words):
    body = [BPF_MOV64_REG(7, 0), BPF_ST_MEM(BPF_W, 10, off - 8, 0), BPF_MOV64_REG(2, 10),
            BPF_ALU64_IMM(BPF_ADD, 2, off - 8), *BPF_LD_MAP_FD(1, mfd),
            BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 2 * words + 1)]
    for i in range(words):
        body += [BPF_LDX_MEM(BPF_DW, 1, 10, off + 8 * i), BPF_STX_MEM(BPF_DW, 0, 1, 8 * i)]
    return body + [BPF_STX_MEM(BPF_DW, 0, 7, 8 * words), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]


def pkt(n=64):
    return bytes(12) + b"\x08\x00" + bytes(n - 14)


def run_prog(b, prog_type, insns_of, data, ctx=None):
    mfd = calls.map_create(b, MapType.ARRAY, 4, VAL, 1)
    r = calls.prog_load(b, prog_type, assemble_insns(insns_of(mfd)), b"GPL", strict=False)
    if r.ret < 0:
        b.close(mfd)
        return ("load", r.ret)
    t = calls.prog_test_run(b, r.ret, data, data_size_out=len(data) + 256, ctx_in=ctx, strict=False)
    val = calls.map_lookup_elem(b, mfd, bytes(4), VAL)
    b.close(r.ret)
    b.close(mfd)
    return (t.ret, t.retval, val[:-8], int.from_bytes(val[-8:], "little", signed=True))


def decode(res):
    """A readable form of one result (for failure messages)."""
    if res[0] == "load" or res[0] != 0:
        return res
    p = ffi.from_buffer(PARAMS + " *", bytearray(res[2]))
    return dict(r0=res[3], ifindex=p.ifindex, mtu=p.mtu_result, metric=p.rt_metric, smac=bytes(p.smac).hex(),
                dmac=bytes(p.dmac).hex(), raw=res[2].hex())


def compare(cases, rules=()):
    """cases: [(prog_type, params bytes, flags, plen, data)] run on both kernels; `rules`:
    [(ip rule arguments, Fib.add_rule kwargs)] added to the topology."""
    def scenario(b):
        out = []
        for prog_type, raw, flags, plen, data in cases:
            out.append(run_prog(b, prog_type, lambda m: fib_prog(m, raw, flags, plen), data))
        return out
    kern = Kernel()
    _fake_setup(kern)
    for _, kw in rules:
        kern.world.net.fib.add_rule(**kw)
    fake = FakeBackend(kern)
    got = scenario(fake)
    assert not fake.cleanup()
    want = in_netns(_host_setup() + [f"ip {args}" for args, _ in rules], scenario)
    for case, g, w in zip(cases, got, want):
        assert w[0] != "load", f"the real kernel refused the program: {w}"
        assert decode(g) == decode(w), case
    return want


F = FibLookupFlags
V4_DSTS = ["192.168.5.5", "192.168.1.9", "172.20.0.1", "10.9.1.1", "10.8.1.1", "10.7.1.1", "10.6.1.1",
           "10.5.1.1", "10.4.1.1", "10.3.1.1", "10.2.1.1", "203.0.113.7", "198.51.100.1", "10.0.0.2", "10.0.0.3",
           "10.0.0.1", "10.0.0.255", "10.0.0.0", "127.0.0.1", "127.1.2.3", "10.1.0.2", "8.8.8.8", "10.0.0.77"]
V6_DSTS = ["2001:db8:9::1", "2001:db8:a::1", "2001:db8:b::1", "2001:db8:c::1", "2001:db8:d::1",
           "2001:db8:e::1", "2001:db8:f::1", "2001:db8::2", "2001:db8::1", "2001:db8::", "2001:db8:1::2",
           "2001:db8::99", "fe80::1", "ff02::1", "::1", "2001:db9::1"]


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP])
def test_fib_lookup_ipv4_every_route_type(prog_type):
    cases = []
    for dst in V4_DSTS:
        for flags in (0, F.SKIP_NEIGH, F.SRC, F.DIRECT, F.OUTPUT):
            cases.append((prog_type, params(dst=dst), flags, PSIZE, pkt()))
    compare(cases)


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP])
def test_fib_lookup_ipv6_every_route_type(prog_type):
    cases = []
    for dst in V6_DSTS:
        for flags in (0, F.SKIP_NEIGH, F.SRC, F.DIRECT):
            cases.append((prog_type, params(AF_INET6, src="2001:db8::1", dst=dst), flags, PSIZE, pkt()))
    compare(cases)


def test_fib_lookup_tbid_mark_ifindex_and_errors():
    st_ = ProgType.SCHED_CLS
    cases = [
        (st_, params(dst="198.51.100.1", tbid=100), F.DIRECT | F.TBID, PSIZE, pkt()),
        (st_, params(dst="198.51.100.1", tbid=100), F.TBID, PSIZE, pkt()),          # TBID without DIRECT
        (st_, params(dst="192.168.5.5", tbid=100), F.DIRECT | F.TBID, PSIZE, pkt()),
        (st_, params(dst="10.0.0.2", tbid=100), F.DIRECT | F.TBID, PSIZE, pkt()),   # table 100's blackhole
        (st_, params(dst="10.0.0.2", tbid=255), F.DIRECT | F.TBID, PSIZE, pkt()),   # local: merged with main
        (st_, params(dst="10.0.0.2", tbid=77), F.DIRECT | F.TBID, PSIZE, pkt()),    # no such table
        (st_, params(dst="10.0.0.2", tbid=0), F.DIRECT | F.TBID, PSIZE, pkt()),
        (st_, params(AF_INET6, src="2001:db8::1", dst="2001:db8:d::5", tbid=100), F.DIRECT | F.TBID, PSIZE, pkt()),
        (st_, params(AF_INET6, src="2001:db8::1", dst="2001:db8:d::5", tbid=99), F.DIRECT | F.TBID, PSIZE, pkt()),
        (st_, params(dst="192.168.5.5", mark=7), F.MARK, PSIZE, pkt()),
        (st_, params(dst="192.168.5.5", ifindex=V1), 0, PSIZE, pkt()),            # forwarding off on v1
        (st_, params(AF_INET6, src="2001:db8::1", dst="2001:db8:9::1", ifindex=V1), 0, PSIZE, pkt()),
        (st_, params(dst="192.168.5.5", ifindex=42), 0, PSIZE, pkt()),            # ENODEV
        (st_, params(AF_INET6, src="2001:db8::1", dst="2001:db8:9::1", ifindex=42), 0, PSIZE, pkt()),
        (st_, params(AF_INET6, src="fe80::1", dst="2001:db8:9::1", ifindex=42), 0, PSIZE, pkt()),  # strict first
        (st_, params(family=7, dst="192.168.5.5"), 0, PSIZE, pkt()),              # EAFNOSUPPORT
        (st_, params(dst="192.168.5.5"), 0x80, PSIZE, pkt()),                     # unknown flag
        (st_, params(dst="192.168.5.5"), 0, PSIZE - 8, pkt()),                    # short plen
        (st_, params(dst="192.168.5.5", ifindex=1), F.OUTPUT, PSIZE, pkt()),      # oif lo: no route via lo
        (st_, params(dst="10.0.0.2", ifindex=V1), F.OUTPUT | F.SKIP_NEIGH, PSIZE, pkt()),
        (ProgType.XDP, params(dst="192.168.5.5", ifindex=42), 0, PSIZE, pkt()),
        (ProgType.XDP, params(dst="192.168.5.5"), 1 << 20, PSIZE, pkt()),
    ]
    compare(cases)


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP])
def test_fib_lookup_tot_len_frag_needed(prog_type):
    cases = []
    for dst, fam, src in (("192.168.5.5", AF_INET, "0.0.0.0"), ("10.6.1.1", AF_INET, "0.0.0.0"),
                          ("10.5.1.1", AF_INET, "0.0.0.0"), ("172.20.0.1", AF_INET, "0.0.0.0"),
                          ("2001:db8:9::1", AF_INET6, "2001:db8::1"), ("2001:db8:e::1", AF_INET6, "2001:db8::1")):
        for tot_len in (0, 1, 1200, 1300, 1301, 1400, 1401, 1500, 1501, 65535):
            cases.append((prog_type, params(fam, src=src, dst=dst, tot_len=tot_len), 0, PSIZE, pkt()))
    cases.append((prog_type, params(dst="192.168.5.5"), 0, PSIZE, pkt(1500)))
    cases.append((prog_type, params(dst="192.168.5.5"), 0, PSIZE, pkt(1419)))
    cases.append((prog_type, params(dst="192.168.5.5"), 0, PSIZE, pkt(1418)))
    compare(cases)


HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
v4 = st.one_of(st.sampled_from(V4_DSTS), st.ip_addresses(v=4).map(str))
v6 = st.one_of(st.sampled_from(V6_DSTS), st.ip_addresses(v=6).map(str))
flag_sets = st.integers(0, 0x3F)


@HYP
@given(st.lists(st.tuples(st.booleans(), v4, v6, flag_sets, st.sampled_from([0, 1, 2, 3, 100, 255]),
                          st.sampled_from([0, 1300, 1400, 1500]), st.sampled_from([0, 1, V0, V1])),
                min_size=8, max_size=8))
def test_fib_lookup_hypothesis_same_as_kernel(draws):
    cases = []
    for is6, d4, d6, flags, tbid, tot_len, ifindex in draws:
        raw = params(AF_INET6, src="2001:db8::1", dst=d6, tbid=tbid, tot_len=tot_len, ifindex=ifindex) if is6 \
            else params(dst=d4, tbid=tbid, tot_len=tot_len, ifindex=ifindex)
        cases.append((ProgType.SCHED_CLS if tot_len != 1300 else ProgType.XDP, raw, flags, PSIZE, pkt()))
    compare(cases)


def mtu_prog(mfd, ifindex: int, mtu_len: int, len_diff: int, flags: int):
    """*(u32 *)(fp-8) = mtu_len; check_mtu(ctx, ifindex, fp-8, len_diff, flags); dump fp-8 and r0."""
    body = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_DW, 10, -8, 0), BPF_ST_MEM(BPF_W, 10, -8, mtu_len),
            BPF_MOV64_REG(1, 6), *BPF_LD_IMM64(2, ifindex), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8),
            *BPF_LD_IMM64(4, len_diff), *BPF_LD_IMM64(5, flags), BPF_CALL_HELPER(FuncId.check_mtu)]
    return body + _dump(mfd, -8, 1)


def compare_mtu(cases):
    def scenario(b):
        out = []
        for prog_type, args, data in cases:
            res = run_prog(b, prog_type, lambda m: mtu_prog(m, *args), data)
            out.append(res if res[0] != 0 else (res[0], res[1], res[2][:8], res[3]))
        return out
    kern = Kernel()
    _fake_setup(kern)
    fake = FakeBackend(kern)
    got = scenario(fake)
    assert not fake.cleanup()
    want = in_netns(_host_setup(), scenario)
    for case, g, w in zip(cases, got, want):
        assert w[0] != "load", f"the real kernel refused the program: {w}"
        assert g == w, case


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP])
def test_check_mtu_devices_lengths_flags(prog_type):
    cases = []
    for ifindex in (0, 1, V0, V1, 42):
        for mtu_len, len_diff in ((0, 0), (0, 1400), (0, -50), (1400, 0), (1401, 0), (1500, 0), (1501, 0),
                                  (1386, 14), (65536, 0), (65537, 0), (0, 65536 - 50), (0, 65536 - 49)):
            cases.append((prog_type, (ifindex, mtu_len, len_diff & 0xFFFFFFFF, 0), pkt()))
    for flags in (1, 2, 1 << 40):
        cases.append((prog_type, (0, 0, 0, flags), pkt()))
        cases.append((prog_type, (0, 100, 0, flags), pkt()))
        cases.append((prog_type, (0, 0, 5, flags), pkt()))
    cases.append((prog_type, (V0, 0, 0, 0), pkt(1414)))
    cases.append((prog_type, (V0, 0, 0, 0), pkt(1415)))
    compare_mtu(cases)


RULES = [
    ("rule add pref 100 fwmark 7 table 100", dict(family=AF_INET, pref=100, fwmark=7, table=100)),
    ("rule add pref 110 to 10.10.0.0/16 blackhole", dict(family=AF_INET, pref=110, dst="10.10.0.0/16",
                                                          action="blackhole")),
    ("rule add pref 120 iif v0 to 192.168.7.0/24 prohibit", dict(family=AF_INET, pref=120, iif=V0,
                                                                  dst="192.168.7.0/24", action="prohibit")),
    ("rule add pref 130 not from 10.0.0.0/8 table 100", dict(family=AF_INET, pref=130, invert=True,
                                                              src="10.0.0.0/8", table=100)),
    ("rule add pref 135 from 10.0.0.0/8 to 172.16.5.0/24 unreachable",
     dict(family=AF_INET, pref=135, src="10.0.0.0/8", dst="172.16.5.0/24", action="unreachable")),
    ("rule add pref 140 fwmark 0x10/0xf0 table 77", dict(family=AF_INET, pref=140, fwmark=0x10, mask=0xF0,
                                                          table=77)),
    ("-6 rule add pref 100 fwmark 7 table 100", dict(family=AF_INET6, pref=100, fwmark=7, table=100)),
    ("-6 rule add pref 110 to 2001:db8:7::/48 blackhole", dict(family=AF_INET6, pref=110, dst="2001:db8:7::/48",
                                                                action="blackhole")),
]


def test_fib_lookup_policy_rules_mark_iif_and_unmerged_tables():
    st_ = ProgType.SCHED_CLS
    cases = []
    for dst in ("198.51.100.1", "10.10.1.1", "192.168.7.1", "172.16.5.1", "10.0.0.1", "10.0.0.2", "192.168.5.5",
                "127.0.0.1"):
        for src in ("0.0.0.0", "10.1.2.3"):
            for flags, mark, tbid in ((0, 0, 0), (F.MARK, 7, 0), (F.MARK, 0x17, 0), (F.MARK, 0x1F7, 0),
                                      (F.DIRECT, 0, 0), (F.DIRECT | F.TBID, 0, 255), (F.OUTPUT, 0, 0)):
                cases.append((st_, params(dst=dst, src=src, mark=mark, tbid=tbid), flags, PSIZE, pkt()))
    for dst in ("2001:db8:d::1", "2001:db8:7::1", "2001:db8:9::1", "2001:db8::1"):
        for flags, mark in ((0, 0), (F.MARK, 7), (F.DIRECT, 0)):
            cases.append((st_, params(AF_INET6, src="2001:db8::1", dst=dst, mark=mark), flags, PSIZE, pkt()))
    compare(cases, RULES)
