"""Helpers that call back into the program — bpf_loop and bpf_for_each_map_elem — fake vs
the real kernel, through PROG_TEST_RUN of SOCKET_FILTER programs with BTF func_info (the
kernel insists on it for a BPF_PSEUDO_FUNC), in every execution tier: retval (the helper's
return and what the callbacks summed) and the map contents the callbacks wrote."""
from __future__ import annotations

import os

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel.jit import ENGINE_ENV
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapFlags, MapType, ProgType

pytestmark = pytest.mark.differential

TIERS = ["interp", "python", "c"]
LOOP = """
r6 = r1
*(u64 *)(r10 -8) = 0
r1 = {n}
r2 = subprog[+9]
r3 = r10
r3 += -8
r4 = {flags}
call bpf_loop
r1 = *(u64 *)(r10 -8)
r0 <<= 16
r0 += r1
exit
r3 = *(u64 *)(r2 +0)
r3 += r1
*(u64 *)(r2 +0) = r3
r0 = 0
if r1 != {stop} goto pc+1
r0 = 1
exit
"""
FOR_EACH = """
*(u64 *)(r10 -8) = 0
r1 = map[id:{fd}]
r2 = subprog[+9]
r3 = r10
r3 += -8
r4 = {flags}
call bpf_for_each_map_elem
r1 = *(u64 *)(r10 -8)
r0 <<= 16
r0 += r1
exit
r5 = *(u32 *)(r2 +0)
r6 = *(u64 *)(r3 +0)
r7 = *(u64 *)(r4 +0)
r7 += r6
*(u64 *)(r4 +0) = r7
r6 += 1
*(u64 *)(r3 +0) = r6
r0 = 0
if r5 != {stop} goto pc+1
r0 = 1
exit
"""
CB_INSN = 13            # both programs' callback starts here


@pytest.fixture(params=TIERS)
def tier(request, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, request.param)
    return request.param


@pytest.fixture
def cpu0():
    """Per-CPU values are this CPU's: run the real kernel's test runs on CPU 0 as the fake's."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    yield
    os.sched_setaffinity(0, old)


def load_with_func_info(b, text):
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    proto = w.func_proto(i, [])
    main, cb = w.func("main", proto), w.func("cb", proto)
    bfd = btf_load(b, w.blob()).ret
    assert bfd >= 0
    fi = b"".join(x.to_bytes(4, "little") for x in (0, main, CB_INSN, cb))
    insns = assemble(text)
    ret, _ = calls.raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.SOCKET_FILTER,
                       insns=insns, insn_cnt=len(insns) // 8, license=b"GPL\0", prog_btf_fd=bfd,
                       func_info_rec_size=8, func_info=bytearray(fi), func_info_cnt=2)
    b.close(bfd)
    return ret


def run_once(b, fd):
    t = calls.prog_test_run(b, fd, bytes(64), strict=False)
    return getattr(t, "retval", t)


def scenario_loop(b, n, flags, stop):
    fd = load_with_func_info(b, LOOP.format(n=n, flags=flags, stop=stop))
    if fd < 0:
        return ("load", fd)
    out = [run_once(b, fd), run_once(b, fd)]
    b.close(fd)
    return out


@pytest.mark.parametrize("n,flags,stop", [(10, 0, 100), (10, 0, 3), (10, 0, 0), (0, 0, 3),
                                          (10, 1, 3), ((1 << 23) + 1, 0, 3), (1 << 23, 0, 5),
                                          (2**32 - 1, 0, 1)])
def test_bpf_loop_matches_kernel(both, tier, n, flags, stop):
    fake, host = both
    assert scenario_loop(fake, n, flags, stop) == scenario_loop(host, n, flags, stop)


def test_bpf_loop_without_func_info_einval(both):
    fake, host = both

    def scenario(b):
        insns = assemble(LOOP.format(n=1, flags=0, stop=0))
        return calls.prog_load(b, ProgType.SOCKET_FILTER, insns, strict=False).ret
    assert scenario(fake) == scenario(host) < 0


PERCPU = (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)


def scenario_for_each(b, map_type, n_keys, flags, stop, max_entries=8):
    nr_cpus = os.cpu_count()
    map_flags = 0 if map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY) else int(MapFlags.ZERO_SEED)
    m = calls.map_create(b, map_type, 4, 8, max_entries, map_flags=map_flags)
    slots = nr_cpus if map_type in PERCPU else 1
    for k in range(n_keys):
        val = b"".join(((k + 1) * 100 + c).to_bytes(8, "little") for c in range(slots))
        calls.map_update_elem(b, m, k.to_bytes(4, "little"), val)
    fd = load_with_func_info(b, FOR_EACH.format(fd=m, flags=flags, stop=stop))
    out = [("load", fd) if fd < 0 else run_once(b, fd)]
    for k in range(max_entries):
        v = bytearray(8 * slots)
        r = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=m, key=k.to_bytes(4, "little"),
                      value=v)[0]
        out.append((k, r, bytes(v).hex() if r == 0 else None))
    if fd >= 0:
        b.close(fd)
    b.close(m)
    return out


@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH,
                                      MapType.PERCPU_HASH, MapType.LRU_HASH,
                                      MapType.LRU_PERCPU_HASH])
@pytest.mark.parametrize("n_keys,flags,stop", [(5, 0, 100), (5, 0, 2), (0, 0, 1), (5, 1, 100)])
def test_for_each_map_elem_matches_kernel(both, tier, cpu0, map_type, n_keys, flags, stop):
    fake, host = both
    assert scenario_for_each(fake, map_type, n_keys, flags, stop) == \
        scenario_for_each(host, map_type, n_keys, flags, stop)


FOR_EACH_DELETE = FOR_EACH[:FOR_EACH.index("r5 = *(u32 *)(r2 +0)")] + """r6 = r1
r7 = r2
r8 = r4
r5 = *(u32 *)(r7 +0)
r5 &= 1
if r5 != 0x0 goto pc+3
r1 = r6
r2 = r7
call bpf_map_delete_elem
r1 = *(u64 *)(r8 +0)
r1 += 1
*(u64 *)(r8 +0) = r1
r0 = 0
exit
"""


def scenario_for_each_delete(b, map_type, n_keys):
    """The callback deletes the even keys it is handed: the walk goes on past them."""
    m = calls.map_create(b, map_type, 4, 8, 16, map_flags=int(MapFlags.ZERO_SEED))
    for k in range(n_keys):
        calls.map_update_elem(b, m, k.to_bytes(4, "little"), (k * 10).to_bytes(8, "little"))
    fd = load_with_func_info(b, FOR_EACH_DELETE.format(fd=m, flags=0, stop=0))
    out = [("load", fd) if fd < 0 else run_once(b, fd)]
    for k in range(n_keys):
        v = bytearray(8)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=m, key=k.to_bytes(4, "little"),
                             value=v)[0])
    if fd >= 0:
        b.close(fd)
    b.close(m)
    return out


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.LRU_HASH])
def test_for_each_callback_deleting_elements_matches_kernel(both, tier, map_type):
    fake, host = both
    got = scenario_for_each_delete(fake, map_type, 12)
    assert got == scenario_for_each_delete(host, map_type, 12)
    assert got[0] & 0xFFFF == 12        # every element visited once
