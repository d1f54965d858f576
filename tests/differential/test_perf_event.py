"""perf events against the real kernel: perf_event_open(2) checks, the perf ioctls (SET_BPF, QUERY_BPF,
ID, ...), the perf link, mmap of the ring buffer, PERF_EVENT_ARRAY with real perf fds and the
records bpf_perf_event_output writes from tc and XDP programs (read back from the mmapped ring).

Output tests pin this process to CPU 0 (the perf event's CPU) while they run."""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachType, BpfCmd, MapFlags, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.perf_event import (NR_perf_event_open, PERF_SAMPLE_BRANCH_ANY,
                             PERF_SAMPLE_BRANCH_PLM_ALL, PerfEventIoc, PerfFlag, PerfSample,
                             PerfSwId, PerfType, perf_attr_bytes)

pytestmark = pytest.mark.differential

P = mmap.PAGESIZE
RW, RO = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
TP_SYS_ENTER_OPENAT = 782            # this 6.18 build's id (fakekernel/trace/events.py has the same)
CURRENT_CPU = 0xFFFFFFFF
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int


def bpf_output_attr(**kw) -> bytes:
    fields = dict(type=PerfType.SOFTWARE, config=PerfSwId.BPF_OUTPUT, sample_type=PerfSample.RAW,
                  sample_period=1, wakeup_events=1)
    fields.update(kw)
    return perf_attr_bytes(**fields)


# ---------------------------------------------------------------- the two kernels' syscalls

def perf_open(b, attr: bytes, pid=-1, cpu=0, group=-1, flags=0) -> tuple[int, bytes]:
    """perf_event_open on either kernel: (fd or -errno, the attr buffer afterwards)."""
    buf = bytearray(attr)
    if hasattr(b, "kern"):
        fd = b.kern.perf_event_open(buf, pid, cpu, group, flags)
    else:
        cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
        fd = _libc.syscall(NR_perf_event_open, cbuf, pid, cpu, group, ctypes.c_ulong(flags))
        fd = fd if fd >= 0 else -ctypes.get_errno()
    if fd >= 0:
        b.fds.append(fd)
    return fd, bytes(buf)


def ioctl(b, fd, req, arg=0) -> int:
    if hasattr(b, "kern"):
        return b.kern.ioctl(fd, req, arg)
    if not isinstance(arg, int):
        arg = ctypes.addressof((ctypes.c_char * len(arg)).from_buffer(arg))
    r = _libc.ioctl(fd, ctypes.c_ulong(req), ctypes.c_ulong(arg & (2 ** 64 - 1)))
    return r if r >= 0 else -ctypes.get_errno()


def do_mmap(b, fd, length, prot=RW, flags=mmap.MAP_SHARED, offset=0):
    """(the mapping's mmap object and its unmap function) or -errno."""
    if hasattr(b, "kern"):
        from fakekernel.errors import KernelError
        try:
            vm = b.kern.mmap(fd, length, prot, flags, offset)
        except KernelError as e:
            return -e.errno
        return vm.mmap, vm.munmap
    try:
        m = mmap.mmap(fd, length, flags, prot, offset=offset)
    except OSError as e:
        return -e.errno
    return m, m.close


def user_page(m) -> tuple:
    pg = ffi.from_buffer("struct perf_event_mmap_page *", m)
    out = (pg.version, pg.compat_version, pg.index, pg.data_head, pg.data_tail, pg.data_offset,
           pg.data_size, pg.size, pg.capabilities, pg.aux_head, pg.aux_size)
    del pg
    return out


def ring(m) -> tuple[int, bytes]:
    """data_head and the data bytes written so far (no wrap in these tests)."""
    head = int.from_bytes(m[1024:1032], "little")
    return head, bytes(m[P:P + min(head, len(m) - P)])


@contextlib.contextmanager
def on_cpu0():
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def close_all(b, *fds):
    for fd in fds:
        if isinstance(fd, int) and fd >= 0:
            b.close(fd)


# ---------------------------------------------------------------- perf_event_open

