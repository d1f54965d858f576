"""BPF_PROG_TYPE_PERF_EVENT (and LIRC_MODE2), fakekernel vs the real kernel: the
bpf_perf_event_data access matrix, the helper set (GPL and not), PROG_TEST_RUN (ENOTSUPP), and
attaching to software events (cpu-clock, task-clock, bpf-output) and a tracepoint event with
PERF_EVENT_IOC_SET_BPF and perf links.  LIRC_MODE2 is not built into the reference 6.18
kernel: PROG_LOAD answers EINVAL on both."""
from __future__ import annotations

import time

import pytest

from differential.test_perf_event import TP_SYS_ENTER_OPENAT, close_all, ioctl, perf_open
from differential.test_prog_lwt import access_matrix, load, loaded, ret, tr, verdict
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_W, AttachType, BpfCmd, FuncId, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_ATOMIC_OP, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)
from uapi.perf_event import PerfEventIoc, PerfSwId, PerfType, perf_attr_bytes
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

PE = ProgType.PERF_EVENT
DATA = "struct bpf_perf_event_data"
DATA_SIZE = ffi.sizeof(DATA)
SAMPLE_PERIOD, ADDR = ffi.offsetof(DATA, "sample_period"), ffi.offsetof(DATA, "addr")


def test_perf_event_ctx_access_matrix_matches_kernel(both):
    fake, host = both
    f, h = access_matrix(fake, PE, DATA_SIZE), access_matrix(host, PE, DATA_SIZE)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


@pytest.mark.parametrize("eat", [0, AttachType.PERF_EVENT], ids=["no_eat", "eat_perf_event"])
def test_perf_event_helper_set_matches_kernel(both, eat):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, PE, eat), _helper_verdicts(host, PE, eat)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


READ_VALUE = [BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -24), BPF_MOV64_IMM(3, 24),
              BPF_CALL_HELPER(FuncId.perf_prog_read_value), BPF_EXIT_INSN()]
READ_VALUE_BAD_SIZE = READ_VALUE[:2] + [BPF_MOV64_IMM(3, 0)] + READ_VALUE[3:]
BRANCHES_NULL = [BPF_MOV64_IMM(2, 0), BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 1),
                 BPF_CALL_HELPER(FuncId.read_branch_records), BPF_EXIT_INSN()]
LOADS = {
    "regs_word": [BPF_LDX_MEM(BPF_DW, 0, 1, 16), BPF_EXIT_INSN()],
    "sample_period_lo": [BPF_LDX_MEM(BPF_W, 0, 1, SAMPLE_PERIOD), BPF_EXIT_INSN()],
    "addr": [BPF_LDX_MEM(BPF_DW, 0, 1, ADDR), BPF_EXIT_INSN()],
    "read_value": READ_VALUE, "read_value_size0": READ_VALUE_BAD_SIZE, "branches_null": BRANCHES_NULL,
}


@pytest.mark.parametrize("lic", [b"GPL", b"MIT"])
@pytest.mark.parametrize("name", sorted(LOADS))
def test_perf_event_load_rules(both, name, lic):
    out = []
    for b in both:
        r = load(b, PE, LOADS[name], lic)
        if r.ret >= 0:
            b.close(r.ret)
        out.append((r.ret >= 0 or r.ret, error_lines(r.log)))
    assert out[0] == out[1]


def test_perf_event_test_run_enotsupp(both):
    def scenario(b):
        fd = loaded(b, PE, ret(0))
        out = tr(b, fd, bytes(64), ctx_in=bytes(DATA_SIZE))
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
    assert scenario(fake)[0] == -Errno.ENOTSUPP


# ---------------------------------------------------------------- attaching

SW_EVENTS = {"cpu_clock": PerfSwId.CPU_CLOCK, "task_clock": PerfSwId.TASK_CLOCK,
             "bpf_output": PerfSwId.BPF_OUTPUT}


