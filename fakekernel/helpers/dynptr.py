"""Dynamic pointers — kernel/bpf/helpers.c (bpf_dynptr_init, bpf_dynptr_from_mem,
bpf_dynptr_read, bpf_dynptr_write, bpf_dynptr_data) and kernel/bpf/ringbuf.c
(bpf_user_ringbuf_drain, which hands each sample to its callback as a dynptr).

A dynptr is ``struct bpf_dynptr_kern`` (16 bytes, in the program's stack or, for the drain
callback, the kernel's): ``void *data; u32 size; u32 offset`` where ``size`` keeps the
length in its low 24 bits, the dynptr type in bits 28-30 and a read-only flag in bit 31.
Only the memory-backed types exist here (LOCAL from bpf_dynptr_from_mem and user ring buffer
samples; RINGBUF records use the same accessors); skb/xdp dynptrs come from kfuncs that are
not modelled.  Helpers return ``-errno`` into r0 as the kernel's do.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.maps.user_ringbuf import DYNPTR_MAX_SIZE, UserRingbufMap
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["DYNPTR_RUNTIME", "BPF_DYNPTR_TYPE_LOCAL", "BPF_DYNPTR_TYPE_RINGBUF", "dynptr_encode",
           "bpf_dynptr_from_mem", "bpf_dynptr_read", "bpf_dynptr_write", "bpf_dynptr_data",
           "bpf_user_ringbuf_drain", "dynptr_at", "DYNPTR_MEM_TYPES", "BPF_DYNPTR_SIZE"]

# enum bpf_dynptr_type (include/linux/bpf.h, kernel-internal)
BPF_DYNPTR_TYPE_INVALID = 0
BPF_DYNPTR_TYPE_LOCAL = 1
BPF_DYNPTR_TYPE_RINGBUF = 2
_MEM_TYPES = (BPF_DYNPTR_TYPE_LOCAL, BPF_DYNPTR_TYPE_RINGBUF)
DYNPTR_MEM_TYPES = _MEM_TYPES
DYNPTR_SIZE_MASK = DYNPTR_MAX_SIZE
DYNPTR_TYPE_SHIFT = 28
_TYPE_MASK = 0x7
DYNPTR_RDONLY_BIT = 1 << 31
_PTR = ffi.sizeof("void *")
_U32 = ffi.sizeof("__u32")
BPF_DYNPTR_SIZE = 2 * ffi.sizeof("__u64")     # struct bpf_dynptr { __u64 __opaque[2]; }
_U32_MASK = 0xFFFFFFFF


def dynptr_encode(data: int, size: int, dtype: int, offset: int = 0, rdonly: bool = False) -> bytes:
    """bpf_dynptr_init() (+ bpf_dynptr_set_rdonly()): the 16 bytes of a bpf_dynptr_kern."""
    field = (size & DYNPTR_SIZE_MASK) | (dtype << DYNPTR_TYPE_SHIFT) | (DYNPTR_RDONLY_BIT if rdonly else 0)
    return (data.to_bytes(_PTR, "little") + field.to_bytes(_U32, "little")
            + offset.to_bytes(_U32, "little"))


class _Dynptr:
    __slots__ = ("data", "size", "dtype", "rdonly", "offset")

    def __init__(self, raw: bytes):
        self.data = int.from_bytes(raw[:_PTR], "little")
        field = int.from_bytes(raw[_PTR:_PTR + _U32], "little")
        self.size = field & DYNPTR_SIZE_MASK
        self.dtype = (field >> DYNPTR_TYPE_SHIFT) & _TYPE_MASK
        self.rdonly = bool(field & DYNPTR_RDONLY_BIT)
        self.offset = int.from_bytes(raw[_PTR + _U32:_PTR + 2 * _U32], "little")

    def off_len_ok(self, offset: int, length: int) -> bool:
        """bpf_dynptr_check_off_len()."""
        return not (length > self.size or offset > self.size - length)


def _load(env, addr: int) -> _Dynptr:
    return _Dynptr(env.mem.read(addr, BPF_DYNPTR_SIZE))


def dynptr_at(mem, addr: int) -> _Dynptr:
    """The decoded bpf_dynptr_kern at `addr` (for the dynptr kfuncs)."""
    return _Dynptr(mem.read(addr, BPF_DYNPTR_SIZE))


def bpf_dynptr_from_mem(env, r1, r2, r3, r4, r5) -> int:
    """bpf_dynptr_from_mem(data, size, flags, ptr): a LOCAL dynptr over program memory."""
    size = r2 & _U32_MASK
    if r3:
        err = Errno.EINVAL
    elif size > DYNPTR_MAX_SIZE:
        err = Errno.E2BIG
    else:
        env.mem.write(r4, dynptr_encode(r1, size, BPF_DYNPTR_TYPE_LOCAL))
        return 0
    env.mem.write(r4, bytes(BPF_DYNPTR_SIZE))       # bpf_dynptr_set_null()
    return neg_errno(err)


def bpf_dynptr_read(env, r1, r2, r3, r4, r5) -> int:
    """bpf_dynptr_read(dst, len, src, offset, flags)."""
    src = _load(env, r3)
    length, offset = r2 & _U32_MASK, r4 & _U32_MASK
    if not src.data or r5:
        return neg_errno(Errno.EINVAL)
    if not src.off_len_ok(offset, length):
        return neg_errno(Errno.E2BIG)
    if src.dtype not in _MEM_TYPES:
        return neg_errno(Errno.EFAULT)
    if length:
        env.mem.write(r1, env.mem.read(src.data + src.offset + offset, length))
    return 0


def bpf_dynptr_write(env, r1, r2, r3, r4, r5) -> int:
    """bpf_dynptr_write(dst, offset, src, len, flags)."""
    dst = _load(env, r1)
    offset, length = r2 & _U32_MASK, r4 & _U32_MASK
    if not dst.data or dst.rdonly:
        return neg_errno(Errno.EINVAL)
    if not dst.off_len_ok(offset, length):
        return neg_errno(Errno.E2BIG)
    if dst.dtype not in _MEM_TYPES:
        return neg_errno(Errno.EFAULT)
    if r5:
        return neg_errno(Errno.EINVAL)
    if length:
        env.mem.write(dst.data + dst.offset + offset, env.mem.read(r3, length))
    return 0


def bpf_dynptr_data(env, r1, r2, r3, r4, r5) -> int:
    """bpf_dynptr_data(ptr, offset, len): a pointer into the dynptr's memory, or NULL."""
    ptr = _load(env, r1)
    offset, length = r2 & _U32_MASK, r3 & _U32_MASK
    if not ptr.data or not ptr.off_len_ok(offset, length) or ptr.rdonly or ptr.dtype not in _MEM_TYPES:
        return 0
    return ptr.data + ptr.offset + offset