ATTR_CASES = {
    "bpf_output": bpf_output_attr(),
    "size0_is_ver0": bpf_output_attr(size=0),
    "size63_e2big": bpf_output_attr(size=63)[:63] + b"\0",
    "size4097_e2big": bpf_output_attr(size=4097) + bytes(4097 - 136),
    "size200_nonzero_tail_e2big": bpf_output_attr(size=200) + bytes(63) + b"\1",
    "size200_zero_tail": bpf_output_attr(size=200) + bytes(64),
    "sw_config_past_max_enoent": bpf_output_attr(config=PerfSwId.MAX + 3),
    "sw_cpu_clock": perf_attr_bytes(type=PerfType.SOFTWARE, config=PerfSwId.CPU_CLOCK),
    "sw_dummy": perf_attr_bytes(type=PerfType.SOFTWARE, config=PerfSwId.DUMMY),
    "unknown_type_enoent": perf_attr_bytes(type=999),
    "tracepoint_bad_id_einval": perf_attr_bytes(type=PerfType.TRACEPOINT, config=999999),
    "tracepoint_openat": perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT),
    "tracepoint_openat_raw": perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT,
                                             sample_type=PerfSample.RAW, sample_period=1),
    "sample_type_unknown_einval": bpf_output_attr(sample_type=1 << 30),
    "read_format_unknown_einval": bpf_output_attr(read_format=1 << 6),
    "period_bit63_einval": bpf_output_attr(sample_period=1 << 63),
    "inherit_thread_without_inherit_einval": bpf_output_attr(inherit_thread=1),
    "sigtrap_without_remove_on_exec_einval": bpf_output_attr(sigtrap=1),
    "remove_and_enable_on_exec_einval": bpf_output_attr(remove_on_exec=1, enable_on_exec=1),
    "uprobe_without_path_einval": perf_attr_bytes(type=8),
    "freq_above_rate_einval": bpf_output_attr(freq=1, sample_freq=10 ** 9),
    "branch_stack_sw_eopnotsupp": bpf_output_attr(sample_type=PerfSample.RAW | PerfSample.BRANCH_STACK,
                                                  branch_sample_type=PERF_SAMPLE_BRANCH_ANY),
    "branch_stack_tp_eopnotsupp": perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT,
                                                  sample_type=PerfSample.BRANCH_STACK,
                                                  branch_sample_type=1 << 19),
    "branch_stack_unknown_bit_einval": bpf_output_attr(sample_type=PerfSample.BRANCH_STACK,
                                                       branch_sample_type=1 << 20 | PERF_SAMPLE_BRANCH_ANY),
    "branch_stack_only_plm_einval": bpf_output_attr(sample_type=PerfSample.BRANCH_STACK,
                                                    branch_sample_type=PERF_SAMPLE_BRANCH_PLM_ALL),
    "branch_stack_type_999_enoent": perf_attr_bytes(type=999, sample_type=PerfSample.BRANCH_STACK,
                                                    branch_sample_type=PERF_SAMPLE_BRANCH_ANY),
}


@pytest.mark.parametrize("name", list(ATTR_CASES))
def test_perf_event_open_attr_matrix(both, name):
    def scenario(b):
        fd, buf = perf_open(b, ATTR_CASES[name])
        out = (b.sym(fd), int.from_bytes(buf[4:8], "little"))
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("pid,cpu", [(-1, -1), (-1, 2), (-1, 1000), (-1, 1), (0, -1), (0, 0),
                                     (999999, 0), (-2, 0)])
def test_perf_event_open_pid_cpu_matrix(both, pid, cpu):
    def scenario(b):
        fd, _ = perf_open(b, bpf_output_attr(), pid, cpu)
        out = b.sym(fd)
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("flags", [PerfFlag.FD_CLOEXEC, 1 << 4, PerfFlag.PID_CGROUP,
                                   PerfFlag.FD_NO_GROUP])
