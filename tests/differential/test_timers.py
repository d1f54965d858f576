"""bpf_timer helpers from a program, fake vs the real kernel: what bpf_timer_init,
bpf_timer_set_callback, bpf_timer_start and bpf_timer_cancel return (clock ids, EBUSY on a
second init, start/cancel flags, start after cancel) for ARRAY / HASH / LRU_HASH values with
a struct bpf_timer, and which map types may hold one.  The real kernel fires timers
asynchronously, so firing is covered by tests/unit/fakekernel/helpers/test_timer.py."""
from __future__ import annotations

import re

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel.jit import ENGINE_ENV
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BPF_DW, BPF_IMM, BPF_LD, BPF_PSEUDO_FUNC, BpfCmd, MapType, ProgType
from uapi.insn import decode_prog

pytestmark = pytest.mark.differential

# results packed a byte each: init, init again, set_callback, start | cancel, start again
PROG = """
*(u32 *)(r10 -4) = 0
r2 = r10
r2 += -4
r1 = map[id:{fd}]
call bpf_map_lookup_elem
if r0 != 0x0 goto pc+2
r0 = 0
exit
r6 = r0
r1 = r6
r2 = map[id:{fd}]
r3 = {clock}
call bpf_timer_init
r7 = r0
r7 &= 255
r1 = r6
r2 = map[id:{fd}]
r3 = {clock}
call bpf_timer_init
r0 &= 255
r0 <<= 8
r7 |= r0
r1 = r6
r2 = subprog[+{cbrel}]
call bpf_timer_set_callback
r0 &= 255
r0 <<= 16
r7 |= r0
r1 = r6
r2 = {nsecs} ll
r3 = {sflags}
call bpf_timer_start
r0 &= 255
r0 <<= 24
r7 |= r0
r1 = r6
call bpf_timer_cancel
r0 &= 255
r0 <<= 32
r7 |= r0
r1 = r6
r2 = {nsecs} ll
r3 = 0
call bpf_timer_start
r0 &= 255
r0 <<= 40
r7 |= r0
r0 = r7
r0 >>= {shift}
exit
r0 = 0
exit
"""


def timer_btf():
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    u64 = w.int_("long long unsigned int", 8)
    tm = w.struct("bpf_timer", 16, [("a", u64, 0), ("b", u64, 64)])
    val = w.struct("val", 16, [("t", tm, 0)])
    proto = w.func_proto(i, [])
    main, cb = w.func("main", proto), w.func("cb", proto)
    return w.blob(), i, val, main, cb


def subprog_ldimm(insns: bytes) -> int:
    """The index of the (only) BPF_PSEUDO_FUNC ld_imm64."""
    return next(i for i, x in enumerate(decode_prog(insns))
                if x.code == BPF_LD | BPF_IMM | BPF_DW and x.src_reg == BPF_PSEUDO_FUNC)


def program(fd, clock, nsecs, sflags, shift):
    args = dict(fd=fd, clock=clock, nsecs=hex(nsecs), sflags=sflags, shift=shift)
    draft = assemble(PROG.format(cbrel=0, **args))
    cb = len(draft) // 8 - 2
    return assemble(PROG.format(cbrel=cb - subprog_ldimm(draft) - 1, **args)), cb


def scenario(b, clock=1, nsecs=10**10, sflags=0, map_type=MapType.ARRAY, shift=0):
    blob, i, val, main, cbf = timer_btf()
    bfd = btf_load(b, blob).ret
    m, _ = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=map_type, key_size=4, value_size=16,
                     max_entries=1, btf_fd=bfd, btf_key_type_id=i, btf_value_type_id=val)
    if m < 0:
        b.close(bfd)
        return ("map", m)
    if map_type != MapType.ARRAY:
        calls.map_update_elem(b, m, bytes(4), bytes(16))
    insns, cb = program(m, clock, nsecs, sflags, shift)
    fi = b"".join(x.to_bytes(4, "little") for x in (0, main, cb, cbf))
    fd, _ = calls.raw(b, BpfCmd.PROG_LOAD, None, prog_type=ProgType.SCHED_CLS, insns=insns,
                      insn_cnt=len(insns) // 8, license=b"GPL\0", prog_btf_fd=bfd,
                      func_info_rec_size=8, func_info=bytearray(fi), func_info_cnt=2)
    out = []
    if fd < 0:
        out.append(("load", fd))
    else:
        for _ in range(2):      # the second run finds the timer initialised: EBUSY
            out.append(calls.prog_test_run(b, fd, bytes(64), strict=False).retval)
        v = bytearray(16)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=m, key=bytes(4), value=v)[0])
        out.append(bytes(v).hex())          # the timer field reads as zeroes
        b.close(fd)
    b.close(m)
    b.close(bfd)
    return out


