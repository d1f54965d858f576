"""BPF_MAP_TYPE_RINGBUF against the real kernel: creation, element commands, mmap rules,
and records produced by a program (reserve/submit/discard/output/query) read back through
the shared memory by the friendly consumer on both kernels."""
from __future__ import annotations

import mmap

import pytest

from fakekernel.friendly import RingBuffer
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapFlags, MapType, ProgType
from uapi.errno import Errno

P = mmap.PAGESIZE
RW, RO = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
SHARED, PRIVATE = mmap.MAP_SHARED, mmap.MAP_PRIVATE


def _kern(b):
    """What the friendly layer talks to: the fake Kernel or the real HostKernel."""
    return b.kern if hasattr(b, "kern") else b.host


def try_mmap(b, fd, length, prot, flags=SHARED, offset=0) -> int:
    """mmap + munmap on either kernel: 0 or -errno."""
    if hasattr(b, "kern"):
        from fakekernel.errors import KernelError
        try:
            b.kern.mmap(fd, length, prot, flags, offset).munmap()
        except KernelError as e:
            return -e.errno
        return 0
    try:
        mmap.mmap(fd, length, flags, prot, offset=offset).close()
    except OSError as e:
        return -e.errno
    return 0


def create(b, max_entries, key_size=0, value_size=0, flags=0, numa_node=0):
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.RINGBUF,
                       key_size=key_size, value_size=value_size, max_entries=max_entries,
                       map_flags=flags, numa_node=numa_node)
    return ret


