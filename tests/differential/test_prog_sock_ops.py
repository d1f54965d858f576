"""SOCK_OPS programs FIRING, fakekernel vs the real kernel: a process in a scratch cgroup listens
and connects over loopback while a program pushes one record per callback into a queue map —
the op, full-socket flag, state, family, ports, cb flags, the segment's length and TCP flags,
``sk`` (NULL or its family), bpf_sock_ops_cb_flags_set() and bpf_getsockopt() results.
Ports are compared as "the listener's" / "another"; TCP counters are not compared.
"""
from __future__ import annotations

import socket

import pytest

from differential.test_prog_cgroup_sock_hooks import Scratch, free_ports, ret
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_W, AttachType as A, FuncId, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

SO = "struct bpf_sock_ops"
FIELDS = ["op", "is_fullsock", "state", "family", "local_port", "remote_port", ("args", 0),
          "bpf_sock_ops_cb_flags", "skb_len", "skb_tcp_flags"]
NREC = 16
SOL_SOCKET, SO_REUSEADDR = 1, 2


def O(f):
    return ffi.offsetof(SO, *((f,) if isinstance(f, str) else f))


def recorder(q, family=socket.AF_INET):
    body = [BPF_MOV64_REG(6, 1)] + [BPF_ST_MEM(BPF_DW, 10, -64 + 8 * i, 0) for i in range(8)]
    ips = ["local_ip4", "remote_ip4"] if family == socket.AF_INET else [("local_ip6", 3), ("remote_ip6", 3)]
    for i, f in list(enumerate(FIELDS)) + [(14, ips[0]), (15, ips[1])]:
        body += [BPF_LDX_MEM(BPF_W, 2, 6, O(f)), BPF_STX_MEM(BPF_W, 10, 2, -64 + 4 * i)]
    body += [BPF_LDX_MEM(BPF_DW, 2, 6, O("sk")), BPF_MOV64_IMM(3, -1), BPF_JMP_IMM(BPF_JEQ, 2, 0, 1),
             BPF_LDX_MEM(BPF_W, 3, 2, ffi.offsetof("struct bpf_sock", "family")),
             BPF_STX_MEM(BPF_W, 10, 3, -24),
             BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, 0x80), BPF_CALL_HELPER(FuncId.sock_ops_cb_flags_set),
             BPF_STX_MEM(BPF_W, 10, 0, -20),
             BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, SOL_SOCKET), BPF_MOV64_IMM(3, SO_REUSEADDR),
             BPF_MOV64_REG(4, 10), BPF_ALU64_IMM(BPF_ADD, 4, -12), BPF_MOV64_IMM(5, 4),
             BPF_CALL_HELPER(FuncId.getsockopt), BPF_STX_MEM(BPF_W, 10, 0, -16),
             *BPF_LD_MAP_FD(1, q), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -64), BPF_MOV64_IMM(3, 0),
             BPF_CALL_HELPER(FuncId.map_push_elem)]
    return body + ret(1)


def _drain(b, q):
    out = []
    while True:
        try:
            v = calls.map_lookup_and_delete_elem(b, q, None, 4 * NREC)
        except OSError:
            return out
        out.append([int.from_bytes(v[i * 4:i * 4 + 4], "little", signed=True) for i in range(NREC)])


def _norm(rec, port):
    rec = list(rec)
    rec[4] = "L" if rec[4] == port else "other" if rec[4] else 0
    rp = (rec[5] >> 16) & 0xFFFF
    rp = int.from_bytes(rp.to_bytes(2, "little"), "big")
    rec[5] = "L" if rp == port else "other" if rp else 0
    return rec


