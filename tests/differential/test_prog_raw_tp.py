"""BPF_PROG_TYPE_RAW_TRACEPOINT(_WRITABLE), fakekernel vs the real kernel: load verdicts and logs
for ctx accesses, the helper set, PROG_TEST_RUN with ctx_in (sizes, cpu, refused fields), and
RAW_TRACEPOINT_OPEN on real tracepoints (sys_enter, sched_switch): errnos, link info, and the
arity check against the highest argument a program reads."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from uapi import calls
from uapi.bpf import BPF_B, BPF_DW, BPF_W, BpfCmd, FuncId, LinkType, ProgType
from uapi.bpf import TestRunFlags as RunFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_HELPER, BPF_LD_IMM64, BPF_EXIT_INSN, BPF_LDX_MEM, BPF_LDX_MEMSX, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, assemble_insns)
from uapi.bpf import BPF_ADD
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

RAW_TP = ProgType.RAW_TRACEPOINT
RAW_TP_W = ProgType.RAW_TRACEPOINT_WRITABLE
BAD_PTR = 8


def load(b, insns, ptype=RAW_TP, **kw):
    r = calls.prog_load(b, ptype, assemble_insns(insns), log_level=1, log_size=1 << 16, strict=False, **kw)
    return r


def loaded(b, insns, ptype=RAW_TP):
    r = load(b, insns, ptype)
    assert r.ret >= 0, r.log
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def read_arg(off, size=BPF_DW):
    """r0 = *(size *)(ctx + off)"""
    return [BPF_LDX_MEM(size, 0, 1, off), BPF_EXIT_INSN()]


def sum_args(n):
    """r0 = args[0] + ... + args[n-1]"""
    body = [BPF_MOV64_REG(6, 1), BPF_MOV64_IMM(0, 0)]
    for i in range(n):
        body += [BPF_LDX_MEM(BPF_DW, 2, 6, i * 8), BPF_ALU64_REG(BPF_ADD, 0, 2)]
    return body + [BPF_EXIT_INSN()]


def u64s(*vals):
    return b"".join((v & (2**64 - 1)).to_bytes(8, "little") for v in vals)


# ---------------------------------------------------------------- loading

ACCESSES = {
    "arg0": read_arg(0), "arg11": read_arg(88), "arg12": read_arg(96), "neg": read_arg(-8),
    "w_in_arg": read_arg(4, BPF_W), "misaligned": read_arg(4), "byte": read_arg(95, BPF_B),
    "write": [BPF_ST_MEM(BPF_DW, 1, 0, 1)] + ret(0),
    "ldsx": [BPF_LDX_MEMSX(BPF_W, 0, 1, 8), BPF_EXIT_INSN()],
    "get_func_ip": [BPF_CALL_HELPER(FuncId.get_func_ip), BPF_EXIT_INSN()],         # check_get_func_ip()
    "get_attach_cookie": [BPF_CALL_HELPER(FuncId.get_attach_cookie), BPF_EXIT_INSN()],
}


@pytest.mark.parametrize("ptype", [RAW_TP, RAW_TP_W], ids=["raw_tp", "writable"])
@pytest.mark.parametrize("name", sorted(ACCESSES))
def test_raw_tp_load_ctx_access(both, ptype, name):
    out = []
    for b in both:
        r = load(b, ACCESSES[name], ptype)
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret >= 0 or r.ret, error_lines(r.log)))
    assert out[0] == out[1]


@pytest.mark.parametrize("ptype", [RAW_TP, RAW_TP_W], ids=["raw_tp", "writable"])
def test_raw_tp_helper_set_matches_kernel(both, ptype):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, ptype, 0), _helper_verdicts(host, ptype, 0)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


# ---------------------------------------------------------------- PROG_TEST_RUN

def tr(b, fd, data=None, **kw):
    r = calls.prog_test_run(b, fd, data, strict=False, **kw)
    return (r.ret, r.retval)


def raw_tr(b, **fields):
    ret_, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, **fields)
    return ret_, a.get("test.retval")


def scenario_test_run(b):
    fd = loaded(b, sum_args(3))
    ret0 = loaded(b, ret(7))
    cpu = loaded(b, [BPF_CALL_HELPER(FuncId.get_smp_processor_id), BPF_EXIT_INSN()])
    cookie = loaded(b, [BPF_CALL_HELPER(FuncId.get_attach_cookie), BPF_EXIT_INSN()])
    args = u64s(1, 2, 3 << 32)
    out = [
        tr(b, fd, ctx_in=args),                       # retval is the low 32 bits
        tr(b, fd, ctx_in=u64s(5, 6, 7, 8)),
        tr(b, fd, ctx_in=u64s(5, 6)),                 # shorter than the args read: EINVAL
        tr(b, fd, ctx_in=u64s(*range(12))),
        tr(b, fd, ctx_in=u64s(*range(13))),           # beyond MAX_BPF_FUNC_ARGS: EINVAL
        tr(b, fd, ctx_in=args + b"\1"),               # odd size, still within limits
        tr(b, fd),                                    # no ctx: shorter than needed
        tr(b, ret0),                                  # no ctx, no access: runs
        tr(b, ret0, ctx_in=b"\1"),
        tr(b, fd, ctx_in=args, repeat=2),
        tr(b, fd, ctx_in=args, batch_size=1),
        tr(b, fd, ctx_in=args, data_size_out=8),
        tr(b, fd, ctx_in=args, ctx_size_out=24),
        tr(b, fd, b"\0" * 14, ctx_in=args),
        raw_tr(b, test__prog_fd=fd, test__ctx_in=args, test__ctx_size_in=24, test__duration=1),
        raw_tr(b, test__prog_fd=fd, test__ctx_in=args, test__ctx_size_in=24, test__data_size_in=64),
        raw_tr(b, test__prog_fd=fd, test__ctx_in=BAD_PTR, test__ctx_size_in=24),
        tr(b, fd, ctx_in=args, cpu=1),                # cpu without the flag
        tr(b, cpu, flags=RunFlags.TEST_RUN_ON_CPU, cpu=1),
        tr(b, cpu, flags=RunFlags.TEST_RUN_ON_CPU, cpu=2),     # not online: ENXIO
        tr(b, cpu, flags=RunFlags.TEST_RUN_ON_CPU, cpu=4096),
        tr(b, ret0, flags=RunFlags.TEST_XDP_LIVE_FRAMES),      # other flags are not checked
        tr(b, ret0, flags=0x80),
        tr(b, cookie),
    ]
    for f in (fd, ret0, cpu, cookie):
        b.close(f)
    return out


def test_raw_tp_test_run(both):
    fake, host = both
    assert scenario_test_run(fake) == scenario_test_run(host)


def test_raw_tp_writable_test_run_enotsupp(both):
    def scenario(b):
        fd = loaded(b, ret(0), RAW_TP_W)
        out = tr(b, fd, ctx_in=u64s(1))
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == (-Errno.ENOTSUPP, 0)


# ---------------------------------------------------------------- RAW_TRACEPOINT_OPEN

def rto(b, prog, name, **kw):
    nm = ffi.new("char[]", name) if isinstance(name, bytes) else name
    ret_, _ = calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, None, raw_tracepoint__prog_fd=prog,
                        raw_tracepoint__name=nm, **kw)
    return ret_


def link_info(b, fd, name_len=64, name_buf=True):
    info = ffi.new("struct bpf_link_info *")
    buf = ffi.new("char[]", max(name_len, 1))
    info.raw_tracepoint.tp_name = int(ffi.cast("uintptr_t", buf)) if name_buf else 0
    info.raw_tracepoint.tp_name_len = name_len
    n = ffi.sizeof("struct bpf_link_info")
    ret_, a = calls.raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd, info__info_len=n,
                        info__info=info)
    rt = info.raw_tracepoint
    return (ret_, info.type, rt.tp_name_len, rt.cookie, ffi.string(buf) if name_buf else None)


def scenario_open(b):
    p0 = loaded(b, ret(0))
    p2 = loaded(b, sum_args(2))
    p3 = loaded(b, sum_args(3))
    w = loaded(b, ret(0), RAW_TP_W)
    out = []
    links = []
    try:
        for prog, name, kw in ((p0, b"sys_enter", {}), (p2, b"sys_enter", {"raw_tracepoint__cookie": 42}),
                               (p3, b"sched_switch", {}), (w, b"sched_switch", {})):
            lk = rto(b, prog, name, **kw)
            out.append(lk >= 0 or lk)
            if lk >= 0:
                links.append(lk)
        out += [rto(b, p3, b"sys_enter"),                      # reads args[2]; sys_enter has 2
                rto(b, p0, b"no_such_tracepoint_fk"),
                rto(b, p0, b""),
                rto(b, p0, 0),
                rto(b, p0, BAD_PTR),
                rto(b, p0, b"sys_enter" + b"x" * 200),
                rto(b, 999, b"sys_enter")]
        first = links[0]
        pid = calls.obj_get_info_by_fd(b, p0, "prog")[0].id
        out.append(calls.obj_get_info_by_fd(b, first, "link")[0].prog_id == pid)
        out += [link_info(b, lk) for lk in links]
        out += [link_info(b, links[1], 4), link_info(b, links[1], 0, name_buf=False),
                link_info(b, links[1], 0), link_info(b, links[1], 16, name_buf=False)]
        out.append(LinkType.RAW_TRACEPOINT)
        # no detach, no update_prog; pins and ids as for any link
        out.append(calls.raw(b, BpfCmd.LINK_DETACH, None, link_detach__link_fd=first)[0])
        out.append(calls.raw(b, BpfCmd.LINK_UPDATE, None, link_update__link_fd=first,
                             link_update__new_prog_fd=p2)[0])
        pin = b.pin_dir() + "/rawtp"
        calls.obj_pin(b, first, pin)
        again = calls.obj_get(b, pin)
        out.append(link_info(b, again))
        lid = calls.obj_get_info_by_fd(b, first, "link")[0].id
        by_id = calls.raw(b, BpfCmd.LINK_GET_FD_BY_ID, None, link_id=lid)[0]
        out.append(link_info(b, by_id))
        links += [again, by_id]
        b.unlink(pin)
    finally:
        for lk in links:
            b.close(lk)
        for f in (p0, p2, p3, w):
            b.close(f)
    return out


def test_raw_tracepoint_open(both):
    fake, host = both
    assert scenario_open(fake) == scenario_open(host)


def test_raw_tracepoint_fire_runs_attached_programs(fake):
    """World side: a hit of sched_switch runs the attached program on the args."""
    p3 = loaded(fake, sum_args(3))
    ck = loaded(fake, [BPF_CALL_HELPER(FuncId.get_attach_cookie), BPF_EXIT_INSN()])
    l1 = rto(fake, p3, b"sched_switch")
    l2 = rto(fake, ck, b"sched_switch", raw_tracepoint__cookie=77)
    trace = fake.kern.world.trace
    assert sorted(trace.fire_tracepoint("sched_switch", (1, 2, 3, 4))) == [6, 77]
    assert trace.fire_tracepoint("sys_enter", (1, 2)) == []
    fake.close(l1)
    assert trace.fire_tracepoint("sched_switch", (1, 2, 3, 4)) == [77]
    fake.close(l2)
    assert trace.fire_tracepoint("sched_switch", (1, 2, 3, 4)) == []
    fake.close(p3)
    fake.close(ck)


# ---------------------------------------------------------------- RAW_TRACEPOINT_WRITABLE buffer

TP_BUF_READ = [BPF_LDX_MEM(BPF_DW, 2, 1, 0), BPF_LDX_MEM(BPF_W, 0, 2, 4), BPF_EXIT_INSN()]
TP_BUF_WRITE = [BPF_LDX_MEM(BPF_DW, 2, 1, 0), BPF_ST_MEM(BPF_B, 2, 0, 1)] + ret(0)
TP_BUF_NEG = [BPF_LDX_MEM(BPF_DW, 2, 1, 0), BPF_LDX_MEM(BPF_W, 0, 2, -4), BPF_EXIT_INSN()]
TP_BUF_W32 = [BPF_LDX_MEM(BPF_W, 2, 1, 0)] + ret(0)


@pytest.mark.parametrize("name", ["read", "write", "neg", "w32"])
def test_raw_tp_writable_buffer_access(both, name):
    insns = {"read": TP_BUF_READ, "write": TP_BUF_WRITE, "neg": TP_BUF_NEG, "w32": TP_BUF_W32}[name]

    def scenario(b):
        r = load(b, insns, RAW_TP_W)
        out = [r.ret >= 0 or r.ret, error_lines(r.log)]
        if r.ret >= 0:
            lk = rto(b, r.ret, b"sched_switch")          # no vmlinux tracepoint has a writable buffer
            out.append(lk >= 0 or lk)
            if lk >= 0:
                b.close(lk)
            b.close(r.ret)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)




@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctx=st.binary(max_size=104), n=st.integers(0, 12), flags=st.sampled_from([0, 1, 2, 5]),
       cpu=st.integers(0, 3))
def test_raw_tp_random_ctx_same_on_both(both, ctx, n, flags, cpu):
    def scenario(b):
        fd = loaded(b, sum_args(n))
        out = tr(b, fd, ctx_in=ctx or None, flags=flags, cpu=cpu)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_raw_tp_perf_event_output_without_event(both):
    """bpf_perf_event_output_raw_tp on an empty perf event array slot: -ENOENT; a bad flag: -EINVAL;
    an index past the array: -E2BIG."""
    from uapi.bpf import MapType, PerfOutputFlags
    from uapi.insn import BPF_LD_MAP_FD

    def prog(mfd, flags):
        return [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_DW, 10, -8, 7), *BPF_LD_MAP_FD(2, mfd),
                BPF_MOV64_REG(1, 6), *BPF_LD_IMM64(3, flags), BPF_MOV64_REG(4, 10), BPF_ALU64_IMM(BPF_ADD, 4, -8),
                BPF_MOV64_IMM(5, 8), BPF_CALL_HELPER(FuncId.perf_event_output), BPF_EXIT_INSN()]

    def scenario(b):
        m = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 2)
        out = []
        for flags in (PerfOutputFlags.CURRENT_CPU, 1, 5, 1 << 40):
            fd = loaded(b, prog(m, int(flags)))
            out.append(tr(b, fd, ctx_in=u64s(1)))
            b.close(fd)
        b.close(m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def read_user(func, size, out_off=0):
    """r0 = func(fp-16, size, args[0]); ret = r0 if r0 != 0 else the low word read at fp-16+out_off"""
    return [BPF_LDX_MEM(BPF_DW, 3, 1, 0), BPF_ST_MEM(BPF_DW, 10, -16, -1), BPF_ST_MEM(BPF_DW, 10, -8, -1),
            BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -16), BPF_MOV64_IMM(2, size),
            BPF_CALL_HELPER(func), BPF_MOV64_REG(6, 0), BPF_LDX_MEM(BPF_W, 0, 10, -16 + out_off),
            BPF_LDX_MEM(BPF_W, 2, 10, -12 + out_off), BPF_ALU64_REG(BPF_ADD, 0, 2),
            BPF_ALU64_REG(BPF_ADD, 0, 6), BPF_EXIT_INSN()]


def test_raw_tp_probe_read_user_from_the_caller(both):
    """probe_read_user / _str / probe_read (compat) read the test-running process's memory."""
    text = ffi.new("char[]", b"hello, kernel")
    addr = int(ffi.cast("uintptr_t", text))
    cases = [(FuncId.probe_read_user, 8), (FuncId.probe_read_user, 16), (FuncId.probe_read_user_str, 16),
             (FuncId.probe_read_user_str, 4), (FuncId.probe_read_user_str, 1), (FuncId.probe_read, 8),
             (FuncId.probe_read_str, 16), (FuncId.probe_read_kernel, 8), (FuncId.probe_read_kernel_str, 8)]

    def scenario(b):
        out = []
        for func, size in cases:
            fd = loaded(b, read_user(func, size))
            out.append([tr(b, fd, ctx_in=u64s(a)) for a in (addr, BAD_PTR, 0, 1 << 63, 0xFFFFFFFFFF600000)])
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