CREATE_CASES = [
    dict(max_entries=P), dict(max_entries=2 * P), dict(max_entries=1 << 20),
    dict(max_entries=3 * P), dict(max_entries=0), dict(max_entries=P // 4),
    dict(max_entries=P, key_size=4), dict(max_entries=P, value_size=4),
    dict(max_entries=P, flags=MapFlags.NUMA_NODE), dict(max_entries=P, flags=MapFlags.NUMA_NODE, numa_node=1),
    dict(max_entries=P, flags=MapFlags.MMAPABLE), dict(max_entries=P, flags=MapFlags.RDONLY),
    dict(max_entries=P, flags=MapFlags.WRONLY), dict(max_entries=P, flags=MapFlags.RDONLY_PROG),
    dict(max_entries=P, flags=MapFlags.NO_PREALLOC), dict(max_entries=(1 << 31) + P),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_map_create_ringbuf_matrix(both, case):
    def scenario(b):
        fd = create(b, **case)
        if fd >= 0:
            b.close(fd)
            return "ok"
        return fd
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_create_ringbuf_memlock_and_info(both):
    def scenario(b):
        fd = create(b, 4 * P)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_map_elem_cmds_ringbuf_enotsupp(both):
    def scenario(b):
        fd = create(b, P)
        buf = bytearray(8)
        out = []
        for cmd in (BpfCmd.MAP_LOOKUP_ELEM, BpfCmd.MAP_UPDATE_ELEM, BpfCmd.MAP_DELETE_ELEM,
                    BpfCmd.MAP_GET_NEXT_KEY, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM):
            out.append(calls.raw(b, cmd, None, map_fd=fd)[0])                 # NULL key: ENOTSUPP
            out.append(calls.raw(b, cmd, None, map_fd=fd, key=buf, value=buf)[0])  # key given: EINVAL
        out.append(calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0])
        out.append(try_mmap(b, fd, P, RW))                                    # frozen: EPERM
        out.append(try_mmap(b, fd, P, RO))
        b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == -Errno.ENOTSUPP and res[1] == -Errno.EINVAL


MMAP_CASES = [  # (length, prot, flags, offset) for an 8 KiB ring
    (P, RW, SHARED, 0), (P, RO, SHARED, 0), (2 * P, RW, SHARED, 0), (P, RW, SHARED, P),
    (P + 2 * 8192, RO, SHARED, P), (2 * P + 2 * 8192, RO, SHARED, P), (2 * P + 2 * 8192, RO, SHARED, 0),
    (3 * P + 2 * 8192, RO, SHARED, 0), (P, RO, PRIVATE, 0), (P, RW, PRIVATE, 0),
    (P, RO, SHARED, 2 * P + 2 * 8192), (P, RO, SHARED, P + 2 * 8192), (P, RO | mmap.PROT_EXEC, SHARED, 0),
    (P, 0, SHARED, 0),
]


@pytest.mark.parametrize("case", MMAP_CASES, ids=str)
def test_mmap_ringbuf_rules(both, case):
    def scenario(b):
        fd = create(b, 8192)
        ret = try_mmap(b, fd, *case)
        b.close(fd)
        return ret
    fake, host = both
    assert scenario(fake) == scenario(host)


def rb_prog(fd: int, big: int) -> bytes:
    """reserve 12 + submit, reserve 5 + discard, output 3 bytes, output the query results,
    reserve `big` bytes (NULL when it cannot fit) and record that with the result of an
    output with unknown flags (-EINVAL); returns the first output's result."""
    return assemble(f"""
        r6 = map[id:{fd}]
        r1 = r6
        r2 = 12
        r3 = 0
        call bpf_ringbuf_reserve
        if r0 == 0x0 goto pc+8
        r7 = 0x11223344
        *(u32 *)(r0 +0) = r7
        *(u32 *)(r0 +4) = r7
        *(u32 *)(r0 +8) = r7
        r1 = r0
        r2 = 0
        call bpf_ringbuf_submit
        r1 = r6
        r2 = 5
        r3 = 0
        call bpf_ringbuf_reserve
        if r0 == 0x0 goto pc+3
        r1 = r0
        r2 = 0
        call bpf_ringbuf_discard
        r1 = 0x55667788
        *(u64 *)(r10 -8) = r1
        r1 = r6
        r2 = r10
        r2 += -8
        r3 = 3
        r4 = 1
        call bpf_ringbuf_output
        r8 = r0
        r1 = r6
        r2 = 0
        call bpf_ringbuf_query
        *(u64 *)(r10 -32) = r0
        r1 = r6
        r2 = 1
        call bpf_ringbuf_query
        *(u64 *)(r10 -24) = r0
        r1 = r6
        r2 = 2
        call bpf_ringbuf_query
        *(u64 *)(r10 -16) = r0
        r1 = r6
        r2 = 3
        call bpf_ringbuf_query
        *(u64 *)(r10 -8) = r0
        r1 = r6
        r2 = r10
        r2 += -32
        r3 = 32
        r4 = 2
        call bpf_ringbuf_output
        r1 = r6
        r2 = {big}
        r3 = 0
        call bpf_ringbuf_reserve
        r9 = 0
        if r0 == 0x0 goto pc+4
        r9 = 1
        r1 = r0
        r2 = 0
        call bpf_ringbuf_submit
        *(u64 *)(r10 -16) = r9
        r1 = r6
        r2 = r10
        r2 += -16
        r3 = 8
        r4 = 4
        call bpf_ringbuf_output
        *(u64 *)(r10 -8) = r0
        r1 = r6
        r2 = r10
        r2 += -16
        r3 = 16
        r4 = 2
        call bpf_ringbuf_output
        r0 = r8
        exit
    """)


def _run_and_consume(b, ring: int, big: int, runs: int, consume_every: int):
    fd = create(b, ring)
    pfd = calls.prog_load(b, ProgType.XDP, rb_prog(fd, big))
    seen = []
    out = []
    with RingBuffer(_kern(b), fd, seen.append) as rb:
        for i in range(runs):
            r = calls.prog_test_run(b, pfd, bytes(64))
            out.append(r.retval)
            if i % consume_every == consume_every - 1:
                out.append(("consumed", rb.consume(), rb.consumer_pos, rb.producer_pos))
        out.append(("tail", rb.poll(), rb.avail_data()))
    b.close(pfd)
    b.close(fd)
    return out, seen


def test_prog_test_run_ringbuf_records_consumed(both):
    fake, host = both
    assert _run_and_consume(fake, P, 16, 3, 3) == _run_and_consume(host, P, 16, 3, 3)


def test_prog_test_run_ringbuf_wraps_around(both):
    """4 KiB ring, ~100 bytes per run consumed every other run: records straddle the end."""
    fake, host = both
    res = _run_and_consume(fake, P, 40, 100, 2)
    assert res == _run_and_consume(host, P, 40, 100, 2)
    assert res[0][-2][2] > 2 * P                # positions went round more than once


def test_prog_test_run_ringbuf_full(both):
    """Nobody consumes: reserve returns NULL and output -EAGAIN once the ring is full."""
    fake, host = both
    res = _run_and_consume(fake, P, P - 64, 60, 1000)
    assert res == _run_and_consume(host, P, P - 64, 60, 1000)
    assert (-Errno.EAGAIN) & 0xFFFFFFFF in res[0]


@pytest.mark.parametrize("open_flags", [MapFlags.RDONLY, MapFlags.WRONLY])
def test_mmap_ringbuf_through_readonly_or_writeonly_fd(both, open_flags):
    def scenario(b):
        fd = create(b, 8192)
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        fd2, _ = calls.raw(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=info.id, open_flags=open_flags)
        out = [try_mmap(b, fd2, P, RW), try_mmap(b, fd2, P, RO), try_mmap(b, fd2, P + 2 * 8192, RO, SHARED, P)]
        b.close(fd2)
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
