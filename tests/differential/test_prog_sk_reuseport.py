"""BPF_PROG_TYPE_SK_REUSEPORT, fakekernel vs the real kernel: the sk_reuseport_md access matrix
(both expected attach types), the helper set, sk_select_reuseport's map types, PROG_TEST_RUN
(ENOTSUPP), SO_ATTACH_REUSEPORT_EBPF / SO_DETACH_REUSEPORT_BPF errnos, and the selection itself:
UDP datagrams to a SO_REUSEPORT group on lo (the real kernel's sockets vs frames received on
the fake's lo) and TCP connections to a group of listeners, each landing on the socket the
program picked from a REUSEPORT_SOCKARRAY / SOCKMAP / SOCKHASH, or dropped."""
from __future__ import annotations

import os
import select
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from differential.test_prog_lwt import access_matrix, load, loaded, ret, tr, verdict
from uapi import calls
from uapi.bpf import (BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_H, BPF_JEQ, BPF_JGT, BPF_JNE, BPF_W, SK_DROP, SK_PASS,
                      AttachType, BpfCmd, FuncId, MapType, ProgType)
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG, BPF_LD_MAP_FD,
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

SR = ProgType.SK_REUSEPORT
MD = "struct sk_reuseport_md"
MD_SIZE = ffi.sizeof(MD)
EATS = (AttachType.SK_REUSEPORT_SELECT, AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE)
SOL_SOCKET = socket.SOL_SOCKET
SO_REUSEPORT = socket.SO_REUSEPORT
SO_ATTACH_REUSEPORT_EBPF = 52
SO_DETACH_REUSEPORT_BPF = 68


def M(field):
    return ffi.offsetof(MD, field)


@pytest.mark.parametrize("eat", EATS, ids=[e.name for e in EATS])
def test_sk_reuseport_ctx_access_matrix_matches_kernel(both, eat):
    fake, host = both
    f, h = access_matrix(fake, SR, MD_SIZE, eat), access_matrix(host, SR, MD_SIZE, eat)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


@pytest.mark.parametrize("eat", EATS, ids=[e.name for e in EATS])
def test_sk_reuseport_helper_set_matches_kernel(both, eat):
    from differential.test_prog_load_verifier import _helper_verdicts
    fake, host = both
    f, h = _helper_verdicts(fake, SR, eat), _helper_verdicts(host, SR, eat)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


@pytest.mark.parametrize("eat", [0, *EATS, AttachType.CGROUP_INET_INGRESS, AttachType.SK_LOOKUP])
def test_sk_reuseport_expected_attach_type(both, eat):
    fake, host = both
    assert verdict(fake, SR, ret(SK_PASS), eat) == verdict(host, SR, ret(SK_PASS), eat)


SELECT_ANY = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), BPF_MOV64_REG(1, 6), None,
              BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -4), BPF_MOV64_IMM(4, 0),
              BPF_CALL_HELPER(FuncId.sk_select_reuseport)] + ret(SK_PASS)
MAP_KINDS = {"reuseport_array": (MapType.REUSEPORT_SOCKARRAY, 4, 8), "sockmap": (MapType.SOCKMAP, 4, 8),
             "sockhash": (MapType.SOCKHASH, 4, 8), "array": (MapType.ARRAY, 4, 8),
             "hash": (MapType.HASH, 4, 8)}


@pytest.mark.parametrize("kind", sorted(MAP_KINDS))
def test_sk_reuseport_select_map_types(both, kind):
    def scenario(b):
        m = calls.map_create(b, *MAP_KINDS[kind], 4)
        insns = [BPF_LD_MAP_FD(2, m) if i is None else i for i in SELECT_ANY]
        out = verdict(b, SR, insns)
        b.close(m)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


