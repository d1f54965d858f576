"""fakekernel/perf + fakekernel/trace/events.py: tracepoint and kprobe events firing their programs,
the kprobe PMU (which the oracle machine lacks: behaviour from the source), the tracing flavour
of bpf_perf_event_output, and object lifetimes (programs detach when the event's file goes)."""
from __future__ import annotations

import mmap

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.backend import buffer_address
from uapi.bpf import AttachType, BpfCmd, MapType, ProgType
from uapi.errno import Errno
from uapi.perf_event import (PERF_PROBE_CONFIG_IS_RETPROBE, PerfEventIoc, PerfSample, PerfSwId,
                             PerfType, perf_attr_bytes)
from fakekernel.perf.pmu import PMU_TYPE_KPROBE
from fakekernel.trace.events import TRACE_EVENTS

OPENAT = 782
P = mmap.PAGESIZE


def tp_event(kernel, config=OPENAT, cpu=0):
    return kernel.perf_event_open(bytearray(perf_attr_bytes(type=PerfType.TRACEPOINT, config=config)),
                                  -1, cpu)


def counter_prog(kernel, prog_type, arr, ctx_off):
    """arr[0] += 1; arr[1] = *(u64 *)(ctx + ctx_off)."""
    return calls.prog_load(kernel, prog_type, assemble(f"""
        r6 = *(u64 *)(r1 +{ctx_off})
        r1 = map[id:{arr}]
        r2 = 0
        *(u32 *)(r10 -4) = r2
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0x0 goto pc+4
        r1 = *(u64 *)(r0 +0)
        r1 += 1
        *(u64 *)(r0 +0) = r1
        *(u64 *)(r0 +8) = r6
        r0 = 0
        exit
    """))


def counter(kernel, arr) -> tuple[int, int]:
    v = calls.map_lookup_elem(kernel, arr, bytes(4), 16)
    return int.from_bytes(v[:8], "little"), int.from_bytes(v[8:], "little")


def test_tracepoint_set_bpf_runs_on_fire_and_detaches_on_close(kernel):
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 16, 1)
    prog = counter_prog(kernel, ProgType.TRACEPOINT, arr, 32)          # sys_enter_openat flags
    ev = tp_event(kernel)
    assert kernel.ioctl(ev, PerfEventIoc.SET_BPF, prog) == 0
    events = kernel.world.trace.events
    assert events.fire("syscalls", "sys_enter_openat", dfd=-100, flags=0o101) == 1
    assert counter(kernel, arr) == (1, 0o101)
    assert events.fire("syscalls", "sys_exit_openat", ret=3) == 0          # another event
    kernel.close(ev)
    assert events.fire("syscalls", "sys_enter_openat", flags=1) == 0
    assert counter(kernel, arr) == (1, 0o101)
    for fd in (prog, arr):
        kernel.close(fd)


def test_tracepoint_perf_link_runs_and_detaches(kernel):
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 16, 1)
    prog = counter_prog(kernel, ProgType.TRACEPOINT, arr, 16)          # sched_process_exit pid@24
    ev = tp_event(kernel, config=369)
    link = calls.link_create(kernel, prog, ev, AttachType.PERF_EVENT)
    kernel.close(ev)                                   # the link holds the event's file
    assert kernel.world.trace.events.fire("sched", "sched_process_exit", comm="x", pid=7) == 1
    kernel.close(link)
    assert kernel.world.trace.events.fire("sched", "sched_process_exit", pid=7) == 0
    assert counter(kernel, arr)[0] == 1
    for fd in (prog, arr):
        kernel.close(fd)


def test_tracepoint_prog_reading_past_the_record_eacces(kernel):
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 16, 1)
    prog = counter_prog(kernel, ProgType.TRACEPOINT, arr, 48)          # sys_exit_openat is 24 bytes
    ev = tp_event(kernel, config=781)
    assert kernel.ioctl(ev, PerfEventIoc.SET_BPF, prog) == -Errno.EACCES
    for fd in (ev, prog, arr):
        kernel.close(fd)


