"""REUSEPORT_SOCKARRAY, fakekernel vs the real kernel: creation matrix, which sockets an
update accepts (hashed SO_REUSEPORT TCP/UDP, else EINVAL/ENOTSUPP), sk_user_data
exclusivity with other arrays and sockmaps (EBUSY), cookies, delete/get_next_key, and
slots emptied when the socket closes or the map goes."""
from __future__ import annotations

import pytest

from sockutil import (SOCK_KINDS, Cookies, close_from, elem_delete, elem_lookup, elem_update,
                      eventually, make_sock, memlock, next_key, u32)
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.errno import Errno
from maputil import both_equal

pytestmark = pytest.mark.differential

RA = MapType.REUSEPORT_SOCKARRAY
LAST = "excl_prog_hash_size"


def create(b, map_type=RA, key_size=4, value_size=8, max_entries=4, **kw) -> int:
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, **kw)
    return ret


CREATE_CASES = [
    (4, 4, 1, 0), (4, 8, 1, 0), (4, 0, 1, 0), (4, 2, 1, 0), (4, 16, 1, 0), (0, 8, 1, 0),
    (8, 8, 1, 0), (4, 8, 0, 0), (4, 8, 1 << 16, 0), (4, 8, 1, MapFlags.NO_PREALLOC),
    (4, 8, 1, MapFlags.NUMA_NODE), (4, 8, 1, MapFlags.RDONLY), (4, 8, 1, MapFlags.WRONLY),
    (4, 8, 1, MapFlags.RDONLY_PROG), (4, 8, 1, MapFlags.WRONLY_PROG),
    (4, 8, 1, MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG), (4, 8, 1, MapFlags.MMAPABLE),
    (4, 8, 1, MapFlags.INNER_MAP), (4, 8, 1, MapFlags.PRESERVE_ELEMS), (4, 8, 1, 1 << 20),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_map_create_matrix(both, case):
    key_size, value_size, max_entries, flags = case

    def scenario(b):
        fd = create(b, RA, key_size, value_size, max_entries, map_flags=flags)
        if fd < 0:
            return fd
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
               memlock(b, fd))
        b.close(fd)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("value_size", [4, 8])
@pytest.mark.parametrize("kind", list(SOCK_KINDS))
def test_map_update_socket_kinds(both, value_size, kind):
    def scenario(b):
        mark, ck = len(b.fds), Cookies()
        m = create(b, value_size=value_size)
        fd = make_sock(b, kind)
        out = [elem_update(b, m, u32(1), fd.to_bytes(value_size, "little"))]
        ret, val = elem_lookup(b, m, u32(1), value_size)
        out += [ret, ck(val) if ret == 0 else None, elem_delete(b, m, u32(1)),
                elem_delete(b, m, u32(1))]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("value_size", [4, 8])
def test_map_update_bad_values(both, value_size):
    def scenario(b):
        mark = len(b.fds)
        m = create(b, value_size=value_size)
        other = create(b, MapType.ARRAY, 4, 4, 1)
        fd = make_sock(b, "udp_bound_reuseport")
        out = [elem_update(b, m, u32(0), v.to_bytes(value_size, "little"))
               for v in (other, 999, 0xFFFFFFFF, 1 << 31)]
        out += [elem_update(b, m, u32(4), fd.to_bytes(value_size, "little")),     # E2BIG
                elem_update(b, m, u32(0), fd.to_bytes(value_size, "little"), 3),
                elem_update(b, m, u32(4), (999).to_bytes(value_size, "little"), 3),
                elem_update(b, m, u32(0), fd.to_bytes(value_size, "little"), UpdateFlags.F_LOCK)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_update_exclusive_sk_user_data(both):
    """A socket sits in one reuseport slot at a time, and not in a sockmap as well."""
    def scenario(b):
        mark, ck = len(b.fds), Cookies()
        m1, m2, sm = create(b), create(b), create(b, MapType.SOCKMAP)
        a = make_sock(b, "tcp_listen_reuseport")
        c = make_sock(b, "udp_bound_reuseport")
        v = lambda fd: fd.to_bytes(8, "little")   # noqa: E731
        out = [elem_update(b, m1, u32(0), v(a)), elem_update(b, m1, u32(1), v(a)),
               elem_update(b, m2, u32(0), v(a)), elem_update(b, sm, u32(0), v(a)),
               elem_update(b, sm, u32(0), v(c)), elem_update(b, m1, u32(1), v(c)),
               elem_update(b, m1, u32(0), v(c), UpdateFlags.EXIST),
               elem_update(b, m1, u32(2), v(a), UpdateFlags.EXIST),
               elem_update(b, m1, u32(0), v(a), UpdateFlags.NOEXIST),
               elem_delete(b, sm, u32(0)), elem_update(b, m1, u32(0), v(c), UpdateFlags.EXIST),
               elem_update(b, m2, u32(3), v(a))]
        out += [ck(elem_lookup(b, mm, u32(k), 8)[1]) for mm in (m1, m2) for k in range(4)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_replace_frees_old_socket(both):
    """Overwriting a slot releases the old socket: it may go elsewhere afterwards."""
    def scenario(b):
        mark = len(b.fds)
        m1, m2 = create(b), create(b)
        a, c = make_sock(b, "udp_bound_reuseport"), make_sock(b, "udp_bound_reuseport")
        v = lambda fd: fd.to_bytes(8, "little")   # noqa: E731
        out = [elem_update(b, m1, u32(0), v(a)), elem_update(b, m1, u32(0), v(c)),
               elem_update(b, m2, u32(0), v(a)), elem_update(b, m1, u32(0), v(c))]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_socket_close_and_map_free(both):
    def scenario(b):
        mark = len(b.fds)
        m = create(b)
        a, c = make_sock(b, "tcp_listen_reuseport"), make_sock(b, "udp_bound_reuseport")
        v = lambda fd: fd.to_bytes(8, "little")   # noqa: E731
        out = [elem_update(b, m, u32(0), v(a)), elem_update(b, m, u32(1), v(c))]
        b.close(a)
        out += [elem_lookup(b, m, u32(0), 8)[0], elem_lookup(b, m, u32(1), 8)[0]]
        b.close(m)                  # map_free (deferred in the kernel) releases its sockets
        m2 = create(b)
        out += [eventually(lambda: elem_update(b, m2, u32(2), v(c)), -Errno.EBUSY)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_get_next_key_and_commands(both):
    def scenario(b):
        m = create(b, max_entries=3)
        out = [next_key(b, m, k, 4) for k in (None, u32(0), u32(1), u32(2), u32(3), u32(99))]
        out += [elem_delete(b, m, u32(3)), elem_delete(b, m, u32(0)),
                elem_lookup(b, m, u32(0), 8)[0], elem_lookup(b, m, u32(9), 8)[0],
                raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=m, key=u32(0),
                    value=bytearray(8))[0]]
        keys, vals = bytearray(64), bytearray(64)
        for cmd in (BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH):
            out.append(raw(b, cmd, "batch.flags", batch__map_fd=m, batch__keys=keys,
                           batch__values=vals, batch__count=1)[0])
        b.close(m)
        m4 = create(b, value_size=4)
        out.append(elem_lookup(b, m4, u32(0), 4)[0])
        b.close(m4)
        return out
    both_equal(both, scenario)
