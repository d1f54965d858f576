"""BPF cpumask kfuncs — kernel/bpf/cpumask.c (over include/linux/cpumask.h and lib/cpumask.c).

A ``struct bpf_cpumask`` (``cpumask_t cpumask; refcount_t usage``, laid out as the vmlinux BTF
has it) is allocated in simulated kernel memory by bpf_cpumask_create and freed when its
usage count drops to zero.  The query kfuncs take any ``struct cpumask *`` — a bpf_cpumask
(whose mask is its first member) or a kernel mask — and read the bitmap where it lies.

The bitmap semantics are the kernel's with nr_cpu_ids = ``kern.nr_cpus``: queries look at the
first nr_cpu_ids bits only and answer nr_cpu_ids for "none"; setall / or / xor / copy /
populate work on whole longs (bitmap_fill, bitmap_or, ... touch the tail bits of the last
word), ``and`` masks the tail; a CPU number past nr_cpu_ids is ignored by the setters and
tests false.  bpf_cpumask_any_distribute keeps the kernel's per-CPU "previous pick" and
returns the next set CPU after it, wrapping.
"""
from __future__ import annotations

import weakref

from fakekernel.btf_objects import struct_layout
from fakekernel.btf_vmlinux import btf_index
from fakekernel.kfuncs.dynptr import kfunc_int_errno
from uapi.errno import Errno
from uapi.insn import u32

__all__ = ["CPUMASK_KFUNCS"]

_LONG = 8
_BITS_PER_LONG = 64
_WORD_MASK = (1 << _BITS_PER_LONG) - 1


class _CpumaskState:
    """One kernel's bpf_cpumask allocations and cpumask_any_distribute's per-CPU memory."""

    def __init__(self, kern):
        ix = btf_index(kern.btf_vmlinux)
        self.size, fields = struct_layout(ix, "bpf_cpumask")
        self.mask_bytes = fields["cpumask"][1]
        self.usage_off = fields["usage"][0]
        self.regions: dict[int, object] = {}
        self.distribute_prev: dict[int, int] = {}


_STATE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _state(kern) -> _CpumaskState:
    st = _STATE.get(kern)
    if st is None:
        st = _STATE[kern] = _CpumaskState(kern)
    return st


def _nr(env) -> int:
    return env.kernel.nr_cpus


