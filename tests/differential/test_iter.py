"""BPF iterators (kernel/bpf/bpf_iter.c, map_iter.c, prog_iter.c), fake vs the real kernel:
TRACING/BPF_TRACE_ITER loads, LINK_CREATE with union bpf_iter_link_info, ITER_CREATE, and
read() of the seq file — what bpf_seq_printf printed, in the chunks bpf_seq_read hands out,
including the final NULL-object call.  The programs only print objects whose name starts
with "fkit" (the real kernel has other maps and programs)."""
from __future__ import annotations

import struct

import pytest

from iterutil import (fn, iter_create, iter_link, linfo_map, linfo_task, load_iter, map_printer,
                      prog_printer, read)
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachType, BpfCmd, LinkType, MapType, ProgType
from uapi.ffi import ffi

pytestmark = pytest.mark.differential

def test_iter_bpf_map_output_and_chunks(both):
    def s(b):
        p = load_iter(b, "bpf_iter_bpf_map", map_printer())
        calls.map_create(b, MapType.HASH, 4, 8, 16, name="fkit_a")
        calls.map_create(b, MapType.ARRAY, 4, 32, 3, name="fkit_b")
        calls.map_create(b, MapType.HASH, 8, 8, 1, name="other")
        link = iter_link(b, p)
        whole = iter_create(b, link)
        out = [b.sym(p), b.sym(link), b.sym(whole), read(b, whole, 4096), read(b, whole, 4096)]
        chunked = iter_create(b, link)
        out += [read(b, chunked, 3), read(b, chunked, 100), read(b, chunked, 100), read(b, chunked, 100)]
        calls.map_create(b, MapType.HASH, 4, 4, 7, name="fkit_c")
        again = iter_create(b, link)
        out += [read(b, again, 4096)]
        info = calls.obj_get_info_by_fd(b, link, "link")[0]
        out += [info.type == LinkType.ITER, info.iter.target_name_len]
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_bpf_prog_walks_aux(both):
    def s(b):
        p = load_iter(b, "bpf_iter_bpf_prog", prog_printer())
        mine = [calls.prog_load(b, ProgType.SOCKET_FILTER, assemble("r0 = 0\nexit"), name="fkit_p"),
                calls.prog_load(b, ProgType.XDP, assemble("r0 = 2\nr0 = 2\nexit"), name="fkit_q")]
        link = iter_link(b, p)
        it = iter_create(b, link)
        out = [b.sym(p), len(mine), read(b, it, 4096), read(b, it, 4096)]
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_create_and_link_errors(both):
    def s(b):
        zero = assemble("r0 = 0\nexit")
        m = calls.map_create(b, MapType.HASH, 4, 8, 16, name="fkit_x")
        t, me, pg = (load_iter(b, n, zero) for n in ("bpf_iter_task", "bpf_iter_bpf_map_elem",
                                                     "bpf_iter_bpf_prog"))
        link = iter_link(b, pg)
        out = [iter_create(b, link, flags=1), iter_create(b, m), iter_create(b, 999)]
        out += [iter_link(b, pg, flags=1), iter_link(b, pg, target_fd=m)]
        out += [iter_link(b, pg, info=bytes(8), info_len=0), iter_link(b, pg, info=None, info_len=4)]
        out += [iter_link(b, pg, info=bytes(16) + b"\1" * 8), b.sym(iter_link(b, pg, info=bytes(24)))]
        out += [b.sym(iter_link(b, pg, b"\1\0\0\0", 4))]
        out += [iter_link(b, t, linfo_task(tid=1, pid=1)), b.sym(iter_link(b, t, linfo_task(tid=1)))]
        out += [iter_link(b, me), iter_link(b, me, linfo_map(999)), iter_link(b, me, linfo_map(t))]
        out += [b.sym(iter_link(b, me, linfo_map(m)))]
        r, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.iter_info_len", link_create__prog_fd=pg,
                         link_create__attach_type=AttachType.TRACE_RAW_TP)
        out.append(r)
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_link_info_target_name(both):
    def s(b):
        pg = load_iter(b, "bpf_iter_bpf_map", assemble("r0 = 0\nexit"))
        link = iter_link(b, pg)
        out = []
        for n in (0, 3, 8, 32):
            buf = bytearray(max(n, 1))
            raw = bytearray(ffi.sizeof("struct bpf_link_info"))
            li = ffi.from_buffer("struct bpf_link_info *", raw)
            li.iter.target_name = ffi.cast("uint64_t", ffi.from_buffer(buf)) if n else 0
            li.iter.target_name_len = n
            r, a = calls.raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=link,
                             info__info_len=ffi.sizeof("struct bpf_link_info"), info__info=raw)
            out.append((r, li.iter.target_name_len, bytes(buf) if n else b""))
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_prog_return_range_einval(both):
    fake, host = both
    for insns in (assemble("r0 = 2\nexit"), assemble("r0 = 1\nexit")):
        results = []
        for b in (fake, host):
            r = calls.prog_load(b, ProgType.TRACING, insns, expected_attach_type=AttachType.TRACE_ITER,
                                attach_btf_id=fn("bpf_iter_bpf_map"), log_level=1, log_size=4096,
                                strict=False)
            results.append((r.ret if r.ret < 0 else "ok", r.log))
            if r.ret >= 0:
                b.close(r.ret)
        assert results[0] == results[1]