def bpf_user_ringbuf_drain(env, r1, r2, r3, r4, r5) -> int:
    """bpf_user_ringbuf_drain(map, callback_fn, callback_ctx, flags): callback_fn(dynptr, ctx)
    per sample, the dynptr (LOCAL, writable) living in the kernel's stack."""
    urb = env.mem.object_at(r1)
    if not isinstance(urb, UserRingbufMap):
        # Linux refuses the program (check_map_func_compatibility); the fake verifier gives
        # up on callbacks and accepts it, so answer as for a bad argument
        return neg_errno(Errno.EINVAL)
    slot = bytearray(BPF_DYNPTR_SIZE)
    region = env.mem.map_region(slot, "stack", "user_ringbuf_dynptr", writable=False)

    def callback(addr: int, size: int) -> int:
        slot[:] = dynptr_encode(addr, size, BPF_DYNPTR_TYPE_LOCAL)
        return env.call_subprog(r2, region.base, r3)
    try:
        ret = urb.drain(callback, r4)
    finally:
        env.mem.unmap(region)
    return neg_errno(-ret) if ret < 0 else ret


DYNPTR_RUNTIME = {
    FuncId.dynptr_from_mem: bpf_dynptr_from_mem,
    FuncId.dynptr_read: bpf_dynptr_read,
    FuncId.dynptr_write: bpf_dynptr_write,
    FuncId.dynptr_data: bpf_dynptr_data,
    FuncId.user_ringbuf_drain: bpf_user_ringbuf_drain,
}
