"""Generic batch ops — kernel/bpf/syscall.c (generic_map_lookup_batch, generic_map_update_batch,
generic_map_delete_batch).

Map classes take these as their ``map_*_batch`` ops (``map_lookup_batch =
generic_map_lookup_batch``), as the kernel's array and hash ``bpf_map_ops`` do.  Each op
gets the map, the calling task, the decoded attr and the syscall ctx (to write
``batch.count`` back).  Elements are processed one at a time through the map's own
syscall-side ops; an error stops the batch with ``count`` = how many were done, and a
fault on the user's buffers is EFAULT after the elements already done stay done.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from uapi.bpf import UpdateFlags

__all__ = ["generic_map_lookup_batch", "generic_map_update_batch", "generic_map_delete_batch",
           "check_batch_elem_flags"]

_NOT_F_LOCK = ~int(UpdateFlags.F_LOCK)


def check_batch_elem_flags(bpf_map, elem_flags: int) -> None:
    """Only BPF_F_LOCK, and only on values with a bpf_spin_lock."""
    if elem_flags & _NOT_F_LOCK:
        raise KernelError(Errno.EINVAL, "unknown batch elem_flags")
    if elem_flags & UpdateFlags.F_LOCK and getattr(bpf_map, "spin_lock_off", None) is None:
        raise KernelError(Errno.EINVAL, "BPF_F_LOCK on a map without bpf_spin_lock")


def _put_count(ctx, n: int) -> None:
    ctx.put_attr_field("batch.count", n)


def _each_element(ctx, max_count: int, op) -> None:
    """Apply ``op(i)`` for i = 0.. until ``max_count`` or the first failure; ``count`` is
    written back with how many succeeded (0 first, so a fault mid-way is visible)."""
    _put_count(ctx, 0)
    done = 0
    err = None
    while done < max_count:
        try:
            op(done)
        except KernelError as e:
            err = e
            break
        done += 1
    _put_count(ctx, done)
    if err is not None:
        raise err


def generic_map_delete_batch(bpf_map, task, attr, ctx) -> int:
    """Delete ``count`` keys in order through map_delete_elem."""
    b = attr.batch
    check_batch_elem_flags(bpf_map, b.elem_flags)
    if not b.count:
        return 0
    ks = bpf_map.key_size
    _each_element(ctx, b.count,
                  lambda i: bpf_map.map_delete_elem(task.mm.copy_from_user(b.keys + i * ks, ks)))
    return 0


def generic_map_update_batch(bpf_map, task, attr, ctx) -> int:
    """Update ``count`` (key, value) pairs in order through the syscall-side update."""
    b = attr.batch
    check_batch_elem_flags(bpf_map, b.elem_flags)
    if not b.count:
        return 0
    ks, vs = bpf_map.key_size, bpf_map.sys_value_size

    def update(i: int) -> None:
        key = task.mm.copy_from_user(b.keys + i * ks, ks)
        value = task.mm.copy_from_user(b.values + i * vs, vs)
        bpf_map.sys_update(key, value, b.elem_flags)
    _each_element(ctx, b.count, update)
    return 0


def generic_map_lookup_batch(bpf_map, task, attr, ctx) -> int:
    """Walk with map_get_next_key from ``in_batch`` (NULL: the start), copying up to ``count``.

    The end of the map is ENOENT with ``count`` and ``out_batch`` (the last key copied)
    written; a fault on ``in_batch``, the keys or the values is EFAULT with ``count`` left
    at 0.
    """
    b = attr.batch
    check_batch_elem_flags(bpf_map, b.elem_flags)
    value_size = bpf_map.sys_value_size
    max_count = b.count
    if not max_count:
        return 0
    _put_count(ctx, 0)
    ks = bpf_map.key_size
    prev_key = task.mm.copy_from_user(b.in_batch, ks) if b.in_batch else None
    cp = 0
    err = None
    while cp < max_count:
        try:
            key = bpf_map.map_get_next_key(prev_key)
        except KernelError as e:
            err = e
            break
        try:
            value = bpf_map.sys_lookup(key, b.elem_flags)
        except KernelError as e:
            if e.errno != Errno.ENOENT:
                raise
            prev_key = key          # vanished under us: go on from it
            continue
        task.mm.copy_to_user(b.keys + cp * ks, key)
        task.mm.copy_to_user(b.values + cp * value_size, value)
        cp += 1
        prev_key = key
    _put_count(ctx, cp)
    if cp:
        task.mm.copy_to_user(b.out_batch, prev_key)
    if err is not None:
        raise err
    return 0