def test_trace_event_record_layout_data_loc():
    ev = next(e for e in TRACE_EVENTS if e.name == "sched_process_exec")
    rec = ev.record(42, {"filename": "/bin/true", "pid": 42, "old_pid": 41})
    assert rec[0:2] == ev.id.to_bytes(2, "little") and rec[4:8] == (42).to_bytes(4, "little")
    loc = int.from_bytes(rec[8:12], "little")
    off, size = loc & 0xFFFF, loc >> 16
    assert rec[off:off + size] == b"/bin/true\0"
    assert len(rec) % 8 == 0


_NAMES = []          # user memory for kprobe_func pointers (kept alive for the test run)


def _kprobe_attr(name: bytes, ret=False) -> bytearray:
    buf = bytearray(name + b"\0")
    _NAMES.append(buf)
    return bytearray(perf_attr_bytes(type=PMU_TYPE_KPROBE, kprobe_func=buffer_address(buf),
                                     config=PERF_PROBE_CONFIG_IS_RETPROBE if ret else 0))


@pytest.mark.parametrize("name,want", [(b"do_sys_openat2", 0), (b"no_such_function", -Errno.ENOENT),
                                       (b"__rcu_read_lock", -Errno.EINVAL), (b"", -Errno.EINVAL)])
def test_kprobe_pmu_open(kernel, name, want):
    fd = kernel.perf_event_open(_kprobe_attr(name))
    assert (0 if fd >= 0 else fd) == want
    if fd >= 0:
        kernel.close(fd)


def test_kprobe_pmu_without_func_or_addr_einval(kernel):
    assert kernel.perf_event_open(bytearray(perf_attr_bytes(type=PMU_TYPE_KPROBE))) == -Errno.EINVAL


def test_kprobe_pmu_set_bpf_and_fire_entry_and_return(kernel):
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 16, 1)
    prog = counter_prog(kernel, ProgType.KPROBE, arr, 80)              # pt_regs->ax
    tp = calls.prog_load(kernel, ProgType.TRACEPOINT, assemble("r0 = 0\nexit"))
    evs = []
    for ret in (False, True):
        evs.append(kernel.perf_event_open(_kprobe_attr(b"do_sys_openat2", ret)))
    assert kernel.ioctl(evs[0], PerfEventIoc.SET_BPF, tp) == -Errno.EINVAL
    assert kernel.ioctl(evs[1], PerfEventIoc.SET_BPF, prog) == 0
    assert kernel.world.trace.call("do_sys_openat2", (1, 2, 3), ret=77) == 1
    assert counter(kernel, arr) == (1, 77)
    for fd in (*evs, prog, tp, arr):
        kernel.close(fd)
    assert kernel.world.trace.call("do_sys_openat2", (1, 2, 3), ret=5) == 0