def test_perf_event_open_flags_matrix(both, flags):
    def scenario(b):
        fd, _ = perf_open(b, bpf_output_attr(), -1, 0, -1, flags)
        out = b.sym(fd)
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_event_open_group_fd_not_perf_ebadf(both):
    def scenario(b):
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = [perf_open(b, bpf_output_attr(), group=m)[0], perf_open(b, bpf_output_attr(), group=999)[0]]
        leader, _ = perf_open(b, bpf_output_attr())
        member, _ = perf_open(b, bpf_output_attr(), group=leader)
        out.append(b.sym(member))
        close_all(b, member, leader, m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == [-Errno.EBADF, -Errno.EBADF, "fd2"]


# ---------------------------------------------------------------- ioctls

def test_perf_ioctl_matrix_sw_event(both):
    def scenario(b):
        fd, _ = perf_open(b, bpf_output_attr())
        fd2, _ = perf_open(b, bpf_output_attr())
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        id1, id2 = bytearray(8), bytearray(8)
        period0, period5 = bytearray(8), bytearray((5).to_bytes(8, "little"))
        out = {
            "enable": ioctl(b, fd, PerfEventIoc.ENABLE), "disable": ioctl(b, fd, PerfEventIoc.DISABLE),
            "reset": ioctl(b, fd, PerfEventIoc.RESET), "refresh": ioctl(b, fd, PerfEventIoc.REFRESH, 1),
            "enable_group": ioctl(b, fd, PerfEventIoc.ENABLE, 1),
            "pause_unmapped": ioctl(b, fd, PerfEventIoc.PAUSE_OUTPUT, 1),
            "unknown": ioctl(b, fd, 0x2499), "id": ioctl(b, fd, PerfEventIoc.ID, id1),
            "id2": ioctl(b, fd2, PerfEventIoc.ID, id2), "id_efault": ioctl(b, fd, PerfEventIoc.ID, 8),
            "period0": ioctl(b, fd, PerfEventIoc.PERIOD, period0),
            "period5": ioctl(b, fd, PerfEventIoc.PERIOD, period5),
            "set_output_none": ioctl(b, fd, PerfEventIoc.SET_OUTPUT, -1),
            "set_output_self": ioctl(b, fd, PerfEventIoc.SET_OUTPUT, fd),
            "set_output_map": ioctl(b, fd, PerfEventIoc.SET_OUTPUT, m),
            "set_filter_sw": ioctl(b, fd, PerfEventIoc.SET_FILTER, bytearray(b"x\0")),
            "query_bpf_sw": ioctl(b, fd, PerfEventIoc.QUERY_BPF, bytearray(16)),
            "modify_attr_sw": ioctl(b, fd, PerfEventIoc.MODIFY_ATTRIBUTES, bytearray(bpf_output_attr())),
            "ioctl_map_fd": ioctl(b, m, PerfEventIoc.ENABLE),
            "ioctl_closed_fd": ioctl(b, 999, PerfEventIoc.ENABLE),
        }
        out["id_step"] = int.from_bytes(id2, "little") - int.from_bytes(id1, "little")
        close_all(b, fd, fd2, m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def tp_prog(b, prog_type=ProgType.TRACEPOINT):
    return calls.prog_load(b, prog_type, assemble("r0 = 0\nexit"))


def test_perf_ioctl_set_bpf_matrix(both):
    def scenario(b):
        tp, _ = perf_open(b, perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT))
        sw, _ = perf_open(b, bpf_output_attr())
        p_tp, p_kp = tp_prog(b), tp_prog(b, ProgType.KPROBE)
        p_sf = tp_prog(b, ProgType.SOCKET_FILTER)
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        q = bytearray((4).to_bytes(4, "little") + bytes(20))
        out = {
            "tp_bad_fd": ioctl(b, tp, PerfEventIoc.SET_BPF, 999),
            "tp_map_fd": ioctl(b, tp, PerfEventIoc.SET_BPF, m),
            "tp_kprobe_prog": ioctl(b, tp, PerfEventIoc.SET_BPF, p_kp),
            "tp_socket_filter_prog": ioctl(b, tp, PerfEventIoc.SET_BPF, p_sf),
            "query_empty": (ioctl(b, tp, PerfEventIoc.QUERY_BPF, q), bytes(q[4:8])),
            "tp_tp_prog": ioctl(b, tp, PerfEventIoc.SET_BPF, p_tp),
            "tp_again": ioctl(b, tp, PerfEventIoc.SET_BPF, p_tp),
            "sw_tp_prog": ioctl(b, sw, PerfEventIoc.SET_BPF, p_tp),
            "sw_socket_filter_prog": ioctl(b, sw, PerfEventIoc.SET_BPF, p_sf),
        }
        q = bytearray((4).to_bytes(4, "little") + bytes(20))
        out["query_one"] = ioctl(b, tp, PerfEventIoc.QUERY_BPF, q)
        info, _ = calls.obj_get_info_by_fd(b, p_tp, "prog")
        out["query_ids"] = (int.from_bytes(q[4:8], "little"),
                            int.from_bytes(q[8:12], "little") == info.id, bytes(q[12:24]))
        q0 = bytearray(8)
        out["query_len0"] = (ioctl(b, tp, PerfEventIoc.QUERY_BPF, q0), bytes(q0))
        qbig = bytearray((65).to_bytes(4, "little") + bytes(4))
        out["query_e2big"] = ioctl(b, tp, PerfEventIoc.QUERY_BPF, qbig)
        close_all(b, tp, sw, p_tp, p_kp, p_sf, m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_link_create_perf_event(both):
    def scenario(b):
        tp, _ = perf_open(b, perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT))
        sw, _ = perf_open(b, bpf_output_attr())
        p = tp_prog(b)
        ret, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie",
                           link_create__prog_fd=p, link_create__target_fd=tp,
                           link_create__attach_type=AttachType.PERF_EVENT)
        out = {"link": b.sym(ret) if ret < 0 else "ok",
               "set_bpf_busy": ioctl(b, tp, PerfEventIoc.SET_BPF, p)}
        for name, target, flags in (("sw", sw, 0), ("flags", tp, 1), ("map", p, 0)):
            r, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie",
                             link_create__prog_fd=p, link_create__target_fd=target,
                             link_create__attach_type=AttachType.PERF_EVENT,
                             link_create__flags=flags)
            out[name] = r
            close_all(b, r)
        if ret >= 0:
            info, _ = calls.obj_get_info_by_fd(b, ret, "link")
            out["info"] = (info.type, info.prog_id > 0)
            b.close(ret)
        out["set_bpf_after_link_close"] = ioctl(b, tp, PerfEventIoc.SET_BPF, p)
        close_all(b, tp, sw, p)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- mmap

