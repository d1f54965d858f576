"""Maps of maps from the program side, against the real kernel: bpf_map_lookup_elem() on an
ARRAY_OF_MAPS / HASH_OF_MAPS gives the inner map, which the program then looks up and
updates (PROG_TEST_RUN of a tc program; retval and the inner map's contents compared), and
the verifier's view of that pointer (map_value_or_null before the NULL check, map_ptr after,
passed to the map helpers).  (A load through a map pointer — check_ptr_to_map_access() —
is not modelled by the fake verifier, for any map pointer, so it is not compared here.)"""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import MapType, ProgType
from uapi.errno import Errno

pytestmark = pytest.mark.differential

PKT = bytes(14) + b"\x45" + bytes(50)


def _u32(v):
    return v.to_bytes(4, "little")


def _u64(v):
    return v.to_bytes(8, "little")


PROG = """
    r1 = 0
    *(u32 *)(r10 -4) = r1
    r1 = map[id:{outer}]
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 == 0x0 goto pc+26
    r7 = r0
    r1 = 1
    *(u32 *)(r10 -8) = r1
    r1 = r7
    r2 = r10
    r2 += -8
    call bpf_map_lookup_elem
    if r0 == 0x0 goto pc+16
    r1 = *(u64 *)(r0 +0)
    r1 += 5
    *(u64 *)(r0 +0) = r1
    r1 = 2
    *(u32 *)(r10 -12) = r1
    r1 = 42
    *(u64 *)(r10 -24) = r1
    r1 = r7
    r2 = r10
    r2 += -12
    r3 = r10
    r3 += -24
    r4 = 0
    call bpf_map_update_elem
    r0 += 100
    exit
    r0 = 3
    exit
    r0 = 2
    exit
"""


def _outer(b, outer_type, inner_fd):
    key_size = 4
    return calls.map_create(b, outer_type, key_size, 4, 4, inner_map_fd=inner_fd)


@pytest.mark.parametrize("outer_type", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=["array", "hash"])
@pytest.mark.parametrize("inner_type", [MapType.ARRAY, MapType.HASH], ids=["inner_array", "inner_hash"])
@pytest.mark.parametrize("filled", [True, False], ids=["filled", "empty"])
def test_map_in_map_prog_lookup_inner_update(both, outer_type, inner_type, filled):
    def scenario(b):
        inner = calls.map_create(b, inner_type, 4, 8, 4)
        if inner_type == MapType.HASH:
            calls.map_update_elem(b, inner, _u32(1), _u64(10))
        outer = _outer(b, outer_type, inner)
        if filled:
            calls.map_update_elem(b, outer, _u32(0), _u32(inner))
        prog = calls.prog_load(b, ProgType.SCHED_CLS, assemble(PROG.format(outer=outer)))
        runs = [calls.prog_test_run(b, prog, PKT).retval for _ in range(2)]
        state = []
        for k in range(4):
            try:
                state.append(calls.map_lookup_elem(b, inner, _u32(k), 8))
            except calls.BpfError as e:
                state.append(-e.errno)
        for fd in (prog, outer, inner):
            b.close(fd)
        return runs, state
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    if filled:
        assert res[0] == [100, 100]


def test_map_in_map_prog_lookup_after_inner_replaced(both):
    """The program sees whichever map the slot holds at run time."""
    def scenario(b):
        a = calls.map_create(b, MapType.ARRAY, 4, 8, 4)
        c = calls.map_create(b, MapType.ARRAY, 4, 8, 4)
        outer = _outer(b, MapType.ARRAY_OF_MAPS, a)
        calls.map_update_elem(b, outer, _u32(0), _u32(a))
        prog = calls.prog_load(b, ProgType.SCHED_CLS, assemble(PROG.format(outer=outer)))
        calls.prog_test_run(b, prog, PKT)
        calls.map_update_elem(b, outer, _u32(0), _u32(c))
        calls.prog_test_run(b, prog, PKT)
        calls.prog_test_run(b, prog, PKT)
        out = [calls.map_lookup_elem(b, m, _u32(1), 8) for m in (a, c)]
        calls.map_delete_elem(b, outer, _u32(0))
        out.append(calls.prog_test_run(b, prog, PKT).retval)
        for fd in (prog, outer, c, a):
            b.close(fd)
        return out
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res == [_u64(5), _u64(10), 2]


REJECTS = {
    "deref_before_null_check": """
        r1 = 0
        *(u32 *)(r10 -4) = r1
        r1 = map[id:{outer}]
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        r0 = *(u64 *)(r0 +0)
        exit
    """,
    "inner_lookup_before_null_check": """
        r1 = 0
        *(u32 *)(r10 -4) = r1
        r1 = map[id:{outer}]
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        r1 = r0
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        r0 = 0
        exit
    """,
    "inner_value_oob": """
        r1 = 0
        *(u32 *)(r10 -4) = r1
        r1 = map[id:{outer}]
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0x0 goto pc+9
        r1 = r0
        r2 = r10
        r2 += -4
        call bpf_map_lookup_elem
        if r0 == 0x0 goto pc+2
        r0 = *(u64 *)(r0 +8)
        exit
        r0 = 0
        exit
        r0 = 0
        exit
    """,
}


@pytest.mark.parametrize("text", REJECTS.values(), ids=REJECTS.keys())
def test_map_in_map_prog_verifier_rejects_eacces(both, text):
    def scenario(b):
        inner = calls.map_create(b, MapType.ARRAY, 4, 8, 4)
        outer = _outer(b, MapType.ARRAY_OF_MAPS, inner)
        res = calls.prog_load(b, ProgType.SCHED_CLS, assemble(text.format(outer=outer)), strict=False,
                              log_level=1, log_size=1 << 16)
        if res.ret >= 0:
            b.close(res.ret)
        b.close(outer)
        b.close(inner)
        last = [ln for ln in res.log.splitlines() if ln and not ln.startswith("processed")]
        return (res.ret if res.ret < 0 else "ok"), last[-1:] if res.ret < 0 else []
    fake, host = both
    res = scenario(fake)
    assert res == scenario(host)
    assert res[0] == -Errno.EACCES
