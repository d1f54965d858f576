"""XDP on lo: count packets per IP protocol in an ARRAY map, drop UDP to port 9 (discard).

Raw bpf() only: MAP_CREATE, PROG_LOAD of kernel-syntax assembly, LINK_CREATE(BPF_XDP) on
ifindex 1, then frames received on lo from Python, then MAP_LOOKUP_ELEM for the counts.
Run: python3 examples/xdp_counter.py  (or python3 -m fakekernel.examples.xdp_counter)
"""
from __future__ import annotations

from fakekernel import Kernel
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import AttachType, MapType, ProgType, XdpAction

LO = 1
IPPROTO_TCP, IPPROTO_UDP = 6, 17
DISCARD_PORT = 9


def xdp_program(map_fd: int) -> bytes:
    # data/data_end from xdp_md; proto at eth(14)+9, UDP dport at eth(14)+ip(20)+2
    return assemble(f"""
        r2 = *(u32 *)(r1 +0)
        r3 = *(u32 *)(r1 +4)
        r0 = {XdpAction.PASS}
        r4 = r2
        r4 += 38
        if r4 > r3 goto pc+14
        r6 = *(u8 *)(r2 +23)
        r7 = *(u16 *)(r2 +36)
        *(u32 *)(r10 -4) = r6
        r2 = r10
        r2 += -4
        r1 = map[id:{map_fd}]
        call bpf_map_lookup_elem#1
        if r0 == 0x0 goto pc+2
        r1 = 1
        lock *(u64 *)(r0 +0) += r1
        r0 = {XdpAction.PASS}
        if r6 != {IPPROTO_UDP} goto pc+2
        if r7 != {DISCARD_PORT << 8} goto pc+1
        r0 = {XdpAction.DROP}
        exit
    """)


def frame(proto: int, dport: int) -> bytes:
    eth = bytes(12) + (0x0800).to_bytes(2, "big")
    ip = bytes([0x45, 0]) + (28).to_bytes(2, "big") + bytes(4) + bytes([64, proto]) + bytes(2) \
        + bytes([127, 0, 0, 1]) * 2
    return eth + ip + (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(4)


def run(kern: Kernel | None = None) -> dict:
    kern = kern or Kernel()
    counts = calls.map_create(kern, MapType.ARRAY, 4, 8, 256, name="proto_count")
    prog = calls.prog_load(kern, ProgType.XDP, xdp_program(counts), name="xdp_counter")
    link = calls.link_create(kern, prog, LO, AttachType.XDP)
    traffic = [(IPPROTO_UDP, 53), (IPPROTO_UDP, DISCARD_PORT), (IPPROTO_TCP, 80),
               (IPPROTO_UDP, DISCARD_PORT), (IPPROTO_TCP, 443)]
    verdicts = [kern.world.net.receive(LO, frame(p, port)).action for p, port in traffic]
    result = {
        "verdicts": [XdpAction(v).name for v in verdicts],
        "udp": int.from_bytes(calls.map_lookup_elem(kern, counts, IPPROTO_UDP.to_bytes(4, "little"), 8), "little"),
        "tcp": int.from_bytes(calls.map_lookup_elem(kern, counts, IPPROTO_TCP.to_bytes(4, "little"), 8), "little"),
    }
    for fd in (link, prog, counts):
        kern.close(fd)
    assert not kern.world.attached_objects(), "closing the link detaches the program"
    return result


def main() -> int:
    r = run()
    assert r["verdicts"] == ["PASS", "DROP", "PASS", "DROP", "PASS"], r
    assert r["udp"] == 3 and r["tcp"] == 2, r
    print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
