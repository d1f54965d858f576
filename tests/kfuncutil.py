"""Kfunc test helpers: BTF ids of vmlinux kfuncs, call instructions, stream reads."""
from __future__ import annotations

import functools
import pathlib

from fakekernel.btf_vmlinux import BtfIndex
from uapi import calls
from uapi.bpf import BPF_CALL, BPF_JMP, BPF_PSEUDO_KFUNC_CALL, BpfCmd
from uapi.btf import BtfKind
from uapi.insn import Insn

VMLINUX = pathlib.Path("/sys/kernel/btf/vmlinux")


@functools.cache
def kfunc_id(name: str) -> int:
    return BtfIndex(VMLINUX.read_bytes()).find_by_name_kind(name.encode(), BtfKind.FUNC)


def kcall(name: str) -> Insn:
    return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, kfunc_id(name))


def stream_read(b, prog_fd: int, stream_id: int, n: int, buf=None, **extra):
    out = bytearray(n) if buf is None else buf
    ret, _ = calls.raw(b, BpfCmd.PROG_STREAM_READ_BY_FD, None, prog_stream_read__prog_fd=prog_fd,
                       prog_stream_read__stream_id=stream_id, prog_stream_read__stream_buf=out,
                       prog_stream_read__stream_buf_len=n, **extra)
    return ret, bytes(out[:max(ret, 0)]) if buf is None else b""