def scenario(b, port, refused=False, family=socket.AF_INET):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with Scratch(b) as cg:
        q = calls.map_create(b, MapType.QUEUE, 0, 4 * NREC, 64)
        cg.maps.append(q)
        cg.attach(ProgType.SOCK_OPS, A.CGROUP_SOCK_OPS, recorder(q, family), eat=0)

        def ops(o):
            r = []
            if not refused:
                lst = o.socket(family, socket.SOCK_STREAM)
                r += [o.bind(lst, (host, port)), o.listen(lst), o.listen(lst)]
            c = o.socket(family, socket.SOCK_STREAM)
            r.append(o.connect(c, (host, port)))
            return r
        res = cg.run(ops)
        return res, [_norm(r, port) for r in _drain(b, q)]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_sock_ops_callbacks_of_a_loopback_connection(both, family):
    port, = free_ports(1)
    fake, host = both
    f, h = scenario(fake, port, family=family), scenario(host, port, family=family)
    assert f == h
    ops = [r[0] for r in f[1]]
    assert ops == [11, 3, 2, 1, 6, 2, 1, 6, 4, 5]
    assert f[1][5][11] == -Errno.EINVAL and f[1][1][11] == 0x80


def test_sock_ops_refused_connect_runs_the_client_callbacks(both):
    """ECONNREFUSED: the SYN went out (connect, rwnd, timeout, ecn callbacks), nothing else."""
    port, = free_ports(1)
    fake, host = both
    f, h = scenario(fake, port, refused=True), scenario(host, port, refused=True)
    strip = [[r[:4] + r[5:] for r in x[1]] for x in (f, h)]    # the fake's failed socket has no port
    assert f[0] == h[0] == [-Errno.ECONNREFUSED]
    assert strip[0] == strip[1]


def _updater(q, m, helper):
    """key = op; r = bpf_sock_{map,hash}_update(ctx, m, &key, BPF_ANY); push (op, r)."""
    return [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_W, 2, 6, O("op")), BPF_STX_MEM(BPF_W, 10, 2, -4),
            BPF_ST_MEM(BPF_W, 10, -12, 0), BPF_STX_MEM(BPF_W, 10, 2, -16),
            BPF_MOV64_REG(1, 6), *BPF_LD_MAP_FD(2, m), BPF_MOV64_REG(3, 10), BPF_ALU64_IMM(BPF_ADD, 3, -4),
            BPF_MOV64_IMM(4, 0), BPF_CALL_HELPER(helper), BPF_STX_MEM(BPF_W, 10, 0, -12),
            *BPF_LD_MAP_FD(1, q), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -16), BPF_MOV64_IMM(3, 0),
            BPF_CALL_HELPER(FuncId.map_push_elem)] + ret(1)


@pytest.mark.parametrize("map_type,helper", [(MapType.SOCKMAP, FuncId.sock_map_update),
                                             (MapType.SOCKHASH, FuncId.sock_hash_update)], ids=["map", "hash"])
def test_sock_ops_adds_established_and_listening_sockets_to_a_socket_map(both, map_type, helper):
    """Only the listen and established callbacks may add their socket (others: EOPNOTSUPP);
    the keys present while the sockets live, and the records, match the kernel's."""
    port, = free_ports(1)

    def s(b):
        with Scratch(b) as cg:
            q = calls.map_create(b, MapType.QUEUE, 0, 8, 64)
            m = calls.map_create(b, map_type, 4, 8, 16)
            cg.maps += [q, m]
            cg.attach(ProgType.SOCK_OPS, A.CGROUP_SOCK_OPS, _updater(q, m, helper), eat=0)

            def ops(o):
                lst = o.socket(socket.AF_INET, socket.SOCK_STREAM)
                o.bind(lst, ("127.0.0.1", port))
                o.listen(lst)
                c = o.socket(socket.AF_INET, socket.SOCK_STREAM)
                o.connect(c, ("127.0.0.1", port))
                present = []
                for k in range(16):
                    try:
                        calls.map_lookup_elem(b, m, k.to_bytes(4, "little"), 8)   # the socket's cookie
                    except OSError:
                        continue
                    present.append(k)
                return present
            present = cg.run(ops)
            recs = []
            while True:
                try:
                    v = calls.map_lookup_and_delete_elem(b, q, None, 8)
                except OSError:
                    break
                recs.append((int.from_bytes(v[:4], "little"), int.from_bytes(v[4:], "little", signed=True)))
            return present, recs
    fake, host = both
    f, h = s(fake), s(host)
    assert f == h
    assert f[0] == [4, 5, 11] and (11, 0) in f[1] and any(r == -Errno.EOPNOTSUPP for _, r in f[1])
