"""Shared by the redirect-map differential tests (test_map_devmap.py,
test_map_cpumap_xskmap.py): a raw command's return value, MAP_CREATE summarised as what
both kernels must agree on, and an XDP program that just returns a verdict."""
from __future__ import annotations

from uapi import calls
from uapi.bpf import BpfCmd, ProgType
from uapi.calls import raw
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns

from maputil import memlock

__all__ = ["LAST", "op", "u32", "create", "load", "prog_id"]

LAST = "excl_prog_hash_size"


def op(b, cmd, last="flags", **kw) -> int:
    return raw(b, cmd, last, **kw)[0]


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def create(b, map_type, key_size=4, value_size=4, max_entries=4, **kw):
    ret = op(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size,
             value_size=value_size, max_entries=max_entries, **kw)
    if ret >= 0:
        info, _ = calls.obj_get_info_by_fd(b, ret, "map")
        out = ("fd", info.key_size, info.value_size, info.max_entries, info.map_flags, memlock(b, ret))
        b.close(ret)
        return out
    return ret


def load(b, eat=0, ret=2, flags=0, ptype=ProgType.XDP):
    return calls.prog_load(b, ptype, assemble_insns([BPF_MOV64_IMM(0, ret), BPF_EXIT_INSN()]),
                           expected_attach_type=eat, prog_flags=flags)


def prog_id(b, fd) -> int:
    return calls.obj_get_info_by_fd(b, fd, "prog")[0].id
