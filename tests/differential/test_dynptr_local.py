"""LOCAL dynptrs (bpf_dynptr_from_mem / _read / _write / _data over a map value) from a tc
program, against the real kernel: the helpers' results and the bytes they move."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapType, ProgType

pytestmark = pytest.mark.differential

PKT = bytes(14) + b"\x45" + bytes(50)
VALUE = 96

PROG = """
    r1 = 0
    *(u64 *)(r10 -32) = r1
    *(u32 *)(r10 -4) = r1
    r1 = map[id:{arr}]
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0x0 goto pc+35
    r6 = r0
    r1 = r6
    r2 = {size}
    r3 = {flags}
    r4 = r10
    r4 += -24
    call bpf_dynptr_from_mem
    *(u64 *)(r6 +64) = r0
    r1 = r10
    r1 += -32
    r2 = 8
    r3 = r10
    r3 += -24
    r4 = {roff}
    r5 = 0
    call bpf_dynptr_read
    *(u64 *)(r6 +72) = r0
    r1 = r10
    r1 += -24
    r2 = {woff}
    r3 = r10
    r3 += -32
    r4 = 8
    r5 = {wflags}
    call bpf_dynptr_write
    *(u64 *)(r6 +80) = r0
    r1 = r10
    r1 += -24
    r2 = {doff}
    r3 = 8
    call bpf_dynptr_data
    r1 = 0
    if r0 == 0x0 goto pc+1
    r1 = 1
    *(u64 *)(r6 +88) = r1
    r0 = 0
    exit
"""

CASES = {
    "ok": dict(size=40, flags=0, roff=0, woff=8, wflags=0, doff=0),
    "read_end": dict(size=40, flags=0, roff=32, woff=32, wflags=0, doff=32),
    "read_past_end": dict(size=40, flags=0, roff=33, woff=0, wflags=0, doff=33),   # dst left as it was
    "write_past_end": dict(size=40, flags=0, roff=0, woff=33, wflags=0, doff=0),
    "write_flags": dict(size=40, flags=0, roff=8, woff=16, wflags=1, doff=8),
    "from_mem_flags": dict(size=40, flags=1, roff=0, woff=0, wflags=0, doff=0),
    "empty": dict(size=0, flags=0, roff=0, woff=0, wflags=0, doff=0),
    "exactly_8": dict(size=8, flags=0, roff=0, woff=0, wflags=0, doff=0),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_dynptr_local_helpers_prog(both, case):
    def scenario(b):
        arr = calls.map_create(b, MapType.ARRAY, 4, VALUE, 1)
        calls.map_update_elem(b, arr, bytes(4), bytes(range(VALUE)))
        prog = calls.prog_load(b, ProgType.SCHED_CLS, assemble(PROG.format(arr=arr, **case)))
        retval = calls.prog_test_run(b, prog, PKT).retval
        value = calls.map_lookup_elem(b, arr, bytes(4), VALUE)
        b.close(prog)
        b.close(arr)
        return retval, value
    fake, host = both
    assert scenario(fake) == scenario(host)
