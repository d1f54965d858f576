"""BPF_PROG_TYPE_FLOW_DISSECTOR, fakekernel vs the real kernel: ctx and flow-keys access rules
(verdicts and logs), the helper set, PROG_TEST_RUN (data_in an Ethernet frame, data_out the
flow keys with nhoff/thoff clamped into the frame, ctx_in flags, refused fields), and the netns
attach point (PROG_ATTACH/DETACH/QUERY and netns links; the host side runs in a fresh network
namespace, never on the machine's own)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_H, BPF_JGT, BPF_JNE, BPF_LSH, BPF_W, AttachFlags,
                      BpfCmd, FuncId, ProgType, RetCode)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG,
                       BPF_LDX_MEM, BPF_LDX_MEMSX, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM,
                       assemble_insns)
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

FD = ProgType.FLOW_DISSECTOR
SKB = "struct __sk_buff"
KEYS = "struct bpf_flow_keys"
KEYS_SIZE = ffi.sizeof(KEYS)
DATA, DATA_END, FLOW_KEYS = (ffi.offsetof(SKB, f) for f in ("data", "data_end", "flow_keys"))


def K(field):
    return ffi.offsetof(KEYS, field)


def load(b, insns, lic=b"GPL"):
    return calls.prog_load(b, FD, assemble_insns(insns), lic, log_level=1, log_size=1 << 16, strict=False)


def loaded(b, insns):
    r = load(b, insns)
    assert r.ret >= 0, r.log
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


# An IPv4 dissector: ip_proto, addresses, addr_proto, thoff = nhoff + ihl * 4, sport/dport.
IPV4 = [
    BPF_LDX_MEM(BPF_W, 2, 1, DATA), BPF_LDX_MEM(BPF_W, 3, 1, DATA_END), BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS),
    BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 38), BPF_JMP_REG(BPF_JGT, 4, 3, 18),
    BPF_LDX_MEM(BPF_H, 5, 2, 12), BPF_JMP_IMM(BPF_JNE, 5, 0x0008, 16),
    BPF_LDX_MEM(BPF_B, 5, 2, 23), BPF_STX_MEM(BPF_B, 7, 5, K("ip_proto")),
    BPF_LDX_MEM(BPF_W, 5, 2, 26), BPF_STX_MEM(BPF_W, 7, 5, K("ipv4_src")),
    BPF_LDX_MEM(BPF_W, 5, 2, 30), BPF_STX_MEM(BPF_W, 7, 5, K("ipv4_dst")),
    BPF_ST_MEM(BPF_H, 7, K("addr_proto"), 0x0800),
    BPF_LDX_MEM(BPF_B, 5, 2, 14), BPF_ALU64_IMM(BPF_AND, 5, 0xF), BPF_ALU64_IMM(BPF_LSH, 5, 2),
    BPF_ALU64_IMM(BPF_ADD, 5, 14), BPF_STX_MEM(BPF_H, 7, 5, K("thoff")),
    BPF_LDX_MEM(BPF_W, 5, 2, 34), BPF_STX_MEM(BPF_W, 7, 5, K("sport")),
    BPF_MOV64_IMM(0, RetCode.OK), BPF_EXIT_INSN(),
    BPF_MOV64_IMM(0, RetCode.DROP), BPF_EXIT_INSN(),
]
# nhoff/thoff out of range (clamped by bpf_flow_dissect), flags and n_proto echoed to is_frag/dport
CLAMP = [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_ST_MEM(BPF_H, 7, K("nhoff"), 3),
         BPF_ST_MEM(BPF_H, 7, K("thoff"), 0x7FFF), BPF_LDX_MEM(BPF_W, 5, 7, K("flags")),
         BPF_STX_MEM(BPF_B, 7, 5, K("is_frag")), BPF_LDX_MEM(BPF_H, 5, 7, K("n_proto")),
         BPF_STX_MEM(BPF_H, 7, 5, K("dport"))] + ret(9)
KEEP = [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_ST_MEM(BPF_H, 7, K("nhoff"), 20),
        BPF_ST_MEM(BPF_H, 7, K("thoff"), 16)] + ret(RetCode.OK)
LOAD_BYTES = [BPF_MOV64_IMM(2, 0), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8),
              BPF_MOV64_IMM(4, 4), BPF_CALL_HELPER(FuncId.skb_load_bytes), BPF_EXIT_INSN()]


def ip4(n=60, proto=17):
    eth = bytes(6) + bytes(range(1, 7)) + b"\x08\x00"
    ip = bytes([0x45, 0, 0, n - 14, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    return (eth + ip + b"\x12\x34\x56\x78" + bytes(range(n)))[:n]


# ---------------------------------------------------------------- loading

LOADS = {
    "ipv4": IPV4, "clamp": CLAMP,
    "data_u64": [BPF_LDX_MEM(BPF_DW, 0, 1, DATA)] + ret(0),
    "mark": [BPF_LDX_MEM(BPF_W, 0, 1, ffi.offsetof(SKB, "mark"))] + ret(0),
    "len": [BPF_LDX_MEM(BPF_W, 0, 1, 0)] + ret(0),
    "flow_keys_u32": [BPF_LDX_MEM(BPF_W, 0, 1, FLOW_KEYS)] + ret(0),
    "data_ldsx": [BPF_LDX_MEMSX(BPF_W, 0, 1, DATA)] + ret(0),
    "ctx_write": [BPF_ST_MEM(BPF_W, 1, DATA, 0)] + ret(0),
    "keys_last": [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_LDX_MEM(BPF_W, 0, 7, KEYS_SIZE - 4), BPF_EXIT_INSN()],
    "keys_past_end": [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_LDX_MEM(BPF_W, 0, 7, KEYS_SIZE), BPF_EXIT_INSN()],
    "keys_neg": [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_ST_MEM(BPF_W, 7, -4, 1)] + ret(0),
    "keys_dw_across_end": [BPF_LDX_MEM(BPF_DW, 7, 1, FLOW_KEYS), BPF_LDX_MEM(BPF_DW, 0, 7, KEYS_SIZE - 4),
                           BPF_EXIT_INSN()],
    "packet_write": [BPF_LDX_MEM(BPF_W, 2, 1, DATA), BPF_LDX_MEM(BPF_W, 3, 1, DATA_END), BPF_MOV64_REG(4, 2),
                     BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_JMP_REG(BPF_JGT, 4, 3, 1), BPF_ST_MEM(BPF_B, 2, 0, 1)]
    + ret(0),
    "load_bytes": LOAD_BYTES,
}


@pytest.mark.parametrize("name", sorted(LOADS))
def test_flow_dissector_load_rules(both, name):
    out = []
    for b in both:
        r = load(b, LOADS[name])
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret >= 0 or r.ret, error_lines(r.log)))
    assert out[0] == out[1]


def test_flow_dissector_helper_set_matches_kernel(both):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, FD, 0), _helper_verdicts(host, FD, 0)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


# ---------------------------------------------------------------- PROG_TEST_RUN

def tr(b, fd, data=None, **kw):
    r = calls.prog_test_run(b, fd, data, strict=False, **kw)
    if r.ret == 0:
        assert 0 <= r.duration < 2**32
    return (r.ret, r.retval, r.data_size_out, r.data_out, r.ctx_size_out, r.ctx_out)


def keys(**fields):
    c = ffi.new(KEYS + " *")
    for k, v in fields.items():
        setattr(c, k, v)
    return bytes(ffi.buffer(c))


def scenario_test_run(b):
    p = loaded(b, IPV4)
    c = loaded(b, CLAMP)
    k = loaded(b, KEEP)
    lb = loaded(b, LOAD_BYTES)
    arp = ip4()[:12] + b"\x08\x06" + ip4()[14:]
    out = [tr(b, p, ip4(), data_size_out=KEYS_SIZE), tr(b, p, ip4(proto=6), data_size_out=KEYS_SIZE),
           tr(b, p, arp, data_size_out=KEYS_SIZE), tr(b, p, ip4(37), data_size_out=KEYS_SIZE),
           tr(b, p, ip4(), data_size_out=8), tr(b, p, ip4()), tr(b, p, ip4(), repeat=3, data_size_out=KEYS_SIZE),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE), tr(b, c, ip4(14), data_size_out=KEYS_SIZE),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE, ctx_in=keys(flags=5), ctx_size_out=KEYS_SIZE),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE, ctx_in=keys(flags=5, nhoff=1)),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE, ctx_in=keys(flow_label=1)),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE, ctx_in=keys(flags=1) + b"\0\0\0\0"),
           tr(b, c, ip4(), data_size_out=KEYS_SIZE, ctx_in=keys(flags=1) + b"\1"),
           tr(b, c, ip4(), ctx_size_out=KEYS_SIZE), tr(b, c, ip4(), ctx_in=keys(), ctx_size_out=4),
           tr(b, k, ip4(), data_size_out=KEYS_SIZE), tr(b, k, ip4(18), data_size_out=KEYS_SIZE),
           tr(b, lb, ip4()),
           tr(b, p, ip4()[:13]), tr(b, p), tr(b, p, ip4(), flags=1), tr(b, p, ip4(), cpu=1),
           tr(b, p, ip4(), batch_size=1), tr(b, p, bytes(4096)), tr(b, p, bytes(4097))]
    r, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=p, test__data_in=8,
                     test__data_size_in=60)
    out.append(r)
    for f in (p, c, k, lb):
        b.close(f)
    return out


def test_flow_dissector_test_run(both):
    fake, host = both
    assert scenario_test_run(fake) == scenario_test_run(host)


def test_flow_dissector_ctx_in_with_unknown_field_einval(both):
    def scenario(b):
        fd = loaded(b, ret(0))
        out = tr(b, fd, ip4(), ctx_in=keys(ip_proto=6))[0]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == -Errno.EINVAL


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(st.binary(min_size=0, max_size=120),
                       st.builds(lambda n, proto, body: ip4(n, proto)[:n] + body,
                                 st.integers(14, 60), st.sampled_from([6, 17, 1]), st.binary(max_size=40))),
       flags=st.integers(0, 7), repeat=st.integers(0, 3))
def test_flow_dissector_random_frames_same_on_both(both, frame, flags, repeat):
    def scenario(b):
        fd = loaded(b, IPV4)
        c = loaded(b, CLAMP)
        out = [tr(b, fd, frame or None, data_size_out=KEYS_SIZE, repeat=repeat),
               tr(b, c, frame or None, data_size_out=KEYS_SIZE, ctx_in=keys(flags=flags), ctx_size_out=KEYS_SIZE)]
        b.close(fd)
        b.close(c)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- netns attach (PROG_ATTACH, links)

def in_new_netns(scenario):
    """The host side of a scenario that attaches to a network namespace runs in a child
    process in a fresh namespace (never on the machine's own), its result comes back as JSON."""
    import ctypes
    import json
    import os

    from backends import HostBackend
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if libc.unshare(clone_newnet) != 0:
                os.write(w, json.dumps({"error": ctypes.get_errno()}).encode())
            else:
                b = HostBackend()
                os.write(w, json.dumps(scenario(b)).encode())
                b.cleanup()
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def json_round(v):
    import json
    return json.loads(json.dumps(v))


def netns_attach_scenario(b):
    import os
    from uapi.bpf import AttachType, BpfCmd, MapType, QueryFlags, ProgType as PT
    FDA = AttachType.FLOW_DISSECTOR
    p, q = loaded(b, ret(RetCode.FLOW_DISSECTOR_CONTINUE)), loaded(b, ret(RetCode.FLOW_DISSECTOR_CONTINUE))
    x = calls.prog_load(b, PT.XDP, assemble_insns(ret(2)))
    m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
    ns = b.open("/proc/self/ns/net", os.O_RDONLY)
    ids = {calls.obj_get_info_by_fd(b, f, "prog")[0].id: n for f, n in ((p, "p"), (q, "q"))}

    def attach(prog, **kw):
        return calls.raw(b, BpfCmd.PROG_ATTACH, "replace_bpf_fd", attach_bpf_fd=prog, attach_type=FDA, **kw)[0]

    def detach(prog, **kw):
        return calls.raw(b, BpfCmd.PROG_DETACH, "replace_bpf_fd", attach_bpf_fd=prog, attach_type=FDA, **kw)[0]

    def query(target=ns, cnt=4, flags=0, atype=FDA):
        buf = ffi.new("__u32[]", 4)
        r, a = calls.raw(b, BpfCmd.PROG_QUERY, "query.prog_cnt", query__target_fd=target,
                         query__attach_type=atype, query__query_flags=flags,
                         query__prog_ids=buf if cnt else 0, query__prog_cnt=cnt)
        return [r, a.get("query.attach_flags"), a.get("query.prog_cnt"),
                [ids.get(buf[i], buf[i]) for i in range(4)]]

    def link(prog, target=ns, **kw):
        r = calls.raw(b, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog, link_create__target_fd=target,
                      link_create__attach_type=FDA, **kw)[0]
        return r

    def info(lk):
        i, _ = calls.obj_get_info_by_fd(b, lk, "link")
        return [i.type, ids.get(i.prog_id, i.prog_id), i.netns.attach_type, i.netns.netns_ino != 0]

    out = [attach(p), attach(p), attach(q), query(), query(cnt=0), query(cnt=1),
           query(flags=QueryFlags.QUERY_EFFECTIVE), query(target=m), query(target=999),
           query(atype=AttachType.SK_LOOKUP), attach(p, target_fd=ns), attach(p, attach_flags=1),
           attach(p, replace_bpf_fd=q), attach(x), attach(m), link(p), detach(p), detach(q), detach(q),
           query()]
    lk = link(p)
    out += [lk >= 0, link(q), attach(q), detach(p), query(), info(lk),
            calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk, link_update__new_prog_fd=q)[0],
            query(), info(lk),
            calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk, link_update__new_prog_fd=p,
                      link_update__old_prog_fd=p, link_update__flags=AttachFlags.REPLACE)[0],
            calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk, link_update__new_prog_fd=x)[0],
            calls.raw(b, BpfCmd.LINK_DETACH, None, link_detach__link_fd=lk)[0], info(lk), query(),
            calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=lk, link_update__new_prog_fd=q)[0],
            link(p, link_create__flags=1), link(p, target=m), link(p, target=999)]
    lk2 = link(q)
    out += [lk2 >= 0, query()]
    for f in (lk, lk2, p, q, x, m, ns):
        if f >= 0:
            b.close(f)
    return out


def test_flow_dissector_netns_attach_and_links(fake):
    assert json_round(netns_attach_scenario(fake)) == in_new_netns(netns_attach_scenario)


def test_flow_dissector_world_dissects_with_attached_prog(fake):
    """World side: the namespace's dissector gives what a test run of the same program gives."""
    from fakekernel.net.net_namespace import skb_flow_dissect_bpf
    from uapi.bpf import AttachType
    kern = fake.kern
    assert skb_flow_dissect_bpf(kern, ip4()) is None
    p = loaded(fake, IPV4)
    assert calls.raw(fake, BpfCmd.PROG_ATTACH, "replace_bpf_fd", attach_bpf_fd=p,
                     attach_type=AttachType.FLOW_DISSECTOR)[0] == 0
    run = calls.prog_test_run(fake, p, ip4(), data_size_out=KEYS_SIZE)
    assert skb_flow_dissect_bpf(kern, ip4()) == (run.retval, run.data_out)
    assert calls.raw(fake, BpfCmd.PROG_DETACH, "replace_bpf_fd", attach_bpf_fd=p,
                     attach_type=AttachType.FLOW_DISSECTOR)[0] == 0
    assert skb_flow_dissect_bpf(kern, ip4()) is None
    fake.close(p)
