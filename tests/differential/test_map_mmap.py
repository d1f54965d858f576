"""mmap() of map fds against the real kernel (Python's mmap on real fds): BPF_F_MMAPABLE
arrays map their values from offset 0; which mappings are refused and with which errno;
writable mappings and MAP_FREEZE; what a mapping sees and keeps alive."""
from __future__ import annotations

import mmap

import pytest

from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.errno import Errno

P = mmap.PAGESIZE
RW, RO, X = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ, mmap.PROT_EXEC
SHARED, PRIVATE = mmap.MAP_SHARED, mmap.MAP_PRIVATE


def do_mmap(b, fd, length, prot, flags=SHARED, offset=0):
    """(mapping, 0) or (None, -errno); the mapping has ``.mmap`` and ``.munmap()``."""
    if hasattr(b, "kern"):
        from fakekernel.errors import KernelError
        try:
            return b.kern.mmap(fd, length, prot, flags, offset), 0
        except KernelError as e:
            return None, -e.errno
    try:
        m = mmap.mmap(fd, length, flags, prot, offset=offset)
    except OSError as e:
        return None, -e.errno

    class _Host:
        def __init__(self, m):
            self.mmap = m

        def munmap(self):
            self.mmap.close()
    return _Host(m), 0


def try_mmap(b, fd, length, prot, flags=SHARED, offset=0) -> int:
    m, ret = do_mmap(b, fd, length, prot, flags, offset)
    if m is not None:
        m.munmap()
    return ret


CASES = [(P, RW, SHARED, 0), (P, RO, SHARED, 0), (2 * P, RO, SHARED, 0), (3 * P, RO, SHARED, 0),
         (P, RO, SHARED, P), (P, RO, SHARED, 2 * P), (P, RO, PRIVATE, 0), (P, RW, PRIVATE, 0),
         (P, RO | X, SHARED, 0), (P, RO | X, PRIVATE, 0), (P, 0, SHARED, 0)]
FLAGS = [0, MapFlags.MMAPABLE, MapFlags.MMAPABLE | MapFlags.RDONLY_PROG,
         MapFlags.MMAPABLE | MapFlags.WRONLY_PROG, MapFlags.MMAPABLE | MapFlags.RDONLY,
         MapFlags.MMAPABLE | MapFlags.WRONLY]


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"flags{int(f):#x}")
def test_mmap_array_rules(both, flags):
    def scenario(b):
        fd = calls.map_create(b, MapType.ARRAY, 4, 8, 1024, map_flags=flags)    # 2 pages of values
        out = [try_mmap(b, fd, *c) for c in CASES]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.PERCPU_ARRAY])
def test_mmap_map_without_mmap_op_enotsupp(both, map_type):
    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 8, 16)
        out = [try_mmap(b, fd, P, RO), try_mmap(b, fd, P, RO, PRIVATE), try_mmap(b, fd, P, RO | X)]
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == -Errno.ENOTSUPP


def test_mmap_writable_then_freeze_ebusy(both):
    def scenario(b):
        fd = calls.map_create(b, MapType.ARRAY, 4, 8, 16, map_flags=MapFlags.MMAPABLE)
        freeze = lambda: calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0]
        ro, _ = do_mmap(b, fd, P, RO)
        rw, _ = do_mmap(b, fd, P, RW)
        out = [freeze()]                 # a writable mapping exists: EBUSY
        rw.munmap()
        out.append(freeze())             # only a read-only one: fine
        out += [try_mmap(b, fd, P, RW), try_mmap(b, fd, P, RO), freeze()]
        ro.munmap()
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[:3] == [-Errno.EBUSY, 0, -Errno.EPERM]


def test_mmap_array_shares_values_with_syscalls(both):
    def scenario(b):
        fd = calls.map_create(b, MapType.ARRAY, 4, 12, 4, map_flags=MapFlags.MMAPABLE)
        m, _ = do_mmap(b, fd, P, RW)
        calls.map_update_elem(b, fd, (1).to_bytes(4, "little"), bytes(range(1, 13)))
        seen = bytes(m.mmap[:32])                              # elem_size 16: value 1 at 16
        m.mmap[0:8] = (0x0102030405060708).to_bytes(8, "little")
        out = [seen, calls.map_lookup_elem(b, fd, bytes(4), 12)]
        m.munmap()
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_mmap_keeps_map_alive_after_close(both):
    def scenario(b):
        fd = calls.map_create(b, MapType.ARRAY, 4, 8, 4, map_flags=MapFlags.MMAPABLE)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        m, _ = do_mmap(b, fd, P, RW)
        b.close(fd)
        ret, _ = calls.raw(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=info.id)
        out = [ret >= 0]
        if ret >= 0:
            m.mmap[0:8] = (42).to_bytes(8, "little")
            out.append(calls.map_lookup_elem(b, ret, bytes(4), 8))
            b.close(ret)
        m.munmap()
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] is True
