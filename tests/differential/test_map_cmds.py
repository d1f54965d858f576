"""Map commands, fakekernel vs the real kernel: every success and failure path of
MAP_CREATE / LOOKUP / UPDATE / DELETE / GET_NEXT_KEY / LOOKUP_AND_DELETE / FREEZE."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.attr import ATTR_SIZE, Attr
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.errno import Errno
from uapi.ffi import ffi, offsetofend

pytestmark = pytest.mark.differential

U32 = ffi.sizeof("__u32")
KMALLOC_MAX_SIZE = 1 << 22
HTAB_ELEM_SIZE = 48
LAST = "excl_prog_hash_size"
BAD_PTR = 1                     # an address nothing is mapped at


def k32(i: int) -> bytes:
    return i.to_bytes(U32, "little")


def create(b, map_type=MapType.HASH, key_size=4, value_size=8, max_entries=4, size=None, **kw):
    """MAP_CREATE with the given fields: 'fd' (closed again) or -errno."""
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST if size is None else None, size=size,
                 map_type=map_type, key_size=key_size, value_size=value_size,
                 max_entries=max_entries, **kw)
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def with_tail_byte(b, cmd, last_field, **fields) -> int:
    """The command with one non-zero byte right after its last field (full-size attr)."""
    a = Attr()
    for k, v in fields.items():
        a.set(k.replace("__", "."), v)
    ffi.cast("unsigned char *", a.c)[offsetofend("union bpf_attr", last_field)] = 1
    ret = b.bpf(cmd, a.c, ATTR_SIZE)
    if ret >= 0 and cmd == BpfCmd.MAP_CREATE:
        b.close(ret)
        return "fd"
    return ret


# ------------------------------------------------------------------ MAP_CREATE

A, H = MapType.ARRAY, MapType.HASH
CREATE_CASES = {
    "hash_ok": dict(),
    "array_ok": dict(map_type=A, value_size=12),
    "array_key8_einval": dict(map_type=A, key_size=8),
    "array_value0_einval": dict(map_type=A, value_size=0),
    "array_max0_einval": dict(map_type=A, max_entries=0),
    "array_value_over_int_max_e2big": dict(map_type=A, value_size=2**31),
    "array_huge_enomem": dict(map_type=A, max_entries=2**32 - 1),
    "array_huge_badname_enomem": dict(map_type=A, max_entries=2**32 - 1, map_name=b"a-b"),
    "array_key8_badname_einval": dict(map_type=A, key_size=8, map_name=b"a-b"),
    "hash_key0_einval": dict(key_size=0),
    "hash_value0_einval": dict(value_size=0),
    "hash_max0_einval": dict(max_entries=0),
    "hash_kv_at_kmalloc_max_e2big": dict(key_size=4, value_size=KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE - 4,
                                         max_entries=1, map_flags=MapFlags.NO_PREALLOC),
    "hash_kv_below_kmalloc_max_ok": dict(key_size=KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE - 5, value_size=4,
                                         max_entries=1, map_flags=MapFlags.NO_PREALLOC),
    "hash_max_over_2g_e2big": dict(max_entries=2**31 + 1, map_flags=MapFlags.NO_PREALLOC),
    "hash_max_2g_e2big": dict(max_entries=2**31, map_flags=MapFlags.NO_PREALLOC),
    "hash_max_2_28_buckets_e2big": dict(max_entries=2**28),
    "hash_max_over_2g_badname_e2big": dict(max_entries=2**31 + 1, map_name=b"-"),
    "type0_einval": dict(map_type=0),
    "type999_einval": dict(map_type=999),
    "rdonly_wronly_einval": dict(map_flags=MapFlags.RDONLY | MapFlags.WRONLY),
    "array_rdonly_wronly_einval": dict(map_type=A, map_flags=MapFlags.RDONLY | MapFlags.WRONLY),
    "rdonly_prog_wronly_prog_einval": dict(map_flags=MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG),
    "array_rdonly_prog_wronly_prog_einval": dict(map_type=A, map_flags=MapFlags.RDONLY_PROG
                                                 | MapFlags.WRONLY_PROG),
    "numa0_ok": dict(map_flags=MapFlags.NUMA_NODE, numa_node=0),
    "numa1_einval": dict(map_flags=MapFlags.NUMA_NODE, numa_node=1),
    "numa_minus1_ok": dict(map_flags=MapFlags.NUMA_NODE, numa_node=2**32 - 1),
    "numa1_without_flag_ok": dict(numa_node=1),
    "array_numa1_einval": dict(map_type=A, map_flags=MapFlags.NUMA_NODE, numa_node=1),
    "map_extra_einval": dict(map_extra=1),
    "array_map_extra_einval": dict(map_type=A, map_extra=1),
    "name_dash_einval": dict(map_name=b"a-b"),
    "name_space_einval": dict(map_name=b"a b"),
    "name_16_chars_einval": dict(map_name=b"a" * 16),
    "name_15_chars_ok": dict(map_name=b"abc._9ABC_xyz.0"),
    "name_junk_after_nul_ok": dict(map_name=b"ab\0-!"),
    "name_latin1_letter_ok": dict(map_name=b"\xc0\xe9"),
    "name_latin1_times_einval": dict(map_name=b"\xd7"),
    "name_latin1_nbsp_einval": dict(map_name=b"\xa0"),
    "btf_key_without_value_einval": dict(btf_key_type_id=1),
    "btf_vmlinux_on_hash_einval": dict(btf_vmlinux_value_type_id=1),
    "btf_value_closed_fd_ebadf": dict(btf_value_type_id=1, btf_fd=999),
    "btf_value_stdin_einval": dict(btf_value_type_id=1, btf_fd=0),
    "ifindex_lo_eopnotsupp": dict(map_ifindex=1),
    "ifindex_missing_einval": dict(map_ifindex=99999),
    "array_ifindex_missing_einval": dict(map_type=A, map_ifindex=99999),
    "excl_hash_ok": dict(excl_prog_hash=b"h" * 32, excl_prog_hash_size=32),
    "excl_hash_size31_einval": dict(excl_prog_hash=b"h" * 32, excl_prog_hash_size=31),
    "excl_hash_without_size_einval": dict(excl_prog_hash=b"h" * 32),
    "excl_size_without_hash_einval": dict(excl_prog_hash_size=32),
    "excl_hash_bad_ptr_efault": dict(excl_prog_hash=BAD_PTR, excl_prog_hash_size=32),
    "excl_hash_bad_ptr_badname_einval": dict(excl_prog_hash=BAD_PTR, excl_prog_hash_size=32,
                                             map_name=b"-"),
    "token_fd_ignored_without_flag_ok": dict(map_token_fd=999),
    "token_flag_closed_fd_ebadf": dict(map_flags=MapFlags.TOKEN_FD, map_token_fd=999),
    "token_flag_stdin_einval": dict(map_flags=MapFlags.TOKEN_FD, map_token_fd=0),
    "short_attr_ok": dict(size=offsetofend("union bpf_attr", "max_entries")),
    "short_attr_drops_bad_flags_ok": dict(size=offsetofend("union bpf_attr", "max_entries"),
                                          map_flags=1 << 30),
    "size0_einval": dict(size=0),
    "oversize_zero_tail_ok": dict(size=ATTR_SIZE + 64),
}
# every map_flags bit, on both types
for _bit in MapFlags:
    CREATE_CASES[f"hash_flag_{_bit.name.lower()}"] = dict(map_flags=_bit)
    CREATE_CASES[f"array_flag_{_bit.name.lower()}"] = dict(map_type=A, map_flags=_bit)
CREATE_CASES["hash_unknown_flag_einval"] = dict(map_flags=1 << 25)
CREATE_CASES["array_unknown_flag_einval"] = dict(map_type=A, map_flags=1 << 25)
# flags that need more than the flag (a prog fd, BTF) are left to their owners' tests
for _skip in ("hash_flag_path_fd", "array_flag_path_fd", "hash_flag_vtype_btf_obj_fd",
              "array_flag_vtype_btf_obj_fd", "hash_flag_token_fd", "array_flag_token_fd"):
    CREATE_CASES.pop(_skip)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


def test_map_create_tail_byte_after_last_field_einval(both):
    assert both_equal(both, lambda b: with_tail_byte(
        b, BpfCmd.MAP_CREATE, LAST, map_type=H, key_size=4, value_size=8, max_entries=4)) == -Errno.EINVAL


def test_map_create_tail_byte_in_last_field_is_read(both):
    # the byte just before the end is part of excl_prog_hash_size: EINVAL for a size w/o a hash
    def scenario(b):
        a = Attr()
        for k, v in dict(map_type=H, key_size=4, value_size=8, max_entries=4).items():
            a.set(k, v)
        ffi.cast("unsigned char *", a.c)[offsetofend("union bpf_attr", LAST) - 1] = 1
        return b.bpf(BpfCmd.MAP_CREATE, a.c, ATTR_SIZE)
    assert both_equal(both, scenario) == -Errno.EINVAL


def test_map_create_nonzero_past_union_e2big(both):
    def scenario(b):
        buf = bytearray(ATTR_SIZE + 8)
        a = Attr()
        a.set("map_type", H)
        buf[:ATTR_SIZE] = a.bytes()
        buf[-1] = 1
        return b.bpf(BpfCmd.MAP_CREATE, buf, len(buf))
    assert both_equal(both, scenario) == -Errno.E2BIG


def test_map_create_ids_and_fds_increase(both):
    def scenario(b):
        fds = [calls.map_create(b, t, 4, 8, 2) for t in (H, A, H)]
        out = [b.sym(fd) for fd in fds]
        for fd in fds:
            b.close(fd)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ tail bytes, bad fds

ELEM_CMDS = [
    (BpfCmd.MAP_LOOKUP_ELEM, "flags"),
    (BpfCmd.MAP_UPDATE_ELEM, "flags"),
    (BpfCmd.MAP_DELETE_ELEM, "key"),
    (BpfCmd.MAP_GET_NEXT_KEY, "next_key"),
    (BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags"),
    (BpfCmd.MAP_FREEZE, "map_fd"),
]


@pytest.mark.parametrize("cmd,last", ELEM_CMDS, ids=[c.name for c, _ in ELEM_CMDS])
def test_map_cmd_tail_byte_einval(both, cmd, last):
    def scenario(b):
        fd = calls.map_create(b, H, 4, 8, 4)
        key, val = bytearray(k32(0)), bytearray(8)
        ret = with_tail_byte(b, cmd, last, map_fd=fd, key=key, value=val)
        clean = op(b, cmd, last, map_fd=fd, key=key, value=val)
        b.close(fd)
        return ret, clean
    got = both_equal(both, scenario)
    assert got[0] == -Errno.EINVAL


@pytest.mark.parametrize("cmd,last", ELEM_CMDS, ids=[c.name for c, _ in ELEM_CMDS])
@pytest.mark.parametrize("which", ["closed", "stdin", "minus1", "map_then_closed"])
def test_map_cmd_bad_fd(both, cmd, last, which):
    def scenario(b):
        fd = calls.map_create(b, H, 4, 8, 4)
        b.close(fd)
        target = {"closed": fd, "stdin": 0, "minus1": 2**32 - 1, "map_then_closed": fd}[which]
        return op(b, cmd, last, map_fd=target, key=k32(0), value=bytearray(8), next_key=bytearray(4))
    got = both_equal(both, scenario)
    assert got in (-Errno.EBADF, -Errno.EINVAL)


# ------------------------------------------------------------------ element semantics

def _hash_semantics(b):
    fd = calls.map_create(b, H, 4, 8, 3)
    out = []
    up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=v, flags=f)
    out.append(up(1, b"a" * 8, UpdateFlags.EXIST))            # ENOENT
    out.append(up(1, b"a" * 8, UpdateFlags.NOEXIST))          # ok
    out.append(up(1, b"b" * 8, UpdateFlags.NOEXIST))          # EEXIST
    out.append(up(1, b"c" * 8, UpdateFlags.EXIST))            # ok
    out.append(up(2, b"d" * 8))
    out.append(up(3, b"e" * 8))
    out.append(up(4, b"f" * 8))                               # E2BIG: full
    out.append(up(3, b"g" * 8))                               # replace while full: ok
    out.append(up(3, b"g" * 8, 3))                            # EINVAL
    out.append(up(3, b"g" * 8, 8))                            # EINVAL
    out.append(up(3, b"g" * 8, UpdateFlags.F_LOCK))           # EINVAL: no spin lock
    out.append(up(3, b"g" * 8, 1 << 40))
    for k in (1, 2, 3, 4):
        val = bytearray(8)
        out.append((op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=val), bytes(val)))
    out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(4)))       # ENOENT
    out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(2)))
    out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(2)))
    out.append(up(4, b"h" * 8))                               # room again
    val = bytearray(8)
    out.append((op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(4), value=val), bytes(val)))
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(4), value=val))
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(1), value=val,
                  flags=UpdateFlags.F_LOCK))
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(1), value=val, flags=8))
    out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(1), value=val, flags=UpdateFlags.F_LOCK))
    out.append(op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(1), value=val, flags=8))
    b.close(fd)
    return out


def test_map_hash_elem_semantics(both):
    both_equal(both, _hash_semantics)


def _array_semantics(b):
    fd = calls.map_create(b, A, 4, 12, 3)
    out = []
    up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=v, flags=f)
    out.append(up(0, b"a" * 12, UpdateFlags.NOEXIST))         # EEXIST
    out.append(up(0, b"a" * 12, UpdateFlags.EXIST))
    out.append(up(2, b"b" * 12))
    out.append(up(3, b"c" * 12))                              # E2BIG
    out.append(up(3, b"c" * 12, 8))                           # EINVAL before range
    out.append(up(3, b"c" * 12, UpdateFlags.F_LOCK))          # EINVAL
    out.append(up(2**32 - 1, b"c" * 12))
    for k in (0, 1, 2, 3, 2**31):
        val = bytearray(12)
        out.append((op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=val), bytes(val)))
    for k in (0, 1, 2, 3, 2**32 - 1, None):
        nk = bytearray(4)
        out.append((op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                       key=0 if k is None else k32(k), next_key=nk), bytes(nk)))
    out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(0)))       # EINVAL
    val = bytearray(12)
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=val))
    b.close(fd)
    return out


def test_map_array_elem_semantics(both):
    got = both_equal(both, _array_semantics)
    assert -Errno.ENOTSUPP in got


def _bad_pointers(map_type):
    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 8, 4)
        calls.map_update_elem(b, fd, k32(1), b"x" * 8)
        out = []
        for cmd, last in ELEM_CMDS[:-1]:
            out.append(op(b, cmd, last, map_fd=fd, key=0, value=bytearray(8), next_key=bytearray(4)))
            out.append(op(b, cmd, last, map_fd=fd, key=BAD_PTR, value=bytearray(8), next_key=bytearray(4)))
            out.append(op(b, cmd, last, map_fd=fd, key=k32(1), value=BAD_PTR, next_key=BAD_PTR))
            out.append(op(b, cmd, last, map_fd=fd, key=k32(1), value=0, next_key=0))
        b.close(fd)
        return out
    return scenario


@pytest.mark.parametrize("map_type", [H, A], ids=["hash", "array"])
def test_map_elem_bad_pointers_efault(both, map_type):
    got = both_equal(both, _bad_pointers(map_type))
    assert -Errno.EFAULT in got


def test_map_get_next_key_null_first_and_walk(both):
    def scenario(b):
        fd = calls.map_create(b, H, 4, 8, 64)
        out = [op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=bytearray(4))]
        for i in range(40):
            calls.map_update_elem(b, fd, k32(i * 7919), k32(i) * 2)
        seen, key = [], None
        while True:
            nk = bytearray(4)
            ret = op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk)
            if ret:
                out.append(ret)
                break
            seen.append(bytes(nk))
            key = bytes(nk)
        out.append(sorted(seen))
        out.append(len(seen) == len(set(seen)))
        # a missing key restarts at the first key
        first, restart = bytearray(4), bytearray(4)
        op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=first)
        out.append(op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k32(123456), next_key=restart))
        out.append(first == restart)
        b.close(fd)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("key_size", [4, 8, 5, 13])
def test_map_get_next_key_zero_seed_order_matches(both, key_size):
    """With BPF_F_ZERO_SEED the bucket order is deterministic: compare the exact walk."""
    def scenario(b):
        fd = calls.map_create(b, H, key_size, 4, 32, map_flags=MapFlags.ZERO_SEED)
        keys = [(i * 2654435761 & 0xFFFFFFFF).to_bytes(4, "little") * 4 for i in range(24)]
        keys = [k[:key_size] for k in keys]
        for i, k in enumerate(keys):
            calls.map_update_elem(b, fd, k, k32(i))
        calls.map_update_elem(b, fd, keys[3], k32(99))     # replace moves it to its bucket's head
        calls.map_delete_elem(b, fd, keys[5])
        walk, key = [], None
        while True:
            nk = bytearray(key_size)
            if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk):
                break
            walk.append(bytes(nk))
            key = bytes(nk)
        b.close(fd)
        return walk
    both_equal(both, scenario)


# ------------------------------------------------------------------ freeze, RDONLY/WRONLY

def _frozen(b):
    fd = calls.map_create(b, A, 4, 8, 2)
    calls.map_update_elem(b, fd, k32(0), b"z" * 8)
    out = [op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)]
    out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))              # EPERM (not EBUSY)
    out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=b"y" * 8))
    out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(0)))
    val = bytearray(8)
    out.append((op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(0), value=val), bytes(val)))
    out.append(op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=bytearray(4)))
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=val))
    b.close(fd)
    fh = calls.map_create(b, H, 4, 8, 2)
    calls.map_update_elem(b, fh, k32(0), b"z" * 8)
    out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fh))
    out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fh, key=k32(0), value=val))
    out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fh, key=k32(1), value=b"y" * 8))
    b.close(fh)
    return out


def test_map_freeze_then_update_eperm(both):
    got = both_equal(both, _frozen)
    assert got[0] == 0 and got[1] == -Errno.EPERM and got[2] == -Errno.EPERM


@pytest.mark.parametrize("flag", [MapFlags.RDONLY, MapFlags.WRONLY, MapFlags.RDONLY_PROG,
                                  MapFlags.WRONLY_PROG], ids=lambda f: f.name)
@pytest.mark.parametrize("map_type", [H, A], ids=["hash", "array"])
def test_map_access_flags(both, flag, map_type):
    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 8, 2, map_flags=flag)
        val = bytearray(8)
        out = [op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=b"q" * 8),
               op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(0), value=val), bytes(val),
               op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0, next_key=bytearray(4)),
               op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(0)),
               op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=val),
               op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)]
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_mmapable_array_ops(both):
    def scenario(b):
        fd = calls.map_create(b, A, 4, 20, 300, map_flags=MapFlags.MMAPABLE)
        calls.map_update_elem(b, fd, k32(299), bytes(range(20)))
        out = [calls.map_lookup_elem(b, fd, k32(299), 20), op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)]
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_close_dup_keeps_map_alive(both):
    def scenario(b):
        fd = calls.map_create(b, H, 4, 8, 2)
        fd2 = b.dup(fd)
        b.close(fd)
        calls.map_update_elem(b, fd2, k32(7), b"w" * 8)
        out = calls.map_lookup_elem(b, fd2, k32(7), 8)
        b.close(fd2)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ lockstep state machine

from hypothesis import settings, strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule  # noqa: E402

from backends import FakeBackend, HostBackend  # noqa: E402
from maputil import both_equal

KEYS = st.integers(min_value=0, max_value=9)
FLAGS = st.sampled_from([0, UpdateFlags.NOEXIST, UpdateFlags.EXIST, UpdateFlags.F_LOCK, 3, 8])
VALUES = st.binary(min_size=8, max_size=8)


class _Lockstep(RuleBasedStateMachine):
    """The same random op sequence on fakekernel and on the real kernel, compared step by step."""

    MAP_TYPE = H
    MAP_FLAGS = 0
    MAX_ENTRIES = 6
    EXACT_ORDER = True

    @initialize()
    def setup(self):
        self.backends = [FakeBackend(), HostBackend()]
        self.fds = [calls.map_create(b, self.MAP_TYPE, 4, 8, self.MAX_ENTRIES, map_flags=self.MAP_FLAGS)
                    for b in self.backends]
        self.frozen = False

    def _each(self, fn):
        res = [fn(b, fd) for b, fd in zip(self.backends, self.fds)]
        assert res[0] == res[1]
        return res[0]

    @rule(k=KEYS, v=VALUES, flags=FLAGS)
    def update(self, k, v, flags):
        self._each(lambda b, fd: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=v, flags=flags))

    @rule(k=KEYS)
    def lookup(self, k):
        def go(b, fd):
            val = bytearray(8)
            return op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=val), bytes(val)
        self._each(go)

    @rule(k=KEYS)
    def delete(self, k):
        self._each(lambda b, fd: op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(k)))

    @rule(k=KEYS)
    def lookup_and_delete(self, k):
        def go(b, fd):
            val = bytearray(8)
            return op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(k), value=val), bytes(val)
        self._each(go)

    @rule(k=st.one_of(st.none(), KEYS))
    def get_next_key(self, k):
        def go(b, fd):
            nk = bytearray(4)
            ret = op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0 if k is None else k32(k),
                     next_key=nk)
            if self.EXACT_ORDER:
                return ret, bytes(nk)
            # random seeds: only NULL (first key / empty map) has a seed-independent answer
            return ret if k is None else None
        self._each(go)

    @rule()
    def walk(self):
        def go(b, fd):
            seen, key = [], None
            while len(seen) <= self.MAX_ENTRIES:
                nk = bytearray(4)
                if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk):
                    break
                seen.append(bytes(nk))
                key = bytes(nk)
            return seen if self.EXACT_ORDER else sorted(seen)
        self._each(go)

    @precondition(lambda self: not self.frozen)
    @rule()
    def freeze(self):
        # rare: frozen maps stop most rules from doing anything interesting
        if self.backends[0].calls % 7 == 0:
            self._each(lambda b, fd: op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
            self.frozen = True

    def teardown(self):
        for b, fd in zip(getattr(self, "backends", []), getattr(self, "fds", [])):
            b.close(fd)
            assert not b.cleanup()


class _HashZeroSeed(_Lockstep):
    MAP_FLAGS = MapFlags.ZERO_SEED


class _HashRandomSeed(_Lockstep):
    EXACT_ORDER = False


class _HashNoPrealloc(_Lockstep):
    MAP_FLAGS = MapFlags.NO_PREALLOC | MapFlags.ZERO_SEED


class _Array(_Lockstep):
    MAP_TYPE = A


@pytest.mark.parametrize("machine", [_HashZeroSeed, _HashRandomSeed, _HashNoPrealloc, _Array],
                         ids=["hash_zero_seed", "hash_random_seed", "hash_no_prealloc", "array"])
def test_map_lockstep_random_ops(host, machine):
    # `host` only for its skip/fail policy; each example opens its own pair of backends
    machine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
    machine.TestCase().runTest()


# ------------------------------------------------------------------ unprivileged caller

def _host_unprivileged_create(map_type) -> int:
    """MAP_CREATE from a forked child that dropped to uid/gid 65534 (losing every capability)."""
    import os
    from uapi.backend import HostKernel
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            ret, _ = raw(HostKernel(), BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=4,
                         value_size=8, max_entries=4)
            os.write(w, str(ret).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    return int(out)


@pytest.mark.parametrize("map_type", [H, A], ids=["hash", "array"])
def test_map_create_unprivileged_matches_host(host, map_type):
    import os
    from fakekernel import Kernel
    from fakekernel.task import NOBODY
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        disabled = int(f.read())
    k = Kernel(creds=NOBODY, sysctls={"kernel.unprivileged_bpf_disabled": disabled})
    ret, _ = raw(k, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=4, value_size=8, max_entries=4)
    if ret >= 0:
        k.close(ret)
        ret = "fd"
    got = _host_unprivileged_create(map_type)
    assert ret == ("fd" if got >= 0 else got)
