"""fakekernel/progs/perf_event.py, helpers/perf_prog.py and perf/overflow.py on the fake kernel:
the ctx rule, and a PERF_EVENT program running on the world's overflow trigger (only while the
event is enabled, seeing the period, the registers and the address it was given, reading the
event's count)."""
from __future__ import annotations

import pytest

from fakekernel.perf.overflow import perf_event_overflow
from fakekernel.progs.ctx import BPF_READ, BPF_WRITE
from fakekernel.progs.perf_event import pe_prog_is_valid_access
from fakekernel.verifier.mem import AccessInfo
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, FuncId, MapType, ProgType
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)
from uapi.perf_event import PerfEventIoc, PerfSwId, PerfType, perf_attr_bytes

DATA = "struct bpf_perf_event_data"
SAMPLE_PERIOD, ADDR = ffi.offsetof(DATA, "sample_period"), ffi.offsetof(DATA, "addr")


@pytest.mark.parametrize("off,size,access,ok", [
    (0, 8, BPF_READ, True), (0, 4, BPF_READ, False), (8, 8, BPF_WRITE, False),
    (SAMPLE_PERIOD, 4, BPF_READ, True), (SAMPLE_PERIOD + 4, 4, BPF_READ, True), (ADDR, 1, BPF_READ, True),
    (ffi.sizeof(DATA), 8, BPF_READ, False), (-8, 8, BPF_READ, False), (4, 8, BPF_READ, False),
])
def test_pe_prog_is_valid_access(off, size, access, ok):
    assert pe_prog_is_valid_access(off, size, access, None, AccessInfo()) is ok


def _event(kernel, disabled=0):
    fd = kernel.perf_event_open(bytearray(perf_attr_bytes(type=PerfType.SOFTWARE, config=PerfSwId.CPU_CLOCK,
                                                          sample_period=1000, disabled=disabled)), 0, -1, -1, 0)
    assert fd >= 0
    return fd, kernel.current.files.fdget(fd).private_data


def _prog(kernel, m):
    """value = (sample_period, addr, regs->word 2, read_value counter); returns 7."""
    return calls.prog_load(kernel, ProgType.PERF_EVENT, assemble_insns([
        BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_DW, 10, -8, 0), *BPF_LD_MAP_FD(1, m), BPF_MOV64_REG(2, 10),
        BPF_ALU64_IMM(BPF_ADD, 2, -8), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 14),
        BPF_MOV64_REG(7, 0), BPF_LDX_MEM(BPF_DW, 1, 6, SAMPLE_PERIOD), BPF_STX_MEM(BPF_DW, 7, 1, 0),
        BPF_LDX_MEM(BPF_DW, 1, 6, ADDR), BPF_STX_MEM(BPF_DW, 7, 1, 8),
        BPF_LDX_MEM(BPF_DW, 1, 6, 16), BPF_STX_MEM(BPF_DW, 7, 1, 16),
        BPF_MOV64_REG(1, 6), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -32), BPF_MOV64_IMM(3, 24),
        BPF_CALL_HELPER(FuncId.perf_prog_read_value), BPF_LDX_MEM(BPF_DW, 1, 10, -32), BPF_STX_MEM(BPF_DW, 7, 1, 24),
        BPF_MOV64_IMM(0, 7), BPF_EXIT_INSN()]))


def test_overflow_runs_the_program_while_enabled(kernel):
    m = calls.map_create(kernel, MapType.ARRAY, 4, 32, 1)
    p = _prog(kernel, m)
    fd, event = _event(kernel, disabled=1)
    assert kernel.ioctl(fd, PerfEventIoc.SET_BPF, p) == 0
    assert perf_event_overflow(kernel, event) is None          # disabled: no period elapses
    assert kernel.ioctl(fd, PerfEventIoc.ENABLE, 0) == 0
    regs = bytes(16) + (0x1234).to_bytes(8, "little")
    assert perf_event_overflow(kernel, event, regs=regs, addr=0xABC) == 7
    assert perf_event_overflow(kernel, event, regs=regs, addr=0xABC) == 7
    v = calls.map_lookup_elem(kernel, m, bytes(4), 32)
    assert [int.from_bytes(v[i:i + 8], "little") for i in range(0, 32, 8)] == [1000, 0xABC, 0x1234, 2000]
    for f in (fd, p, m):
        kernel.close(f)


def test_overflow_without_program_only_counts(kernel):
    fd, event = _event(kernel)
    assert perf_event_overflow(kernel, event) is None and event.count == 1000
    assert kernel.ioctl(fd, PerfEventIoc.RESET, 0) == 0 and event.count == 0
    kernel.close(fd)


def test_overflow_program_sees_its_link_cookie(kernel):
    from uapi.bpf import AttachType, BpfCmd
    p = calls.prog_load(kernel, ProgType.PERF_EVENT, assemble_insns([
        BPF_CALL_HELPER(FuncId.get_attach_cookie), BPF_EXIT_INSN()]))
    fd, event = _event(kernel)
    lk, _ = calls.raw(kernel, BpfCmd.LINK_CREATE, "link_create.perf_event.bpf_cookie", link_create__prog_fd=p,
                      link_create__target_fd=fd, link_create__attach_type=AttachType.PERF_EVENT,
                      link_create__perf_event__bpf_cookie=0x1234)
    assert lk >= 0
    assert perf_event_overflow(kernel, event) == 0x1234
    kernel.close(lk)
    assert perf_event_overflow(kernel, event) is None           # the link took the program away
    for f in (fd, p):
        kernel.close(f)
