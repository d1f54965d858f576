"""BPF_MAP_TYPE_ARENA against the real kernel: the creation checks in arena_map_alloc()'s
order, the element commands, and the mmap rules (the first mapping fixes the user range;
pgoff 0; at most 4 GiB; the never-dropped write count that makes MAP_FREEZE EBUSY)."""
from __future__ import annotations

import mmap

import pytest

from fakekernel.errors import KernelError
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.errno import Errno

from .test_ringbuf import PRIVATE, RO, RW, SHARED

pytestmark = pytest.mark.differential

P = mmap.PAGESIZE
MM = MapFlags.MMAPABLE


def create(b, max_entries, flags=MM, key_size=0, value_size=0, map_extra=0, **kw):
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.ARENA, key_size=key_size,
                       value_size=value_size, max_entries=max_entries, map_flags=flags,
                       map_extra=map_extra, **kw)
    return ret


CREATE_CASES = [
    dict(max_entries=1), dict(max_entries=1, flags=0), dict(max_entries=0),
    dict(max_entries=1, key_size=4), dict(max_entries=1, value_size=4),
    dict(max_entries=1, flags=MM | MapFlags.SEGV_ON_FAULT), dict(max_entries=1, flags=MM | MapFlags.NO_USER_CONV),
    dict(max_entries=1, flags=MM | MapFlags.NUMA_NODE), dict(max_entries=1, flags=MM | MapFlags.RDONLY),
    dict(max_entries=1, flags=MM | MapFlags.RDONLY_PROG), dict(max_entries=1, flags=MM | MapFlags.NO_PREALLOC),
    dict(max_entries=1 << 20), dict(max_entries=(1 << 20) + 1), dict(max_entries=0xFFFFFFFF),
    dict(max_entries=1, map_extra=1 << 32), dict(max_entries=1, map_extra=123),
    dict(max_entries=2, map_extra=(1 << 32) - P), dict(max_entries=2, map_extra=(1 << 32) - 2 * P),
    dict(max_entries=1 << 20, map_extra=1 << 32), dict(max_entries=1 << 20, map_extra=(1 << 32) + P),
    dict(max_entries=0, map_extra=123), dict(max_entries=(1 << 20) + 1, map_extra=123),
    dict(max_entries=1, map_extra=(1 << 64) - P), dict(max_entries=2, map_extra=(1 << 64) - P),
    dict(max_entries=0, flags=0, key_size=4),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_map_create_arena_matrix(both, case):
    def scenario(b):
        fd = create(b, **case)
        if fd >= 0:
            b.close(fd)
            return "ok"
        return fd
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_info_arena(both):
    def scenario(b):
        fd = create(b, 4, flags=MM | MapFlags.SEGV_ON_FAULT, map_extra=1 << 32)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags, info.map_extra)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_elem_cmds_arena(both):
    def scenario(b):
        fd = create(b, 4)
        buf = bytearray(8)
        out = []
        for cmd in (BpfCmd.MAP_LOOKUP_ELEM, BpfCmd.MAP_UPDATE_ELEM, BpfCmd.MAP_DELETE_ELEM,
                    BpfCmd.MAP_GET_NEXT_KEY, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM):
            out.append(calls.raw(b, cmd, None, map_fd=fd, value=buf, next_key=buf)[0])
            out.append(calls.raw(b, cmd, None, map_fd=fd, key=buf, value=buf, next_key=buf)[0])
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == -Errno.EINVAL and res[2] == -Errno.EOPNOTSUPP


class _Maps:
    """mmap on either kernel, keeping mappings until `close()`."""

    def __init__(self, b, fd):
        self.b, self.fd, self.held = b, fd, []

    def map(self, length, prot=RW, flags=SHARED, offset=0, keep=False, write=None):
        try:
            if hasattr(self.b, "kern"):
                area = self.b.kern.mmap(self.fd, length, prot, flags, offset)
                m, close = area.mmap, area.munmap
            else:
                m = mmap.mmap(self.fd, length, flags, prot, offset=offset)
                close = m.close
        except (OSError, KernelError) as e:
            return -e.errno
        if write is not None:
            m[:len(write)] = write
        data = bytes(m[:16])
        if keep:
            self.held.append(close)
        else:
            close()
        return data

    def close(self):
        for c in self.held:
            c()
        self.held.clear()


MMAP_SEQUENCES = {   # per arena of 4 pages: a list of (length, prot, flags, offset, keep)
    "full_then_again": [(4 * P, RW, SHARED, 0, True), (4 * P, RW, SHARED, 0, False), (4 * P, RO, SHARED, 0, False)],
    "small_first": [(P, RW, SHARED, 0, False), (4 * P, RW, SHARED, 0, False), (P, RW, SHARED, 0, False),
                    (2 * P, RO, SHARED, 0, False)],
    "oversize_first": [(8 * P, RO, SHARED, 0, False), (4 * P, RW, SHARED, 0, False), (16 * P, RW, SHARED, 0, False)],
    "offset": [(4 * P, RW, SHARED, P, False), (4 * P, RW, SHARED, 0, False)],
    "private_then_shared": [(4 * P, RW, PRIVATE, 0, False), (4 * P, RO, PRIVATE, 0, False), (4 * P, RW, SHARED, 0, False)],
    "exec_then_shared": [(4 * P, RO | mmap.PROT_EXEC, SHARED, 0, False), (4 * P, RO, SHARED, 0, False)],
    "too_long": [((1 << 32) + P, RW, SHARED, 0, False), (4 * P, RO, SHARED, 0, False)],
}


