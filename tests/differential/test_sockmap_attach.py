"""SK_SKB / SK_MSG programs and socket maps (net/core/sock_map.c: sock_map_get_from_fd,
sock_map_prog_detach, sock_map_bpf_prog_query, sock_map_link), fakekernel vs the real kernel:
loading (context access rules), PROG_ATTACH/DETACH/QUERY with a map as the target, and what
attached programs change for sockets entering the map (EBUSY, EOPNOTSUPP)."""
from __future__ import annotations

import pytest

from sockutil import close_from, elem_delete, elem_update, eventually, make_sock, u32
from uapi import calls
from uapi.bpf import BPF_DW, BPF_W, AttachType, BpfCmd, MapType, ProgType
from uapi.calls import raw
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_LDX_MEM, BPF_MOV64_IMM, assemble_insns
from maputil import both_equal

pytestmark = pytest.mark.differential

A = AttachType
SKB, MSG = "struct __sk_buff", "struct sk_msg_md"


def load(b, ptype, insns=None):
    insns = insns or [BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()]
    return calls.prog_load(b, ptype, assemble_insns(insns), strict=False, log_level=1,
                           log_size=1 << 16)


def attach(b, prog, target, atype, flags=0, **kw) -> int:
    return raw(b, BpfCmd.PROG_ATTACH, None, target_fd=target, attach_bpf_fd=prog,
               attach_type=atype, attach_flags=flags, **kw)[0]


def detach(b, prog, target, atype, **kw) -> int:
    return raw(b, BpfCmd.PROG_DETACH, None, target_fd=target, attach_bpf_fd=prog,
               attach_type=atype, **kw)[0]


def query(b, target, atype, flags=0, cnt=4):
    ids = bytearray(16)
    ret, a = raw(b, BpfCmd.PROG_QUERY, None, query__target_fd=target, query__attach_type=atype,
                 query__query_flags=flags, query__prog_ids=ids, query__prog_cnt=cnt)
    return ret, a.get("query.prog_cnt"), a.get("query.attach_flags"), bytes(ids) != bytes(16)


CTX_CASES = [(ProgType.SK_SKB, ffi.offsetof(SKB, f), BPF_W) for f in
             ("len", "mark", "tc_classid", "priority", "data", "data_end", "data_meta", "tstamp",
              "family", "remote_port", "cb")] + \
    [(ProgType.SK_MSG, ffi.offsetof(MSG, f), size) for f, size in
     (("size", BPF_W), ("size", BPF_DW), ("sk", BPF_DW), ("sk", BPF_W), ("data", BPF_DW),
      ("data", BPF_W), ("family", BPF_W), ("local_port", BPF_W), ("remote_ip6", BPF_W))] + \
    [(ProgType.SK_MSG, ffi.sizeof(MSG), BPF_W), (ProgType.SK_MSG, 2, BPF_W)]


@pytest.mark.parametrize("case", CTX_CASES, ids=lambda c: f"{c[0].name}-{c[1]}-{c[2]}")
def test_prog_load_ctx_access(both, case):
    ptype, off, size = case

    def scenario(b):
        r = load(b, ptype, [BPF_LDX_MEM(size, 0, 1, off), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])
        if r.ret >= 0:
            b.close(r.ret)
            return "ok"
        return r.ret, r.log
    both_equal(both, scenario)


