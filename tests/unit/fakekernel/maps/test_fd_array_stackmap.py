"""fakekernel/maps/fd_array.py, perf_event_array.py, cgroup_array.py, stackmap.py — what the
differential tests cannot reach: references held by cgroup arrays, the (unmodelled) perf
event path, stack records as bpf_get_stackid would leave them, limits and sysctls."""
from __future__ import annotations

import os

from fakekernel import Kernel
from fakekernel.maps.stackmap import StackTraceMap
from fakekernel.task import NOBODY
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.calls import raw
from uapi.errno import Errno

CG_BASE = "/sys/fs/cgroup/unified/fk-unit"


def op(b, cmd, last="flags", **kw) -> int:
    return raw(b, cmd, last, **kw)[0]


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _obj(kern, fd):
    return kern.current.files.fdget(fd).private_data


def test_cgroup_array_holds_cgroups_until_delete_or_free(kernel):
    kernel.world.cgroup.mkdir(CG_BASE)
    cg = kernel.open(CG_BASE, os.O_RDONLY | os.O_DIRECTORY)
    fd = calls.map_create(kernel, MapType.CGROUP_ARRAY, 4, 4, 3)
    m = _obj(kernel, fd)
    calls.map_update_elem(kernel, fd, k32(0), k32(cg))
    calls.map_update_elem(kernel, fd, k32(2), k32(cg))
    cgrp = _obj(kernel, cg)
    assert m.fd_array_elem(0) is cgrp and m.fd_array_elem(1) is None and m.fd_array_elem(2) is cgrp
    calls.map_delete_elem(kernel, fd, k32(0))
    assert m.fd_array_elem(0) is None
    kernel.close(fd)                      # map freed: cgroup_fd_array_free clears the slots
    assert m.freed and not m.ptrs
    kernel.close(cg)
    kernel.world.cgroup.rmdir(CG_BASE)


def test_cgroup_array_update_error_leaves_slot(kernel):
    kernel.world.cgroup.mkdir(CG_BASE)
    cg = kernel.open(CG_BASE, os.O_RDONLY | os.O_DIRECTORY)
    fd = calls.map_create(kernel, MapType.CGROUP_ARRAY, 4, 4, 2)
    calls.map_update_elem(kernel, fd, k32(1), k32(cg))
    assert op(kernel, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(1), value=k32(fd)) == -Errno.EBADF
    assert _obj(kernel, fd).fd_array_elem(1) is _obj(kernel, cg)
    kernel.close(fd)
    kernel.close(cg)
    kernel.world.cgroup.rmdir(CG_BASE)


def test_perf_event_array_holds_the_perf_event(kernel):
    from uapi.perf_event import PerfSwId, PerfType, perf_attr_bytes
    fd = calls.map_create(kernel, MapType.PERF_EVENT_ARRAY, 4, 4, 2)
    ev = kernel.perf_event_open(bytearray(perf_attr_bytes(type=PerfType.SOFTWARE,
                                                          config=PerfSwId.BPF_OUTPUT)))
    assert op(kernel, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(ev)) == 0
    assert _obj(kernel, fd).fd_array_elem(0).event is _obj(kernel, ev)
    kernel.close(ev)
    kernel.close(fd)


def test_perf_event_array_huge_max_entries_is_sparse(kernel):
    fd = calls.map_create(kernel, MapType.PERF_EVENT_ARRAY, 4, 4, 2**31)
    assert _obj(kernel, fd).ptrs == {}
    nk = bytearray(4)
    assert op(kernel, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k32(2**31 - 2), next_key=nk) == 0
    assert nk == k32(2**31 - 1)
    kernel.close(fd)


def _stack(kernel, value_size=24, max_entries=5, flags=0):
    fd = calls.map_create(kernel, MapType.STACK_TRACE, 4, value_size, max_entries, map_flags=flags)
    return fd, _obj(kernel, fd)


def test_stack_map_records_lookup_iterate_delete(kernel):
    fd, m = _stack(kernel)
    assert isinstance(m, StackTraceMap) and m.n_buckets == 8
    m.stack_map_store(6, k32(0x1111) + bytes(4))
    m.stack_map_store(2, (0xAA).to_bytes(8, "little") * 3)
    assert calls.map_lookup_elem(kernel, fd, k32(6), 24) == k32(0x1111) + bytes(20)   # zero-padded
    assert calls.map_lookup_elem(kernel, fd, k32(2), 24) == (0xAA).to_bytes(8, "little") * 3
    nk = bytearray(4)
    walk = []
    key = None
    while op(kernel, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, next_key=nk,
             **({} if key is None else dict(key=key))) == 0:
        walk.append(int.from_bytes(nk, "little"))
        key = bytes(nk)
    assert walk == [2, 6]
    # an id with no stack restarts the walk at the first one
    assert op(kernel, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k32(3), next_key=nk) == 0
    assert nk == k32(2)
    v = bytearray(24)
    assert op(kernel, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(6), value=v) == 0
    assert bytes(v) == k32(0x1111) + bytes(20)
    assert op(kernel, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(6), value=v) == -Errno.ENOENT
    assert op(kernel, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(2)) == 0
    assert op(kernel, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(2)) == -Errno.ENOENT
    assert op(kernel, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, next_key=nk) == -Errno.ENOENT
    kernel.close(fd)


def test_stack_map_build_id_frames(kernel):
    fd, m = _stack(kernel, value_size=64, flags=MapFlags.STACK_BUILD_ID)
    m.stack_map_store(0, bytes(range(32)))
    assert calls.map_lookup_elem(kernel, fd, k32(0), 64) == bytes(range(32)) + bytes(32)
    kernel.close(fd)


def test_stack_map_create_follows_perf_event_max_stack_sysctl():
    k = Kernel()
    k.sysctls["kernel.perf_event_max_stack"] = 4
    ok = calls.map_create(k, MapType.STACK_TRACE, 4, 32, 1)
    k.close(ok)
    assert op(k, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.STACK_TRACE, key_size=4,
              value_size=40, max_entries=1) == -Errno.EINVAL
    k.shutdown()


def test_stack_map_create_too_much_memory_enomem(kernel):
    # 2^31 buckets fit (16 GiB of pointers); 2^31 elements of 1032 bytes do not
    assert op(kernel, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.STACK_TRACE, key_size=4,
              value_size=1016, max_entries=2**31) == -Errno.ENOMEM


def test_stack_map_create_needs_cap_bpf_before_size_checks():
    k = Kernel(creds=NOBODY)
    k.sysctls["kernel.unprivileged_bpf_disabled"] = 0
    assert op(k, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.STACK_TRACE, key_size=4,
              value_size=4, max_entries=1) == -Errno.EPERM
    k.shutdown()
