"""Helpers for iterator tests: vmlinux BTF offsets, a seq_printf "printer" program builder,
LINK_CREATE (BPF_TRACE_ITER) / ITER_CREATE wrappers and read() on either backend."""
from __future__ import annotations

import functools
import os
import struct

from fakekernel.btf_vmlinux import BtfIndex
from uapi import calls
from uapi.asm import assemble
from uapi.btf import BtfKind
from uapi.bpf import AttachType, BpfCmd, ProgType

FKIT = int.from_bytes(b"fkit", "little")


@functools.cache
def ix() -> BtfIndex:
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        return BtfIndex(f.read())


def fn(name: str) -> int:
    return ix().find_by_name_kind(name.encode(), BtfKind.FUNC)


def off(struct_name: str, field: str) -> int:
    sid = ix().find_by_name_kind(struct_name.encode(), BtfKind.STRUCT)
    for name, _tid, bit in ix().members(sid):
        if name == field.encode():
            return bit // 8
    raise KeyError(field)


def _u64(b: bytes) -> str:
    return "0x%x" % int.from_bytes(b.ljust(8, b"\0"), "little")


def printer(obj_setup: list[str], name_reg: str, fields: list[str]) -> bytes:
    """An iterator program: r7 = the object (ctx+8); `obj_setup` may walk from it; the
    object is printed when the u32 at `name_reg` is "fkit": its `fields` (asm loads into r2)
    with "%u %u %u\\n"; the final call (object NULL) prints "end\\n"."""
    fmt = b"%u %u %u\n"
    lines = ["r6 = *(u64 *)(r1 +0)", "r7 = *(u64 *)(r1 +8)",
             f"r2 = {_u64(fmt[:8])} ll", "*(u64 *)(r10 -16) = r2",
             f"r2 = {_u64(fmt[8:])} ll", "*(u64 *)(r10 -8) = r2",
             f"r2 = {_u64(b'end' + bytes([10]))} ll", "*(u64 *)(r10 -24) = r2"]
    body = [*obj_setup, name_reg, f"if r2 != {FKIT:#x} goto pc+{3 * 2 + 8}"]
    for i, f in enumerate(fields):
        body += [f, f"*(u64 *)(r10 {-48 + 8 * i}) = r2"]
    body += ["r1 = *(u64 *)(r6 +0)", "r2 = r10", "r2 += -16", "r3 = 10", "r4 = r10",
             "r4 += -48", "r5 = 24", "call bpf_seq_printf#126", "r0 = 0", "exit"]
    end = ["r1 = *(u64 *)(r6 +0)", "r2 = r10", "r2 += -24", "r3 = 5", "r4 = 0", "r5 = 0",
           "call bpf_seq_printf#126", "r0 = 0", "exit"]
    lines += [f"if r7 == 0x0 goto pc+{len(body)}"] + body + end
    return assemble("\n".join(lines))


def map_printer() -> bytes:
    return printer([], f"r2 = *(u32 *)(r7 +{off('bpf_map', 'name')})",
                   [f"r2 = *(u32 *)(r7 +{off('bpf_map', f)})" for f in ("key_size", "value_size", "max_entries")])


def prog_printer() -> bytes:
    aux = off("bpf_prog", "aux")
    return printer([f"r8 = *(u64 *)(r7 +{aux})"], f"r2 = *(u32 *)(r8 +{off('bpf_prog_aux', 'name')})",
                   [f"r2 = *(u32 *)(r7 +{off('bpf_prog', 'type')})",
                    f"r2 = *(u32 *)(r7 +{off('bpf_prog', 'len')})",
                    f"r2 = *(u32 *)(r7 +{off('bpf_prog', 'expected_attach_type')})"])


def load_iter(b, target: str, insns: bytes, **kw) -> int:
    r = calls.prog_load(b, ProgType.TRACING, insns, expected_attach_type=AttachType.TRACE_ITER,
                        attach_btf_id=fn(target), strict=False, **kw)
    return r.ret


def iter_link(b, prog_fd, info: bytes | None = None, info_len=None, flags=0, target_fd=0) -> int:
    buf = bytearray(info) if info is not None else None
    n = (len(info) if info is not None else 0) if info_len is None else info_len
    r, _ = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.iter_info_len", link_create__prog_fd=prog_fd,
                     link_create__target_fd=target_fd, link_create__attach_type=AttachType.TRACE_ITER,
                     link_create__flags=flags, link_create__iter_info=buf, link_create__iter_info_len=n)
    return r


def iter_create(b, link_fd, flags=0) -> int:
    r, _ = calls.raw(b, BpfCmd.ITER_CREATE, "iter_create.flags", iter_create__link_fd=link_fd,
                     iter_create__flags=flags)
    return r


def read(b, fd, n):
    kern = getattr(b, "kern", None)
    if kern is not None:
        return kern.read(fd, n)
    try:
        return os.read(fd, n)
    except OSError as e:
        return -e.errno


def linfo_task(tid=0, pid=0, pid_fd=0) -> bytes:
    return struct.pack("<III", tid, pid, pid_fd) + bytes(4)


def linfo_map(fd) -> bytes:
    return struct.pack("<I", fd) + bytes(12)