@pytest.mark.parametrize("pages", [1, 2, 3, 4, 5, 9])
def test_perf_mmap_page_counts(both, pages):
    def scenario(b):
        fd, _ = perf_open(b, bpf_output_attr())
        r = do_mmap(b, fd, pages * P)
        if isinstance(r, int):
            out = r
        else:
            out = user_page(r[0])
            r[1]()
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_mmap_rules(both):
    def scenario(b):
        fd, _ = perf_open(b, bpf_output_attr())
        out = {"private": do_mmap(b, fd, 9 * P, flags=mmap.MAP_PRIVATE),
               "offset": do_mmap(b, fd, P, offset=P)}
        first = do_mmap(b, fd, 9 * P)
        out["other_size"] = do_mmap(b, fd, 5 * P)
        second = do_mmap(b, fd, 9 * P, prot=RO)
        out["same_size_ro"] = not isinstance(second, int)
        out["pause"] = (ioctl(b, fd, PerfEventIoc.PAUSE_OUTPUT, 1), ioctl(b, fd, PerfEventIoc.PAUSE_OUTPUT, 0))
        out["set_output_mapped"] = ioctl(b, fd, PerfEventIoc.SET_OUTPUT, -1)
        second[1]()
        first[1]()
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- PERF_EVENT_ARRAY