LOADS = {
    "drop": ret(SK_DROP), "pass": ret(SK_PASS), "ret2": ret(2),
    "sk_bpf_sock_family": [BPF_LDX_MEM(BPF_DW, 2, 1, M("sk")), BPF_LDX_MEM(BPF_W, 0, 2, 4), BPF_EXIT_INSN()],
    "migrating_sk_unchecked": [BPF_LDX_MEM(BPF_DW, 2, 1, M("migrating_sk")), BPF_LDX_MEM(BPF_W, 0, 2, 4),
                               BPF_EXIT_INSN()],
    "migrating_sk_checked": [BPF_LDX_MEM(BPF_DW, 2, 1, M("migrating_sk")), BPF_MOV64_IMM(0, 0),
                             BPF_JMP_IMM(BPF_JEQ, 2, 0, 1), BPF_LDX_MEM(BPF_W, 0, 2, 4), BPF_EXIT_INSN()],
    "packet_read": [BPF_LDX_MEM(BPF_DW, 2, 1, M("data")), BPF_LDX_MEM(BPF_DW, 3, 1, M("data_end")),
                    BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_MOV64_IMM(0, 1),
                    BPF_JMP_REG(BPF_JGT, 4, 3, 1), BPF_LDX_MEM(BPF_B, 0, 2, 0), BPF_EXIT_INSN()],
    "packet_write": [BPF_LDX_MEM(BPF_DW, 2, 1, M("data")), BPF_LDX_MEM(BPF_DW, 3, 1, M("data_end")),
                     BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 1), BPF_JMP_REG(BPF_JGT, 4, 3, 1),
                     BPF_ST_MEM(BPF_B, 2, 0, 1)] + ret(SK_PASS),
    "cookie_of_sk": [BPF_LDX_MEM(BPF_DW, 1, 1, M("sk")), BPF_CALL_HELPER(FuncId.get_socket_cookie)]
    + ret(SK_PASS),
    "load_bytes": [BPF_MOV64_IMM(2, 0), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -8),
                   BPF_MOV64_IMM(4, 8), BPF_CALL_HELPER(FuncId.skb_load_bytes)] + ret(SK_PASS),
}


@pytest.mark.parametrize("name", sorted(LOADS))
def test_sk_reuseport_load_rules(both, name):
    fake, host = both
    assert verdict(fake, SR, LOADS[name]) == verdict(host, SR, LOADS[name])


def test_sk_reuseport_test_run_enotsupp(both):
    def scenario(b):
        fd = loaded(b, SR, ret(SK_PASS))
        out = tr(b, fd, bytes(64))
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
    assert scenario(fake)[0] == -Errno.ENOTSUPP


# ---------------------------------------------------------------- SO_ATTACH_REUSEPORT_EBPF

def _sock(b, kind=socket.SOCK_DGRAM, family=socket.AF_INET, reuseport=True, bind=True, port=0):
    fd = b.socket(family, kind)
    if reuseport:
        assert b.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) == 0
    if bind:
        assert b.bind(fd, ("127.0.0.1" if family == socket.AF_INET else "::1", port)) == 0
    return fd


def attach(b, fd, prog_fd, value=None):
    return b.setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF,
                        prog_fd.to_bytes(4, "little") if value is None else value)


def detach(b, fd, value=b"\0\0\0\0"):
    return b.setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, value)


def test_so_attach_reuseport_ebpf_errnos(both):
    def scenario(b):
        mark = len(b.fds)
        p = loaded(b, SR, ret(SK_PASS))
        sf = loaded(b, ProgType.SOCKET_FILTER, ret(0))
        xdp = loaded(b, ProgType.XDP, ret(2))
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        plain = _sock(b, reuseport=False, bind=False)
        rp_unbound = _sock(b, bind=False)
        bound_plain = _sock(b, reuseport=False)
        tcp = _sock(b, socket.SOCK_STREAM)
        unix = b.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw_fd = b.socket(socket.AF_INET, socket.SOCK_RAW, 255)
        out = {
            "detach_plain": detach(b, plain), "detach_rp_unbound": detach(b, rp_unbound),
            "detach_short": detach(b, rp_unbound, b"\0\0"),
            "plain": attach(b, plain, p), "bad_fd": attach(b, rp_unbound, 999),
            "map_fd": attach(b, rp_unbound, m), "xdp": attach(b, rp_unbound, xdp),
            "short": attach(b, rp_unbound, p, b"\0\0"), "long": attach(b, rp_unbound, p, bytes(8)),
            "bound_plain": attach(b, bound_plain, p), "unix": attach(b, unix, p),
            "raw": attach(b, raw_fd, p),
            "rp_unbound": attach(b, rp_unbound, p), "rp_unbound_again": attach(b, rp_unbound, sf),
            "detach_after": detach(b, rp_unbound), "detach_twice": detach(b, rp_unbound),
            "tcp_bound_not_listening": attach(b, tcp, p),
        }
        b.listen(tcp)
        out["tcp_listening"] = attach(b, tcp, p)
        out["tcp_detach"] = detach(b, tcp)
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


