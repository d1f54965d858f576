"""PROG_LOAD with prog_btf_fd + func_info / line_info (verifier.c check_btf_info_early /
check_btf_info), fake vs the real kernel: errno, verifier log, the record sizes written back
on E2BIG, and what prog info shows afterwards (btf id, counts, record sizes, the records)."""
from __future__ import annotations

import struct

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.bpf import BpfCmd, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import (BPF_CALL_REL, BPF_EXIT_INSN, BPF_LD_ABS, BPF_LD_IMM64, BPF_MOV64_IMM,
                       BPF_MOV64_REG, assemble_insns)

P1 = assemble_insns([BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()])
P2 = assemble_insns([BPF_CALL_REL(1), BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()])
P3 = assemble_insns([*BPF_LD_IMM64(0, 0), BPF_EXIT_INSN()])
# a subprogram using LD_ABS: needs BTF, and then a scalar return type
P4 = assemble_insns([BPF_MOV64_REG(6, 1), BPF_CALL_REL(1), BPF_EXIT_INSN(), BPF_LD_ABS(0, 0),
                     BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()])


def make_btf():
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    proto = w.func_proto(i, [])
    main = w.func("main", proto)
    sub = w.func("sub", proto)
    vproto = w.func_proto(0, [])
    vsub = w.func("vsub", vproto)
    st = w.struct("s", 4, [("a", i, 0)])
    t = {"main": main, "sub": sub, "vsub": vsub, "struct": st, "file": w.s("file.c"), "line": w.s("return 0;")}
    return w.blob(), t


def fi(recs, rec_size=8, tail=b""):
    body = b"".join(struct.pack("<II", o, t) + bytes(rec_size - 8 - len(tail)) + tail
                    if rec_size >= 8 else struct.pack("<II", o, t)[:rec_size] for o, t in recs)
    return body


def li(recs, rec_size=16, tail=b""):
    return b"".join(struct.pack("<IIII", *r)[:rec_size] + bytes(max(0, rec_size - 16 - len(tail)))
                    + (tail if rec_size > 16 else b"") for r in recs)