CASES = [dict(), dict(clock=0), dict(clock=7), dict(clock=2), dict(clock=16), dict(clock=15), dict(clock=3),
         dict(sflags=4), dict(sflags=2), dict(map_type=MapType.HASH),
         dict(map_type=MapType.LRU_HASH), dict(shift=32), dict(shift=32, sflags=1),
         dict(shift=32, map_type=MapType.HASH), dict(map_type=MapType.PERCPU_HASH),
         dict(map_type=MapType.PERCPU_ARRAY), dict(map_type=MapType.LRU_PERCPU_HASH)]


@pytest.mark.parametrize("tier", ["interp", "python", "c"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_timer_helpers_return_what_the_kernel_returns(both, monkeypatch, tier, case):
    monkeypatch.setenv(ENGINE_ENV, tier)
    fake, host = both
    got = scenario(fake, **case)
    assert got == scenario(host, **case)
    if case.get("map_type", MapType.ARRAY) in (MapType.ARRAY, MapType.HASH, MapType.LRU_HASH):
        assert isinstance(got[0], int)      # loaded and ran


# ---- the verifier's bpf_timer argument rules (process_timer_func), full logs compared

_KADDR = re.compile(r"0x[0-9a-f]{12,16}")
V_HEAD = """
*(u32 *)(r10 -4) = 0
r2 = r10
r2 += -4
r1 = map[id:{fd}]
call bpf_map_lookup_elem
if r0 != 0x0 goto pc+2
r0 = 0
exit
r6 = r0
"""
V_BODIES = {
    "init": "r1 = r6\nr2 = map[id:{fd}]\nr3 = 1\ncall bpf_timer_init\nr0 = 0\nexit\n",
    "init_off_by_8": "r1 = r6\nr1 += 8\nr2 = map[id:{fd}]\nr3 = 1\ncall bpf_timer_init\nr0 = 0\nexit\n",
    "init_on_stack": "r1 = r10\nr1 += -16\nr2 = map[id:{fd}]\nr3 = 1\ncall bpf_timer_init\nr0 = 0\nexit\n",
    "init_other_map": "r1 = r6\nr2 = map[id:{fd2}]\nr3 = 1\ncall bpf_timer_init\nr0 = 0\nexit\n",
    "start": "r1 = r6\nr2 = 1000\nr3 = 0\ncall bpf_timer_start\nr0 = 0\nexit\n",
    "cancel": "r1 = r6\ncall bpf_timer_cancel\nr0 = 0\nexit\n",
    "load_of_timer": "r1 = *(u64 *)(r6 +0)\nr0 = 0\nexit\n",
}


def _verifier_map(b, kind):
    w = BtfWriter()
    u32 = w.int_("unsigned int", 4)
    u64 = w.int_("long long unsigned int", 8)
    tm = w.struct("bpf_timer", 16, [("a", u64, 0), ("b", u64, 64)])
    if kind == "timer":
        v = w.struct("val", 24, [("t", tm, 0), ("x", u64, 128)])
    else:
        v = w.struct("val", 24, [("t", u64, 0), ("y", u64, 64), ("x", u64, 128)])
    bfd = btf_load(b, w.blob()).ret
    if kind == "no_btf":
        m = calls.map_create(b, MapType.ARRAY, 4, 24, 1)
    else:
        m = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.ARRAY, key_size=4, value_size=24,
                      max_entries=1, btf_fd=bfd, btf_key_type_id=u32, btf_value_type_id=v,
                      map_name=b"m")[0]
    b.close(bfd)
    return m


def verifier_scenario(b, body, kind):
    m, m2 = _verifier_map(b, kind), _verifier_map(b, "timer")
    insns = assemble((V_HEAD + V_BODIES[body]).format(fd=m, fd2=m2))
    r = calls.prog_load(b, ProgType.SCHED_CLS, insns, log_level=1, log_size=1 << 16, strict=False)
    out = (r.ret if r.ret < 0 else "ok", _KADDR.sub("<kaddr>", r.log) if r.ret < 0 else "")
    if r.ret >= 0:
        b.close(r.ret)
    b.close(m)
    b.close(m2)
    return out


@pytest.mark.parametrize("body,kind", [(body, "timer") for body in V_BODIES]
                         + [("init", "no_timer"), ("init", "no_btf")])
def test_timer_argument_rules_match_kernel(both, body, kind):
    fake, host = both
    assert verifier_scenario(fake, body, kind) == verifier_scenario(host, body, kind)
