"""BPF_PROG_TYPE_SK_LOOKUP and BPF_PROG_TYPE_NETFILTER, fakekernel vs the real kernel: ctx access rules
and return ranges (verdicts and logs), the helper sets, PROG_TEST_RUN (a ``struct bpf_sk_lookup``
ctx_in: the fields a program reads, family/port/sk validation, ctx_out, bpf_sk_assign(NULL); an IP
packet or frame with a ``struct nf_hook_state`` ctx_in), sk_lookup netns links and netfilter links
(the host side in a fresh network namespace), and the world hooks that run them."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_H, BPF_JEQ, BPF_JNE, BPF_RSH, BPF_W, AttachType,
                      FuncId, ProgType, SK_DROP, SK_PASS)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LDX_MEM,
                       BPF_LDX_MEMSX, BPF_MOV64_IMM, BPF_ST_MEM, assemble_insns)
from uapi.netfilter import NF_HOOK_STATE, NfInetHook, NfProto, NfVerdict
from uapi.netfilter import ffi as nf_ffi
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

SKL = ProgType.SK_LOOKUP
CTX = "struct bpf_sk_lookup"
CTX_SIZE = ffi.sizeof(CTX)
AF_INET, AF_INET6 = 2, 10
TCP, UDP = 6, 17


def O(field, *idx):
    return ffi.offsetof(CTX, field, *idx)


def load(b, insns, ptype=SKL, eat=AttachType.SK_LOOKUP):
    return calls.prog_load(b, ptype, assemble_insns(insns), log_level=1, log_size=1 << 16,
                           expected_attach_type=eat, strict=False)


def loaded(b, insns):
    r = load(b, insns)
    assert r.ret >= 0, r.log
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def field_is(off, size, value):
    """SK_PASS if *(size *)(ctx + off) == value, else SK_DROP."""
    return [BPF_LDX_MEM(size, 2, 1, off), BPF_JMP_IMM(BPF_JNE, 2, value, 2)] + ret(SK_PASS) + ret(SK_DROP)


# ---------------------------------------------------------------- loading

LOADS = {
    "family_w": field_is(O("family"), BPF_W, AF_INET),
    "family_b1": field_is(O("family") + 1, BPF_B, 0),
    "family_h2": field_is(O("family") + 2, BPF_H, 0),
    "remote_port_h": field_is(O("remote_port"), BPF_H, 0),
    "remote_port_w": field_is(O("remote_port"), BPF_W, 0),
    "remote_port_b1": field_is(O("remote_port") + 1, BPF_B, 0),
    "padding_h": field_is(O("remote_port") + 2, BPF_H, 0),
    "padding_b": field_is(O("remote_port") + 3, BPF_B, 0),
    "local_ip6_3": field_is(O("local_ip6", 3), BPF_W, 0),
    "ifindex": field_is(O("ingress_ifindex"), BPF_W, 0),
    "past_end": field_is(CTX_SIZE, BPF_W, 0),
    "dw_family": field_is(O("family"), BPF_DW, 0),
    "sk_dw": [BPF_LDX_MEM(BPF_DW, 2, 1, O("sk")), BPF_JMP_IMM(BPF_JEQ, 2, 0, 2)] + ret(SK_DROP) + ret(SK_PASS),
    "sk_w": field_is(O("sk"), BPF_W, 0),
    "ldsx": [BPF_LDX_MEMSX(BPF_W, 2, 1, O("family"))] + ret(SK_PASS),
    "write": [BPF_ST_MEM(BPF_W, 1, O("family"), 1)] + ret(SK_PASS),
    "ret2": ret(2),
    "ret_neg": ret(-1),
    "assign_null": [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 0), BPF_CALL_HELPER(FuncId.sk_assign),
                    BPF_JMP_IMM(BPF_JNE, 0, 0, 2)] + ret(SK_PASS) + ret(SK_DROP),
}


@pytest.mark.parametrize("name", sorted(LOADS))
def test_sk_lookup_load_rules(both, name):
    out = []
    for b in both:
        r = load(b, LOADS[name])
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret >= 0 or r.ret, error_lines(r.log)))
    assert out[0] == out[1]


def test_sk_lookup_wrong_expected_attach_type_einval(both):
    assert [load(b, ret(1), eat=0).ret for b in both] == [-Errno.EINVAL] * 2


def test_sk_lookup_helper_set_matches_kernel(both):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, SKL, AttachType.SK_LOOKUP), _helper_verdicts(host, SKL, AttachType.SK_LOOKUP)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


# ---------------------------------------------------------------- PROG_TEST_RUN

def skl(**fields):
    c = ffi.new(CTX + " *")
    for k, v in fields.items():
        setattr(c, k, v)
    return bytes(ffi.buffer(c))


V4 = dict(family=AF_INET, protocol=TCP, remote_ip4=0x0100000A, local_ip4=0x0200000A, remote_port=0xD204,
          local_port=80)
V6 = dict(family=AF_INET6, protocol=UDP, remote_ip6=[1, 2, 3, 4], local_ip6=[5, 6, 7, 8], remote_port=0x3500,
          local_port=53)

# (program, checks) — each program passes iff its field has the value
READS = {
    "family": (O("family"), BPF_W, AF_INET), "family6": (O("family"), BPF_W, AF_INET6),
    "proto": (O("protocol"), BPF_W, TCP), "rip4": (O("remote_ip4"), BPF_W, 0x0100000A),
    "lip4": (O("local_ip4"), BPF_W, 0x0200000A), "rport": (O("remote_port"), BPF_H, 0xD204),
    "rport_w": (O("remote_port"), BPF_W, 0xD204), "lport": (O("local_port"), BPF_W, 80),
    "lport_b": (O("local_port"), BPF_B, 80), "lip6_2": (O("local_ip6", 2), BPF_W, 7),
    "rip6_0": (O("remote_ip6", 0), BPF_W, 1), "pad": (O("remote_port") + 2, BPF_H, 0),
    "sk_null": (O("sk"), BPF_DW, 0), "ifindex": (O("ingress_ifindex"), BPF_W, 0),
}


def tr(b, fd, **kw):
    r = calls.prog_test_run(b, fd, None, strict=False, **kw)
    if r.ret == 0:
        assert 0 <= r.duration < 2**32
    return (r.ret, r.retval, r.ctx_size_out, r.ctx_out)


def scenario_reads(b):
    out = {}
    for name, (off, size, value) in READS.items():
        fd = loaded(b, field_is(off, size, value))
        out[name] = [tr(b, fd, ctx_in=skl(**V4))[:2], tr(b, fd, ctx_in=skl(**V6))[:2],
                     tr(b, fd, ctx_in=skl(**{**V4, "family": 0x10000 + AF_INET, "local_port": 80}))[:2]]
        b.close(fd)
    return out


def test_sk_lookup_test_run_reads(both):
    fake, host = both
    assert scenario_reads(fake) == scenario_reads(host)


def scenario_errors(b):
    p = loaded(b, ret(SK_PASS))
    d = loaded(b, ret(SK_DROP))
    a = loaded(b, LOADS["assign_null"])
    bad_flags = loaded(b, [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 4), BPF_CALL_HELPER(FuncId.sk_assign),
                           BPF_JMP_IMM(BPF_JNE, 0, 0, 2)] + ret(SK_PASS) + ret(SK_DROP))
    v4 = skl(**V4)
    out = [tr(b, p, ctx_in=v4), tr(b, d, ctx_in=v4), tr(b, a, ctx_in=v4), tr(b, bad_flags, ctx_in=v4),
           tr(b, p, ctx_in=v4, ctx_size_out=CTX_SIZE), tr(b, p, ctx_in=v4, ctx_size_out=8),
           tr(b, p, ctx_size_out=CTX_SIZE), tr(b, p), tr(b, p, ctx_in=v4, repeat=5),
           tr(b, p, ctx_in=skl(**{**V4, "cookie": 1})), tr(b, p, ctx_in=skl(**{**V4, "ingress_ifindex": 1})),
           tr(b, p, ctx_in=skl(**{**V4, "local_port": 0x10000})), tr(b, p, ctx_in=skl(**{**V4, "family": 1})),
           tr(b, p, ctx_in=skl(**{**V4, "family": 0})), tr(b, p, ctx_in=v4[:8]), tr(b, p, ctx_in=v4[:12]),
           tr(b, p, ctx_in=v4 + b"\0\0\0\0"), tr(b, p, ctx_in=v4 + b"\1"),
           tr(b, p, ctx_in=v4, flags=1), tr(b, p, ctx_in=v4, cpu=1), tr(b, p, ctx_in=v4, batch_size=1),
           tr(b, p, ctx_in=v4, data_size_out=8),
           calls.prog_test_run(b, p, b"\0" * 14, ctx_in=v4, strict=False).ret]
    for f in (p, d, a, bad_flags):
        b.close(f)
    return out


def test_sk_lookup_test_run_errors_and_ctx_out(both):
    fake, host = both
    assert scenario_errors(fake) == scenario_errors(host)


# ================================================================ NETFILTER


NF = ProgType.NETFILTER
NF_CTX = "struct bpf_nf_ctx"
STATE, SKB_PTR = ffi.offsetof(NF_CTX, "state"), ffi.offsetof(NF_CTX, "skb")
NF_STATE_SIZE = nf_ffi.sizeof(NF_HOOK_STATE)


def nf_load(b, insns, eat=AttachType.NETFILTER):
    return load(b, insns, NF, eat)


def state_field(off, size, shift=0):
    """r0 = (state-><field at off> >> shift) & 1"""
    return [BPF_LDX_MEM(BPF_DW, 2, 1, STATE), BPF_LDX_MEM(size, 0, 2, off), BPF_ALU64_IMM(BPF_RSH, 0, shift),
            BPF_ALU64_IMM(BPF_AND, 0, 1), BPF_EXIT_INSN()]


def ptr_set(off):
    """r0 = state-><pointer at off> != NULL"""
    return [BPF_LDX_MEM(BPF_DW, 2, 1, STATE), BPF_LDX_MEM(BPF_DW, 2, 2, off), BPF_MOV64_IMM(0, 0),
            BPF_JMP_IMM(BPF_JEQ, 2, 0, 1), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]


NF_LOADS = {
    "accept": ret(NfVerdict.ACCEPT), "ret2": ret(2),
    "state": state_field(nf_ffi.offsetof(NF_HOOK_STATE, "hook"), BPF_B),
    "skb_dw": [BPF_LDX_MEM(BPF_DW, 2, 1, SKB_PTR)] + ret(1),
    "skb_w": [BPF_LDX_MEM(BPF_W, 2, 1, SKB_PTR)] + ret(1),
    "past_end": [BPF_LDX_MEM(BPF_DW, 2, 1, 16)] + ret(1),
    "write": [BPF_ST_MEM(BPF_DW, 1, STATE, 0)] + ret(1),
}


@pytest.mark.parametrize("name", sorted(NF_LOADS))
def test_netfilter_load_rules(both, name):
    out = []
    for b in both:
        r = nf_load(b, NF_LOADS[name])
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret >= 0 or r.ret, error_lines(r.log)))
    assert out[0] == out[1]


def test_netfilter_wrong_expected_attach_type_einval(both):
    assert [nf_load(b, ret(1), eat=0).ret for b in both] == [-Errno.EINVAL] * 2


def test_netfilter_helper_set_matches_kernel(both):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, NF, AttachType.NETFILTER), _helper_verdicts(host, NF, AttachType.NETFILTER)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


def hook_state(**fields):
    c = nf_ffi.new(NF_HOOK_STATE + " *")
    for k, v in fields.items():
        setattr(c, k, nf_ffi.cast("void *", v) if k in ("in", "out", "sk", "net", "okfn") else v)
    return bytes(nf_ffi.buffer(c))


def ip4(n=40):
    return (bytes([0x45, 0, 0, n, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + bytes(range(n)))[:n]


def eth(proto, payload):
    return bytes(6) + bytes(range(1, 7)) + proto.to_bytes(2, "big") + payload


def nf_tr(b, fd, data=None, **kw):
    r = calls.prog_test_run(b, fd, data, strict=False, **kw)
    return (r.ret, r.retval, r.data_size_out)


def scenario_nf(b):
    fds = {name: nf_load(b, insns).ret for name, insns in (
        ("accept", ret(NfVerdict.ACCEPT)), ("drop", ret(NfVerdict.DROP)),
        ("hook_odd", state_field(0, BPF_B)), ("pf_v6", state_field(1, BPF_B, 3)),
        ("has_in", ptr_set(8)), ("has_out", ptr_set(16)))}
    assert all(v >= 0 for v in fds.values())
    a = fds["accept"]
    v4, v6 = NfProto.IPV4, NfProto.IPV6
    pre, local_in, fwd = NfInetHook.PRE_ROUTING, NfInetHook.LOCAL_IN, NfInetHook.FORWARD
    out = [nf_tr(b, a, ip4()), nf_tr(b, fds["drop"], ip4()), nf_tr(b, a, ip4(20)), nf_tr(b, a, ip4(19)),
           nf_tr(b, a), nf_tr(b, a, ip4(), repeat=4), nf_tr(b, a, ip4(), data_size_out=64),
           nf_tr(b, a, ip4(), flags=1), nf_tr(b, a, ip4(), cpu=1), nf_tr(b, a, ip4(), batch_size=1),
           nf_tr(b, a, bytes(4096)), nf_tr(b, a, bytes(4096 - 320 - 64)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v6, hook=NfInetHook.LOCAL_OUT)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=NfProto.ARP, hook=NfInetHook.LOCAL_OUT)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4, hook=pre)),
           nf_tr(b, a, eth(0x0800, ip4()), ctx_in=hook_state(pf=v4, hook=pre)),
           nf_tr(b, a, eth(0x0800, ip4(20)), ctx_in=hook_state(pf=v4, hook=local_in)),
           nf_tr(b, a, eth(0x0800, ip4(19)), ctx_in=hook_state(pf=v4, hook=local_in)),
           nf_tr(b, a, eth(0x0800, ip4()), ctx_in=hook_state(pf=v6, hook=fwd)),
           nf_tr(b, a, eth(0x86DD, bytes(40)), ctx_in=hook_state(pf=v6, hook=fwd)),
           nf_tr(b, a, eth(0x86DD, bytes(39)), ctx_in=hook_state(pf=v6, hook=fwd)),
           nf_tr(b, a, eth(0x86DD, bytes(40)), ctx_in=hook_state(pf=v4, hook=fwd)),
           nf_tr(b, a, eth(0x0806, ip4()), ctx_in=hook_state(pf=v4, hook=pre)),
           nf_tr(b, a, eth(0x0800, ip4()), ctx_in=hook_state(pf=v4, hook=9)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4, hook=NfInetHook.LOCAL_OUT, okfn=1)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4, hook=NfInetHook.LOCAL_OUT, sk=1)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4, hook=NfInetHook.LOCAL_OUT, out=1)),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4) + b"\0"),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4) + b"\1"),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4)[:2]),
           nf_tr(b, a, ip4(), ctx_in=hook_state(pf=v4), ctx_size_out=NF_STATE_SIZE)]
    for name in ("hook_odd", "pf_v6", "has_in", "has_out"):
        fd = fds[name]
        out.append((name, nf_tr(b, fd, ip4()), nf_tr(b, fd, ip4(), ctx_in=hook_state(pf=v6, hook=0)),
                    nf_tr(b, fd, eth(0x0800, ip4()), ctx_in=hook_state(pf=v4, hook=local_in))))
    for fd in fds.values():
        b.close(fd)
    return out


def test_netfilter_test_run(both):
    fake, host = both
    assert scenario_nf(fake) == scenario_nf(host)



_U32S = st.integers(0, 2**32 - 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(family=st.sampled_from([AF_INET, AF_INET6, 0, 1, 0x10000 + AF_INET, 0x10000 + AF_INET6]),
       protocol=_U32S, rip4=_U32S, lip4=_U32S, rport=st.integers(0, 0xFFFF),
       lport=st.sampled_from([0, 1, 80, 0xFFFF, 0x10000, 2**32 - 1]),
       ip6=st.lists(_U32S, min_size=8, max_size=8))
def test_sk_lookup_random_ctx_same_on_both(both, family, protocol, rip4, lip4, rport, lport, ip6):
    ctx = skl(family=family, protocol=protocol, remote_ip4=rip4, local_ip4=lip4, remote_port=rport,
              local_port=lport, remote_ip6=ip6[:4], local_ip6=ip6[4:])
    # passes iff (protocol + local_port + remote_port + remote_ip4 + local_ip6[1]) is odd
    prog = [BPF_LDX_MEM(BPF_W, 0, 1, O("protocol")), BPF_LDX_MEM(BPF_W, 2, 1, O("local_port")),
            BPF_ALU64_REG(BPF_ADD, 0, 2), BPF_LDX_MEM(BPF_H, 2, 1, O("remote_port")), BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_LDX_MEM(BPF_W, 2, 1, O("remote_ip4")), BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_LDX_MEM(BPF_W, 2, 1, O("local_ip6", 1)), BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_ALU64_IMM(BPF_AND, 0, 1), BPF_EXIT_INSN()]

    def scenario(b):
        fd = loaded(b, prog)
        out = tr(b, fd, ctx_in=ctx, ctx_size_out=CTX_SIZE)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- sk_lookup links on a netns

def sk_lookup_links_scenario(b):
    import os
    from uapi.bpf import BpfCmd
    p = loaded(b, ret(SK_PASS))
    d = loaded(b, ret(SK_DROP))
    ns = b.open("/proc/self/ns/net", os.O_RDONLY)
    pid, did = (calls.obj_get_info_by_fd(b, f, "prog")[0].id for f in (p, d))
    names = {pid: "p", did: "d"}

    def link(prog, eat=AttachType.SK_LOOKUP, target=ns):
        return calls.raw(b, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog, link_create__target_fd=target,
                         link_create__attach_type=eat)[0]

    def query(cnt=70):
        buf = ffi.new("__u32[]", 70)
        r, a = calls.raw(b, BpfCmd.PROG_QUERY, "query.prog_cnt", query__target_fd=ns,
                         query__attach_type=AttachType.SK_LOOKUP, query__prog_ids=buf, query__prog_cnt=cnt)
        n = a.get("query.prog_cnt")
        return [r, n, [names.get(buf[i], buf[i]) for i in range(min(n, cnt, 70))]]

    out = [calls.raw(b, BpfCmd.PROG_ATTACH, "replace_bpf_fd", attach_bpf_fd=p,
                     attach_type=AttachType.SK_LOOKUP)[0],
           link(p, eat=AttachType.FLOW_DISSECTOR)]
    links = [link(p), link(d)]
    out += [[lk >= 0 for lk in links], query()]
    while len(links) < 64:
        links.append(link(p))
    out += [all(lk >= 0 for lk in links), link(d), query(cnt=2), query()[1]]
    i, _ = calls.obj_get_info_by_fd(b, links[1], "link")
    out.append([i.type, names.get(i.prog_id), i.netns.attach_type, i.netns.netns_ino != 0])
    b.close(links.pop(0))
    out.append(query()[2][:2])
    for f in links + [p, d, ns]:
        b.close(f)
    return out


def test_sk_lookup_netns_links(fake):
    from differential.test_prog_flow_dissector import in_new_netns, json_round
    assert json_round(sk_lookup_links_scenario(fake)) == in_new_netns(sk_lookup_links_scenario)


def test_sk_lookup_world_run_array(kernel):
    """World side: the attached programs run in attach order with the run-array verdict rules."""
    import os
    from fakekernel.net.net_namespace import run_sk_lookup
    from uapi.bpf import BpfCmd
    assert run_sk_lookup(kernel, skl(**V4), AF_INET, TCP) is None
    p, d = loaded(kernel, ret(SK_PASS)), loaded(kernel, ret(SK_DROP))
    ns = kernel.open("/proc/self/ns/net", os.O_RDONLY)

    def link(prog):
        return calls.raw(kernel, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog, link_create__target_fd=ns,
                         link_create__attach_type=AttachType.SK_LOOKUP)[0]
    l1 = link(p)
    assert run_sk_lookup(kernel, skl(**V4), AF_INET, TCP) == (SK_PASS, None)
    l2 = link(d)
    assert run_sk_lookup(kernel, skl(**V4), AF_INET, TCP) == (SK_DROP, None)
    for f in (l1, l2, p, d, ns):
        kernel.close(f)


# ---------------------------------------------------------------- netfilter links

NF_PRI_FIRST, NF_PRI_LAST = -(1 << 31), (1 << 31) - 1


def nf_link_create(b, prog, pf, hook, prio, nf_flags=0, flags=0, eat=AttachType.NETFILTER):
    """LINK_CREATE for netfilter (the priority is a signed field: set on the cdata directly)."""
    from uapi.attr import Attr
    from uapi.bpf import BpfCmd
    a = Attr()
    lc = a.c.link_create
    lc.prog_fd, lc.attach_type, lc.flags = prog, eat, flags
    lc.netfilter.pf, lc.netfilter.hooknum, lc.netfilter.priority, lc.netfilter.flags = pf, hook, prio, nf_flags
    return b.bpf(BpfCmd.LINK_CREATE, a.c, ffi.sizeof("union bpf_attr"))


def nf_links_scenario(b):
    from uapi.bpf import BPF_F_NETFILTER_IP_DEFRAG, BpfCmd
    p = nf_load(b, ret(NfVerdict.ACCEPT)).ret
    d = nf_load(b, ret(NfVerdict.DROP)).ret
    pid = calls.obj_get_info_by_fd(b, p, "prog")[0].id

    def link(prog=p, pf=NfProto.IPV4, hook=NfInetHook.LOCAL_IN, prio=0, nf_flags=0, flags=0,
             eat=AttachType.NETFILTER):
        return nf_link_create(b, prog, pf, hook, prio, nf_flags, flags, eat)

    def info(lk):
        i, _ = calls.obj_get_info_by_fd(b, lk, "link")
        nf = i.netfilter
        return [i.type, i.prog_id == pid, nf.pf, nf.hooknum, nf.priority, nf.flags]

    links = [link(), link(pf=NfProto.IPV6, hook=NfInetHook.POST_ROUTING, prio=-5), link(prio=NF_PRI_FIRST + 1),
             link(prio=NF_PRI_LAST - 1), link(d, hook=NfInetHook.PRE_ROUTING)]
    out = [[lk >= 0 for lk in links], info(links[0]), info(links[1]), info(links[2]),
           link(pf=NfProto.ARP), link(pf=NfProto.UNSPEC), link(pf=NfProto.INET), link(hook=NfInetHook.NUMHOOKS),
           link(hook=255), link(nf_flags=2), link(nf_flags=1 << 31), link(prio=NF_PRI_FIRST),
           link(prio=NF_PRI_LAST), link(nf_flags=BPF_F_NETFILTER_IP_DEFRAG, prio=-400),
           link(nf_flags=BPF_F_NETFILTER_IP_DEFRAG, prio=NF_PRI_FIRST), link(flags=1), link(eat=0),
           link(pf=NfProto.ARP, nf_flags=2, prio=NF_PRI_FIRST),
           calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=links[0], link_update__new_prog_fd=d)[0],
           calls.raw(b, BpfCmd.LINK_DETACH, None, link_detach__link_fd=links[0])[0], info(links[0]),
           calls.raw(b, BpfCmd.LINK_DETACH, None, link_detach__link_fd=links[0])[0]]
    for f in links + [p, d]:
        if f >= 0:
            b.close(f)
    return out


def test_netfilter_links(fake):
    from differential.test_prog_flow_dissector import in_new_netns, json_round
    assert json_round(nf_links_scenario(fake)) == in_new_netns(nf_links_scenario)


def test_netfilter_world_hook_runs_links_by_priority(kernel):
    """World side: a packet through LOCAL_IN meets the links in priority order; a drop ends it."""
    from fakekernel.net.nf_bpf_link import nf_hook_slow
    counter = calls.map_create(kernel, 2, 4, 8, 1)      # BPF_MAP_TYPE_ARRAY
    assert nf_hook_slow(kernel, NfProto.IPV4, NfInetHook.LOCAL_IN, ip4()) == NfVerdict.ACCEPT
    p = nf_load(kernel, ret(NfVerdict.ACCEPT)).ret
    d = nf_load(kernel, ret(NfVerdict.DROP)).ret

    def link(prog, prio):
        return nf_link_create(kernel, prog, NfProto.IPV4, NfInetHook.LOCAL_IN, prio)
    la = link(p, 10)
    assert nf_hook_slow(kernel, NfProto.IPV4, NfInetHook.LOCAL_IN, ip4()) == NfVerdict.ACCEPT
    ld = link(d, 20)
    assert nf_hook_slow(kernel, NfProto.IPV4, NfInetHook.LOCAL_IN, ip4()) == NfVerdict.DROP
    assert nf_hook_slow(kernel, NfProto.IPV6, NfInetHook.LOCAL_IN, ip4()) == NfVerdict.ACCEPT
    kernel.close(ld)
    assert nf_hook_slow(kernel, NfProto.IPV4, NfInetHook.LOCAL_IN, ip4()) == NfVerdict.ACCEPT
    for f in (la, p, d, counter):
        kernel.close(f)
