"""cgroup/sock_addr programs FIRING, fakekernel vs the real kernel (harness in
test_prog_cgroup_sock_hooks.py): connect4/6 rewriting the destination or refusing, bind4
rewriting the port and getsockname4/getpeername4 rewriting the answer, set_retval's errno,
bpf_bind() from connect4, reads through ctx->sk and the wide user_ip6 loads,
bpf_setsockopt/bpf_getsockopt from a sock_addr program, and the AF_UNIX connect/getsockname
programs."""
from __future__ import annotations

import socket
import uuid

import pytest

from differential.test_prog_cgroup_sock_hooks import S, SAo, Scratch, be16, free_ports, ret, set_retval
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_JNE, BPF_RSH, BPF_W, AttachType as A, FuncId, ProgType
from uapi.errno import Errno
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

SOL_SOCKET, SO_MARK = 1, 36


def _rewrite_port(frm, to, verdict=1):
    return [BPF_LDX_MEM(BPF_W, 2, 1, SAo("user_port")), BPF_JMP_IMM(BPF_JNE, 2, be16(frm), 2),
            BPF_MOV64_IMM(2, be16(to)), BPF_STX_MEM(BPF_W, 1, 2, SAo("user_port"))] + ret(verdict)


def test_connect4_rewrites_destination_port(both):
    """connect(127.0.0.1:P1) reaches the listener on P2: the program rewrote the port."""
    p1, p2 = free_ports(2)

    def ops(o):
        lst = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = [o.bind(lst, ("127.0.0.1", p2)), o.listen(lst)]
        c = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r.append(o.connect(c, ("127.0.0.1", p1)))
        peer = o.getpeername(c)
        r.append(peer[1] - p2 if isinstance(peer, tuple) else peer)
        c2 = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r.append(o.connect(c2, ("127.0.0.1", p1 + 0)))
        return r
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, _rewrite_port(p1, p2))
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0][2] == 0 and out[0][3] == 0


@pytest.mark.parametrize("verdict", [0, 1])
def test_connect4_verdict(both, verdict):
    p1, = free_ports(1)

    def ops(o):
        u = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.connect(u, ("127.0.0.1", p1)), o.getpeername(u)[1:] if verdict else o.getpeername(u)]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, ret(verdict))
            out.append(cg.run(ops))
    assert out[0] == out[1]


def test_bind4_rewrites_port_and_getsockname4_rewrites_answer(both):
    p1, p2, p3 = free_ports(3)

    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r = [o.bind(s, ("127.0.0.1", p1))]
        name = o.getsockname(s)
        return r + [name[1] - p3 if isinstance(name, tuple) else name]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND, _rewrite_port(p1, p2))
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME, _rewrite_port(p2, p3))
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0] == [0, 0]


def test_bind6_refused_with_retval(both):
    p1, = free_ports(1)

    def ops(o):
        s = o.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s4 = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        return [o.bind(s, ("::1", p1)), o.bind(s4, ("127.0.0.1", p1))]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND, set_retval(Errno.EADDRNOTAVAIL, 0))
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0][0] == -Errno.EADDRNOTAVAIL


def test_connect4_program_binds_with_bpf_bind(both):
    """bpf_bind(ctx, sockaddr_in{127.0.0.1, P}) from a connect4 program: the connecting socket
    gets source port P; with port 0 only the address is bound (an ephemeral port follows)."""
    p_src, p_lst = free_ports(2)

    def prog(port):
        sin = (socket.AF_INET | (int.from_bytes(port.to_bytes(2, "big"), "little") << 16)
               | (0x0100007F << 32))
        from uapi.insn import BPF_LD_IMM64
        return [*BPF_LD_IMM64(2, sin), BPF_STX_MEM(BPF_DW, 10, 2, -16), BPF_ST_MEM(BPF_DW, 10, -8, 0),
                BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -16), BPF_MOV64_IMM(3, 16),
                BPF_CALL_HELPER(FuncId.bind), BPF_JMP_IMM(BPF_JEQ, 0, 0, 2)] + ret(0) + ret(1)

    def ops(o):
        lst = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = [o.bind(lst, ("127.0.0.1", p_lst)), o.listen(lst)]
        c = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r.append(o.connect(c, ("127.0.0.1", p_lst)))
        name = o.getsockname(c)
        return r + [name[1] == p_src if isinstance(name, tuple) else name]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, prog(p_src))
            out.append(cg.run(ops))
    assert out[0] == out[1] == [0, 0, 0, True]


def test_getpeername4_program_rewrites_answer(both):
    p1, p2 = free_ports(2)

    def ops(o):
        u = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r = [o.connect(u, ("127.0.0.1", p1))]
        peer = o.getpeername(u)
        return r + [peer[1] == p2 if isinstance(peer, tuple) else peer]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME, _rewrite_port(p1, p2))
            out.append(cg.run(ops))
    assert out[0] == out[1] == [0, True]


