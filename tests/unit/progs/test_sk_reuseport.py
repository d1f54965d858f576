"""fakekernel/net/sock_reuseport.py and the SK_REUSEPORT run (helpers/reuseport.py) on the fake
kernel alone: groups form and dissolve with hashing, programs are held by the group (and
released with it), the selection follows sk_select_reuseport, SK_DROP refuses, a socket filter
indexes the group, and a group without a program spreads by hash."""
from __future__ import annotations

import socket

from fakekernel.net.rx import netif_receive
from fakekernel.net.sock_reuseport import SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_B, BPF_DW, BPF_JEQ, BPF_JGT, SK_DROP, SK_PASS, FuncId, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG, BPF_LD_MAP_FD,
                       BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM, assemble_insns)

LO = "127.0.0.1"
SOL = socket.SOL_SOCKET
PORT = 5555


def sk_of(kernel, fd):
    return kernel.current.files.fdget(fd).private_data


def udp(kernel, port=PORT, reuseport=True, bind=True) -> int:
    fd = kernel.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        assert kernel.setsockopt(fd, SOL, socket.SO_REUSEPORT, 1) == 0
    if bind:
        assert kernel.bind(fd, (LO, port)) == 0
    return fd


def prog(kernel, insns, ptype=ProgType.SK_REUSEPORT) -> int:
    return calls.prog_load(kernel, ptype, assemble_insns(insns))


def send(kernel, payload: bytes, port=PORT) -> None:
    lo = bytes([127, 0, 0, 1])
    ip = bytes([0x45, 0]) + (28 + len(payload)).to_bytes(2, "big") + bytes([0, 0, 0x40, 0, 64, 17, 0, 0]) + lo + lo
    udp_hdr = (40000).to_bytes(2, "big") + port.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    netif_receive(kernel, 1, bytes(12) + b"\x08\x00" + ip + udp_hdr + payload)


def got(kernel, fd) -> int:
    q = sk_of(kernel, fd).rx_entry.queue
    n = len(q)
    q.clear()
    return n


def attach(kernel, fd, p):
    return kernel.setsockopt(fd, SOL, SO_ATTACH_REUSEPORT_EBPF, p.to_bytes(4, "little"))


def test_group_forms_on_bind_and_dissolves_on_close(kernel):
    a, b_ = udp(kernel), udp(kernel)
    other = udp(kernel, port=PORT + 1)
    ga, gb = sk_of(kernel, a).reuseport_cb, sk_of(kernel, b_).reuseport_cb
    assert ga is gb and ga.socks == [sk_of(kernel, a), sk_of(kernel, b_)]
    assert sk_of(kernel, other).reuseport_cb is not ga
    kernel.close(a)
    assert ga.socks == [sk_of(kernel, b_)]
    kernel.close(b_)
    kernel.close(other)


def test_program_is_held_by_the_group_and_released_with_it(kernel):
    a = udp(kernel)
    p = prog(kernel, [BPF_MOV64_IMM(0, SK_PASS), BPF_EXIT_INSN()])
    assert attach(kernel, a, p) == 0
    kernel.close(p)
    assert len(kernel.live_objects()["progs"]) == 1           # the group keeps it
    kernel.close(a)
    assert kernel.live_objects()["progs"] == []


def test_detach_errnos(kernel):
    plain = udp(kernel, reuseport=False, bind=False)
    a = udp(kernel)
    assert kernel.setsockopt(plain, SOL, SO_DETACH_REUSEPORT_BPF, 0) == -Errno.EINVAL
    assert kernel.setsockopt(a, SOL, SO_DETACH_REUSEPORT_BPF, 0) == -Errno.ENOENT
    p = prog(kernel, [BPF_MOV64_IMM(0, SK_PASS), BPF_EXIT_INSN()])
    assert attach(kernel, a, p) == 0
    assert kernel.setsockopt(a, SOL, SO_DETACH_REUSEPORT_BPF, 0) == 0
    assert kernel.setsockopt(a, SOL, SO_DETACH_REUSEPORT_BPF, 0) == -Errno.ENOENT
    for fd in (plain, a, p):
        kernel.close(fd)


def _select_first_byte(kernel, m):
    data = ffi.offsetof("struct sk_reuseport_md", "data")
    data_end = ffi.offsetof("struct sk_reuseport_md", "data_end")
    return prog(kernel, [
        BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_DW, 2, 6, data), BPF_LDX_MEM(BPF_DW, 3, 6, data_end),
        BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 9), BPF_JMP_REG(BPF_JGT, 4, 3, 12),
        BPF_LDX_MEM(BPF_B, 7, 2, 8), BPF_STX_MEM(BPF_DW, 10, 7, -8),
        BPF_MOV64_REG(1, 6), *BPF_LD_MAP_FD(2, m), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8),
        BPF_MOV64_IMM(4, 0), BPF_CALL_HELPER(FuncId.sk_select_reuseport),
        BPF_MOV64_REG(1, 0), BPF_MOV64_IMM(0, SK_PASS), BPF_JMP_IMM(BPF_JEQ, 1, 0, 1),
        BPF_MOV64_IMM(0, SK_DROP), BPF_EXIT_INSN()])


def test_sk_select_reuseport_picks_and_drop_refuses(kernel):
    a, b_ = udp(kernel), udp(kernel)
    m = calls.map_create(kernel, MapType.REUSEPORT_SOCKARRAY, 4, 8, 2)
    calls.map_update_elem(kernel, m, (0).to_bytes(4, "little"), b_.to_bytes(8, "little"))
    calls.map_update_elem(kernel, m, (1).to_bytes(4, "little"), a.to_bytes(8, "little"))
    p = _select_first_byte(kernel, m)
    assert attach(kernel, b_, p) == 0
    send(kernel, b"\x00")
    send(kernel, b"\x01")
    send(kernel, b"\x01")
    send(kernel, b"\x07")                 # no slot 7: ENOENT, the program drops
    assert (got(kernel, a), got(kernel, b_)) == (2, 1)
    for fd in (a, b_, m, p):
        kernel.close(fd)


def test_socket_filter_return_value_indexes_the_group(kernel):
    socks = [udp(kernel) for _ in range(3)]
    sf = prog(kernel, [BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN()], ProgType.SOCKET_FILTER)
    assert attach(kernel, socks[0], sf) == 0
    send(kernel, b"x")
    assert [got(kernel, fd) for fd in socks] == [0, 0, 1]
    for fd in socks + [sf]:
        kernel.close(fd)


def test_without_program_the_hash_spreads_over_the_group(kernel):
    socks = [udp(kernel) for _ in range(2)]
    for port in range(100):
        lo = bytes([127, 0, 0, 1])
        ip = bytes([0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0]) + lo + lo
        udp_hdr = (30000 + port).to_bytes(2, "big") + PORT.to_bytes(2, "big") + (9).to_bytes(2, "big") + bytes(2)
        netif_receive(kernel, 1, bytes(12) + b"\x08\x00" + ip + udp_hdr + b"z")
    counts = [got(kernel, fd) for fd in socks]
    assert sum(counts) == 100 and min(counts) > 0
    for fd in socks:
        kernel.close(fd)