def load(b, insns, btf_fd, f=None, fsz=8, lines=None, lsz=16, fcnt=None, lcnt=None):
    log = bytearray(4096)
    fbuf = bytearray(f) if f else None
    lbuf = bytearray(lines) if lines else None
    ret, a = calls.raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.SOCKET_FILTER,
                       insns=bytes(insns), insn_cnt=len(insns) // 8, license=b"GPL\0",
                       log_level=1, log_size=len(log), log_buf=log, prog_btf_fd=btf_fd,
                       func_info_rec_size=fsz, func_info=fbuf,
                       func_info_cnt=(len(f) // fsz if f else 0) if fcnt is None else fcnt,
                       line_info_rec_size=lsz, line_info=lbuf,
                       line_info_cnt=(len(lines) // lsz if lines else 0) if lcnt is None else lcnt)
    text = bytes(log).split(b"\0", 1)[0].decode()
    out = [ret if ret < 0 else "fd", a.get("func_info_rec_size"), a.get("line_info_rec_size")]
    if ret < 0:
        # the message itself (the stats line after it is the walk's, compared elsewhere)
        out.append(text.split("processed ")[0])
    return ret, out


def prog_btf_info(b, fd, btf_id):
    info, _ = calls.obj_get_info_by_fd(b, fd, "prog")
    nf, nl = info.nr_func_info, info.nr_line_info
    fbuf, lbuf = ffi.new("char[]", 8 * nf + 1), ffi.new("char[]", 16 * nl + 1)
    info2, _ = calls.obj_get_info_by_fd(b, fd, "prog", prefill={
        "nr_func_info": nf, "func_info_rec_size": 8, "func_info": int(ffi.cast("uintptr_t", fbuf)),
        "nr_line_info": nl, "line_info_rec_size": 16,
        "line_info": int(ffi.cast("uintptr_t", lbuf))})
    return (info.btf_id == btf_id if btf_id else info.btf_id, nf, info.func_info_rec_size, nl,
            info.line_info_rec_size, bytes(ffi.buffer(fbuf, 8 * nf)),
            bytes(ffi.buffer(lbuf, 16 * nl)), info2.nr_func_info)


def scenario_func_line_info(b):
    blob, t = make_btf()
    btf = btf_load(b, blob).ret
    assert btf >= 0
    btf_id = calls.obj_get_info_by_fd(b, btf, "btf")[0].id
    m = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    M, S, F, L = t["main"], t["sub"], t["file"], t["line"]
    cases = [
        (P1, btf, dict(f=fi([(0, M)]))),
        (P1, btf, dict(f=fi([(0, M)], 4), fsz=4)),
        (P1, btf, dict(f=fi([(0, M)], 12), fsz=12)),
        (P1, btf, dict(f=fi([(0, M)], 12, b"\1\0\0\0"), fsz=12)),
        (P1, btf, dict(f=fi([(0, M)], 10), fsz=10)),
        (P1, btf, dict(f=fi([(0, M)], 256), fsz=256)),
        (P1, btf, dict(f=fi([(1, M)]))),
        (P1, btf, dict(f=fi([(0, t["struct"])]))),
        (P1, btf, dict(f=fi([(0, 1000)]))),
        (P1, btf, dict(f=fi([(0, 0xFFFFFFFF)]))),
        (P1, btf, dict(f=fi([(0, 0)]))),
        (P2, btf, dict(f=fi([(0, M), (0, S)]))),
        (P2, btf, dict(f=fi([(0, M), (2, S)]))),
        (P2, btf, dict(f=fi([(0, M)]))),
        (P2, btf, dict(f=fi([(0, M), (3, S)]))),
        (P1, 999, dict(f=fi([(0, M)]))),
        (P1, m, dict(f=fi([(0, M)]))),
        (P1, 0, dict(f=fi([(0, M)]))),
        (P1, btf, {}),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)]))),
        (P1, btf, dict(lines=li([(0, F, L, 7)]))),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)], 8), lsz=8)),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)], 12), lsz=12)),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)], 20), lsz=20)),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)], 20, b"\1\0\0\0"), lsz=20)),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7)], 18), lsz=18)),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7), (0, F, L, 8)]))),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 7), (2, F, L, 8)]))),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(1, F, L, 7)]))),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, 10000, L, 7)]))),
        (P1, btf, dict(f=fi([(0, M)]), lines=li([(0, F, 10000, 7)]))),
        (P3, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 1), (1, F, L, 2)]))),
        (P3, btf, dict(f=fi([(0, M)]), lines=li([(0, F, L, 1), (2, F, L, 2)]))),
        (P2, btf, dict(f=fi([(0, M), (2, S)]), lines=li([(0, F, L, 1)]))),
        (P2, btf, dict(f=fi([(0, M), (2, S)]), lines=li([(0, F, L, 1), (3, F, L, 2)]))),
        (P2, btf, dict(f=fi([(0, M), (2, S)]), lines=li([(0, F, L, 1), (2, F, L, 2)]))),
        (P2, btf, dict(lines=li([(0, F, L, 1), (2, F, L, 2)]))),
        (P1, btf, dict(f=fi([(0, M)]), fcnt=0, lines=li([(0, F, L, 1)]), lcnt=0)),
        (P4, btf, {}),
        (P4, btf, dict(lines=li([(0, F, L, 1), (3, F, L, 2)]))),
        (P4, btf, dict(f=fi([(0, M), (3, t["vsub"])]))),
    ]
    out = []
    for insns, bfd, kw in cases:
        ret, o = load(b, insns, bfd, **kw)
        if ret >= 0:
            o.append(prog_btf_info(b, ret, btf_id))
            b.close(ret)
        out.append(o)
    b.close(m)
    # the prog keeps its BTF alive after the btf fd is closed
    ret, _ = load(b, P1, btf, f=fi([(0, M)]))
    b.close(btf)
    again = calls.raw(b, BpfCmd.BTF_GET_FD_BY_ID, None, btf_id=btf_id)[0]
    out.append(again >= 0)
    if again >= 0:
        b.close(again)
    b.close(ret)
    return out


def test_prog_load_func_info_line_info_rules(both):
    fake, host = both
    f, h = scenario_func_line_info(fake), scenario_func_line_info(host)
    assert len(f) == len(h)
    for i, (x, y) in enumerate(zip(f, h)):
        assert x == y, f"case {i}"
