"""LINK_CREATE for XDP (on lo, ifindex 1), BPF_PERF_EVENT and kprobe_multi, fake vs the
real kernel.  XDP links on the host's lo are always closed in a finally block.

The oracle is built without CONFIG_FPROBE, so its kprobe_multi answer is EOPNOTSUPP after
the generic checks; the fake is compared with its fprobe switch off (the fprobe-enabled
semantics are unit-tested in tests/unit/fakekernel/test_world.py)."""
from __future__ import annotations

from backends import FakeBackend
from uapi import calls
from uapi.bpf import AttachType, BpfCmd, ProgType
from uapi.ffi import ffi
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

LO = 1
XDP = AttachType.XDP
NO_FD = 0xFFFFFFFF          # (__u32)-1


def load(b, ptype, ret=2, eat=0):
    return calls.prog_load(b, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]),
                           expected_attach_type=eat)


def lc(b, prog, target, at, flags=0, **kw):
    extra = {f"link_create__{k}": v for k, v in kw.items()}
    return calls.raw(b, BpfCmd.LINK_CREATE, None, link_create__prog_fd=prog,
                     link_create__target_fd=target, link_create__attach_type=at,
                     link_create__flags=flags, **extra)[0]


def _closed(b, ret):
    """A link fd must not stay open on the host: close it and report success as 'fd'."""
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


def scenario_xdp_errnos(b):
    x = load(b, ProgType.XDP)
    xc = load(b, ProgType.XDP, eat=AttachType.XDP_CPUMAP)
    xd = load(b, ProgType.XDP, eat=AttachType.XDP_DEVMAP)
    sk = load(b, ProgType.SOCKET_FILTER, 0)
    out = [_closed(b, lc(b, *args)) for args in (
        (x, 0, XDP), (x, 999, XDP), (x, LO, XDP, 16), (x, LO, XDP, 1), (x, LO, XDP, 4),
        (x, LO, XDP, 8), (x, LO, XDP, 6), (x, LO, XDP, 32), (xc, LO, XDP), (xd, LO, XDP),
        (sk, LO, XDP), (x, LO, AttachType.CGROUP_INET_INGRESS), (x, LO, AttachType.PERF_EVENT),
        (999, LO, XDP), (0, LO, XDP), (x, 0, AttachType.STRUCT_OPS))]
    for f in (x, xc, xd, sk):
        b.close(f)
    return out


def scenario_xdp_double_attach(b):
    x, x2 = load(b, ProgType.XDP), load(b, ProgType.XDP)
    id0 = calls.obj_get_info_by_fd(b, x, "prog")[0].id
    out = []
    lk = lc(b, x, LO, XDP)
    try:
        out += [lk >= 0, _closed(b, lc(b, x2, LO, XDP)), _closed(b, lc(b, x, LO, XDP)),
                _closed(b, lc(b, x2, LO, XDP, 2)), _closed(b, lc(b, x2, LO, XDP, 4))]
        info = calls.obj_get_info_by_fd(b, lk, "link")[0]
        out += [info.type, info.xdp.ifindex, info.prog_id - id0]
    finally:
        if lk >= 0:
            b.close(lk)
    lk = lc(b, x2, LO, XDP, 2)          # closing the first link detached it
    try:
        out += [lk >= 0, _closed(b, lc(b, x, LO, XDP)), _closed(b, lc(b, x, LO, XDP, 4))]
    finally:
        if lk >= 0:
            b.close(lk)
    for f in (x, x2):
        b.close(f)
    return out


def scenario_perf_and_kprobe_multi(b):
    if isinstance(b, FakeBackend):
        b.kern.world.trace.fprobe = False          # the oracle has no CONFIG_FPROBE
    kp = load(b, ProgType.KPROBE, 0)
    km = load(b, ProgType.KPROBE, 0, eat=AttachType.TRACE_KPROBE_MULTI)
    tp = load(b, ProgType.TRACEPOINT, 0)
    sk = load(b, ProgType.SOCKET_FILTER, 0)
    name = ffi.new("char[]", b"do_sys_openat2")
    syms = ffi.new("uint64_t[]", [int(ffi.cast("uintptr_t", name))])
    km_args = dict(kprobe_multi__syms=syms, kprobe_multi__cnt=1)
    out = [_closed(b, lc(b, *a, **kw)) for a, kw in (
        ((kp, NO_FD, AttachType.PERF_EVENT), {}), ((tp, NO_FD, AttachType.PERF_EVENT), {}),
        ((kp, 0, AttachType.PERF_EVENT), {}), ((km, NO_FD, AttachType.PERF_EVENT), {}),
        ((sk, NO_FD, AttachType.PERF_EVENT), {}), ((kp, NO_FD, AttachType.PERF_EVENT, 1), {}),
        ((kp, 0, AttachType.TRACE_KPROBE_MULTI), km_args),
        ((km, 0, AttachType.TRACE_KPROBE_MULTI), km_args),
        ((km, 0, AttachType.TRACE_KPROBE_MULTI, 1), km_args),
        ((tp, 0, AttachType.TRACE_KPROBE_MULTI), km_args),
        ((sk, 0, AttachType.TRACE_KPROBE_MULTI), km_args))]
    for f in (kp, km, tp, sk):
        b.close(f)
    return out


def test_link_create_xdp_errnos(both):
    fake, host = both
    assert scenario_xdp_errnos(fake) == scenario_xdp_errnos(host)


def test_link_create_xdp_double_attach_ebusy(both):
    fake, host = both
    assert scenario_xdp_double_attach(fake) == scenario_xdp_double_attach(host)


def test_link_create_perf_event_bad_fd_ebadf(both):
    fake, host = both
    assert scenario_perf_and_kprobe_multi(fake) == scenario_perf_and_kprobe_multi(host)
