"""BPF_TASK_FD_QUERY (kernel/bpf/syscall.c bpf_task_fd_query), fake vs the real kernel: a raw
tracepoint link and a tracepoint perf event with a program, the name copy rules (buf_len
written back, ENOSPC with a cut NUL-terminated name, no buffer), and the errors (flags
EINVAL, unknown pid ENOENT, closed fd EBADF, other files ENOTSUPP, perf event without a
program ENOENT)."""
from __future__ import annotations

import ctypes
import os

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, ProgType, TaskFdType
from uapi.perf_event import NR_perf_event_open, PerfEventIoc, PerfType, perf_attr_bytes

pytestmark = pytest.mark.differential

TP_SYS_ENTER_OPENAT = 782            # this 6.18 build's id (fakekernel/trace/events.py has the same)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int


def perf_open(b, attr: bytes, pid=-1, cpu=0) -> int:
    buf = bytearray(attr)
    if hasattr(b, "kern"):
        fd = b.kern.perf_event_open(buf, pid, cpu, -1, 0)
    else:
        cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
        fd = _libc.syscall(NR_perf_event_open, cbuf, pid, cpu, -1, ctypes.c_ulong(0))
        fd = fd if fd >= 0 else -ctypes.get_errno()
    if fd >= 0:
        b.fds.append(fd)
    return fd


def ioctl(b, fd, req, arg=0) -> int:
    if hasattr(b, "kern"):
        return b.kern.ioctl(fd, req, arg)
    r = _libc.ioctl(fd, ctypes.c_ulong(req), ctypes.c_ulong(arg))
    return r if r >= 0 else -ctypes.get_errno()


def mypid(b) -> int:
    return b.kern.current.pid if hasattr(b, "kern") else os.getpid()


def query(b, fd, prog_fd=None, *, pid=None, flags=0, buf_len=64, with_buf=True):
    buf = bytearray(max(buf_len, 1))
    r, a = calls.raw(b, BpfCmd.TASK_FD_QUERY, "task_fd_query.probe_addr",
                     task_fd_query__pid=mypid(b) if pid is None else pid, task_fd_query__fd=fd,
                     task_fd_query__flags=flags, task_fd_query__buf=buf if with_buf else 0,
                     task_fd_query__buf_len=buf_len)
    prog_id = calls.obj_get_info_by_fd(b, prog_fd, "prog")[0].id if prog_fd is not None else None
    return (r, a.get("task_fd_query.buf_len"), bytes(buf[:buf_len]) if with_buf else None,
            a.get("task_fd_query.fd_type"), a.get("task_fd_query.probe_offset"),
            a.get("task_fd_query.probe_addr"), a.get("task_fd_query.prog_id") == prog_id)


def raw_tp_open(b, prog_fd, name: bytes) -> int:
    r, _ = calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie",
                     raw_tracepoint__name=bytearray(name + b"\0"), raw_tracepoint__prog_fd=prog_fd)
    return r


def test_task_fd_query_raw_tracepoint_link(both):
    def s(b):
        p = calls.prog_load(b, ProgType.RAW_TRACEPOINT, assemble("r0 = 0\nexit"))
        link = raw_tp_open(b, p, b"sched_switch")
        out = [b.sym(link), query(b, link, p), query(b, link, p, buf_len=5),
               query(b, link, p, buf_len=1), query(b, link, p, buf_len=0),
               query(b, link, p, with_buf=False)]
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    out = s(fake)
    assert out == s(host)
    assert out[1][3] == TaskFdType.RAW_TRACEPOINT


def test_task_fd_query_tracepoint_perf_event(both):
    def s(b):
        p = calls.prog_load(b, ProgType.TRACEPOINT, assemble("r0 = 0\nexit"))
        pe = perf_open(b, perf_attr_bytes(type=PerfType.TRACEPOINT, config=TP_SYS_ENTER_OPENAT))
        out = [query(b, pe, p)[0], ioctl(b, pe, PerfEventIoc.SET_BPF, p)]
        out += [query(b, pe, p), query(b, pe, p, buf_len=3)]
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    out = s(fake)
    assert out == s(host)
    assert out[2][3] == TaskFdType.TRACEPOINT


def test_task_fd_query_errors(both):
    def s(b):
        p = calls.prog_load(b, ProgType.RAW_TRACEPOINT, assemble("r0 = 0\nexit"))
        link = raw_tp_open(b, p, b"sched_switch")
        out = [query(b, link, flags=1)[0], query(b, link, pid=0)[0],
               query(b, link, pid=0x7FFFFFF0)[0], query(b, 999)[0], query(b, p)[0], query(b, 0)[0]]
        m = calls.map_create(b, 2, 4, 4, 1)
        out += [query(b, m)[0]]
        for fd in list(b.fds):
            b.close(fd)
        out += [query(b, link)[0]]
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_task_fd_query_tp_btf_link(both):
    """A tp_btf program's raw tracepoint link (RAW_TRACEPOINT_OPEN without a name)."""
    from fakekernel.btf_vmlinux import BtfIndex
    from uapi.bpf import AttachType
    from uapi.btf import BtfKind
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        tp_id = BtfIndex(f.read()).find_by_name_kind(b"btf_trace_sched_wakeup", BtfKind.TYPEDEF)

    def s(b):
        p = calls.prog_load(b, ProgType.TRACING, assemble("r0 = 0\nexit"),
                            expected_attach_type=AttachType.TRACE_RAW_TP, attach_btf_id=tp_id)
        link = calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie",
                         raw_tracepoint__prog_fd=p)[0]
        out = [b.sym(link), query(b, link, p), query(b, link, p, buf_len=6)]
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)
