"""PERF_EVENT_ARRAY, CGROUP_ARRAY and STACK_TRACE, fakekernel vs the real kernel: creation
matrix (fdinfo memlock included), BTF refusal, and the syscall element commands — fd
arrays take fds of the right kind only and cannot be read back, stack maps cannot be
updated and (with no bpf_get_stackid run) hold no stacks."""
from __future__ import annotations

import os
import uuid

import pytest

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.calls import raw
from uapi.ffi import ffi

from backends import FakeBackend
from maputil import both_equal, memlock

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
PE, CG, ST = MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE
CGROUP2 = "/sys/fs/cgroup/unified"
BUILD_ID = MapFlags.STACK_BUILD_ID
MAX_STACK = 127                 # kernel.perf_event_max_stack on the reference machine
BUILD_ID_FRAME = 32             # sizeof(struct bpf_stack_build_id)


def op(b, cmd, last="flags", **kw) -> int:
    return raw(b, cmd, last, **kw)[0]


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def create(b, map_type, key_size=4, value_size=4, max_entries=4, **kw):
    ret = op(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size, value_size=value_size,
             max_entries=max_entries, **kw)
    if ret >= 0:
        info, _ = calls.obj_get_info_by_fd(b, ret, "map")
        out = ("fd", info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
               ffi.string(info.name), memlock(b, ret))
        b.close(ret)
        return out
    return ret


# ------------------------------------------------------------------ MAP_CREATE matrix

CREATE_CASES = {}
for _t in (PE, CG):
    _n = _t.name.lower()
    CREATE_CASES.update({
        f"{_n}_ok": dict(map_type=_t),
        f"{_n}_max1": dict(map_type=_t, max_entries=1),
        f"{_n}_max3": dict(map_type=_t, max_entries=3),
        f"{_n}_max_many_cpus": dict(map_type=_t, max_entries=1000),   # no cap at the CPU count
        f"{_n}_max0_einval": dict(map_type=_t, max_entries=0),
        f"{_n}_value8_einval": dict(map_type=_t, value_size=8),
        f"{_n}_value0_einval": dict(map_type=_t, value_size=0),
        f"{_n}_key8_einval": dict(map_type=_t, key_size=8),
        f"{_n}_key0_einval": dict(map_type=_t, key_size=0),
        f"{_n}_max_u32_enomem": dict(map_type=_t, max_entries=2**32 - 1),
        f"{_n}_numa0": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=0),
        f"{_n}_numa1_einval": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=1),
        f"{_n}_map_extra_einval": dict(map_type=_t, map_extra=1),
        f"{_n}_name": dict(map_type=_t, map_name=b"ev_1.x"),
        f"{_n}_rdonly_wronly_prog_einval": dict(map_type=_t,
                                               map_flags=MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG),
    })
for _t, _v in ((PE, 4), (CG, 4), (ST, 8), (ST, 32)):
    for _bit in MapFlags:
        if _bit in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
            continue
        CREATE_CASES[f"{_t.name.lower()}_v{_v}_flag_{_bit.name.lower()}"] = dict(
            map_type=_t, value_size=_v, map_flags=_bit)
