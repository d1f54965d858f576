"""Dynptr kfuncs over memory-backed dynptrs — kernel/bpf/helpers.c (bpf_dynptr_adjust,
bpf_dynptr_is_null, bpf_dynptr_is_rdonly, bpf_dynptr_size, bpf_dynptr_clone, bpf_dynptr_slice,
bpf_dynptr_slice_rdwr, bpf_dynptr_copy, bpf_dynptr_memset).

The dynptr is the 16-byte ``struct bpf_dynptr_kern`` in the program's stack, decoded and encoded
by fakekernel/helpers/dynptr.py.  Only LOCAL (bpf_dynptr_from_mem) and RINGBUF
(bpf_ringbuf_reserve_dynptr) dynptrs can exist here: skb/xdp dynptrs come from kfuncs without a
runtime, so every dynptr these functions see is either memory-backed or NULL (data == 0, which
is what a failed constructor leaves).  For memory-backed dynptrs a slice is always a direct
pointer, so bpf_dynptr_copy and bpf_dynptr_memset never take the kernel's bounce-buffer path.
"""
from __future__ import annotations

from fakekernel.helpers.dynptr import BPF_DYNPTR_SIZE, DYNPTR_MEM_TYPES, dynptr_at, dynptr_encode
from uapi.errno import Errno
from uapi.insn import u32

__all__ = ["DYNPTR_KFUNCS", "kfunc_int_errno"]


def kfunc_int_errno(err: int) -> int:
    """-err as a kfunc declared ``int`` leaves it in r0: the x86-64 JIT calls the C function,
    which writes eax, so the upper half of r0 is zero (-EINVAL reads 0xffffffea), unlike a
    helper's ``long`` return."""
    return u32(-err)


_err = kfunc_int_errno


def _slice(d, offset: int, length: int) -> int:
    """bpf_dynptr_slice() for a memory dynptr (the buffer is never needed): address or NULL."""
    if not d.data or not d.off_len_ok(offset, length) or d.dtype not in DYNPTR_MEM_TYPES:
        return 0
    return d.data + d.offset + offset


def _slice_rdwr(d, offset: int, length: int) -> int:
    if not d.data or d.rdonly:
        return 0
    return _slice(d, offset, length)


def bpf_dynptr_slice(env, p, offset, buffer, buffer_sz, r5) -> int:
    return _slice(dynptr_at(env.mem, p), u32(offset), u32(buffer_sz))


def bpf_dynptr_slice_rdwr(env, p, offset, buffer, buffer_sz, r5) -> int:
    return _slice_rdwr(dynptr_at(env.mem, p), u32(offset), u32(buffer_sz))


def bpf_dynptr_adjust(env, p, start, end, r4, r5) -> int:
    """Narrow the dynptr to [start, end) of its current view."""
    d = dynptr_at(env.mem, p)
    start, end = u32(start), u32(end)
    if not d.data or start > end:
        return _err(Errno.EINVAL)
    if start > d.size or end > d.size:
        return _err(Errno.ERANGE)
    env.mem.write(p, dynptr_encode(d.data, end - start, d.dtype, u32(d.offset + start), d.rdonly))
    return 0


def bpf_dynptr_is_null(env, p, r2, r3, r4, r5) -> int:
    return int(not dynptr_at(env.mem, p).data)


def bpf_dynptr_is_rdonly(env, p, r2, r3, r4, r5) -> int:
    d = dynptr_at(env.mem, p)
    return int(bool(d.data) and d.rdonly)


def bpf_dynptr_size(env, p, r2, r3, r4, r5) -> int:
    """The view's length; a NULL dynptr answers -EINVAL as a __u32."""
    d = dynptr_at(env.mem, p)
    return d.size if d.data else u32(-Errno.EINVAL)


def bpf_dynptr_clone(env, p, clone, r3, r4, r5) -> int:
    raw = env.mem.read(p, BPF_DYNPTR_SIZE)
    if not dynptr_at(env.mem, p).data:
        env.mem.write(clone, bytes(BPF_DYNPTR_SIZE))        # bpf_dynptr_set_null()
        return _err(Errno.EINVAL)
    env.mem.write(clone, raw)
    return 0


def _write_err(d, offset: int, length: int) -> int:
    """__bpf_dynptr_write()'s checks (0 when the write may proceed)."""
    if not d.data or d.rdonly:
        return _err(Errno.EINVAL)
    if not d.off_len_ok(offset, length):
        return _err(Errno.E2BIG)
    return 0


def _read_err(d, offset: int, length: int) -> int:
    """__bpf_dynptr_read()'s checks."""
    if not d.data:
        return _err(Errno.EINVAL)
    if not d.off_len_ok(offset, length):
        return _err(Errno.E2BIG)
    return 0


def bpf_dynptr_copy(env, dst_p, dst_off, src_p, src_off, size) -> int:
    """Copy `size` bytes between two dynptrs (overlap allowed, as memmove)."""
    dst, src = dynptr_at(env.mem, dst_p), dynptr_at(env.mem, src_p)
    dst_off, src_off, size = u32(dst_off), u32(src_off), u32(size)
    src_addr, dst_addr = _slice(src, src_off, size), _slice_rdwr(dst, dst_off, size)
    if src_addr and dst_addr:
        env.mem.write(dst_addr, env.mem.read(src_addr, size))
        return 0
    if src_addr:
        return _write_err(dst, dst_off, size)
    if dst_addr:
        return _read_err(src, src_off, size)
    if not dst.off_len_ok(dst_off, size) or not src.off_len_ok(src_off, size):
        return _err(Errno.E2BIG)
    # both NULL yet in range: only a zero-length copy gets here; the chunk loop runs no round
    return 0


def bpf_dynptr_memset(env, p, offset, size, val, r5) -> int:
    """Fill [offset, offset + size) of the dynptr with the byte `val`."""
    d = dynptr_at(env.mem, p)
    offset, size = u32(offset), u32(size)
    addr = _slice_rdwr(d, offset, size)
    if addr:
        env.mem.write(addr, bytes([val & 0xFF]) * size)
        return 0
    if d.rdonly:
        return _err(Errno.EINVAL)
    if not d.off_len_ok(offset, size):
        return _err(Errno.E2BIG)
    return 0


DYNPTR_KFUNCS = {
    "bpf_dynptr_slice": bpf_dynptr_slice, "bpf_dynptr_slice_rdwr": bpf_dynptr_slice_rdwr,
    "bpf_dynptr_adjust": bpf_dynptr_adjust, "bpf_dynptr_is_null": bpf_dynptr_is_null,
    "bpf_dynptr_is_rdonly": bpf_dynptr_is_rdonly, "bpf_dynptr_size": bpf_dynptr_size,
    "bpf_dynptr_clone": bpf_dynptr_clone, "bpf_dynptr_copy": bpf_dynptr_copy,
    "bpf_dynptr_memset": bpf_dynptr_memset,
}
