"""cgroup skb ingress policy: deny UDP from 10.0.0.66 and TCP to port 23, count denials.

Raw bpf(): MAP_CREATE (ARRAY, 1 counter), PROG_LOAD (CGROUP_SKB, kernel-syntax assembly),
PROG_ATTACH to a cgroup2 directory with BPF_F_ALLOW_MULTI, then packets fired at the
cgroup from Python and the counter read back.  Run: python3 examples/cgroup_ingress_policy.py  (or python3 -m fakekernel.examples.cgroup_ingress_policy)
"""
from __future__ import annotations

import os
from fakekernel import Kernel
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachFlags, AttachType, MapType, ProgType

CG = "/sys/fs/cgroup/unified/policy"
BAD_SRC = bytes([10, 0, 0, 66])
TELNET = 23


def policy(map_fd: int) -> bytes:
    bad = int.from_bytes(BAD_SRC, "little")     # a u32 load of the address, little-endian
    return assemble(f"""
        r6 = r1
        r2 = *(u32 *)(r6 +76)
        r3 = *(u32 *)(r6 +80)
        r0 = 1
        r4 = r2
        r4 += 24
        if r4 > r3 goto pc+19
        r7 = *(u8 *)(r2 +9)
        r8 = *(u32 *)(r2 +12)
        r9 = *(u16 *)(r2 +22)
        if r7 != 17 goto pc+2
        if r8 == {bad:#x} goto pc+3
        goto pc+13
        if r7 != 6 goto pc+12
        if r9 != {TELNET << 8} goto pc+11
        r1 = 0
        *(u32 *)(r10 -4) = r1
        r2 = r10
        r2 += -4
        r1 = map[id:{map_fd}]
        call bpf_map_lookup_elem#1
        if r0 == 0x0 goto pc+2
        r1 = 1
        lock *(u64 *)(r0 +0) += r1
        r0 = 0
        exit
    """)


def ip(proto: int, src: bytes, dport: int) -> bytes:
    hdr = bytes([0x45, 0]) + (24).to_bytes(2, "big") + bytes(4) + bytes([64, proto]) + bytes(2)
    return hdr + src + bytes([10, 0, 0, 1]) + (1234).to_bytes(2, "big") + dport.to_bytes(2, "big")


def run(kern: Kernel | None = None) -> dict:
    kern = kern or Kernel()
    kern.world.cgroup.mkdir(CG)
    cg = kern.open(CG, os.O_RDONLY | os.O_DIRECTORY)
    denied = calls.map_create(kern, MapType.ARRAY, 4, 8, 1, name="denied")
    prog = calls.prog_load(kern, ProgType.CGROUP_SKB, policy(denied), name="policy",
                           expected_attach_type=AttachType.CGROUP_INET_INGRESS)
    calls.prog_attach(kern, prog, cg, AttachType.CGROUP_INET_INGRESS, AttachFlags.ALLOW_MULTI)
    packets = [ip(17, BAD_SRC, 53), ip(17, bytes([10, 0, 0, 7]), 53), ip(6, bytes([10, 0, 0, 7]), TELNET),
               ip(6, bytes([10, 0, 0, 7]), 22)]
    allowed = [kern.world.cgroup_skb(CG, "ingress", p) for p in packets]
    n = int.from_bytes(calls.map_lookup_elem(kern, denied, bytes(4), 8), "little")
    calls.prog_detach(kern, prog, cg, AttachType.CGROUP_INET_INGRESS)
    for fd in (prog, denied, cg):
        kern.close(fd)
    kern.world.cgroup.rmdir(CG)
    return {"allowed": allowed, "denied": n}


def main() -> int:
    r = run()
    assert r == {"allowed": [False, True, False, True], "denied": 2}, r
    print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