CREATE_CASES.update({
    "stack_ok": dict(map_type=ST, value_size=8, max_entries=1),
    "stack_max3": dict(map_type=ST, value_size=8, max_entries=3),
    "stack_value16_max100": dict(map_type=ST, value_size=16, max_entries=100),
    "stack_value_max_depth": dict(map_type=ST, value_size=MAX_STACK * 8),
    "stack_value_past_max_depth_einval": dict(map_type=ST, value_size=(MAX_STACK + 1) * 8),
    "stack_value12_einval": dict(map_type=ST, value_size=12),
    "stack_value4_einval": dict(map_type=ST, value_size=4),
    "stack_value0_einval": dict(map_type=ST, value_size=0),
    "stack_key8_einval": dict(map_type=ST, key_size=8, value_size=8),
    "stack_key0_einval": dict(map_type=ST, key_size=0, value_size=8),
    "stack_max0_einval": dict(map_type=ST, value_size=8, max_entries=0),
    "stack_build_id": dict(map_type=ST, value_size=BUILD_ID_FRAME, map_flags=BUILD_ID),
    "stack_build_id_2": dict(map_type=ST, value_size=2 * BUILD_ID_FRAME, map_flags=BUILD_ID, max_entries=5),
    "stack_build_id_value8_einval": dict(map_type=ST, value_size=8, map_flags=BUILD_ID),
    "stack_build_id_value40_einval": dict(map_type=ST, value_size=40, map_flags=BUILD_ID),
    "stack_build_id_max_depth": dict(map_type=ST, value_size=MAX_STACK * BUILD_ID_FRAME, map_flags=BUILD_ID),
    "stack_build_id_past_max_depth_einval": dict(map_type=ST, value_size=(MAX_STACK + 1) * BUILD_ID_FRAME,
                                                 map_flags=BUILD_ID),
    "stack_max_2p31_plus1_e2big": dict(map_type=ST, value_size=8, max_entries=2**31 + 1),
    "stack_max_u32_e2big": dict(map_type=ST, value_size=8, max_entries=2**32 - 1),
    # the flags check comes first
    "stack_bad_flag_before_sizes_einval": dict(map_type=ST, value_size=4, max_entries=2**32 - 1,
                                               map_flags=MapFlags.NO_PREALLOC),
    "stack_numa0": dict(map_type=ST, value_size=8, map_flags=MapFlags.NUMA_NODE, numa_node=0),
    "stack_rdonly_wronly": dict(map_type=ST, value_size=8, map_flags=MapFlags.RDONLY | MapFlags.WRONLY),
    "stack_name": dict(map_type=ST, value_size=8, map_name=b"stacks"),
    "stack_map_extra_einval": dict(map_type=ST, value_size=8, map_extra=1),
})


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_perf_cgroup_stack(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


def test_map_create_fd_array_stack_btf_enotsupp(both):
    """map_check_no_btf: none of the three takes a BTF description."""
    def scenario(b):
        w = BtfWriter()
        u32 = w.int_("unsigned int", 4)
        u64 = w.int_("long long unsigned int", 8)
        btf = btf_load(b, w.blob()).ret
        assert btf >= 0
        out = []
        for mt, vs, vid in ((PE, 4, u32), (CG, 4, u32), (ST, 8, u64)):
            out.append(op(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=4, value_size=vs,
                          max_entries=2, btf_fd=btf, btf_key_type_id=u32, btf_value_type_id=vid))
        b.close(btf)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ element commands

def lookup(b, fd, k, flags=0, size=4):
    v = bytearray(size)
    return op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=v, flags=flags), bytes(v)


def delete(b, fd, k):
    return op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(k))


def next_key(b, fd, k):
    nk = bytearray(4)
    kw = {} if k is None else dict(key=k32(k))
    return op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, next_key=nk, **kw), bytes(nk)


def common_tail(b, fd, value_size):
    """The commands these types do not support, then freeze."""
    return [op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=bytearray(value_size)),
            op(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=bytearray(16),
               batch__values=bytearray(4 * value_size), batch__count=4, batch__out_batch=bytearray(4)),
            op(b, BpfCmd.MAP_UPDATE_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=bytearray(4),
               batch__values=bytearray(value_size), batch__count=1),
            op(b, BpfCmd.MAP_DELETE_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=bytearray(4),
               batch__count=1),
            op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)]


def test_map_perf_event_array_elem_non_perf_fds_ebadf(both):
    def scenario(b):
        fd = calls.map_create(b, PE, 4, 4, 4)
        other = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=k32(v), flags=f)
        out = []
        for v in (other, fd, 0, 9999, 2**31, 2**32 - 1):      # a map, itself, stdin, unopened, huge
            out.append([up(0, v), up(3, v), up(4, v), up(0, v, 1), up(0, v, 2), up(0, v, 4)])
        out += [lookup(b, fd, 0), lookup(b, fd, 4), lookup(b, fd, 0, flags=4), lookup(b, fd, 0, flags=1)]
        out += [delete(b, fd, k) for k in (0, 3, 4, 2**32 - 1)]
        out += [next_key(b, fd, k) for k in (None, 0, 2, 3, 4, 2**32 - 1)]
        out += common_tail(b, fd, 4)
        out.append(up(0, other))                               # frozen: EPERM first
        b.close(other)
        b.close(fd)
        return out
    both_equal(both, scenario)