# ---------------------------------------------------------------- selection

def free_port(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def select_prog(b, sockmap, stats, rets, key_at=8, key_size=1, mask=0xFF):
    """key = the packet byte at `key_at` & mask (UDP: the first payload byte; TCP: the low byte
    of the source port at 1); stats[0] = (len, eth_protocol, ip_protocol, bind_inany);
    rets[key] = sk_select_reuseport's result; SK_PASS if it selected, else SK_DROP (key 0xEE:
    SK_PASS without a selection)."""
    insns = [
        BPF_MOV64_REG(6, 1),
        BPF_LDX_MEM(BPF_DW, 2, 6, M("data")), BPF_LDX_MEM(BPF_DW, 3, 6, M("data_end")),
        BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, key_at + key_size), BPF_JMP_REG(BPF_JGT, 4, 3, 38),
        BPF_LDX_MEM(BPF_B, 7, 2, key_at), BPF_ALU64_IMM(BPF_AND, 7, mask),
        BPF_STX_MEM(BPF_W, 10, 7, -4),
        # stats
        BPF_ST_MEM(BPF_W, 10, -8, 0), BPF_LD_MAP_FD(1, stats), BPF_MOV64_REG(2, 10),
        BPF_ALU64_IMM(BPF_ADD, 2, -8), BPF_CALL_HELPER(FuncId.map_lookup_elem),
        BPF_JMP_IMM(BPF_JEQ, 0, 0, 8),
        BPF_LDX_MEM(BPF_W, 2, 6, M("len")), BPF_STX_MEM(BPF_W, 0, 2, 0),
        BPF_LDX_MEM(BPF_H, 2, 6, M("eth_protocol")), BPF_STX_MEM(BPF_W, 0, 2, 4),
        BPF_LDX_MEM(BPF_W, 2, 6, M("ip_protocol")), BPF_STX_MEM(BPF_W, 0, 2, 8),
        BPF_LDX_MEM(BPF_B, 2, 6, M("bind_inany")), BPF_STX_MEM(BPF_W, 0, 2, 12),
        BPF_JMP_IMM(BPF_JEQ, 7, 0xEE, 19),
        # select
        BPF_MOV64_REG(1, 6), BPF_LD_MAP_FD(2, sockmap), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -4),
        BPF_MOV64_IMM(4, 0), BPF_CALL_HELPER(FuncId.sk_select_reuseport), BPF_MOV64_REG(8, 0),
        # rets[key] = r0
        BPF_LD_MAP_FD(1, rets), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
        BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1), BPF_STX_MEM(BPF_DW, 0, 8, 0),
        BPF_MOV64_IMM(0, SK_DROP), BPF_JMP_IMM(BPF_JNE, 8, 0, 1), BPF_MOV64_IMM(0, SK_PASS),
        BPF_EXIT_INSN(),
        BPF_MOV64_IMM(0, SK_PASS), BPF_EXIT_INSN(),
    ]
    return loaded(b, SR, insns)


def udp_send(b, port: int, payload: bytes) -> None:
    if hasattr(b, "kern"):
        from fakekernel.net.rx import netif_receive
        lo = bytes([127, 0, 0, 1])
        ip = bytes([0x45, 0]) + (28 + len(payload)).to_bytes(2, "big") + bytes([0, 0, 0x40, 0, 64, 17, 0, 0]) + lo + lo
        udp = (40000).to_bytes(2, "big") + port.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
        netif_receive(b.kern, 1, bytes(12) + b"\x08\x00" + ip + udp + payload)
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, ("127.0.0.1", port))


