"""Hash map batch lookup (and delete) — kernel/bpf/hashtab.c: __htab_map_lookup_and_delete_batch().

The batch cursor is a bucket index (``__u32`` at ``in_batch`` / ``out_batch``).  Whole
buckets are copied: a bucket that does not fit in what is left of ``count`` ends the
batch there (ENOSPC if nothing was copied yet); running past the last bucket is ENOENT.
``count`` and ``out_batch`` are written on every return except EFAULT on the keys or
values buffer, and elements a deleting batch already removed stay removed.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.batch import check_batch_elem_flags
from uapi.ffi import ffi

__all__ = ["htab_lookup_and_delete_batch"]

U32_SIZE = ffi.sizeof("__u32")


def htab_lookup_and_delete_batch(htab, task, attr, ctx, do_delete: bool) -> int:
    b = attr.batch
    check_batch_elem_flags(htab, b.elem_flags)
    if b.flags:
        raise KernelError(Errno.EINVAL, "batch.flags must be 0 for hash maps")
    max_count = b.count
    if not max_count:
        return 0
    ctx.put_attr_field("batch.count", 0)
    batch = 0
    if b.in_batch:
        batch = int.from_bytes(task.mm.copy_from_user(b.in_batch, U32_SIZE), "little")
    if batch >= htab.n_buckets:
        raise KernelError(Errno.ENOENT, "in_batch past the last bucket")

    ks, vs = htab.key_size, htab.sys_value_size
    walk = htab.walk
    walk.sync()
    total = 0
    err = None
    while True:
        nb = walk.next_bucket(batch)
        if nb is None:                      # only empty buckets left: walk off the end
            batch = htab.n_buckets
            err = Errno.ENOENT
            break
        batch = nb
        keys = walk.bucket_keys(batch)
        cnt = len(keys)
        if cnt > max_count - total:
            if total == 0:
                err = Errno.ENOSPC
            break
        values = [htab._copy_value(htab.elems[k]) for k in keys]
        if do_delete:
            for k in keys:
                htab.map_delete_elem(k)
        task.mm.copy_to_user(b.keys + total * ks, b"".join(keys))       # EFAULT: count stays 0
        task.mm.copy_to_user(b.values + total * vs, b"".join(values))
        total += cnt
        batch += 1
        if batch >= htab.n_buckets:
            err = Errno.ENOENT
            break
    task.mm.copy_to_user(b.out_batch, batch.to_bytes(U32_SIZE, "little"))
    ctx.put_attr_field("batch.count", total)
    if err is not None:
        raise KernelError(err, "end of batch")
    return 0