@pytest.mark.parametrize("name", sorted(SW_EVENTS))
def test_perf_event_prog_on_software_event(both, name):
    """SET_BPF takes a PERF_EVENT program on a software event once (EEXIST after), refuses
    TRACEPOINT / KPROBE programs there; a tracepoint event refuses PERF_EVENT programs."""
    def scenario(b):
        sw, _ = perf_open(b, perf_attr_bytes(type=PerfType.SOFTWARE, config=SW_EVENTS[name],
                                             sample_period=100000))
        sw2, _ = perf_open(b, perf_attr_bytes(type=PerfType.SOFTWARE, config=SW_EVENTS[name],
                                              sample_period=100000))
        tp, _ = perf_open(b, perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT))
        p = loaded(b, PE, ret(0))
        p_tp, p_kp = loaded(b, ProgType.TRACEPOINT, ret(0)), loaded(b, ProgType.KPROBE, ret(0))
        out = {"sw_tp": ioctl(b, sw, PerfEventIoc.SET_BPF, p_tp), "sw_kp": ioctl(b, sw, PerfEventIoc.SET_BPF, p_kp),
               "tp_pe": ioctl(b, tp, PerfEventIoc.SET_BPF, p), "sw_pe": ioctl(b, sw, PerfEventIoc.SET_BPF, p),
               "sw_pe_again": ioctl(b, sw, PerfEventIoc.SET_BPF, p)}
        lk, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie", link_create__prog_fd=p,
                          link_create__target_fd=sw2, link_create__attach_type=AttachType.PERF_EVENT,
                          link_create__perf_event__bpf_cookie=7)
        out["link"] = lk if lk < 0 else "ok"
        out["set_bpf_on_linked"] = ioctl(b, sw2, PerfEventIoc.SET_BPF, p)
        for attach_type in (AttachType.TRACE_KPROBE_MULTI, AttachType.CGROUP_INET_INGRESS):
            r, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie", link_create__prog_fd=p,
                             link_create__target_fd=sw2, link_create__attach_type=attach_type)
            out[f"link_{attach_type.name}"] = r
            close_all(b, r)
        if lk >= 0:
            info, _ = calls.obj_get_info_by_fd(b, lk, "link")
            ev = info.perf_event.event
            out["info"] = (info.type, info.prog_id > 0, info.perf_event.type, ev.type, ev.config, ev.cookie)
            b.close(lk)
        out["set_bpf_after_link_close"] = ioctl(b, sw2, PerfEventIoc.SET_BPF, p)
        close_all(b, sw, sw2, tp, p, p_tp, p_kp)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- LIRC_MODE2

@pytest.mark.parametrize("eat", [0, AttachType.LIRC_MODE2], ids=["no_eat", "eat_lirc_mode2"])
def test_lirc_mode2_not_built_einval(both, eat):
    fake, host = both
    insns = ret(0)
    assert verdict(fake, ProgType.LIRC_MODE2, insns, eat) == verdict(host, ProgType.LIRC_MODE2, insns, eat)
    assert verdict(fake, ProgType.LIRC_MODE2, insns, eat)[0] == -Errno.EINVAL


# ---------------------------------------------------------------- firing

def counting_prog(b, m: int) -> int:
    """value[0] += 1; value[1] = ctx->sample_period; value[2] = perf_prog_read_value()'s result;
    value[3] = the counter it read."""
    return loaded(b, PE, [
        BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, m), BPF_MOV64_REG(2, 10),
        BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 14),
        BPF_MOV64_REG(7, 0), BPF_MOV64_IMM(1, 1), BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 7, 1, 0),
        BPF_LDX_MEM(BPF_DW, 1, 6, SAMPLE_PERIOD), BPF_STX_MEM(BPF_DW, 7, 1, 8),
        BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -32), BPF_MOV64_IMM(3, 24),
        BPF_CALL_HELPER(FuncId.perf_prog_read_value), BPF_STX_MEM(BPF_DW, 7, 0, 16),
        BPF_LDX_MEM(BPF_DW, 1, 10, -32), BPF_STX_MEM(BPF_DW, 7, 1, 24),
    ] + ret(1))


def fire(b, fd) -> None:
    """Let the event's sample periods elapse: CPU time on the real kernel, the world's
    overflow trigger on fakekernel."""
    if hasattr(b, "kern"):
        from fakekernel.perf.overflow import perf_event_overflow
        for _ in range(5):
            perf_event_overflow(b.kern, b.kern.current.files.fdget(fd).private_data)
        return
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass


def counters(b, m):
    v = calls.map_lookup_elem(b, m, bytes(4), 32)
    n, period, ret_, counter = (int.from_bytes(v[i:i + 8], "little", signed=True) for i in range(0, 32, 8))
    return n > 0, period, ret_, counter > 0


@pytest.mark.parametrize("how", ["set_bpf", "link"])
def test_perf_event_prog_fires_on_cpu_clock_overflow(both, how):
    def scenario(b):
        m = calls.map_create(b, MapType.ARRAY, 4, 32, 1)
        p = counting_prog(b, m)
        ev, _ = perf_open(b, perf_attr_bytes(type=PerfType.SOFTWARE, config=PerfSwId.CPU_CLOCK,
                                             sample_period=100000, disabled=1), pid=0, cpu=-1)
        lk = -1
        if how == "set_bpf":
            out = [ioctl(b, ev, PerfEventIoc.SET_BPF, p)]
        else:
            lk, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie", link_create__prog_fd=p,
                              link_create__target_fd=ev, link_create__attach_type=AttachType.PERF_EVENT)
            out = [lk if lk < 0 else "ok"]
        fire(b, ev)
        out.append(counters(b, m))                  # disabled: nothing
        out.append(ioctl(b, ev, PerfEventIoc.ENABLE))
        fire(b, ev)
        out.append(counters(b, m))
        out.append(ioctl(b, ev, PerfEventIoc.DISABLE))
        calls.map_update_elem(b, m, bytes(4), bytes(32))
        fire(b, ev)
        out.append(counters(b, m))
        close_all(b, lk, ev, p, m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