def udp_received(b, fd) -> list[bytes]:
    if hasattr(b, "kern"):
        sk = b.kern.current.files.fdget(fd).private_data
        out = [bytes(p[28:]) for p in sk.rx_entry.queue]
        sk.rx_entry.queue.clear()
        return out
    s = socket.socket(fileno=os.dup(fd))
    out = []
    try:
        while select.select([s], [], [], 0.05)[0]:
            out.append(s.recv(2048))
    finally:
        s.close()
    return out


def _map_of(b, kind: str, socks: list[int]) -> int:
    map_type = {"reuseport_array": MapType.REUSEPORT_SOCKARRAY, "sockmap": MapType.SOCKMAP,
                "sockhash": MapType.SOCKHASH}[kind]
    m = calls.map_create(b, map_type, 4, 8 if map_type == MapType.REUSEPORT_SOCKARRAY else 4, 8)
    for i, fd in enumerate(socks):
        calls.map_update_elem(b, m, i.to_bytes(4, "little"),
                              fd.to_bytes(8 if map_type == MapType.REUSEPORT_SOCKARRAY else 4, "little"))
    return m


def _lookup_all(b, m, n, size):
    return [bytes(calls.map_lookup_elem(b, m, i.to_bytes(4, "little"), size)) for i in range(n)]


@pytest.mark.parametrize("kind", ["reuseport_array", "sockmap", "sockhash"])
def test_sk_reuseport_selects_udp_socket(both, kind):
    port = free_port(socket.SOCK_DGRAM)

    def scenario(b):
        mark = len(b.fds)
        group = [_sock(b, port=port) for _ in range(3)]
        other = _sock(b, port=0)                     # not in the group: EBADFD from the helper
        m = _map_of(b, kind, group + [other])
        stats = calls.map_create(b, MapType.ARRAY, 4, 16, 1)
        rets = calls.map_create(b, MapType.ARRAY, 4, 8, 256)
        p = select_prog(b, m, stats, rets)
        out = [attach(b, group[1], p)]
        payloads = [b"\x00a", b"\x01b", b"\x02c", b"\x00d", b"\x03e", b"\x05f", b"\x02g"]
        for pl in payloads:
            udp_send(b, port, pl)
        out.append([udp_received(b, fd) for fd in group + [other]])
        out.append(_lookup_all(b, stats, 1, 16))
        out.append({k: calls.map_lookup_elem(b, rets, bytes([k, 0, 0, 0]), 8) for k in range(6)})
        out.append(detach(b, group[2]))
        udp_send(b, port, b"\x01h")                  # no program: the hash picks one
        out.append(sum(len(udp_received(b, fd)) for fd in group))
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_sk_reuseport_udp_drop_and_pass_without_selection(both):
    port = free_port(socket.SOCK_DGRAM)

    def scenario(b):
        mark = len(b.fds)
        only = _sock(b, port=port)                   # a group of one: the hash fallback is determined
        m = _map_of(b, "reuseport_array", [only])
        stats = calls.map_create(b, MapType.ARRAY, 4, 16, 1)
        rets = calls.map_create(b, MapType.ARRAY, 4, 8, 256)
        p = select_prog(b, m, stats, rets)
        out = [attach(b, only, p)]
        for pl in (b"\xee1", b"\x07x", b"\x00y", b""):
            udp_send(b, port, pl)
        out.append(udp_received(b, only))
        out.append(calls.map_lookup_elem(b, rets, bytes([7, 0, 0, 0]), 8))
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def test_sk_reuseport_attach_before_bind_keeps_program(both):
    """A program attached to the first socket before bind stays with the group it founds."""
    port = free_port(socket.SOCK_DGRAM)

    def scenario(b):
        mark = len(b.fds)
        first = _sock(b, bind=False)
        m = calls.map_create(b, MapType.REUSEPORT_SOCKARRAY, 4, 8, 4)
        stats = calls.map_create(b, MapType.ARRAY, 4, 16, 1)
        rets = calls.map_create(b, MapType.ARRAY, 4, 8, 256)
        p = select_prog(b, m, stats, rets)
        out = [attach(b, first, p), b.bind(first, ("127.0.0.1", port))]
        second = _sock(b, port=port)
        calls.map_update_elem(b, m, (0).to_bytes(4, "little"), second.to_bytes(8, "little"))
        calls.map_update_elem(b, m, (1).to_bytes(4, "little"), first.to_bytes(8, "little"))
        for pl in (b"\x00a", b"\x01b", b"\x00c"):
            udp_send(b, port, pl)
        out.append([udp_received(b, fd) for fd in (first, second)])
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


