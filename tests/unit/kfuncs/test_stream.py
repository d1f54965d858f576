"""Program streams in the fake (bpf_stream_vprintk_impl -> BPF_PROG_STREAM_READ_BY_FD).

The real 6.18 kernel on the development machine answers every bpf_stream_vprintk_impl with
-ENOMEM, so the content path is checked against the kernel's documented semantics here; the
command's error paths are differential (tests/differential/test_kfuncs.py)."""
from __future__ import annotations

import pytest

from fakekernel.bpf.stream import BPF_STREAM_MAX_CAPACITY, BpfStream
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_PSEUDO_MAP_VALUE, BpfCmd, MapFlags, MapType, ProgType
from uapi.insn import (BPF_ALU64_IMM, BPF_EXIT_INSN, BPF_LD_IMM64_RAW_FULL, BPF_MOV64_IMM, BPF_MOV64_REG,
                       BPF_STX_MEM, encode_prog)
from kfuncutil import kcall, stream_read

FP = 10


def stream_prog(map_fd: int, stream_id: int, value: int) -> bytes:
    return encode_prog([
        BPF_MOV64_IMM(1, value), BPF_STX_MEM(BPF_DW, FP, 1, -8),
        BPF_MOV64_IMM(1, stream_id), *BPF_LD_IMM64_RAW_FULL(2, BPF_PSEUDO_MAP_VALUE, 0, 0, map_fd, 0),
        BPF_MOV64_REG(3, FP), BPF_ALU64_IMM(BPF_ADD, 3, -8), BPF_MOV64_IMM(4, 8), BPF_MOV64_IMM(5, 0),
        kcall("bpf_stream_vprintk_impl"),
        BPF_EXIT_INSN()])


@pytest.fixture
def fmt_map(fake):
    fd = calls.map_create(fake, MapType.ARRAY, 4, 32, 1, map_flags=MapFlags.RDONLY_PROG)
    calls.map_update_elem(fake, fd, bytes(4), b"value=%d\n".ljust(32, b"\0"))
    calls.raw(fake, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)
    yield fd
    fake.close(fd)


@pytest.mark.parametrize("stream_id", [1, 2])
def test_vprintk_records_are_read_back_in_order_and_split(fake, fmt_map, stream_id):
    fd = calls.prog_load(fake, ProgType.SCHED_CLS, stream_prog(fmt_map, stream_id, 41))
    for _ in range(3):
        assert calls.prog_test_run(fake, fd, bytes(64)).retval == 0
    assert stream_read(fake, fd, 3 - stream_id, 64) == (0, b"")        # the other stream stays empty
    assert stream_read(fake, fd, stream_id, 4) == (4, b"valu")
    assert stream_read(fake, fd, stream_id, 64) == (23, b"e=41\nvalue=41\nvalue=41\n")
    assert stream_read(fake, fd, stream_id, 64) == (0, b"")
    fake.close(fd)


def test_vprintk_unknown_stream_is_enoent(fake, fmt_map):
    fd = calls.prog_load(fake, ProgType.SCHED_CLS, stream_prog(fmt_map, 3, 1))
    assert calls.prog_test_run(fake, fd, bytes(64)).retval == (-2) & 0xFFFFFFFF
    fake.close(fd)


def test_stream_refuses_past_capacity_and_recovers_after_read():
    s = BpfStream()
    chunk = b"x" * 1000
    pushed = 0
    while s.push_str(chunk) == 0:
        pushed += 1
    assert pushed == (BPF_STREAM_MAX_CAPACITY - 1) // len(chunk)
    assert s.read(len(chunk)) == chunk
    assert s.push_str(chunk) == 0