def test_tracepoint_perf_event_output_reaches_the_ring(kernel):
    """A TRACEPOINT program sends 8 bytes of its record to a BPF output event (CPU 0)."""
    pa = calls.map_create(kernel, MapType.PERF_EVENT_ARRAY, 4, 4, 2)
    out = kernel.perf_event_open(bytearray(perf_attr_bytes(
        type=PerfType.SOFTWARE, config=PerfSwId.BPF_OUTPUT, sample_type=PerfSample.RAW,
        sample_period=1)), -1, 0)
    calls.map_update_elem(kernel, pa, bytes(4), out.to_bytes(4, "little"))
    vm = kernel.mmap(out, 2 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    prog = calls.prog_load(kernel, ProgType.TRACEPOINT, assemble(f"""
        r2 = *(u64 *)(r1 +32)
        *(u64 *)(r10 -8) = r2
        r2 = map[id:{pa}]
        r3 = 0xffffffff ll
        r4 = r10
        r4 += -8
        r5 = 8
        call bpf_perf_event_output
        exit
    """))
    ev = tp_event(kernel)
    assert kernel.ioctl(ev, PerfEventIoc.SET_BPF, prog) == 0
    kernel.world.trace.events.fire("syscalls", "sys_enter_openat", flags=0x1234)
    head = int.from_bytes(vm.mmap[1024:1032], "little")
    rec = bytes(vm.mmap[P:P + head])
    assert head == 24 and rec[8:12] == (12).to_bytes(4, "little")
    assert rec[12:20] == (0x1234).to_bytes(8, "little")
    vm.munmap()
    for fd in (ev, prog, out, pa):
        kernel.close(fd)


def test_perf_event_array_slot_keeps_event_after_fd_close(kernel):
    pa = calls.map_create(kernel, MapType.PERF_EVENT_ARRAY, 4, 4, 1)
    out = kernel.perf_event_open(bytearray(perf_attr_bytes(type=PerfType.SOFTWARE,
                                                           config=PerfSwId.BPF_OUTPUT)))
    calls.map_update_elem(kernel, pa, bytes(4), out.to_bytes(4, "little"))
    ev = kernel.current.files.lookup(out).private_data
    kernel.close(out)
    assert not ev.dead                      # the map holds the file
    kernel.close(pa)                        # the storing map file goes: so does the entry
    assert ev.dead


def test_ioctl_on_non_perf_fds(kernel):
    arr = calls.map_create(kernel, MapType.ARRAY, 4, 4, 1)
    assert kernel.ioctl(arr, PerfEventIoc.ENABLE) == -Errno.ENOTTY
    assert kernel.ioctl(99, PerfEventIoc.ENABLE) == -Errno.EBADF
    ret, _ = calls.raw(kernel, BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=arr,
                       link_create__target_fd=-1, link_create__attach_type=AttachType.PERF_EVENT)
    assert ret == -Errno.EINVAL
    kernel.close(arr)


def _output_setup(kernel, **attr):
    pa = calls.map_create(kernel, MapType.PERF_EVENT_ARRAY, 4, 4, 1)
    fields = dict(type=PerfType.SOFTWARE, config=PerfSwId.BPF_OUTPUT, sample_type=PerfSample.RAW,
                  sample_period=1)
    fields.update(attr)
    out = kernel.perf_event_open(bytearray(perf_attr_bytes(**fields)), -1, 0)
    calls.map_update_elem(kernel, pa, bytes(4), out.to_bytes(4, "little"))
    prog = calls.prog_load(kernel, ProgType.SCHED_CLS, assemble(f"""
        r2 = 0
        *(u64 *)(r10 -8) = r2
        r2 = map[id:{pa}]
        r3 = 0
        r4 = r10
        r4 += -8
        r5 = 8
        call bpf_perf_event_output
        exit
    """))
    return pa, out, prog, kernel.current.files.lookup(out).private_data


@pytest.mark.parametrize("attr,runs_before_wakeup", [
    (dict(wakeup_events=1), 1), (dict(wakeup_events=3), 3),
    (dict(), 2 * P // 2 // 24 + 1),                       # default watermark: half the data
    (dict(watermark=1, wakeup_watermark=100), 5),         # > 100 bytes of 24-byte records
])
def test_perf_output_wakeup_rules(kernel, attr, runs_before_wakeup):
    pa, out, prog, ev = _output_setup(kernel, **attr)
    vm = kernel.mmap(out, 3 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    woken = []
    ev.waitq.add(lambda: woken.append(1))
    for i in range(runs_before_wakeup):
        assert not woken, i
        assert calls.prog_test_run(kernel, prog, bytes(64)).retval == 0
    assert woken
    assert ev.map_poll() & 0x1 and ev.map_poll() == 0     # EPOLLIN once, taken by the poll
    vm.munmap()
    for fd in (prog, out, pa):
        kernel.close(fd)


def test_perf_output_after_munmap_enospc_and_remap_is_fresh(kernel):
    pa, out, prog, ev = _output_setup(kernel)
    vm = kernel.mmap(out, 2 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    assert calls.prog_test_run(kernel, prog, bytes(64)).retval == 0
    vm.munmap()
    assert calls.prog_test_run(kernel, prog, bytes(64)).retval == -Errno.ENOSPC & 0xFFFFFFFF
    vm = kernel.mmap(out, 3 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    assert int.from_bytes(vm.mmap[1024:1032], "little") == 0
    assert calls.prog_test_run(kernel, prog, bytes(64)).retval == 0
    assert int.from_bytes(vm.mmap[1024:1032], "little") == 24
    vm.munmap()
    for fd in (prog, out, pa):
        kernel.close(fd)