def tcp_connect_from(b, sport: int, port: int, family=socket.AF_INET) -> int:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    c = b.socket(family, socket.SOCK_STREAM)
    assert b.setsockopt(c, SOL_SOCKET, socket.SO_REUSEADDR, 1) == 0
    assert b.bind(c, (host, sport)) == 0
    return c, b.connect(c, (host, port))


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_sk_reuseport_selects_tcp_listener(both, family):
    port = free_port(socket.SOCK_STREAM)
    sports = [free_port(socket.SOCK_STREAM) for _ in range(12)]

    def scenario(b):
        mark = len(b.fds)
        group = []
        for _ in range(2):
            fd = _sock(b, socket.SOCK_STREAM, family, port=port)
            b.listen(fd)
            group.append(fd)
        m = calls.map_create(b, MapType.REUSEPORT_SOCKARRAY, 4, 8, 4)
        for key, fd in ((0, group[0]), (2, group[1])):
            calls.map_update_elem(b, m, key.to_bytes(4, "little"), fd.to_bytes(8, "little"))
        stats = calls.map_create(b, MapType.ARRAY, 4, 16, 1)
        rets = calls.map_create(b, MapType.ARRAY, 4, 8, 256)
        # key: bit 1 of the source port (bind() hands out odd ports); once slot 2 is emptied,
        # those ports are refused
        p = select_prog(b, m, stats, rets, key_at=1, mask=2)
        out = [attach(b, group[0], p)]
        results = []
        for i, sp in enumerate(sports):
            if i == len(sports) // 2:
                out.append(calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=(2).to_bytes(4, "little"))[0])
            c, r = tcp_connect_from(b, sp, port, family)
            results.append((sp & 2, r))
        accepted = []
        for fd in group:
            n = 0
            while True:
                a = b.accept(fd)
                if a < 0:
                    break
                n += 1
            accepted.append(n)
        st = _lookup_all(b, stats, 1, 16)[0]
        out += [results, accepted, st,
                [calls.map_lookup_elem(b, rets, bytes([k, 0, 0, 0]), 8) for k in (0, 2)]]
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(slots=st.lists(st.sampled_from([0, 1, 2, None]), min_size=1, max_size=4),
       keys=st.lists(st.integers(0, 5), min_size=1, max_size=8), attach_to=st.integers(0, 2))
def test_sk_reuseport_random_slots_and_datagrams_same_on_both(both, slots, keys, attach_to):
    """Any filling of the sockarray (slot i -> group member or empty) and any datagram keys:
    the same sockets receive the same datagrams on both kernels."""
    port = free_port(socket.SOCK_DGRAM)

    def scenario(b):
        mark = len(b.fds)
        group = [_sock(b, port=port) for _ in range(3)]
        m = calls.map_create(b, MapType.REUSEPORT_SOCKARRAY, 4, 8, 8)
        out = [calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=i.to_bytes(4, "little"),
                         value=group[member].to_bytes(8, "little"))[0]     # EBUSY: a socket is in one slot
               for i, member in enumerate(slots) if member is not None]
        stats = calls.map_create(b, MapType.ARRAY, 4, 16, 1)
        rets = calls.map_create(b, MapType.ARRAY, 4, 8, 256)
        p = select_prog(b, m, stats, rets)
        out.append(attach(b, group[attach_to], p))
        for n, k in enumerate(keys):
            udp_send(b, port, bytes([k, n]))
        out.append([udp_received(b, fd) for fd in group])
        for fd in b.fds[mark:]:
            b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
