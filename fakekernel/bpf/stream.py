"""Program output streams — kernel/bpf/stream.c (struct bpf_stream, bpf_prog_stream_read).

Every program has two streams, BPF_STREAM_STDOUT and BPF_STREAM_STDERR, that the program
(bpf_stream_vprintk_impl) or the kernel on its behalf writes text records into and userspace
drains with BPF_PROG_STREAM_READ_BY_FD.  A read consumes records in the order they were written,
splitting one across reads when the buffer is short; each stream holds at most
BPF_STREAM_MAX_CAPACITY bytes of unread text (more is refused with -ENOSPC).
"""
from __future__ import annotations

from collections import deque

import attrs

from fakekernel.errors import Errno, KernelError
from uapi.bpf import StreamId

__all__ = ["BpfStream", "bpf_stream_get", "BPF_STREAM_MAX_CAPACITY"]

BPF_STREAM_MAX_CAPACITY = 100_000           # include/linux/bpf.h


@attrs.define(eq=False)
class BpfStream:
    records: deque = attrs.field(factory=deque)    # [bytearray text, consumed] pairs, oldest first
    capacity: int = 0                               # bytes of text not yet read

    def push_str(self, text: bytes) -> int:
        """bpf_stream_push_str(): 0, or -ENOSPC once the unread text would reach the cap."""
        if self.capacity >= BPF_STREAM_MAX_CAPACITY or self.capacity + len(text) >= BPF_STREAM_MAX_CAPACITY:
            return -Errno.ENOSPC
        self.capacity += len(text)
        self.records.append([bytes(text), 0])
        return 0

    def read(self, n: int) -> bytes:
        """bpf_stream_read(): up to `n` bytes, consuming what it returns."""
        out = bytearray()
        while len(out) < n and self.records:
            rec = self.records[0]
            text, done = rec
            take = text[done:done + n - len(out)]
            out += take
            rec[1] = done + len(take)
            if rec[1] == len(text):
                self.records.popleft()
                self.capacity -= len(text)
        return bytes(out)

    def unread(self, data: bytes) -> None:
        """Put back what a failed copy_to_user could not deliver (the kernel restores
        consumed_len of the element it was copying)."""
        if data:
            self.records.appendleft([bytes(data), 0])
            self.capacity += len(data)


def bpf_stream_get(aux, stream_id: int) -> BpfStream | None:
    if stream_id not in (StreamId.STDOUT, StreamId.STDERR):
        return None
    streams = aux.streams
    if streams is None:
        streams = aux.streams = (BpfStream(), BpfStream())
    return streams[stream_id - 1]


def bpf_prog_stream_read(task, prog, stream_id: int, ubuf: int, length: int) -> int:
    stream = bpf_stream_get(prog.aux, stream_id)
    if stream is None:
        raise KernelError(Errno.ENOENT, f"no stream {stream_id}")
    data = stream.read(length)
    try:
        task.mm.copy_to_user(ubuf, data)
    except KernelError:
        stream.unread(data)
        raise
    return len(data)