def test_connect_program_reads_sk_fields(both):
    """ctx->sk (PTR_TO_SOCKET): a connect4 program refusing UDP sockets by sk->protocol, and a
    connect6 one refusing when user_ip6[3] is htonl(1) (::1), read with a wide 8-byte load."""
    p1, = free_ports(1)
    refuse_udp = [BPF_LDX_MEM(BPF_DW, 2, 1, SAo("sk")), BPF_JMP_IMM(BPF_JEQ, 2, 0, 4),
                  BPF_LDX_MEM(BPF_W, 3, 2, S("protocol")), BPF_JMP_IMM(BPF_JNE, 3, 17, 2)] + ret(0) + ret(1)
    refuse_lo6 = [BPF_LDX_MEM(BPF_DW, 2, 1, SAo("user_ip6") + 8), BPF_ALU64_IMM(BPF_RSH, 2, 32),
                  BPF_JMP_IMM(BPF_JNE, 2, 0x01000000, 2)] + ret(0) + ret(1)

    def ops(o):
        u = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        u6 = o.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        return [o.connect(u, ("127.0.0.1", p1)), o.connect(t, ("127.0.0.1", p1)),
                o.connect(u6, ("::1", p1, 0, 0)), o.connect(u6, ("::", p1, 0, 0))]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, refuse_udp)
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT, refuse_lo6)
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0][0] == -Errno.EPERM and out[0][1] == -Errno.ECONNREFUSED and out[0][2] == -Errno.EPERM


SOCKOPT_CALLS = [
    (True, SOL_SOCKET, 2, 4, 1),          # SO_REUSEADDR = 1
    (False, SOL_SOCKET, 2, 4, 0),         # ... reads back 1
    (False, SOL_SOCKET, 2, 8, 0),         # an int option with optlen 8: EINVAL
    (False, SOL_SOCKET, 3, 4, 0),         # SO_TYPE is not offered: EINVAL
    (False, SOL_SOCKET, 25, 4, 0),        # SO_BINDTODEVICE cannot be read: EINVAL
    (True, 999, 1, 4, 0),                 # unknown level: EINVAL
    (True, SOL_SOCKET, SO_MARK, 4, 7),
    (False, SOL_SOCKET, SO_MARK, 4, 0),
]


def _sockopt_prog(q):
    body = [BPF_MOV64_REG(6, 1)]
    for is_set, level, optname, optlen, value in SOCKOPT_CALLS:
        body += [BPF_ST_MEM(BPF_DW, 10, -16, value), BPF_ST_MEM(BPF_DW, 10, -8, 0),
                 BPF_MOV64_REG(1, 6), BPF_MOV64_IMM(2, level), BPF_MOV64_IMM(3, optname),
                 BPF_MOV64_REG(4, 10), BPF_ALU64_IMM(BPF_ADD, 4, -16), BPF_MOV64_IMM(5, optlen),
                 BPF_CALL_HELPER(FuncId.setsockopt if is_set else FuncId.getsockopt),
                 BPF_STX_MEM(BPF_DW, 10, 0, -8),
                 *BPF_LD_MAP_FD(1, q), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -16), BPF_MOV64_IMM(3, 0),
                 BPF_CALL_HELPER(FuncId.map_push_elem)]
    return body + ret(1)


def test_sock_addr_program_bpf_sockopt_helpers(both):
    from uapi.bpf import MapType
    p1, = free_ports(1)
    out = []
    for b in both:
        with Scratch(b) as cg:
            q = calls.map_create(b, MapType.QUEUE, 0, 16, 32)
            cg.maps.append(q)
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, _sockopt_prog(q))

            def ops(o):
                u = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
                return [o.connect(u, ("127.0.0.1", p1)), o.getsockopt(u, SOL_SOCKET, 2),
                        o.getsockopt(u, SOL_SOCKET, SO_MARK)]
            res = cg.run(ops)
            recs = []
            while True:
                try:
                    v = calls.map_lookup_and_delete_elem(b, q, None, 16)
                except OSError:
                    break
                recs.append((int.from_bytes(v[:8], "little"), int.from_bytes(v[8:], "little", signed=True)))
            out.append((res, recs))
    assert out[0] == out[1]
    assert [r[1] for r in out[0][1]] == [0, 0, -Errno.EINVAL, -Errno.EINVAL, -Errno.EINVAL, -Errno.EINVAL, 0, 0]


@pytest.mark.parametrize("verdict", [0, 1])
def test_unix_connect_and_getsockname_programs(both, verdict):
    """AF_UNIX: the unix_connect program's verdict decides connect(2) (stream and datagram);
    the unix_getsockname program runs (it counts into a map) and must return 1."""
    name = "\0fk-" + uuid.uuid4().hex[:12]
    count = [BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, 0), BPF_MOV64_REG(2, 10),
             BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_JMP_IMM(BPF_JEQ, 0, 0, 3),
             BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_STX_MEM(BPF_DW, 0, 1, 0)] + ret(1)

    def ops(o):
        lst = o.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        r = [o.bind(lst, name), o.listen(lst)]
        c = o.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        r += [o.connect(c, name), o.getsockname(lst) in (name, name.encode())]
        d = o.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dn = o.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        r += [o.bind(dn, name + "d"), o.connect(d, name + "d")]
        return r
    out = []
    for b in both:
        with Scratch(b) as cg:
            m = cg.array(8)
            insns = count[:1] + list(BPF_LD_MAP_FD(1, m)) + count[3:]
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT, ret(verdict))
            cg.attach(ProgType.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME, insns)
            out.append((cg.run(ops), calls.map_lookup_elem(b, m, bytes(4), 8)))
    assert out[0] == out[1]
    assert out[0][0][2] == (0 if verdict else -Errno.EPERM)