def test_perf_event_array_update_lookup_delete(both):
    def scenario(b):
        m = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 4)
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        fd, _ = perf_open(b, bpf_output_attr())
        key = lambda i: i.to_bytes(4, "little")     # noqa: E731
        upd = lambda k, v, f=0: calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m,  # noqa: E731
                                          key=key(k), value=key(v), flags=f)[0]
        out = {"non_perf_fd": upd(0, arr), "closed_fd": upd(0, 999), "ok": upd(0, fd),
               "replace": upd(0, fd), "index_past": upd(4, fd), "noexist_flag": upd(1, fd, 1),
               "lookup": calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=key(0),
                                   value=bytearray(4))[0]}
        b.close(fd)          # the slot keeps the perf event's file
        dl = lambda k: calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=key(k))[0]  # noqa: E731
        out["delete_after_perf_close"] = dl(0)
        out["delete_empty"] = dl(0)
        out["delete_past"] = dl(9)
        close_all(b, m, arr)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_event_array_entries_go_with_the_map_file_that_stored_them(both):
    def scenario(b):
        out = {}
        for flags in (0, MapFlags.PRESERVE_ELEMS):
            a = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 2, map_flags=flags)
            info, _ = calls.obj_get_info_by_fd(b, a, "map")
            other, _ = calls.raw(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=info.id)
            fd, _ = perf_open(b, bpf_output_attr())
            for i, via in ((0, a), (1, other)):
                calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=via, key=i.to_bytes(4, "little"),
                          value=fd.to_bytes(4, "little"))
            b.close(a)
            out[int(flags)] = [calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=other,
                                         key=i.to_bytes(4, "little"))[0] for i in (0, 1)]
            close_all(b, other, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- bpf_perf_event_output

def output_prog(map_fd: int, flags: int, size: int = 5, fill: int = 0x1122334455667788) -> bytes:
    """Write `size` bytes from a 512-byte stack buffer of `fill`s to the perf array."""
    stores = "\n".join(f"*(u64 *)(r10 {-8 * (i + 1)}) = r1" for i in range((size + 7) // 8))
    return assemble(f"""
        r6 = r1
        r1 = {fill:#x} ll
        {stores}
        r1 = r6
        r2 = map[id:{map_fd}]
        r3 = {flags:#x} ll
        r4 = r10
        r4 += {-8 * ((size + 7) // 8) if size else -8}
        r5 = {size}
        call bpf_perf_event_output
        exit
    """)


PKT = bytes(range(64))
OUTPUT_CASES = {
    "current_cpu": dict(flags=CURRENT_CPU),
    "index0": dict(flags=0),
    "index0_13_bytes": dict(flags=0, size=13),
    "zero_bytes": dict(flags=0, size=0),
    "ctx_bytes_14": dict(flags=(14 << 32) | CURRENT_CPU),
    "ctx_bytes_all": dict(flags=(64 << 32) | CURRENT_CPU, size=3),
    "ctx_bytes_past_packet_efault": dict(flags=(65 << 32) | CURRENT_CPU),
    "empty_slot_enoent": dict(flags=1),
    "index_past_e2big": dict(flags=7),
    "unknown_flag_einval": dict(flags=1 << 60),
    "event_on_cpu1_eopnotsupp": dict(flags=2),
    "cpu_clock_event_einval": dict(flags=3),
    "disabled_event_eopnotsupp": dict(flags=4),
    "unmapped_event_enospc": dict(flags=5),
}


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.XDP, ProgType.SOCKET_FILTER],
                         ids=["tc", "xdp", "socket"])
@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_perf_event_output_records(both, prog_type, name):
    case = OUTPUT_CASES[name]

    def scenario(b):
        m = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 6)
        ev0, _ = perf_open(b, bpf_output_attr())
        ev1, _ = perf_open(b, bpf_output_attr(), cpu=1)
        clk, _ = perf_open(b, perf_attr_bytes(type=PerfType.SOFTWARE, config=PerfSwId.CPU_CLOCK))
        off, _ = perf_open(b, bpf_output_attr(disabled=1))
        unmapped, _ = perf_open(b, bpf_output_attr())
        for i, fd in ((0, ev0), (2, ev1), (3, clk), (4, off), (5, unmapped)):
            calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=i.to_bytes(4, "little"),
                      value=fd.to_bytes(4, "little"))
        maps = [do_mmap(b, fd, 3 * P) for fd in (ev0, ev1, off)]
        p = calls.prog_load(b, prog_type, output_prog(m, **case))
        with on_cpu0():
            r = calls.prog_test_run(b, p, PKT, repeat=2)
        out = {"retval": r.retval - (1 << 32) if r.retval >= 1 << 31 else r.retval,
               "rings": [ring(mm) for mm, _ in maps]}
        for _, unmap in maps:
            unmap()
        close_all(b, p, m, ev0, ev1, clk, off, unmapped)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_event_output_full_buffer_lost_record(both):
    """1 data page: 400-byte samples fill it, the rest are lost (-ENOSPC); once the reader
    moves data_tail, the next sample is preceded by PERF_RECORD_LOST."""
    def scenario(b):
        m = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 1)
        ev, _ = perf_open(b, bpf_output_attr())
        calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=bytes(4),
                  value=ev.to_bytes(4, "little"))
        mm, unmap = do_mmap(b, ev, 2 * P)
        p = calls.prog_load(b, ProgType.SCHED_CLS, output_prog(m, 0, size=400))
        with on_cpu0():
            rets = [calls.prog_test_run(b, p, PKT).retval for _ in range(12)]
            first = ring(mm)
            mm[1032:1040] = first[0].to_bytes(8, "little")          # consume everything
            rets.append(calls.prog_test_run(b, p, PKT).retval)
        head = int.from_bytes(mm[1024:1032], "little")
        tail_rec = bytes(mm[P + first[0] % P:P + first[0] % P + 24])
        out = {"rets": [r - (1 << 32) if r >= 1 << 31 else r for r in rets],
               "first": first, "head": head, "lost_record": (tail_rec[:8], tail_rec[16:24])}
        unmap()
        close_all(b, p, m, ev)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- uprobe PMU

_PATHS = []          # user memory for uprobe_path pointers (kept alive)


