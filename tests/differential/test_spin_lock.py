"""bpf_spin_lock / bpf_spin_unlock, fake vs the real kernel: the verifier's lock rules
(process_spin_lock: map value pointer at the lock's constant offset, BTF with a
bpf_spin_lock; one lock held; no calls and no exit while holding it; no direct access to
the lock word) with the kernel's verdicts and full logs, and a locked increment run through
PROG_TEST_RUN in every tier, read back with BPF_F_LOCK."""
from __future__ import annotations

import re

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel.jit import ENGINE_ENV
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapType, ProgType, UpdateFlags

pytestmark = pytest.mark.differential

_KADDR = re.compile(r"0x[0-9a-f]{12,16}")

HEAD = """
*(u32 *)(r10 -4) = 0
r2 = r10
r2 += -4
r1 = map[id:{fd}]
call bpf_map_lookup_elem
if r0 != 0x0 goto pc+2
r0 = 0
exit
r6 = r0
"""
UNLOCK_EXIT = "r1 = r6\ncall bpf_spin_unlock\nr0 = 0\nexit\n"
BODIES = {
    "locked_increment": "r1 = r6\ncall bpf_spin_lock\nr1 = *(u32 *)(r6 +4)\nr1 += 1\n"
                        "*(u32 *)(r6 +4) = r1\n" + UNLOCK_EXIT,
    "lock_off_by_4": "r1 = r6\nr1 += 4\ncall bpf_spin_lock\n" + UNLOCK_EXIT,
    "lock_on_stack": "r1 = r10\nr1 += -8\ncall bpf_spin_lock\nr0 = 0\nexit\n",
    "exit_while_locked": "r1 = r6\ncall bpf_spin_lock\nr0 = 0\nexit\n",
    "lock_twice": "r1 = r6\ncall bpf_spin_lock\nr1 = r6\ncall bpf_spin_lock\n" + UNLOCK_EXIT,
    "unlock_without_lock": UNLOCK_EXIT,
    "helper_call_while_locked": "r1 = r6\ncall bpf_spin_lock\ncall bpf_ktime_get_ns\n" + UNLOCK_EXIT,
    "load_of_lock_word": "r1 = *(u32 *)(r6 +0)\nr0 = 0\nexit\n",
    "store_over_lock_word": "*(u64 *)(r6 +0) = 0\nr0 = 0\nexit\n",
    "value_to_helper": "r1 = map[id:{fd}]\nr2 = r10\nr2 += -4\nr3 = r6\nr4 = 0\n"
                       "call bpf_map_update_elem\nr0 = 0\nexit\n",
    "lock_branches_unlock_both": "r1 = r6\ncall bpf_spin_lock\nr1 = *(u32 *)(r6 +4)\n"
                                 "if r1 > 0x3 goto pc+3\nr1 = r6\ncall bpf_spin_unlock\nr0 = 1\nexit\n"
                                 + UNLOCK_EXIT,
    "lock_branch_forgets_unlock": "r1 = r6\ncall bpf_spin_lock\nr1 = *(u32 *)(r6 +4)\n"
                                  "if r1 > 0x3 goto pc+1\n" + UNLOCK_EXIT,
}


def make_map(b, kind):
    w = BtfWriter()
    u32 = w.int_("unsigned int", 4)
    lock = w.struct("bpf_spin_lock", 4, [("val", u32, 0)])
    first = lock if kind == "lock" else u32
    val = w.struct("val", 8, [("l", first, 0), ("x", u32, 32)])
    bfd = btf_load(b, w.blob()).ret
    if kind == "no_btf":
        m = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    else:
        m = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.ARRAY, key_size=4, value_size=8,
                      max_entries=1, btf_fd=bfd, btf_key_type_id=u32, btf_value_type_id=val,
                      map_name=b"m")[0]
    b.close(bfd)
    return m


def scenario(b, body, kind="lock"):
    m = make_map(b, kind)
    insns = assemble((HEAD + BODIES[body]).format(fd=m))
    r = calls.prog_load(b, ProgType.SCHED_CLS, insns, log_level=1, log_size=1 << 16, strict=False)
    out = [r.ret if r.ret < 0 else "ok", _KADDR.sub("<kaddr>", r.log) if r.ret < 0 else ""]
    if r.ret >= 0:
        for _ in range(3):
            out.append(calls.prog_test_run(b, r.ret, bytes(64), strict=False).retval)
        v = bytearray(8)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=m, key=bytes(4), value=v,
                             flags=int(UpdateFlags.F_LOCK))[0])
        out.append(bytes(v).hex())
        b.close(r.ret)
    b.close(m)
    return out


CASES = [(body, "lock") for body in BODIES] + [("locked_increment", "no_lock"),
                                                ("locked_increment", "no_btf")]


@pytest.mark.parametrize("body,kind", CASES)
def test_spin_lock_verdict_and_log_match_kernel(both, body, kind):
    fake, host = both
    assert scenario(fake, body, kind) == scenario(host, body, kind)


@pytest.mark.parametrize("tier", ["interp", "python", "c"])
def test_locked_increment_runs_in_every_tier(both, monkeypatch, tier):
    monkeypatch.setenv(ENGINE_ENV, tier)
    fake, host = both
    got = scenario(fake, "locked_increment")
    assert got == scenario(host, "locked_increment")
    assert got[-1] == "0000000003000000"        # three locked increments; the lock reads as 0
