"""fakekernel/helpers/timer.py: bpf_timer callbacks fire from run_timers() once the
kernel's (injected) clock passes their expiry, in every execution tier, with the kernel's
(map, key, value) arguments; cancel, element deletion and dropping the map stop them."""
from __future__ import annotations

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel import Kernel
from fakekernel.helpers.timer import run_timers, timers_of
from fakekernel.jit import ENGINE_ENV
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapType, ProgType

MAIN = """
*(u32 *)(r10 -4) = {key}
r2 = r10
r2 += -4
r1 = map[id:{fd}]
call bpf_map_lookup_elem
if r0 != 0x0 goto pc+2
r0 = 0
exit
r6 = r0
r1 = r6
r2 = map[id:{fd}]
r3 = 1
call bpf_timer_init
r1 = r6
r2 = subprog[+{cbrel}]
call bpf_timer_set_callback
r1 = r6
r2 = 1000
r3 = 0
call bpf_timer_start
r0 = 0
exit
"""
CALLBACK = """
r6 = r3
r1 = *(u64 *)(r6 +16)
r1 += 1
*(u64 *)(r6 +16) = r1
r2 = *(u32 *)(r2 +0)
*(u64 *)(r6 +24) = r2
if r1 >= {rearm} goto pc+4
r1 = r6
r2 = 1000
r3 = 0
call bpf_timer_start
r0 = 0
exit
"""
SUBPROG_LDIMM = 16         # the "r2 = subprog[...]" ld_imm64 of MAIN
VALUE_SIZE = 32             # struct { struct bpf_timer t; u64 count; u64 key; }


@pytest.fixture(params=["interp", "python", "c"])
def tier(request, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, request.param)


class Clock:
    def __init__(self):
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def setup(map_type=MapType.ARRAY, key=0, rearm=1):
    clock = Clock()
    k = Kernel(clock=clock)
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    u64 = w.int_("long long unsigned int", 8)
    tm = w.struct("bpf_timer", 16, [("a", u64, 0), ("b", u64, 64)])
    val = w.struct("val", VALUE_SIZE, [("t", tm, 0), ("count", u64, 128), ("key", u64, 192)])
    proto = w.func_proto(i, [])
    main, cbf = w.func("main", proto), w.func("cb", proto)
    bfd = btf_load(k, w.blob()).ret
    m, _ = calls.raw(k, BpfCmd.MAP_CREATE, None, map_type=map_type, key_size=4,
                     value_size=VALUE_SIZE, max_entries=8, btf_fd=bfd, btf_key_type_id=i,
                     btf_value_type_id=val)
    assert m >= 0
    if map_type != MapType.ARRAY:
        calls.map_update_elem(k, m, key.to_bytes(4, "little"), bytes(VALUE_SIZE))
    main_insns = assemble(MAIN.format(fd=m, key=key, cbrel=0))
    cb = len(main_insns) // 8
    insns = assemble(MAIN.format(fd=m, key=key, cbrel=cb - SUBPROG_LDIMM - 1)
                     + CALLBACK.format(rearm=rearm))
    fi = b"".join(x.to_bytes(4, "little") for x in (0, main, cb, cbf))
    fd, _ = calls.raw(k, BpfCmd.PROG_LOAD, None, prog_type=ProgType.SCHED_CLS, insns=insns,
                      insn_cnt=len(insns) // 8, license=b"GPL\0", prog_btf_fd=bfd,
                      func_info_rec_size=8, func_info=bytearray(fi), func_info_cnt=2)
    assert fd >= 0
    k.close(bfd)
    return k, clock, m, fd


def value(k, m, key=0):
    v = bytearray(VALUE_SIZE)
    ret = calls.raw(k, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=m, key=key.to_bytes(4, "little"), value=v)[0]
    assert ret == 0
    return int.from_bytes(v[16:24], "little"), int.from_bytes(v[24:32], "little"), bytes(v[:16])


def arm(k, fd):
    assert calls.prog_test_run(k, fd, bytes(64)).retval == 0


@pytest.mark.parametrize("map_type,key", [(MapType.ARRAY, 3), (MapType.HASH, 7),
                                          (MapType.LRU_HASH, 5)])
def test_timer_fires_once_its_expiry_passes(tier, map_type, key):
    k, clock, m, fd = setup(map_type, key)
    arm(k, fd)
    clock.ns = 999
    assert run_timers(k) == 0
    assert value(k, m, key)[0] == 0
    clock.ns = 1000
    assert run_timers(k) == 1
    assert value(k, m, key) == (1, key, bytes(16))     # the callback saw (map, &key, value)
    clock.ns = 10**9
    assert run_timers(k) == 0                          # not restarted: fired once
    k.close(fd)
    k.close(m)


def test_timer_restarted_by_its_callback_fires_again(tier):
    k, clock, m, fd = setup(rearm=3)
    arm(k, fd)
    fired = 0
    for step in range(1, 10):
        clock.ns = step * 1000
        fired += run_timers(k)
    assert fired == 3 and value(k, m)[0] == 3
    k.close(fd)
    k.close(m)


def test_timer_of_deleted_hash_element_never_fires(tier):
    k, clock, m, fd = setup(MapType.HASH, 1)
    arm(k, fd)
    calls.raw(k, BpfCmd.MAP_DELETE_ELEM, None, map_fd=m, key=(1).to_bytes(4, "little"))
    clock.ns = 5000
    assert run_timers(k) == 0
    assert not timers_of(k).by_addr
    k.close(fd)
    k.close(m)


def test_timer_of_overwritten_array_value_is_freed(tier):
    k, clock, m, fd = setup()
    arm(k, fd)
    calls.map_update_elem(k, m, bytes(4), bytes(VALUE_SIZE))
    clock.ns = 5000
    assert run_timers(k) == 0
    arm(k, fd)                          # a fresh bpf_timer_init succeeds again
    assert run_timers(k) == 0
    clock.ns = 6000
    assert run_timers(k) == 1
    k.close(fd)
    k.close(m)


def test_timer_of_map_without_users_does_not_fire(tier):
    k, clock, m, fd = setup()
    arm(k, fd)
    k.close(m)                          # the prog still holds the map; no user does
    clock.ns = 5000
    assert run_timers(k) == 0
    k.close(fd)
