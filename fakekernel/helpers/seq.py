"""seq_file helpers of BPF iterators — kernel/trace/bpf_trace.c: bpf_seq_printf(),
bpf_seq_write() (and bpf_get_func_ip for trampolines, get_func_ip_tracing).

An iterator program prints into the seq_file whose pointer it reads from ``ctx->meta->seq``;
here that pointer is an object handle (`AddressSpace.map_object`) of the `SeqFile` the
running iterator fills (see `fakekernel.iter`).
"""
from __future__ import annotations

from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.helpers.trace import bstr_printf
from uapi.bpf import FuncId
from uapi.errno import Errno

__all__ = ["SEQ_PROTOS", "SEQ_RUNTIME", "GET_FUNC_IP_TRACING_PROTO", "SeqFile",
           "MAX_SEQ_PRINTF_VARARGS"]

MAX_SEQ_PRINTF_VARARGS = 12
_U64 = 8


class SeqFile:
    """struct seq_file: the text an iterator run has produced and the overflow mark
    (seq_has_overflowed(): the kernel sets count = size)."""

    def __init__(self, size: int):
        self.buf = bytearray()
        self.size = size
        self.overflowed = False

    def reset(self) -> None:
        self.buf.clear()
        self.overflowed = False

    def truncate(self, n: int) -> None:
        """seq->count = offs: drop what the last object printed."""
        del self.buf[n:]
        self.overflowed = False

    def write(self, data: bytes) -> int:
        """seq_write(): all or nothing; -1 (and the buffer marked overflowed) when it does not fit."""
        if self.overflowed or len(self.buf) + len(data) > self.size:
            self.overflowed = True
            return -1
        self.buf += data
        return 0


SEQ_PROTOS: dict[int, FuncProto] = {
    FuncId.seq_printf: FuncProto(func=FuncId.seq_printf, gpl_only=True, ret_type=RetType.INTEGER,
                                 arg_types=(ArgType.PTR_TO_BTF_ID, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                                            ArgType.CONST_SIZE,
                                            ArgType.PTR_TO_MEM | TypeFlag.PTR_MAYBE_NULL | TypeFlag.MEM_RDONLY,
                                            ArgType.CONST_SIZE_OR_ZERO)),
    FuncId.seq_write: FuncProto(func=FuncId.seq_write, gpl_only=True, ret_type=RetType.INTEGER,
                                arg_types=(ArgType.PTR_TO_BTF_ID, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                                           ArgType.CONST_SIZE_OR_ZERO)),
}
GET_FUNC_IP_TRACING_PROTO = FuncProto(func=FuncId.get_func_ip, gpl_only=True,
                                      ret_type=RetType.INTEGER, arg_types=(ArgType.PTR_TO_CTX,))


def _seq(env, addr: int) -> SeqFile:
    return env.mem.object_at(addr)


def bpf_seq_printf(env, r1, r2, r3, r4, r5) -> int:
    """bpf_seq_printf(m, fmt, fmt_size, data, data_len): -EINVAL for a bad format or data_len,
    -EOVERFLOW when the seq buffer is full."""
    if r5 % _U64 or r5 // _U64 > MAX_SEQ_PRINTF_VARARGS:
        return -Errno.EINVAL
    fmt = env.mem.read(r2, r3)
    if not fmt or fmt[-1:] != b"\0":
        return -Errno.EINVAL
    data = env.mem.read(r4, r5) if r5 else b""
    args = [int.from_bytes(data[i:i + _U64], "little") for i in range(0, len(data), _U64)]
    text = bstr_printf(env, fmt[:-1], args, max_args=MAX_SEQ_PRINTF_VARARGS)
    if text is None:
        return -Errno.EINVAL
    m = _seq(env, r1)
    return -Errno.EOVERFLOW if m.write(text.encode()) else 0


def bpf_seq_write(env, r1, r2, r3, r4, r5) -> int:
    """bpf_seq_write(m, data, len): -EOVERFLOW when it does not fit."""
    m = _seq(env, r1)
    return -Errno.EOVERFLOW if m.write(env.mem.read(r2, r3) if r3 else b"") else 0


SEQ_RUNTIME = {FuncId.seq_printf: bpf_seq_printf, FuncId.seq_write: bpf_seq_write}
