"""BPF_PROG_STREAM_READ_BY_FD — kernel/bpf/syscall.c: prog_stream_read()."""
from __future__ import annotations

from fakekernel.bpf.stream import bpf_prog_stream_read
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd

__all__ = ["prog_stream_read"]


@bpf_command(BpfCmd.PROG_STREAM_READ_BY_FD, last_field="prog_stream_read.prog_fd")
def prog_stream_read(kern, task, attr, ctx) -> int:
    """Drain up to stream_buf_len bytes of one of the program's streams into stream_buf."""
    a = attr.prog_stream_read
    prog = fdget.bpf_prog_get(task, a.prog_fd)
    return bpf_prog_stream_read(task, prog, a.stream_id, a.stream_buf, a.stream_buf_len)
