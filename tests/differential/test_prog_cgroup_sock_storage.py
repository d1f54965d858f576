"""cgroup/sock programs and the storages they reach, fakekernel vs the real kernel (harness in
test_prog_cgroup_sock_hooks.py): bpf_sk_storage_get() on the socket being created (the ctx is
the socket) and bpf_get_local_storage() on the cgroup storage linked at attach."""
from __future__ import annotations

import os
import socket

import pytest

from backends import FakeBackend
from differential.test_prog_cgroup_sock_hooks import Scratch, ret
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_AND, BPF_DW, BPF_JEQ, AttachType as A, FuncId, ProgType
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM)

pytestmark = pytest.mark.differential


def test_sock_create_program_fills_sk_storage(both):
    """bpf_sk_storage_get(map, ctx, NULL, F_CREATE) from sock_create (the ctx is the socket):
    the new socket has the storage, with what the program wrote."""
    from differential.test_map_sk_storage import sk_map
    out = []
    for b in both:
        with Scratch(b) as cg:
            m = sk_map(b)
            cg.maps.append(m)
            insns = [BPF_MOV64_REG(2, 1), *BPF_LD_MAP_FD(1, m), BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, 1),
                     BPF_CALL_HELPER(FuncId.sk_storage_get), BPF_JMP_IMM(BPF_JEQ, 0, 0, 1),
                     BPF_ST_MEM(BPF_DW, 0, 0, 0x1234)] + ret(1)
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, insns)

            def ops(o):
                h = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
                return [o.sk_storage_lookup(m, h, 8)]
            out.append(cg.run(ops))
    assert out[0] == out[1] == [(0x1234).to_bytes(8, "little")]


def test_sock_create_program_counts_in_cgroup_storage(both):
    """bpf_get_local_storage() from sock_create: the storage linked at attach (key: cgroup id and
    attach type) counts the sockets made in the cgroup; the counter is the run's verdict bit."""
    from uapi.bpf import MapType
    out = []
    for b in both:
        with Scratch(b) as cg:
            m = calls.map_create(b, MapType.CGROUP_STORAGE, 16, 8, 0)
            cg.maps.append(m)
            insns = [*BPF_LD_MAP_FD(1, m), BPF_MOV64_IMM(2, 0), BPF_CALL_HELPER(FuncId.get_local_storage),
                     BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_STX_MEM(BPF_DW, 0, 1, 0),
                     BPF_MOV64_REG(0, 1), BPF_ALU64_IMM(BPF_AND, 0, 1), BPF_EXIT_INSN()]
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, insns)
            cg_id = (b.kern.world.cgroup.lookup(cg.path).id if isinstance(b, FakeBackend)
                     else os.stat(cg.path).st_ino)
            r = cg.run(lambda o: [o.socket(socket.AF_INET, socket.SOCK_DGRAM) >= 0 for _ in range(3)])
            key = cg_id.to_bytes(8, "little") + int(A.CGROUP_INET_SOCK_CREATE).to_bytes(4, "little") + bytes(4)
            out.append((r, calls.map_lookup_elem(b, m, key, 8)))
    assert out[0] == out[1] == ([True, False, True], (3).to_bytes(8, "little"))
