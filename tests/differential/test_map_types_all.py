"""Every enum bpf_map_type against the real kernel: a minimal valid map of each type is
created on both kernels and the result (fd or errno) and the map info compared.

This keeps the registry honest: a type listed in NOT_IMPLEMENTED_MAP_TYPES answers EINVAL
on the fake and so mismatches; those rows are expected to fail (strict xfail computed from
the registry at collection time), so the moment a type lands its row passes and the xfail
must go — pytest reports the XPASS as a failure.
"""
from __future__ import annotations

import mmap

import pytest

from fakekernel.bpf_types import NOT_IMPLEMENTED_MAP_TYPES
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType

from .test_map_struct_ops import _btf_fd, tcp

pytestmark = pytest.mark.differential

P = mmap.PAGESIZE
NP = MapFlags.NO_PREALLOC

# type -> MAP_CREATE fields; "inner": needs an inner-map template; "btf": key/value BTF ids 1
# from a user BTF with one 4-byte int; "struct_ops": tcp_congestion_ops' value type
MINIMAL = {
    MapType.UNSPEC: dict(key_size=4, value_size=4, max_entries=1),
    MapType.HASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.ARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.PROG_ARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.PERF_EVENT_ARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.PERCPU_HASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.PERCPU_ARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.STACK_TRACE: dict(key_size=4, value_size=8, max_entries=1),
    MapType.CGROUP_ARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.LRU_HASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.LRU_PERCPU_HASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.LPM_TRIE: dict(key_size=8, value_size=4, max_entries=1, map_flags=NP),
    MapType.ARRAY_OF_MAPS: dict(key_size=4, value_size=4, max_entries=1, inner=True),
    MapType.HASH_OF_MAPS: dict(key_size=4, value_size=4, max_entries=1, inner=True),
    MapType.DEVMAP: dict(key_size=4, value_size=4, max_entries=1),
    MapType.SOCKMAP: dict(key_size=4, value_size=4, max_entries=1),
    MapType.CPUMAP: dict(key_size=4, value_size=4, max_entries=1),
    MapType.XSKMAP: dict(key_size=4, value_size=4, max_entries=1),
    MapType.SOCKHASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.CGROUP_STORAGE: dict(key_size=8, value_size=4, max_entries=0),
    MapType.REUSEPORT_SOCKARRAY: dict(key_size=4, value_size=4, max_entries=1),
    MapType.PERCPU_CGROUP_STORAGE: dict(key_size=8, value_size=4, max_entries=0),
    MapType.QUEUE: dict(key_size=0, value_size=4, max_entries=1),
    MapType.STACK: dict(key_size=0, value_size=4, max_entries=1),
    MapType.SK_STORAGE: dict(key_size=4, value_size=4, max_entries=0, map_flags=NP, btf=True),
    MapType.DEVMAP_HASH: dict(key_size=4, value_size=4, max_entries=1),
    MapType.STRUCT_OPS: dict(key_size=4, max_entries=1, struct_ops=True),
    MapType.RINGBUF: dict(key_size=0, value_size=0, max_entries=P),
    MapType.INODE_STORAGE: dict(key_size=4, value_size=4, max_entries=0, map_flags=NP, btf=True),
    MapType.TASK_STORAGE: dict(key_size=4, value_size=4, max_entries=0, map_flags=NP, btf=True),
    MapType.BLOOM_FILTER: dict(key_size=0, value_size=4, max_entries=1),
    MapType.USER_RINGBUF: dict(key_size=0, value_size=0, max_entries=P),
    MapType.CGRP_STORAGE: dict(key_size=4, value_size=4, max_entries=0, map_flags=NP, btf=True),
    MapType.ARENA: dict(key_size=0, value_size=0, max_entries=1, map_flags=MapFlags.MMAPABLE),
}
_INFO_FIELDS = ("type", "key_size", "value_size", "max_entries", "map_flags", "map_extra",
                "btf_key_type_id", "btf_value_type_id", "btf_vmlinux_value_type_id", "btf_vmlinux_id")


def test_minimal_table_covers_every_map_type():
    assert set(MINIMAL) == set(MapType)


def _row(t):
    marks = []
    if t in NOT_IMPLEMENTED_MAP_TYPES:
        marks.append(pytest.mark.xfail(strict=True, reason="not implemented"))
    return pytest.param(t, marks=marks, id=MapType(t).name)


def create_minimal(b, map_type):
    """(fd or -errno, the fds to close afterwards)."""
    fields = dict(MINIMAL[map_type])
    extra = []
    if fields.pop("inner", False):
        inner = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        extra.append(inner)
        fields["inner_map_fd"] = inner
    if fields.pop("btf", False) or fields.get("struct_ops"):
        btf = _btf_fd(b)
        extra.append(btf)
        fields["btf_fd"] = btf
        if not fields.get("struct_ops"):
            fields.update(btf_key_type_id=1, btf_value_type_id=1)
    if fields.pop("struct_ops", False):
        vid, size, _ = tcp()
        fields.update(value_size=size, btf_vmlinux_value_type_id=vid)
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, **fields)
    return ret, extra


@pytest.mark.parametrize("map_type", [_row(t) for t in MapType], )
def test_map_create_minimal_every_type(both, map_type):
    def scenario(b):
        fd, extra = create_minimal(b, map_type)
        if fd < 0:
            out = fd
        else:
            info, _ = calls.obj_get_info_by_fd(b, fd, "map")
            out = tuple(getattr(info, f) for f in _INFO_FIELDS)
            b.close(fd)
        for e in reversed(extra):
            b.close(e)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    if map_type != MapType.UNSPEC:
        assert not isinstance(res, int), f"the minimal {MapType(map_type).name} map was refused: {res}"


@pytest.mark.parametrize("map_type", [_row(t) for t in MapType if t != MapType.UNSPEC])
def test_map_create_every_type_as_inner_map(both, map_type):
    """Each type as the inner-map template of an ARRAY_OF_MAPS (map_meta_equal / ENOTSUPP /
    EINVAL for maps of maps), then as an element of it."""
    def scenario(b):
        fd, extra = create_minimal(b, map_type)
        out = []
        if fd >= 0:
            ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.ARRAY_OF_MAPS,
                               key_size=4, value_size=4, max_entries=1, inner_map_fd=fd)
            out.append(ret if ret < 0 else "ok")
            if ret >= 0:
                upd, _ = calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=ret, key=bytearray(4),
                                   value=bytearray(fd.to_bytes(4, "little")))
                out.append(upd)
                b.close(ret)
            b.close(fd)
        else:
            out.append(fd)
        for e in reversed(extra):
            b.close(e)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def _fdinfo(b, fd) -> dict:
    """The bpf_map_show_fdinfo() fields (map_id dropped) of a map fd on either kernel."""
    if hasattr(b, "kern"):
        from fakekernel.runner.vfiles import map_fdinfo
        text = map_fdinfo(b.kern.current.files.fdget(fd).private_data)
    else:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            text = f.read()
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    keep = ("map_type", "key_size", "value_size", "max_entries", "map_flags", "map_extra", "memlock",
            "frozen")
    return {k: fields.get(k) for k in keep}


@pytest.mark.parametrize("map_type", [_row(t) for t in MapType if t != MapType.UNSPEC])
def test_map_fdinfo_minimal_every_type(both, map_type):
    """fdinfo of the minimal map, memlock (map_mem_usage) included."""
    def scenario(b):
        fd, extra = create_minimal(b, map_type)
        out = _fdinfo(b, fd) if fd >= 0 else fd
        if fd >= 0:
            b.close(fd)
        for e in reversed(extra):
            b.close(e)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
