"""What the cgroup family's programs READ, fakekernel vs the real kernel: a program loads every
ctx offset × size its type accepts (narrow loads included) and stores the values into an array
map, at a hook firing for a known socket operation — sock_create and post_bind (struct
bpf_sock), connect/bind/getsockname (struct bpf_sock_addr), and the pointed-to ``sk`` of a
connect program.  Ports are fixed, so every byte must match."""
from __future__ import annotations

import socket

import pytest

from differential.test_prog_cgroup_sock_hooks import Scratch, free_ports, ret
from fakekernel.progs.cgroup_sock import sock_filter_is_valid_access
from fakekernel.progs.cgroup_sock_addr import sock_addr_is_valid_access
from fakekernel.verifier.mem import AccessInfo
from fakekernel.verifier.regs import RegType
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_B, BPF_DW, BPF_H, BPF_JEQ, BPF_W, AttachType as A, FuncId, ProgType
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_REG,
                       BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential

_SIZE_BYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}


class _Prog:
    def __init__(self, eat):
        self.expected_attach_type = eat


def readable(struct, is_valid, eat):
    """Every (off, size) a program of this attach type may load, pointers left out."""
    out = []
    for off in range(ffi.sizeof(struct)):
        for size, nbytes in _SIZE_BYTES.items():
            info = AccessInfo()
            if off % nbytes == 0 and is_valid(off, nbytes, 1, _Prog(eat), info) and \
                    info.reg_type == RegType.SCALAR_VALUE:
                out.append((off, size))
    return out


def dump_prog(map_fd, reads, via_sk=None):
    """value[i] = *(size *)(ctx + off) for each read (through ctx->sk at `via_sk` if given)."""
    body = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, map_fd), BPF_MOV64_REG(2, 10),
            BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_MOV64_REG(7, 0)]
    loads = []
    src = 6
    if via_sk is not None:
        loads += [BPF_LDX_MEM(BPF_DW, 8, 6, via_sk), BPF_JMP_IMM(BPF_JEQ, 8, 0, 2 * len(reads))]
        src = 8
    for i, (off, size) in enumerate(reads):
        loads += [BPF_LDX_MEM(size, 2, src, off), BPF_STX_MEM(BPF_DW, 7, 2, 8 * i)]
    body += [BPF_JMP_IMM(BPF_JEQ, 7, 0, len(loads))] + loads
    return body + ret(1)


def run_dump(b, ptype, at, reads, ops, via_sk=None):
    with Scratch(b) as cg:
        m = cg.array(8 * len(reads))
        eat = 0 if ptype == ProgType.CGROUP_DEVICE else None
        cg.attach(ptype, at, dump_prog(m, reads, via_sk), eat=eat)
        res = cg.run(ops)
        val = calls.map_lookup_elem(b, m, bytes(4), 8 * len(reads))
    words = [int.from_bytes(val[8 * i:8 * i + 8], "little") for i in range(len(reads))]
    return res, dict(zip(reads, words))


def compare(both, *args, **kw):
    fake, host = both
    f, h = run_dump(fake, *args, **kw), run_dump(host, *args, **kw)
    assert f[0] == h[0]
    assert {k: (v, h[1][k]) for k, v in f[1].items() if v != h[1][k]} == {}
    return f


SOCK = "struct bpf_sock"
SA = "struct bpf_sock_addr"


@pytest.mark.parametrize("family,type_", [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_DGRAM),
                                          (socket.AF_INET, socket.SOCK_RAW)], ids=["tcp4", "udp6", "raw4"])
def test_sock_create_ctx_values(both, family, type_):
    reads = readable(SOCK, sock_filter_is_valid_access, A.CGROUP_INET_SOCK_CREATE)
    proto = 17 if type_ == socket.SOCK_RAW else 0
    compare(both, ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, reads,
            lambda o: [o.socket(family, type_) >= 0] if not proto else [_raw(o, family, proto)])


def _raw(o, family, proto):
    from differential.test_prog_cgroup_sock_hooks import FakeOps
    if isinstance(o, FakeOps):
        return o._h(o.k.socket(family, socket.SOCK_RAW, proto)) >= 0
    try:
        o.socks.append(socket.socket(family, socket.SOCK_RAW, proto))
        return True
    except OSError as e:
        return -e.errno


