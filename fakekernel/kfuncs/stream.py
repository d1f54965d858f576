"""bpf_stream_vprintk_impl — kernel/bpf/stream.c: formatted text into a program's stream.

The format is checked and rendered exactly as bpf_snprintf's (fakekernel.helpers.printf); the
whole rendered text becomes one record of the stream that BPF_PROG_STREAM_READ_BY_FD drains.
Measured on 6.18.44 here: the real kernel answers every call with -ENOMEM (its lock-free page
allocator refuses in this configuration), so only the read side could be compared with it.
"""
from __future__ import annotations

from fakekernel.bpf.stream import bpf_stream_get
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.printf import MAX_BPRINTF_BUF, MAX_BPRINTF_VARARGS, bpf_bprintf_prepare, bstr_printf
from fakekernel.helpers.trace import _read_cstr
from uapi.errno import Errno
from uapi.insn import u32, u64

__all__ = ["STREAM_KFUNCS"]

_U64 = 8


def bpf_stream_vprintk_impl(env, stream_id, fmt, args, data_len, aux) -> int:
    stream = bpf_stream_get(env.prog.aux, u32(stream_id))
    if stream is None:
        return neg_errno(Errno.ENOENT)
    data_len = u32(data_len)
    if data_len % _U64 or data_len > MAX_BPRINTF_VARARGS * _U64 or (data_len and not args):
        return neg_errno(Errno.EINVAL)
    raw = env.mem.read(args, data_len) if data_len else b""
    values = [int.from_bytes(raw[k:k + _U64], "little") for k in range(0, data_len, _U64)]
    prepared = bpf_bprintf_prepare(_read_cstr(env, fmt, 1 << 32) or b"", data_len // _U64, values, env)
    if isinstance(prepared, int):
        return neg_errno(-prepared)
    text = bstr_printf(env, prepared)
    if len(text) > MAX_BPRINTF_BUF:                 # bpf_stream_elem_alloc() refuses what the buffer can't hold
        return neg_errno(Errno.ENOMEM)
    return u64(stream.push_str(text))


STREAM_KFUNCS = {"bpf_stream_vprintk_impl": bpf_stream_vprintk_impl}