@pytest.mark.parametrize("seq", MMAP_SEQUENCES.values(), ids=MMAP_SEQUENCES.keys())
def test_mmap_arena_first_mapping_fixes_range(both, seq):
    def scenario(b):
        fd = create(b, 4)
        maps = _Maps(b, fd)
        out = [maps.map(length, prot, flags, off, keep) for length, prot, flags, off, keep in seq]
        maps.close()
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_mmap_arena_map_extra_address_einval(both):
    """mmap(NULL, ...) never lands on map_extra: every length is refused."""
    def scenario(b):
        fd = create(b, 4, map_extra=1 << 32)
        maps = _Maps(b, fd)
        out = [maps.map(n * P) for n in (4, 2, 8)] + [maps.map(4 * P, offset=P)]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == [-Errno.EINVAL, -Errno.EINVAL, -Errno.E2BIG, -Errno.EINVAL]


def test_mmap_arena_4g_mapping_ok(both):
    def scenario(b):
        fd = create(b, 1 << 20)
        maps = _Maps(b, fd)
        out = [maps.map(1 << 32, RO)]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host) == [bytes(16)]


@pytest.mark.parametrize("prot", [RW, RO], ids=["rw", "ro"])
def test_map_freeze_arena_after_mapping(both, prot):
    """A writable mapping's write count is never dropped: EBUSY even after munmap."""
    def scenario(b):
        fd = create(b, 4)
        maps = _Maps(b, fd)
        out = [maps.map(4 * P, prot, write=b"abcd" if prot == RW else None)]
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---- programs using an arena (resolve_pseudo_ldimm64's arena checks) ----

def _load(b, text):
    from uapi.asm import assemble
    from uapi.bpf import ProgType
    res = calls.prog_load(b, ProgType.SCHED_CLS, assemble(text), strict=False, log_level=1, log_size=1 << 16)
    if res.ret >= 0:
        b.close(res.ret)
        return "ok"
    lines = [ln for ln in res.log.splitlines() if ln and not ln.startswith("processed")]
    return res.ret, lines[-1:]


PROG_CASES = {   # (map_extra of the arena, mmap it first, program text with {a} / {c})
    "no_address": (0, False, "r1 = map[id:{a}]\nr0 = 0\nexit"),
    "mmapped": (0, True, "r1 = map[id:{a}]\nr0 = 0\nexit"),
    "map_extra": (1 << 32, False, "r1 = map[id:{a}]\nr0 = 0\nexit"),
    "twice": (1 << 32, False, "r1 = map[id:{a}]\nr1 = map[id:{a}]\nr0 = 0\nexit"),
    "two_arenas": (1 << 32, False, "r1 = map[id:{a}]\nr1 = map[id:{c}]\nr0 = 0\nexit"),
    "arena_then_array": (1 << 32, False, "r1 = map[id:{a}]\nr1 = map[id:{arr}]\nr0 = 0\nexit"),
    "value_addr": (1 << 32, False, "r1 = map[id:{a}][0]+8\nr0 = 0\nexit"),
    "value_addr_end": (1 << 32, False, "r1 = map[id:{a}][0]+16384\nr0 = 0\nexit"),
    "value_addr_past_end": (1 << 32, False, "r1 = map[id:{a}][0]+16385\nr0 = 0\nexit"),
    "value_addr_no_address": (0, False, "r1 = map[id:{a}][0]+0\nr0 = 0\nexit"),
    "value_addr_no_address_off": (0, False, "r1 = map[id:{a}][0]+8\nr0 = 0\nexit"),
    "value_as_scalar": (1 << 32, False, "r0 = map[id:{a}][0]+8\nr0 >>= 32\nexit"),
    "value_deref": (1 << 32, False, "r1 = map[id:{a}][0]+8\nr0 = *(u64 *)(r1 +0)\nexit"),
}


@pytest.mark.parametrize("case", PROG_CASES.values(), ids=PROG_CASES.keys())
def test_prog_load_using_arena(both, case):
    extra, mapped, text = case

    def scenario(b):
        a = create(b, 4, map_extra=extra)
        c = create(b, 4, map_extra=2 << 32)
        arr = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
        maps = _Maps(b, a)
        if mapped:
            maps.map(4 * P, RO)
        out = _load(b, text.format(a=a, c=c, arr=arr))
        for fd in (arr, c, a):
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_prog_run_arena_value_is_user_address(both):
    """LD_IMM64 of the arena's value gives map_extra + off (a scalar the program can use)."""
    from uapi.asm import assemble
    from uapi.bpf import ProgType

    def scenario(b):
        a = create(b, 4, map_extra=(1 << 32) + 16 * P)
        prog = calls.prog_load(b, ProgType.SCHED_CLS, assemble(
            f"r0 = map[id:{a}][0]+8\nr1 = r0\nr1 >>= 32\nr0 -= {16 * P}\nr0 += r1\nexit"))
        retval = calls.prog_test_run(b, prog, bytes(14) + b"\x45" + bytes(50)).retval
        b.close(prog)
        b.close(a)
        return retval
    fake, host = both
    assert scenario(fake) == scenario(host) == 8 + 1
