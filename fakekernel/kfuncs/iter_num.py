"""Open-coded iterators over numbers and bits — kernel/bpf/bpf_iter.c (bpf_iter_num_*),
kernel/bpf/helpers.c (bpf_iter_bits_*).

The iterator state lives in the program's stack slot (struct bpf_iter_num / bpf_iter_bits);
these functions read and write it there exactly as the kernel's layout has it, so a program that
peeks at the state sees what it would see on Linux.  A bits iterator over more than one word
keeps its private copy in simulated kernel memory, as the kernel keeps a bpf_mem_alloc'd one.
"""
from __future__ import annotations

import weakref

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.trace import copy_from_kernel_nofault_allowed
from fakekernel.interp.memory import InterpreterFault
from uapi.errno import Errno
from uapi.insn import s32, u32

__all__ = ["ITER_NUM_KFUNCS", "BPF_MAX_LOOPS", "BITS_ITER_NR_WORDS_MAX"]

BPF_MAX_LOOPS = 8 * 1024 * 1024          # include/linux/bpf.h
BITS_ITER_NR_WORDS_MAX = 511             # kernel/bpf/helpers.c
_WORD = 8
# struct bpf_iter_num_kern { int cur; int end; }
_CUR, _END = 0, 4
# struct bpf_iter_bits_kern { union { __u64 *bits; __u64 bits_copy; }; int nr_bits; int bit; }
_BITS, _NR_BITS, _BIT = 0, 8, 12


def _set_num(mem, it: int, cur: int, end: int) -> None:
    mem.store(it + _CUR, 4, u32(cur))
    mem.store(it + _END, 4, u32(end))


def bpf_iter_num_new(env, it, start, end, r4, r5) -> int:
    start, end = s32(start), s32(end)
    if start > end:
        _set_num(env.mem, it, 0, 0)
        return neg_errno(Errno.EINVAL)
    if end - start > BPF_MAX_LOOPS:
        _set_num(env.mem, it, 0, 0)
        return neg_errno(Errno.E2BIG)
    _set_num(env.mem, it, start - 1, end)
    return 0


def bpf_iter_num_next(env, it, r2, r3, r4, r5) -> int:
    cur, end = s32(env.mem.load(it + _CUR, 4)), s32(env.mem.load(it + _END, 4))
    if cur + 1 >= end:
        _set_num(env.mem, it, 0, 0)
        return 0
    env.mem.store(it + _CUR, 4, u32(cur + 1))
    return it + _CUR


def bpf_iter_num_destroy(env, it, r2, r3, r4, r5) -> int:
    _set_num(env.mem, it, 0, 0)
    return 0


_BITS_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _bits_buffers(env) -> dict:
    """The simulated kernel's bpf_mem_alloc'd bit copies: address -> region."""
    return _BITS_COPIES.setdefault(env.kernel, {})


def bpf_iter_bits_new(env, it, ptr, nr_words, r4, r5) -> int:
    mem, nr_words = env.mem, u32(nr_words)
    mem.store(it + _BITS, 8, 0)
    mem.store(it + _NR_BITS, 4, 0)
    mem.store(it + _BIT, 4, u32(-1))
    if not ptr or not nr_words:
        return neg_errno(Errno.EINVAL)
    if nr_words > BITS_ITER_NR_WORDS_MAX:
        return neg_errno(Errno.E2BIG)
    nr_bytes = nr_words * _WORD
    if not copy_from_kernel_nofault_allowed(ptr):
        return neg_errno(Errno.EFAULT if nr_words == 1 else Errno.ERANGE)
    try:
        data = mem.read(ptr, nr_bytes)
    except InterpreterFault:
        return neg_errno(Errno.EFAULT)
    if nr_words == 1:
        mem.write(it + _BITS, data)
    else:
        region = mem.map_region(bytearray(data), "kmalloc", "bpf_iter_bits")
        _bits_buffers(env)[region.base] = region
        mem.store(it + _BITS, 8, region.base)
    mem.store(it + _NR_BITS, 4, nr_words * 64)
    return 0


def bpf_iter_bits_next(env, it, r2, r3, r4, r5) -> int:
    mem = env.mem
    bit, nr_bits = s32(mem.load(it + _BIT, 4)), s32(mem.load(it + _NR_BITS, 4))
    if not nr_bits or bit >= nr_bits:
        return 0
    if nr_bits == 64:
        words = mem.read(it + _BITS, _WORD)
    else:
        region = _bits_buffers(env).get(mem.load(it + _BITS, 8))
        if region is None:
            return 0
        words = bytes(region.buf)
    value = int.from_bytes(words, "little") >> (bit + 1)
    nxt = (value & -value).bit_length() - 1 + bit + 1 if value else nr_bits
    mem.store(it + _BIT, 4, u32(nxt))
    return 0 if nxt >= nr_bits else it + _BIT


def bpf_iter_bits_destroy(env, it, r2, r3, r4, r5) -> int:
    mem = env.mem
    if s32(mem.load(it + _NR_BITS, 4)) <= 64:
        return 0
    region = _bits_buffers(env).pop(mem.load(it + _BITS, 8), None)
    if region is not None:
        mem.unmap(region)
    return 0


ITER_NUM_KFUNCS = {
    "bpf_iter_num_new": bpf_iter_num_new, "bpf_iter_num_next": bpf_iter_num_next,
    "bpf_iter_num_destroy": bpf_iter_num_destroy,
    "bpf_iter_bits_new": bpf_iter_bits_new, "bpf_iter_bits_next": bpf_iter_bits_next,
    "bpf_iter_bits_destroy": bpf_iter_bits_destroy,
}