def test_prog_attach_detach_query_sockmap(both):
    def scenario(b):
        mark = len(b.fds)
        skb, skb2, msg = (load(b, t).ret
                          for t in (ProgType.SK_SKB, ProgType.SK_SKB, ProgType.SK_MSG))
        sm = calls.map_create(b, MapType.SOCKMAP, 4, 8, 4)
        sh = calls.map_create(b, MapType.SOCKHASH, 4, 8, 4)
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = [attach(b, skb, sm, A.SK_SKB_STREAM_VERDICT), attach(b, skb, sm, A.SK_SKB_VERDICT),
               attach(b, skb2, sm, A.SK_SKB_STREAM_VERDICT),       # replaces
               attach(b, skb, sm, A.SK_SKB_STREAM_PARSER), attach(b, msg, sm, A.SK_MSG_VERDICT),
               attach(b, msg, sm, A.SK_SKB_VERDICT), attach(b, skb, arr, A.SK_SKB_STREAM_VERDICT),
               attach(b, skb, 999, A.SK_SKB_STREAM_VERDICT),
               attach(b, skb, sm, A.SK_SKB_STREAM_VERDICT, 1), attach(b, 999, sm, A.SK_SKB_VERDICT),
               attach(b, skb, sm, A.SK_SKB_STREAM_VERDICT, replace_bpf_fd=skb),
               attach(b, sm, sm, A.SK_SKB_VERDICT), attach(b, skb, sh, A.SK_SKB_VERDICT)]
        out += [query(b, sm, t) for t in (A.SK_SKB_STREAM_VERDICT, A.SK_SKB_VERDICT,
                                          A.SK_SKB_STREAM_PARSER, A.SK_MSG_VERDICT)]
        out += [query(b, sm, A.SK_SKB_STREAM_VERDICT, flags=1), query(b, arr, A.SK_SKB_VERDICT),
                query(b, sh, A.SK_SKB_VERDICT), query(b, sh, A.SK_SKB_VERDICT, cnt=0),
                query(b, 999, A.SK_MSG_VERDICT)]
        out += [detach(b, skb, sm, A.SK_SKB_STREAM_VERDICT),
                detach(b, skb2, sm, A.SK_SKB_STREAM_VERDICT),
                detach(b, skb2, sm, A.SK_SKB_STREAM_VERDICT),
                detach(b, msg, sm, A.SK_SKB_STREAM_PARSER),
                detach(b, skb, sm, A.SK_SKB_STREAM_PARSER),
                detach(b, skb, arr, A.SK_SKB_VERDICT), detach(b, 999, sm, A.SK_MSG_VERDICT),
                detach(b, msg, 999, A.SK_MSG_VERDICT)]
        out += [query(b, sm, t) for t in (A.SK_SKB_STREAM_VERDICT, A.SK_MSG_VERDICT)]
        out.append(raw(b, BpfCmd.PROG_TEST_RUN, None, test__prog_fd=skb, test__data_in=bytes(64),
                       test__data_size_in=64)[0])
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_update_with_attached_progs(both):
    """Sockets entering a map take its programs: a parser + verdict pair needs TCP; a socket
    running a verdict program for one map cannot join a map with another (EBUSY)."""
    def scenario(b):
        mark = len(b.fds)
        parser, verdict, msg = (load(b, t).ret for t in
                                (ProgType.SK_SKB, ProgType.SK_SKB, ProgType.SK_MSG))
        sm, sh, plain = (calls.map_create(b, t, 4, 8, 4) for t in
                         (MapType.SOCKMAP, MapType.SOCKHASH, MapType.SOCKMAP))
        out = [attach(b, parser, sm, A.SK_SKB_STREAM_PARSER),
               attach(b, verdict, sm, A.SK_SKB_STREAM_VERDICT),
               attach(b, verdict, sh, A.SK_SKB_VERDICT), attach(b, msg, sh, A.SK_MSG_VERDICT)]
        socks = {k: make_sock(b, k) for k in ("udp_bound", "tcp_client", "tcp_listen",
                                               "unix_stream_pair", "tcp_accepted")}
        v = {k: fd.to_bytes(8, "little") for k, fd in socks.items()}
        for i, k in enumerate(socks):
            out += [elem_update(b, sm, u32(i), v[k]), elem_update(b, sh, u32(i), v[k]),
                    elem_update(b, plain, u32(i), v[k])]
        out += [elem_delete(b, sm, u32(1)), elem_update(b, sh, u32(1), v["tcp_client"]),
                elem_update(b, sm, u32(1), v["tcp_client"])]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_attached_prog_lifetime(both):
    """The map holds its programs until its last fd closes; a socket's psock holds the ones
    it took until the socket leaves the map."""
    def scenario(b):
        mark = len(b.fds)
        prog = load(b, ProgType.SK_SKB).ret
        info, _ = calls.obj_get_info_by_fd(b, prog, "prog")
        pid = info.id
        sm = calls.map_create(b, MapType.SOCKMAP, 4, 8, 2)
        out = [attach(b, prog, sm, A.SK_SKB_VERDICT)]
        fd = make_sock(b, "tcp_client")
        out.append(elem_update(b, sm, u32(0), fd.to_bytes(8, "little")))
        out.append(detach(b, prog, sm, A.SK_SKB_VERDICT))
        b.close(prog)

        def get_by_id(prog_id):
            r = raw(b, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=prog_id)[0]
            if r >= 0:
                b.close(r)
                return 0
            return r
        out.append(get_by_id(pid))                 # the socket's psock still holds it
        out.append(elem_delete(b, sm, u32(0)))
        out.append(eventually(lambda: get_by_id(pid), 0))   # psock freed (deferred in the kernel)
        prog2 = load(b, ProgType.SK_MSG).ret
        pid2 = calls.obj_get_info_by_fd(b, prog2, "prog")[0].id
        out.append(attach(b, prog2, sm, A.SK_MSG_VERDICT))
        b.close(prog2)
        out.append(get_by_id(pid2))                # the map holds it
        b.close(sm)
        out.append(eventually(lambda: get_by_id(pid2), 0) == -Errno.ENOENT)
        close_from(b, mark)
        return out
    both_equal(both, scenario)