_TARGETS = ("bpf_link", "bpf_map", "bpf_map_elem", "bpf_prog", "bpf_sk_storage_map", "cgroup",
            "dmabuf", "ipv6_route", "kmem_cache", "ksym", "netlink", "sockmap", "task", "task_file",
            "task_vma", "tcp", "udp", "unix")


@pytest.mark.parametrize("sleepable", [False, True], ids=["plain", "sleepable"])
def test_iter_link_every_target_without_info(both, sleepable):
    """Which targets attach with no link info, and which take sleepable programs (resched)."""
    from uapi.bpf import ProgLoadFlags

    def s(b):
        out = []
        for tgt in _TARGETS:
            p = load_iter(b, "bpf_iter_" + tgt, assemble("r0 = 0\nexit"),
                          prog_flags=ProgLoadFlags.SLEEPABLE if sleepable else 0)
            lk = iter_link(b, p)
            out.append((tgt, "ok" if lk >= 0 else lk))
            for fd in list(b.fds):
                b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_link_cgroup_info(both):
    def s(b):
        p = load_iter(b, "bpf_iter_cgroup", assemble("r0 = 0\nexit"))
        m = calls.map_create(b, MapType.HASH, 4, 4, 1)
        out = []
        for order, fd, cg_id in ((9, 0, 0), (0, 0, 1), (1, 5, 1), (1, 0, 0), (2, 0, 1), (3, 0, 0),
                                 (4, 0, 0), (2, 0, 1 << 40), (2, 999, 0), (2, m, 0)):
            lk = iter_link(b, p, struct.pack("<IIQ", order, fd, cg_id))
            out.append("ok" if lk >= 0 else lk)
        for fd in list(b.fds):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)


def test_iter_link_info_per_target(both):
    """bpf_iter_link_fill_link_info() then the target's fill_link_info: map id, task tid/pid,
    cgroup order and id."""
    def s(b):
        out = []
        cases = (("bpf_map", None), ("bpf_map_elem", "map"), ("task", linfo_task(pid=1)),
                 ("task", linfo_task(tid=1)), ("task", None), ("task_vma", linfo_task(pid=1)),
                 ("cgroup", struct.pack("<IIQ", 2, 0, 1)), ("cgroup", struct.pack("<IIQ", 4, 0, 0)))
        for tgt, info in cases:
            p = load_iter(b, "bpf_iter_" + tgt, assemble("r0 = 0\nexit"))
            map_id = None
            if info == "map":
                m = calls.map_create(b, MapType.HASH, 4, 4, 1)
                info, map_id = linfo_map(m), calls.obj_get_info_by_fd(b, m, "map")[0].id
            lk = iter_link(b, p, info)
            li = calls.obj_get_info_by_fd(b, lk, "link")[0]
            it = li.iter
            out.append((tgt, it.target_name_len, it.map.map_id == map_id if map_id else it.map.map_id,
                        it.task.tid, it.task.pid, it.cgroup.order, it.cgroup.cgroup_id))
            for fd in list(b.fds):
                b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)
