"""fakekernel/syscall/task_fd_query.py — what the reference kernel (no kprobe PMU, no other
task's fds to offer) cannot answer: kprobe/kretprobe perf events (bpf_get_kprobe_info:
symbol, offset, address), another task's fds, and the CAP_SYS_ADMIN rule."""
from __future__ import annotations

from fakekernel.perf.pmu import PMU_TYPE_KPROBE
from fakekernel.task import Creds
from uapi import calls
from uapi.asm import assemble
from uapi.backend import buffer_address
from uapi.bpf import BpfCmd, ProgType, TaskFdType
from uapi.errno import Errno
from uapi.perf_event import PerfEventIoc, perf_attr_bytes

PERF_PROBE_CONFIG_IS_RETPROBE = 1


def query(k, pid, fd, task=None):
    buf = bytearray(64)
    ret, a = calls.raw(k, BpfCmd.TASK_FD_QUERY, "task_fd_query.probe_addr", task_fd_query__pid=pid,
                       task_fd_query__fd=fd, task_fd_query__buf=buf, task_fd_query__buf_len=64)
    return (ret, bytes(buf).rstrip(b"\0"), a.get("task_fd_query.fd_type"),
            a.get("task_fd_query.probe_offset"), a.get("task_fd_query.probe_addr"))


def test_task_fd_query_kprobe_and_kretprobe(kernel):
    name = bytearray(b"do_sys_openat2\0")
    prog = calls.prog_load(kernel, ProgType.KPROBE, assemble("r0 = 0\nexit"))
    addr = kernel.world.trace.kallsyms.lookup_name("do_sys_openat2").addr
    for ret, fd_type in ((False, TaskFdType.KPROBE), (True, TaskFdType.KRETPROBE)):
        attr = bytearray(perf_attr_bytes(type=PMU_TYPE_KPROBE, kprobe_func=buffer_address(name),
                                         probe_offset=0 if ret else 4,
                                         config=PERF_PROBE_CONFIG_IS_RETPROBE if ret else 0))
        ev = kernel.perf_event_open(attr)
        assert query(kernel, kernel.current.pid, ev)[0] == -Errno.ENOENT      # no program yet
        assert kernel.ioctl(ev, PerfEventIoc.SET_BPF, prog) == 0
        off = 0 if ret else 4
        assert query(kernel, kernel.current.pid, ev) == (0, b"do_sys_openat2", fd_type, off, addr + off)
        kernel.close(ev)
    kernel.close(prog)


def test_task_fd_query_other_task_and_capability(kernel):
    other = kernel.spawn(pid=2222)
    p = calls.prog_load(kernel, ProgType.RAW_TRACEPOINT, assemble("r0 = 0\nexit"))
    name = bytearray(b"sched_switch\0")
    link = calls.raw(kernel, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie",
                     raw_tracepoint__prog_fd=p, raw_tracepoint__name=name)[0]
    assert query(kernel, 2222, link)[0] == -Errno.EBADF             # not in that task's table
    moved = other.files.install(kernel.current.files.fdget(link).get())
    assert query(kernel, 2222, moved)[:3] == (0, b"sched_switch", TaskFdType.RAW_TRACEPOINT)
    user = kernel.spawn(pid=3333, creds=Creds(uid=1000, gid=1000, caps=frozenset()))
    buf = bytearray(8)
    r = kernel.bpf(BpfCmd.TASK_FD_QUERY, _attr(2222, moved, buf), _SIZE, task=user)
    assert r == -Errno.EPERM
    other.files.close(moved)
    for fd in (link, p):
        kernel.close(fd)
    kernel.shutdown()


def _attr(pid, fd, buf):
    from uapi.attr import Attr
    a = Attr()
    a.set("task_fd_query.pid", pid)
    a.set("task_fd_query.fd", fd)
    a.set("task_fd_query.buf", buf)
    a.set("task_fd_query.buf_len", len(buf))
    return a.c


_SIZE = 128
