"""fakekernel/iter.py — the parts of BPF iterators the reference kernel can't be compared on:
the task iterator over the simulated tasks, a program asking to retry (-EAGAIN), targets
without a walk here, read() of other fds, and the seq-file's reference on the program."""
from __future__ import annotations

import os

import pytest

import iterutil as D
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapType
from uapi.errno import Errno

pytestmark = pytest.mark.skipif(not os.access("/sys/kernel/btf/vmlinux", os.R_OK),
                                reason="no vmlinux BTF")

def task_printer() -> bytes:
    return D.printer([], f"r2 = *(u32 *)(r7 +{D.off('task_struct', 'comm')})",
                     [f"r2 = *(u32 *)(r7 +{D.off('task_struct', f)})" for f in ("pid", "tgid", "pid")])


def test_iter_task_walks_simulated_tasks(kernel):
    kernel.spawn(pid=4242, comm="fkit_worker")
    kernel.spawn(pid=4100, comm="fkit_a")
    kernel.spawn(pid=4300, comm="bash")
    p = D.load_iter(kernel, "bpf_iter_task", task_printer())
    link = D.iter_link(kernel, p)
    it = D.iter_create(kernel, link)
    assert kernel.read(it, 4096) == b"4100 4100 4100\n4242 4242 4242\nend\n"
    assert kernel.read(it, 4096) == b""
    for fd in (it, link, p):
        kernel.close(fd)
    kernel.shutdown()


def test_iter_prog_retry_eagain(kernel):
    p = D.load_iter(kernel, "bpf_iter_bpf_map", assemble("r0 = 1\nexit"))
    m = calls.map_create(kernel, MapType.HASH, 4, 4, 1, name="fkit_m")
    link = D.iter_link(kernel, p)
    it = D.iter_create(kernel, link)
    assert kernel.read(it, 4096) == -Errno.EAGAIN
    for fd in (it, link, m, p):
        kernel.close(fd)


def test_iter_target_without_walk_eopnotsupp(kernel):
    p = D.load_iter(kernel, "bpf_iter_tcp", assemble("r0 = 0\nexit"))
    link = D.iter_link(kernel, p)
    it = D.iter_create(kernel, link)
    assert it >= 0 and kernel.read(it, 64) == -Errno.EOPNOTSUPP
    for fd in (it, link, p):
        kernel.close(fd)


def test_read_of_other_fds(kernel):
    m = calls.map_create(kernel, MapType.HASH, 4, 4, 1)
    assert kernel.read(m, 8) == -Errno.EINVAL
    assert kernel.read(999, 8) == -Errno.EBADF
    kernel.close(m)


def test_iter_fd_keeps_prog_after_link_and_prog_close(kernel):
    p = D.load_iter(kernel, "bpf_iter_bpf_map", D.map_printer())
    m = calls.map_create(kernel, MapType.ARRAY, 4, 4, 2, name="fkit_z")
    link = D.iter_link(kernel, p)
    it = D.iter_create(kernel, link)
    kernel.close(link)
    kernel.close(p)
    assert kernel.read(it, 4096) == b"4 4 2\nend\n"
    assert len(kernel.live_objects()["progs"]) == 1
    kernel.close(it)
    assert kernel.live_objects()["progs"] == []
    kernel.close(m)


def test_iter_task_tid_and_pidfd_select_one_task(kernel):
    from fakekernel.pid import pidfd_open
    kernel.spawn(pid=4242, comm="fkit_worker")
    kernel.spawn(pid=4100, comm="fkit_a")
    p = D.load_iter(kernel, "bpf_iter_task", task_printer())
    by_tid = D.iter_link(kernel, p, D.linfo_task(tid=4242))
    pidfd = pidfd_open(kernel, kernel.current, 4100)
    by_pidfd = D.iter_link(kernel, p, D.linfo_task(pid_fd=pidfd))
    outs = []
    for link in (by_tid, by_pidfd):
        it = D.iter_create(kernel, link)
        outs.append(kernel.read(it, 4096))
        kernel.close(it)
    assert outs == [b"4242 4242 4242\nend\n", b"4100 4100 4100\nend\n"]
    assert D.iter_link(kernel, p, D.linfo_task(pid_fd=p)) == -Errno.EBADF      # not a pidfd
    for fd in (by_tid, by_pidfd, pidfd, p):
        kernel.close(fd)
    kernel.shutdown()
