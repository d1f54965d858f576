"""The xlated program (OBJ_GET_INFO_BY_FD xlated_prog_insns) of skb and XDP programs, fakekernel
against the real kernel: every __sk_buff / xdp_md access is rewritten into struct sk_buff /
xdp_buff accesses with the 6.18 layout (net/core/filter.c convert_ctx_access), narrow loads are
widened, shifted and masked as kernel/bpf/verifier.c convert_ctx_accesses does, and the
rewritten program computes the same values in PROG_TEST_RUN.

One rewrite is fakekernel's own and is left out of the byte comparison: ``__sk_buff.sk``
(loaded from a slot after the sk_buff image, see fakekernel/progs/skb_convert.py).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uapi import calls
from uapi.asm import disasm_prog
from uapi.bpf import AttachType, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import decode_prog

pytestmark = pytest.mark.differential

S = "struct __sk_buff"
XMD = "struct xdp_md"


def o(field, *index) -> int:
    return ffi.offsetof(S, field, *index)


def x(field) -> int:
    return ffi.offsetof(XMD, field)


def xlated(b, fd) -> bytes:
    info, _ = calls.obj_get_info_by_fd(b, fd, "prog")
    buf = bytearray(info.xlated_prog_len)
    calls.obj_get_info_by_fd(b, fd, "prog", prefill=dict(
        xlated_prog_len=len(buf), xlated_prog_insns=ffi.cast("uintptr_t", ffi.from_buffer(buf))))
    return bytes(buf)


def load_text(b, prog_type, text: str, **kw):
    """(errno or 0, the xlated program as disassembly lines)."""
    from uapi.asm import assemble
    res = calls.prog_load(b, prog_type, assemble(text), strict=False, **kw)
    if res.ret < 0:
        return res.ret, []
    try:
        return 0, disasm_prog(decode_prog(xlated(b, res.ret)))
    finally:
        b.close(res.ret)


def loads(pairs) -> str:
    """``rN = *(uSIZE *)(r1 +OFF)`` for each (size, off), cycling r2..r5, then return 0."""
    lines = [f"r{2 + i % 4} = *(u{8 * size} *)(r1 +{off})" for i, (size, off) in enumerate(pairs)]
    return "\n".join(lines + ["r0 = 0", "exit"])


def same(both, prog_type, text, *, ok: bool | None = True, **kw):
    """Both kernels give the same verdict and xlated program (ok=True: and accept it)."""
    fake, host = both
    got, want = load_text(fake, prog_type, text, **kw), load_text(host, prog_type, text, **kw)
    assert got == want
    if ok is not None:
        assert (want[0] == 0) == ok
    return want


# every __sk_buff field tc may read, at its full size
TC_FIELDS = [(4, o(f)) for f in ("len", "pkt_type", "mark", "queue_mapping", "protocol", "vlan_present",
                                 "vlan_tci", "vlan_proto", "priority", "ingress_ifindex", "ifindex",
                                 "tc_index", "hash", "tc_classid", "data", "data_end", "data_meta",
                                 "napi_id", "wire_len", "gso_segs", "gso_size")] + \
            [(4, o("cb", i)) for i in range(5)] + [(8, o("hwtstamp")), (8, o("tstamp"))]


def test_xlated_sched_cls_every_field_read(both):
    errno, lines = same(both, ProgType.SCHED_CLS, loads(TC_FIELDS))
    assert errno == 0 and lines[0].endswith("r2 = *(u32 *)(r1 +112)")       # skb->len


def test_xlated_sched_cls_tstamp_after_tstamp_type_read(both):
    """Reading tstamp_type makes the tstamp rewrite a plain load (prog->tstamp_type_access)."""
    same(both, ProgType.SCHED_CLS, loads([(8, o("tstamp")), (1, o("tstamp_type"))]))


def test_xlated_sched_cls_writes(both):
    text = "\n".join([f"*(u32 *)(r1 +{o(f)}) = r2" for f in ("mark", "priority", "tc_index", "tc_classid",
                                                           "queue_mapping")]
                     + [f"*(u32 *)(r1 +{o('mark')}) = 7", f"*(u32 *)(r1 +{o('queue_mapping')}) = 3",
                        f"*(u32 *)(r1 +{o('queue_mapping')}) = 65535", f"*(u64 *)(r1 +{o('cb', 2)}) = r2",
                        f"*(u16 *)(r1 +{o('cb', 1)}) = r2", f"*(u64 *)(r1 +{o('tstamp')}) = r2",
                        "r0 = 0", "exit"])
    same(both, ProgType.SCHED_CLS, "r2 = 1\n" + text)


def test_xlated_cgroup_skb_sock_fields(both):
    fields = [(4, o(f)) for f in ("family", "remote_ip4", "local_ip4", "remote_port", "local_port", "len",
                                  "ifindex")]
    fields += [(4, o("remote_ip6", i)) for i in range(4)] + [(4, o("local_ip6", i)) for i in range(4)]
    same(both, ProgType.CGROUP_SKB, loads(fields), expected_attach_type=AttachType.CGROUP_INET_INGRESS)


def test_xlated_socket_filter_fields(both):
    same(both, ProgType.SOCKET_FILTER, loads([(4, o("len")), (4, o("ifindex")), (4, o("cb", 0)),
                                              (4, o("protocol")), (4, o("napi_id"))]))


def test_xlated_sk_skb_data_end_and_cb(both):
    same(both, ProgType.SK_SKB, loads([(4, o("len")), (4, o("data")), (4, o("data_end")), (4, o("cb", 0)),
                                       (2, o("cb", 3) + 2)]),
         expected_attach_type=AttachType.SK_SKB_STREAM_VERDICT)


@pytest.mark.parametrize("eat", [0, AttachType.XDP_DEVMAP])
def test_xlated_xdp_every_field(both, eat):
    fields = ["data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex"]
    same(both, ProgType.XDP, loads([(4, x(f)) for f in fields]), expected_attach_type=eat, ok=bool(eat))
    same(both, ProgType.XDP, loads([(4, x(f)) for f in fields[:-1]]), expected_attach_type=eat)


# narrow loads: (size, byte offset within the field) for u32 fields the default path allows
_NARROW = st.sampled_from(["len", "pkt_type", "mark", "queue_mapping", "protocol", "vlan_present", "vlan_tci",
                           "vlan_proto", "priority", "ingress_ifindex", "ifindex", "tc_index", "hash",
                           "tc_classid", "napi_id", "wire_len", "gso_segs", "gso_size"])


@st.composite
def narrow_load(draw):
    field = draw(_NARROW)
    size = draw(st.sampled_from([1, 2, 4]))
    at = draw(st.sampled_from(range(0, 4, size)))
    return size, o(field) + at


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(narrow_load(), min_size=1, max_size=6))
def test_xlated_sched_cls_narrow_loads(both, pairs):
    same(both, ProgType.SCHED_CLS, loads(pairs), ok=None)


def _store_loads(pairs) -> str:
    """Load each (size, off) and store it into cb[i] so a test run reports the value."""
    lines = []
    for i, (size, off) in enumerate(pairs):
        lines += [f"r2 = *(u{8 * size} *)(r1 +{off})", f"*(u32 *)(r1 +{o('cb', i)}) = r2"]
    return "\n".join(lines + ["r0 = 0", "exit"])


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(narrow_load(), min_size=1, max_size=5))
def test_xlated_narrow_loads_compute_the_kernel_values(both, pairs):
    """The rewritten narrow loads run: the values a test run leaves in cb[] agree."""
    from uapi.asm import assemble
    pkt = bytes(range(6)) + bytes(range(6, 12)) + b"\x08\x00" + bytes(range(50))
    out = []
    for b in both:
        fd = calls.prog_load(b, ProgType.SCHED_CLS, assemble(_store_loads(pairs)))
        r = calls.prog_test_run(b, fd, pkt, data_size_out=256, ctx_size_out=ffi.sizeof(S))
        b.close(fd)
        cb = ffi.from_buffer(S + " *", bytearray(r.ctx_out))
        out.append((r.retval, [cb.cb[i] for i in range(len(pairs))]))
    assert out[0] == out[1]


# ---------------------------------------------------------------- helper calls and map lookups

def _host_syms() -> dict:
    with open("/proc/kallsyms") as f:
        rows = [line.split()[:3] for line in f]
    return {int(a, 16): n for a, t, n in rows if t in "tTwW"}


def _call_names(b, insns) -> list:
    """Each helper call's target, named through the kernel's own kallsyms (the imm is an address
    relative to __bpf_call_base); map references by creation order."""
    if hasattr(b, "kern"):
        syms = {f.addr: f.name for f in b.kern.world.trace.kallsyms.by_addr.values()}
    else:
        syms = _host_syms()
    out = []
    for insn in insns:
        if insn.code == 0x85 and insn.src_reg == 0:
            base = next(a for a, n in syms.items() if n == "__bpf_call_base")
            out.append(("call", syms.get(base + insn.imm, hex(base + insn.imm))))
        elif insn.code == 0x18 and insn.src_reg:
            out.append(("map", insn.src_reg))
        else:
            out.append((insn.code, insn.dst_reg, insn.src_reg, insn.off, insn.imm))
    return out


def _lookup_prog(b, fds, key_regs=None) -> bytes:
    """r0 = sum of *(u32 *)lookup(map, &key) over the maps (0 for a miss); exit."""
    from uapi.asm import assemble
    lines = ["*(u64 *)(r10 -8) = 0", "r6 = 0", "*(u32 *)(r10 -8) = 1"]
    for fd in fds:
        lines += [f"r1 = map[id:{fd}]", "r2 = r10", "r2 += -8", "call bpf_map_lookup_elem#1",
                  "if r0 == 0x0 goto pc+2", "r0 = *(u32 *)(r0 +0)", "r6 += r0"]
    return assemble("\n".join(lines + ["r0 = r6", "exit"]))


_LOOKUP_MAPS = [(MapType.ARRAY, 8), (MapType.ARRAY, 12), (MapType.HASH, 4), (MapType.HASH, 12),
                (MapType.LPM_TRIE, 8), (MapType.LRU_HASH, 8)]


def _lookup_scenario(b):
    out = []
    fds = []
    for mt, vsize in _LOOKUP_MAPS:
        ks = 8 if mt == MapType.LPM_TRIE else 4
        fd = calls.map_create(b, mt, ks, vsize, 4, map_flags=1 if mt == MapType.LPM_TRIE else 0)
        key = (32).to_bytes(4, "little") + bytes([1, 0, 0, 0]) if mt == MapType.LPM_TRIE else (1).to_bytes(4, "little")
        calls.map_update_elem(b, fd, key, (100 + len(fds)).to_bytes(4, "little") + bytes(vsize - 4))
        fds.append(fd)
        pfd = calls.prog_load(b, ProgType.SOCKET_FILTER, _lookup_prog(b, [fd]))
        out.append((mt, vsize, _call_names(b, decode_prog(xlated(b, pfd))),
                    calls.prog_test_run(b, pfd, bytes(64)).retval))
        b.close(pfd)
    # several maps in one program, and one call site that two maps reach (kept a plain call)
    pfd = calls.prog_load(b, ProgType.SOCKET_FILTER, _lookup_prog(b, fds))
    out.append(("all", calls.prog_test_run(b, pfd, bytes(64)).retval, len(xlated(b, pfd))))
    b.close(pfd)
    from uapi.asm import assemble
    poisoned = assemble("\n".join([
        "r3 = *(u32 *)(r1 +0)", "*(u64 *)(r10 -8) = 0", f"r1 = map[id:{fds[0]}]",
        "if r3 == 0x0 goto pc+2", f"r1 = map[id:{fds[2]}]", "r2 = r10", "r2 += -8",
        "call bpf_map_lookup_elem#1", "r0 = 0", "exit"]))
    res = calls.prog_load(b, ProgType.SOCKET_FILTER, poisoned, strict=False)
    out.append(("poisoned", res.ret if res.ret < 0 else _call_names(b, decode_prog(xlated(b, res.ret)))))
    if res.ret >= 0:
        b.close(res.ret)
    for fd in fds:
        b.close(fd)
    return out


def test_xlated_map_lookups_inlined_and_helper_targets(both):
    """ARRAY and HASH lookups are inlined (array_map_gen_lookup / htab_map_gen_lookup); the
    other maps' calls target their map ops; the inlined code computes the kernel's values."""
    fake, host = both
    got, want = _lookup_scenario(fake), _lookup_scenario(host)
    # LRU_HASH: 6.18 inlines it with the lru_node.ref update, fakekernel keeps the ops call
    lru = [i for i, row in enumerate(want) if row[0] == MapType.LRU_HASH]
    for i in lru:
        assert got[i][3] == want[i][3]
    assert [r for i, r in enumerate(got) if i not in lru and r[0] != "all"] == \
        [r for i, r in enumerate(want) if i not in lru and r[0] != "all"]
    assert got[-2][1] == want[-2][1]


# ---------------------------------------------------------------- do_misc_fixups rewrites

_DIV_OPS = ["r0 /= r1", "r0 %= r1", "w0 /= w1", "w0 %= w1", "r0 s/= r1", "r0 s%= r1", "w0 s/= w1",
            "w0 s%= w1", "r0 s/= -1", "r0 s%= -1", "w0 s/= -1", "w0 s%= -1"]


def _div_prog(op: str, divisor: int) -> str:
    return "\n".join(["r0 = *(u32 *)(r1 +0)", "r0 = -r0", f"r1 = {divisor}", op, "exit"])


@pytest.mark.parametrize("op", _DIV_OPS)
def test_xlated_division_guards_and_their_results(both, op):
    """Division by a register is guarded against 0 (and signed -1), by an immediate -1 replaced."""
    same(both, ProgType.SOCKET_FILTER, _div_prog(op, 3))
    from uapi.asm import assemble
    out = []
    for b in both:
        res = []
        for divisor in (0, -1, 3):
            fd = calls.prog_load(b, ProgType.SOCKET_FILTER, assemble(_div_prog(op, divisor)))
            res.append(calls.prog_test_run(b, fd, bytes(60)).retval)
            b.close(fd)
        out.append(res)
    assert out[0] == out[1]


def test_xlated_ld_abs_becomes_load_helper_calls(both):
    """LD_ABS / LD_IND of socket filters and tc call bpf_skb_load_helper_*_no_cache; a load past
    the packet ends the program with 0."""
    from uapi.asm import assemble
    text = "\n".join(["r6 = r1", "r7 = 2", "r0 = *(u8 *)skb[12]", "r8 = r0", "r0 = *(u16 *)skb[r7 + 12]",
                      "r8 += r0", "r0 = *(u32 *)skb[r7 + 0]", "r8 += r0", "r0 = *(u8 *){}", "r0 = r8", "exit"])
    out = []
    for b in both:
        rows = []
        for pt in (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS):
            for last, plen in (("skb[20]", 60), ("skb[200]", 60), ("skb[r7 + -3]", 60)):
                fd = calls.prog_load(b, pt, assemble(text.format(last)))
                rows.append((pt, last, _call_names(b, decode_prog(xlated(b, fd))),
                             calls.prog_test_run(b, fd, bytes(range(plen))).retval))
                b.close(fd)
        out.append(rows)
    assert out[0] == out[1]
