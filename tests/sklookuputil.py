"""Sockets and tuples the socket-lookup helper tests share (tests/differential/
test_helpers_sk_lookup_family.py, test_helpers_syncookies.py, test_helpers_sk_cgroup.py): the same
loopback sockets are made on both kernels, the real one inside a fresh network namespace."""
from __future__ import annotations

import ipaddress
import socket

from uapi import calls
from uapi.bpf import MapType

__all__ = ["TUPLE", "LPORT", "WPORT", "V6PORT", "UPORT", "UWPORT", "UCPORT", "LO4", "LO6", "tuple4", "tuple6",
           "setup_sockets", "run_r0"]

TUPLE = 40
LPORT, WPORT, V6PORT, UPORT, UWPORT, UCPORT = 5001, 5002, 5003, 5101, 5102, 5103
LO4, LO6 = "127.0.0.1", "::1"


def tuple4(saddr, sport, daddr, dport):
    return (ipaddress.ip_address(saddr).packed + ipaddress.ip_address(daddr).packed
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


def tuple6(saddr, sport, daddr, dport):
    return tuple4(saddr, sport, daddr, dport)


def setup_sockets(b):
    """The sockets both kernels get; returns (ephemeral client port, fds to close)."""
    fds = []

    def sock(family, type_):
        fd = b.socket(family, type_)
        assert fd >= 0
        fds.append(fd)
        return fd
    lst = sock(socket.AF_INET, socket.SOCK_STREAM)
    assert b.bind(lst, (LO4, LPORT)) == 0 and b.listen(lst) == 0
    wild = sock(socket.AF_INET, socket.SOCK_STREAM)
    assert b.bind(wild, ("0.0.0.0", WPORT)) == 0 and b.listen(wild) == 0
    v6 = sock(socket.AF_INET6, socket.SOCK_STREAM)
    assert b.bind(v6, ("::", V6PORT)) == 0 and b.listen(v6) == 0
    cli = sock(socket.AF_INET, socket.SOCK_STREAM)
    assert b.connect(cli, (LO4, LPORT)) == 0
    srv = b.accept(lst)
    assert srv >= 0
    fds.append(srv)
    u = sock(socket.AF_INET, socket.SOCK_DGRAM)
    assert b.bind(u, (LO4, UPORT)) == 0
    uw = sock(socket.AF_INET6, socket.SOCK_DGRAM)
    assert b.bind(uw, ("::", UWPORT)) == 0
    uc = sock(socket.AF_INET, socket.SOCK_DGRAM)
    assert b.bind(uc, (LO4, UCPORT)) == 0 and b.connect(uc, (LO4, 7777)) == 0
    eph = b.getsockname(cli)[1]
    return eph, fds


def run_r0(b, prog_type, insns_of, data=bytes(12) + b"\x08\x00" + bytes(50)):
    """Load insns_of(map fd) (GPL), test-run it on `data`: (run ret, map[0] as u64), or ("load", errno, log)."""
    from uapi.insn import assemble_insns
    mfd = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
    r = calls.prog_load(b, prog_type, assemble_insns(insns_of(mfd)), b"GPL", strict=False, log_level=1,
                        log_size=1 << 16)
    if r.ret < 0:
        b.close(mfd)
        return ("load", r.ret, r.log[-200:])
    t = calls.prog_test_run(b, r.ret, data, strict=False)
    val = int.from_bytes(calls.map_lookup_elem(b, mfd, bytes(4), 8), "little")
    b.close(r.ret)
    b.close(mfd)
    return t.ret, val