def cg_mkdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.mkdir(path)
    else:
        os.mkdir(path)


def cg_rmdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.rmdir(path)
    else:
        os.rmdir(path)


def test_map_cgroup_array_elem_cgroup_fds(both):
    def scenario(b):
        base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        dirs = [base, base + "/c"]
        for d in dirs:
            cg_mkdir(b, d)
        cgs = [b.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in dirs]
        try:
            fd = calls.map_create(b, CG, 4, 4, 4)
            other = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
            up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=k32(v), flags=f)
            out = [up(0, other), up(0, 0), up(0, 9999), up(0, 2**32 - 1)]
            out += [up(4, cgs[0]), up(0, cgs[0], 1), up(0, cgs[0], 2), up(0, cgs[0], 4)]
            out += [up(0, cgs[0]), up(0, cgs[1]), up(2, cgs[1]), up(3, cgs[0])]    # overwrite too
            out += [lookup(b, fd, 0), lookup(b, fd, 1), lookup(b, fd, 9), lookup(b, fd, 0, flags=4)]
            out += [next_key(b, fd, k) for k in (None, 0, 1, 3, 4)]
            out += [delete(b, fd, k) for k in (0, 0, 1, 4, 2**32 - 1)]
            # a cgroup removed while the map holds it: the slot may still be deleted
            b.close(cgs[1])
            cg_rmdir(b, dirs[1])
            dirs.pop()
            cgs.pop()
            out += [delete(b, fd, 2), delete(b, fd, 2)]
            out.append(up(1, cgs[0]))
            out += common_tail(b, fd, 4)
            b.close(other)
            b.close(fd)                  # frees the map with a cgroup still in slot 1 and 3
            return out
        finally:
            for c in cgs:
                b.close(c)
            for d in reversed(dirs):
                cg_rmdir(b, d)
    both_equal(both, scenario)


def test_map_cgroup_array_update_removed_cgroup_fd(both):
    """An fd of a cgroup directory that has been removed."""
    def scenario(b):
        d = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        cg_mkdir(b, d)
        cg = b.open(d, os.O_RDONLY | os.O_DIRECTORY)
        cg_rmdir(b, d)
        fd = calls.map_create(b, CG, 4, 4, 2)
        out = op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(cg))
        b.close(cg)
        b.close(fd)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("max_entries", [1, 3, 8])
def test_map_stack_trace_elem_empty_map(both, max_entries):
    def scenario(b):
        fd = calls.map_create(b, ST, 4, 16, max_entries)
        up = lambda k, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=bytes(16), flags=f)
        out = [lookup(b, fd, k, size=16) for k in (0, 1, 2, 3, 4, 7, 8, 2**32 - 1)]
        out.append(lookup(b, fd, 0, flags=4, size=16))
        out += [up(k, f) for k in (0, 8) for f in (0, 1, 2, 4, 8)]
        out += [delete(b, fd, k) for k in (0, 2, 3, 4, 7, 8, 2**32 - 1)]
        out += [next_key(b, fd, k) for k in (None, 0, 3, 8, 2**32 - 1)]
        out += [op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(k), value=bytearray(16), flags=f)
                for k in (0, 8) for f in (1, 4)]
        out += common_tail(b, fd, 16)
        out += [up(0), delete(b, fd, 0), lookup(b, fd, 0, size=16)]      # frozen
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_create_outer_map_with_perf_cgroup_stack_inner(both):
    """All three have map_meta_equal = bpf_map_meta_equal: they may be inner maps, and an
    inner map with a different max_entries than the template is accepted."""
    def scenario(b):
        out = []
        for mt, vs in ((PE, 4), (CG, 4), (ST, 8)):
            tmpl = calls.map_create(b, mt, 4, vs, 2)
            other = calls.map_create(b, mt, 4, vs, 3)
            for outer_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                outer = op(b, BpfCmd.MAP_CREATE, LAST, map_type=outer_type, key_size=4, value_size=4,
                           max_entries=2, inner_map_fd=tmpl)
                out.append(b.sym(outer) if outer < 0 else "fd")
                if outer >= 0:
                    out += [op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=outer, key=k32(0), value=k32(f))
                            for f in (tmpl, other)]
                    b.close(outer)
            b.close(other)
            b.close(tmpl)
        return out
    both_equal(both, scenario)