def uprobe_attr(path: bytes, offset: int = 0, retprobe: bool = False) -> bytes:
    buf = ctypes.create_string_buffer(path)
    _PATHS.append(buf)
    return perf_attr_bytes(type=8, config=int(retprobe), uprobe_path=ctypes.addressof(buf),
                           probe_offset=offset)


UPROBE_CASES = {
    "true_offset0": (b"/bin/true", 0), "true_offset_64": (b"/bin/true", 64),
    "missing_enoent": (b"/nonexistent/x", 0), "directory_einval": (b"/tmp", 0),
    "empty_einval": (b"", 0), "past_eof_einval": (b"/bin/true", 1 << 40),
}


@pytest.mark.parametrize("name", list(UPROBE_CASES))
def test_perf_event_open_uprobe_matrix(both, name):
    path, offset = UPROBE_CASES[name]

    def scenario(b):
        fd, _ = perf_open(b, uprobe_attr(path, offset), pid=-1, cpu=0)
        out = b.sym(fd)
        close_all(b, fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_ioctl_set_bpf_uprobe(both):
    def scenario(b):
        up, _ = perf_open(b, uprobe_attr(b"/bin/true", 64, retprobe=True))
        p_kp, p_tp = tp_prog(b, ProgType.KPROBE), tp_prog(b)
        out = [ioctl(b, up, PerfEventIoc.SET_BPF, p_tp), ioctl(b, up, PerfEventIoc.SET_BPF, p_kp),
               ioctl(b, up, PerfEventIoc.SET_BPF, p_kp),
               ioctl(b, up, PerfEventIoc.QUERY_BPF, bytearray(16))]
        close_all(b, up, p_kp, p_tp)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- perf link info

def perf_link_info(b, link_fd, kind: str, name_len: int, with_buf: bool = True):
    """OBJ_GET_INFO_BY_FD of a perf link with a name buffer of `name_len` bytes."""
    info = ffi.new("struct bpf_link_info *")
    name = ctypes.create_string_buffer(b"\xff" * max(name_len, 1))
    sub = getattr(info.perf_event, kind)
    field = {"tracepoint": "tp_name", "kprobe": "func_name", "uprobe": "file_name"}[kind]
    setattr(sub, field, ctypes.addressof(name) if with_buf else 0)
    sub.name_len = name_len
    n = ffi.sizeof("struct bpf_link_info")
    buf = ffi.new("char[]", n)
    ffi.memmove(buf, info, n)
    ret, _ = calls.raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=link_fd,
                       info__info_len=n, info__info=buf)
    out = ffi.new("struct bpf_link_info *")
    ffi.memmove(out, buf, n)
    sub = getattr(out.perf_event, kind)
    fields = {k: getattr(sub, k) for k in dir(sub) if k not in (field, "__pad0")}
    return ret, out.perf_event.type, fields, name.raw[:name_len]


@pytest.mark.parametrize("name_len,with_buf", [(64, True), (17, True), (4, True), (0, False),
                                               (0, True), (8, False)])
def test_perf_link_info_tracepoint(both, name_len, with_buf):
    def scenario(b):
        tp, _ = perf_open(b, perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT))
        p = tp_prog(b)
        link, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie",
                            link_create__prog_fd=p, link_create__target_fd=tp,
                            link_create__attach_type=AttachType.PERF_EVENT,
                            link_create__perf_event__bpf_cookie=0x1234)
        out = perf_link_info(b, link, "tracepoint", name_len, with_buf)
        close_all(b, link, tp, p)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_perf_link_info_uprobe(both):
    def scenario(b):
        up, _ = perf_open(b, uprobe_attr(b"/bin/true", 64, retprobe=True))
        p = tp_prog(b, ProgType.KPROBE)
        link, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie",
                            link_create__prog_fd=p, link_create__target_fd=up,
                            link_create__attach_type=AttachType.PERF_EVENT,
                            link_create__perf_event__bpf_cookie=7)
        out = perf_link_info(b, link, "uprobe", 64)
        close_all(b, link, up, p)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("prog_type", [ProgType.CGROUP_SKB, ProgType.SCHED_ACT,
                                       ProgType.TRACEPOINT, ProgType.KPROBE])
def test_perf_event_output_available_to_prog_type(both, prog_type):
    def scenario(b):
        m = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 2)
        insns = output_prog(m, CURRENT_CPU)[:-8] + assemble("r0 = 1\nexit")
        r = calls.prog_load(b, prog_type, insns, strict=False)
        out = r.ret if r.ret < 0 else "ok"
        close_all(b, r.ret, m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == "ok"