def _nwords(env) -> int:
    """BITS_TO_LONGS(nr_cpu_ids): the longs the bitmap operations touch."""
    return -(-_nr(env) // _BITS_PER_LONG)


def _get(env, addr: int) -> int:
    """The first BITS_TO_LONGS(nr_cpu_ids) longs of the mask at `addr`, as one integer."""
    return int.from_bytes(env.mem.read(addr, _nwords(env) * _LONG), "little")


def _put(env, addr: int, bits: int) -> None:
    n = _nwords(env) * _LONG
    env.mem.write(addr, (bits & ((1 << (8 * n)) - 1)).to_bytes(n, "little"))


def _valid(env) -> int:
    """The nr_cpu_ids low bits."""
    return (1 << _nr(env)) - 1


def _first(env, bits: int) -> int:
    """find_first_bit(bits, nr_cpu_ids): nr_cpu_ids when none."""
    bits &= _valid(env)
    return (bits & -bits).bit_length() - 1 if bits else _nr(env)


# ---------------------------------------------------------------- allocation and references

def bpf_cpumask_create(env, r1, r2, r3, r4, r5) -> int:
    st = _state(env.kernel)
    buf = bytearray(st.size)
    buf[st.usage_off:st.usage_off + 4] = (1).to_bytes(4, "little")      # refcount_set(&usage, 1)
    region = env.mem.map_region(buf, "kmalloc", "bpf_cpumask")
    st.regions[region.base] = region
    return region.base


def _usage(env, cpumask: int) -> int:
    return env.mem.load(cpumask + _state(env.kernel).usage_off, 4)


def bpf_cpumask_acquire(env, cpumask, r2, r3, r4, r5) -> int:
    env.mem.store(cpumask + _state(env.kernel).usage_off, 4, _usage(env, cpumask) + 1)
    return cpumask


def bpf_cpumask_release(env, cpumask, r2, r3, r4, r5) -> int:
    st = _state(env.kernel)
    left = _usage(env, cpumask) - 1
    env.mem.store(cpumask + st.usage_off, 4, max(left, 0))
    if left <= 0:
        region = st.regions.pop(cpumask, None)
        if region is not None:
            env.mem.unmap(region)
    return 0


# ---------------------------------------------------------------- queries

def bpf_cpumask_first(env, m, r2, r3, r4, r5) -> int:
    return _first(env, _get(env, m))


def bpf_cpumask_first_zero(env, m, r2, r3, r4, r5) -> int:
    return _first(env, ~_get(env, m))


def bpf_cpumask_first_and(env, m1, m2, r3, r4, r5) -> int:
    return _first(env, _get(env, m1) & _get(env, m2))


def bpf_cpumask_test_cpu(env, cpu, m, r3, r4, r5) -> int:
    cpu = u32(cpu)
    return int(cpu < _nr(env) and bool(_get(env, m) >> cpu & 1))


def bpf_cpumask_equal(env, m1, m2, r3, r4, r5) -> int:
    return int((_get(env, m1) ^ _get(env, m2)) & _valid(env) == 0)


def bpf_cpumask_intersects(env, m1, m2, r3, r4, r5) -> int:
    return int(_get(env, m1) & _get(env, m2) & _valid(env) != 0)


def bpf_cpumask_subset(env, m1, m2, r3, r4, r5) -> int:
    return int(_get(env, m1) & ~_get(env, m2) & _valid(env) == 0)


def bpf_cpumask_empty(env, m, r2, r3, r4, r5) -> int:
    return int(_get(env, m) & _valid(env) == 0)


def bpf_cpumask_full(env, m, r2, r3, r4, r5) -> int:
    return int(_get(env, m) & _valid(env) == _valid(env))


def bpf_cpumask_weight(env, m, r2, r3, r4, r5) -> int:
    return (_get(env, m) & _valid(env)).bit_count()


def _distribute(env, bits: int) -> int:
    """cpumask_next_wrap(prev, mask) from this CPU's previous pick; remembered if one is found."""
    st, nr = _state(env.kernel), _nr(env)
    bits &= _valid(env)
    if not bits:
        return nr
    prev = st.distribute_prev.get(env.kernel.cpu, 0)
    after = bits >> (prev + 1) << (prev + 1) if prev + 1 < nr else 0
    pick = _first(env, after if after else bits)
    st.distribute_prev[env.kernel.cpu] = pick
    return pick


def bpf_cpumask_any_distribute(env, m, r2, r3, r4, r5) -> int:
    return _distribute(env, _get(env, m))


def bpf_cpumask_any_and_distribute(env, m1, m2, r3, r4, r5) -> int:
    return _distribute(env, _get(env, m1) & _get(env, m2))


# ---------------------------------------------------------------- mutators

def _set_bit(env, cpu: int, m: int, value: bool) -> bool:
    """Set or clear one valid CPU's bit; its old value."""
    bits = _get(env, m)
    old = bool(bits >> cpu & 1)
    _put(env, m, bits | (1 << cpu) if value else bits & ~(1 << cpu))
    return old


def bpf_cpumask_set_cpu(env, cpu, m, r3, r4, r5) -> int:
    if u32(cpu) < _nr(env):
        _set_bit(env, u32(cpu), m, True)
    return 0


def bpf_cpumask_clear_cpu(env, cpu, m, r3, r4, r5) -> int:
    if u32(cpu) < _nr(env):
        _set_bit(env, u32(cpu), m, False)
    return 0


def bpf_cpumask_test_and_set_cpu(env, cpu, m, r3, r4, r5) -> int:
    return int(u32(cpu) < _nr(env) and _set_bit(env, u32(cpu), m, True))


def bpf_cpumask_test_and_clear_cpu(env, cpu, m, r3, r4, r5) -> int:
    return int(u32(cpu) < _nr(env) and _set_bit(env, u32(cpu), m, False))


def bpf_cpumask_setall(env, m, r2, r3, r4, r5) -> int:
    _put(env, m, -1)                     # bitmap_fill(): whole longs
    return 0


def bpf_cpumask_clear(env, m, r2, r3, r4, r5) -> int:
    _put(env, m, 0)
    return 0


def bpf_cpumask_and(env, dst, m1, m2, r4, r5) -> int:
    """bitmap_and(): the tail of the last long cleared; whether any bit is left."""
    bits = _get(env, m1) & _get(env, m2) & _valid(env)
    _put(env, dst, bits)
    return int(bits != 0)


def bpf_cpumask_or(env, dst, m1, m2, r4, r5) -> int:
    _put(env, dst, _get(env, m1) | _get(env, m2))
    return 0


def bpf_cpumask_xor(env, dst, m1, m2, r4, r5) -> int:
    _put(env, dst, _get(env, m1) ^ _get(env, m2))
    return 0


def bpf_cpumask_copy(env, dst, src, r3, r4, r5) -> int:
    _put(env, dst, _get(env, src))
    return 0


def bpf_cpumask_populate(env, m, src, src_sz, r4, r5) -> int:
    """Copy a bitmap from program memory: -EACCES unless it covers bitmap_size(nr_cpu_ids)
    (x86 has efficient unaligned access, so any alignment is accepted)."""
    if src_sz < _nwords(env) * _LONG:
        return kfunc_int_errno(Errno.EACCES)
    _put(env, m, _get(env, src))
    return 0


CPUMASK_KFUNCS = {
    "bpf_cpumask_create": bpf_cpumask_create, "bpf_cpumask_acquire": bpf_cpumask_acquire,
    "bpf_cpumask_release": bpf_cpumask_release,
    "bpf_cpumask_first": bpf_cpumask_first, "bpf_cpumask_first_zero": bpf_cpumask_first_zero,
    "bpf_cpumask_first_and": bpf_cpumask_first_and, "bpf_cpumask_set_cpu": bpf_cpumask_set_cpu,
    "bpf_cpumask_clear_cpu": bpf_cpumask_clear_cpu, "bpf_cpumask_test_cpu": bpf_cpumask_test_cpu,
    "bpf_cpumask_test_and_set_cpu": bpf_cpumask_test_and_set_cpu,
    "bpf_cpumask_test_and_clear_cpu": bpf_cpumask_test_and_clear_cpu,
    "bpf_cpumask_setall": bpf_cpumask_setall, "bpf_cpumask_clear": bpf_cpumask_clear,
    "bpf_cpumask_and": bpf_cpumask_and, "bpf_cpumask_or": bpf_cpumask_or, "bpf_cpumask_xor": bpf_cpumask_xor,
    "bpf_cpumask_equal": bpf_cpumask_equal, "bpf_cpumask_intersects": bpf_cpumask_intersects,
    "bpf_cpumask_subset": bpf_cpumask_subset, "bpf_cpumask_empty": bpf_cpumask_empty,
    "bpf_cpumask_full": bpf_cpumask_full, "bpf_cpumask_copy": bpf_cpumask_copy,
    "bpf_cpumask_weight": bpf_cpumask_weight, "bpf_cpumask_any_distribute": bpf_cpumask_any_distribute,
    "bpf_cpumask_any_and_distribute": bpf_cpumask_any_and_distribute,
    "bpf_cpumask_populate": bpf_cpumask_populate,
}