@pytest.mark.parametrize("family,ip,at", [(socket.AF_INET, "127.0.0.1", A.CGROUP_INET4_POST_BIND),
                                            (socket.AF_INET6, "::1", A.CGROUP_INET6_POST_BIND)], ids=["v4", "v6"])
def test_post_bind_ctx_values(both, family, ip, at):
    port, = free_ports(1)
    reads = readable(SOCK, sock_filter_is_valid_access, at)

    def ops(o):
        s = o.socket(family, socket.SOCK_STREAM)
        return [o.bind(s, (ip, port) if family == socket.AF_INET else (ip, port, 0, 0))]
    compare(both, ProgType.CGROUP_SOCK, at, reads, ops)


@pytest.mark.parametrize("family,ip,at,type_", [
    (socket.AF_INET, "127.0.0.1", A.CGROUP_INET4_CONNECT, socket.SOCK_DGRAM),
    (socket.AF_INET6, "::1", A.CGROUP_INET6_CONNECT, socket.SOCK_DGRAM),
    (socket.AF_INET, "127.0.0.2", A.CGROUP_INET4_BIND, socket.SOCK_STREAM),
    (socket.AF_INET6, "::1", A.CGROUP_INET6_BIND, socket.SOCK_DGRAM),
], ids=["connect4", "connect6", "bind4", "bind6"])
def test_sock_addr_ctx_values(both, family, ip, at, type_):
    port, = free_ports(1)
    reads = readable(SA, sock_addr_is_valid_access, at)
    addr = (ip, port) if family == socket.AF_INET else (ip, port, 0, 0)
    op = "connect" if at in (A.CGROUP_INET4_CONNECT, A.CGROUP_INET6_CONNECT) else "bind"

    def ops(o):
        s = o.socket(family, type_)
        return [getattr(o, op)(s, addr)]
    compare(both, ProgType.CGROUP_SOCK_ADDR, at, reads, ops)


def test_sock_addr_sk_fields_of_a_bound_socket(both):
    """ctx->sk of a connect4 program: the bpf_sock of the (already bound) connecting socket.
    (rx_queue_mapping is left out: loads through a socket pointer are not rewritten by the
    fake's verifier, so "no queue" reads as 0xffffffff instead of a 64-bit -1 there.)"""
    p_src, p_dst = free_ports(2)
    rxq = ffi.offsetof(SOCK, "rx_queue_mapping")
    reads = [r for r in readable(SOCK, lambda off, size, acc, prog, info: _sk_access(off, size, info), 0)
             if r[0] != rxq]

    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.bind(s, ("127.0.0.1", p_src)), o.connect(s, ("127.0.0.1", p_dst))]
    compare(both, ProgType.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, reads, ops,
            via_sk=ffi.offsetof(SA, "sk"))


def _sk_access(off, size, info):
    from fakekernel.progs.cgroup_sock import bpf_sock_is_valid_access
    return bpf_sock_is_valid_access(off, size, 1, info)


@pytest.mark.parametrize("at", [A.CGROUP_GETSOCKOPT, A.CGROUP_SETSOCKOPT], ids=["get", "set"])
def test_sockopt_ctx_values(both, at):
    from fakekernel.progs.cgroup_sockopt import cg_sockopt_is_valid_access
    reads = readable("struct bpf_sockopt", cg_sockopt_is_valid_access, at)

    def ops(o):
        s = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if at == A.CGROUP_GETSOCKOPT:
            return [o.getsockopt(s, 1, 2, 4), o.getsockopt(s, 1, 999, 12)]
        return [o.setsockopt(s, 1, 2, 1)]
    compare(both, ProgType.CGROUP_SOCKOPT, at, reads, ops)


@pytest.mark.parametrize("flags", [0, 1, 2], ids=["rdonly", "wronly", "rdwr"])
def test_device_ctx_values(both, flags):
    import os
    from differential.test_prog_cgroup_device import _open
    from fakekernel.progs.cgroup_device import cgroup_dev_is_valid_access
    reads = readable("struct bpf_cgroup_dev_ctx", cgroup_dev_is_valid_access, 0)
    compare(both, ProgType.CGROUP_DEVICE, A.CGROUP_DEVICE, reads,
            lambda o: [_open(o, (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)[flags])])
