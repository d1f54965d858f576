"""Multi-program attach points — kernel/bpf/mprog.c (bpf_mprog_attach, bpf_mprog_detach,
bpf_mprog_query) and include/linux/bpf_mprog.h (the entry, its revision, BPF_MPROG_MAX).

An entry is an ordered array of (prog, link) tuples.  Attach and detach place or find a
tuple relative to an anchor named by fd or id (BPF_F_BEFORE / BPF_F_AFTER, BPF_F_ID,
BPF_F_LINK), may replace one in place (BPF_F_REPLACE), and can be made conditional on the
entry's revision (ESTALE), which every successful change bumps.  The tcx hook
(`fakekernel.net.tcx`) owns one entry per device and direction.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from uapi.bpf import BPF_F_LINK, AttachFlags
from uapi.ffi import ffi

__all__ = ["MprogEntry", "BPF_MPROG_MAX", "bpf_mprog_attach", "bpf_mprog_detach",
           "bpf_mprog_query", "resolve_relative"]

BPF_MPROG_MAX = 64
_MPROG_LIMIT = BPF_MPROG_MAX - 1     # bpf_mprog_max(): one fp slot stays NULL (the terminator)
_U32 = ffi.sizeof("__u32")
_BEFORE, _AFTER = AttachFlags.BEFORE, AttachFlags.AFTER
_REPLACE, _ID = AttachFlags.REPLACE, AttachFlags.ID


@attrs.define(eq=False)
class MprogEntry:
    """struct bpf_mprog_entry + its bundle's revision (starts at 1)."""

    items: list = attrs.field(factory=list)       # [(prog, link or None)]
    revision: int = 1

    @property
    def total(self) -> int:
        return len(self.items)

    def exists(self, prog) -> bool:
        return any(p is prog for p, _l in self.items)

    def commit(self) -> None:
        """bpf_mprog_commit(): a change landed."""
        self.revision += 1

    def progs(self) -> list:
        return [p for p, _l in self.items]


@attrs.frozen
class _Tuple:
    prog: object = None
    link: object = None


def _link_by_id_or_fd(kern, task, id_or_fd: int, by_id: bool):
    if by_id:
        link = kern.link_idr.find(id_or_fd) if id_or_fd else None
        if link is None or link.refcnt == 0 or link.freed:
            raise KernelError(Errno.ENOENT, f"no link with id {id_or_fd}")
        return link
    if not id_or_fd:
        raise KernelError(Errno.EINVAL, "BPF_F_LINK without a link")
    from fakekernel.syscall import fdget
    return fdget.bpf_link_get(task, id_or_fd)


def _prog_by_id_or_fd(kern, task, id_or_fd: int, by_id: bool):
    if by_id:
        prog = kern.prog_idr.find(id_or_fd) if id_or_fd else None
        if prog is None or prog.refcnt == 0:
            raise KernelError(Errno.ENOENT, f"no prog with id {id_or_fd}")
        return prog
    from fakekernel.syscall import fdget
    return fdget.bpf_prog_get(task, id_or_fd)


def resolve_relative(kern, task, id_or_fd: int, flags: int, prog_type: int) -> _Tuple:
    """bpf_mprog_tuple_relative(): the anchor as (prog, link); (None, None) for none."""
    by_id = bool(flags & _ID)
    if flags & BPF_F_LINK:
        link = _link_by_id_or_fd(kern, task, id_or_fd, by_id)
        if prog_type and link.prog.type != prog_type:
            raise KernelError(Errno.EINVAL, "relative link of another prog type")
        return _Tuple(link.prog, link)
    if not by_id and not id_or_fd:
        return _Tuple()
    prog = _prog_by_id_or_fd(kern, task, id_or_fd, by_id)
    if prog_type and prog.type != prog_type:
        raise KernelError(Errno.EINVAL, "relative prog of another prog type")
    return _Tuple(prog, None)


def _pos_exact(entry: MprogEntry, t: _Tuple) -> int:
    for i, (p, l) in enumerate(entry.items):
        if p is t.prog:
            if l is t.link:
                return i
            raise KernelError(Errno.EBUSY, "the prog is attached through a link")
    raise KernelError(Errno.ENOENT, "the prog is not attached here")


def _pos_before(entry: MprogEntry, t: _Tuple) -> int:
    for i, (p, l) in enumerate(entry.items):
        if p is t.prog and (t.link is None or t.link is l):
            return i - 1
    if t.prog is not None:
        raise KernelError(Errno.ENOENT, "relative prog is not attached here")
    return -1


def _pos_after(entry: MprogEntry, t: _Tuple) -> int:
    for i, (p, l) in enumerate(entry.items):
        if p is t.prog and (t.link is None or t.link is l):
            return i + 1
    if t.prog is not None:
        raise KernelError(Errno.ENOENT, "relative prog is not attached here")
    return entry.total


def _position(entry: MprogEntry, rtuple: _Tuple, flags: int, idx: int | None) -> tuple[int, int]:
    """The BEFORE/AFTER part shared by attach and detach: (idx, flags)."""
    if flags & _BEFORE:
        tidx = _pos_before(entry, rtuple)
        if idx is not None and tidx != idx:
            raise KernelError(Errno.ERANGE, "BEFORE anchor disagrees")
        idx = tidx
    if flags & _AFTER:
        tidx = _pos_after(entry, rtuple)
        if idx is not None and tidx != idx:
            raise KernelError(Errno.ERANGE, "AFTER anchor disagrees")
        idx = tidx
    if idx is None:
        if rtuple.prog is not None or flags:
            raise KernelError(Errno.EINVAL, "relative target without BEFORE/AFTER")
        idx, flags = entry.total, _AFTER
    if idx >= _MPROG_LIMIT:
        raise KernelError(Errno.ERANGE, "too many programs")
    return idx, flags


def bpf_mprog_attach(kern, task, entry: MprogEntry, prog, link, old_prog, flags: int,
                     id_or_fd: int, revision: int) -> None:
    """bpf_mprog_attach(): insert (prog, link) or replace old_prog's tuple.  The new tuple's
    prog reference is the caller's (it stays with the entry on success)."""
    if revision and revision != entry.revision:
        raise KernelError(Errno.ESTALE, "expected_revision does not match")
    if entry.exists(prog):
        raise KernelError(Errno.EEXIST, "the prog is attached here already")
    rtuple = resolve_relative(kern, task, id_or_fd, flags & ~int(_REPLACE), prog.type)
    idx = None
    if flags & _REPLACE:
        idx = _pos_exact(entry, _Tuple(old_prog, link))
    elif entry.total == _MPROG_LIMIT:
        raise KernelError(Errno.ERANGE, "too many programs")
    idx, flags = _position(entry, rtuple, flags, idx)
    if flags & _REPLACE:
        entry.items[idx] = (prog, link)
    elif idx == entry.total:
        entry.items.append((prog, link))
    else:
        entry.items.insert(idx + 1 if flags & _BEFORE else idx, (prog, link))


def bpf_mprog_detach(kern, task, entry: MprogEntry, prog, link, flags: int, id_or_fd: int,
                     revision: int) -> tuple:
    """bpf_mprog_detach(): remove a tuple; returns the (prog, link) removed."""
    if flags & _REPLACE:
        raise KernelError(Errno.EINVAL, "BPF_F_REPLACE on detach")
    if revision and revision != entry.revision:
        raise KernelError(Errno.ESTALE, "expected_revision does not match")
    if not entry.total:
        raise KernelError(Errno.ENOENT, "nothing attached")
    rtuple = resolve_relative(kern, task, id_or_fd, flags, prog.type if prog is not None else 0)
    idx = _pos_exact(entry, _Tuple(prog, link)) if prog is not None else None
    idx, flags = _position(entry, rtuple, flags, idx)
    # bpf_mprog_fetch()
    idx = 0 if idx == -1 else (entry.total - 1 if idx == entry.total else idx)
    p, l = entry.items[idx]
    if l is not None and link is None:
        raise KernelError(Errno.EBUSY, "the prog is attached through a link")
    return entry.items.pop(idx)


def bpf_mprog_query(attr, ctx, entry: MprogEntry | None) -> int:
    """bpf_mprog_query(): attach_flags 0, the revision (1 without entry) and count, then up
    to query.count prog ids / link ids (ENOSPC when the arrays are too short)."""
    q = attr.query
    if q.query_flags or q.attach_flags:
        raise KernelError(Errno.EINVAL, "query_flags/attach_flags are not used by mprog hooks")
    revision, items = (entry.revision, entry.items) if entry is not None else (1, [])
    count = len(items)
    ctx.put_attr_field("query.attach_flags", 0)
    ctx.put_attr_field("query.revision", revision)
    ctx.put_attr_field("query.count", count)
    if q.count == 0 or not q.prog_ids or not count:
        return 0
    err = None
    if q.count < count:
        count, err = q.count, Errno.ENOSPC
    mm = ctx.task.mm
    zero = bytes(_U32)
    for i, (p, l) in enumerate(items[:count]):
        off = i * _U32
        mm.copy_to_user(q.prog_ids + off, p.aux.id.to_bytes(_U32, "little"))
        if q.prog_attach_flags:
            mm.copy_to_user(q.prog_attach_flags + off, zero)
        if q.link_ids:
            mm.copy_to_user(q.link_ids + off, (l.id if l is not None else 0).to_bytes(_U32, "little"))
        if q.link_attach_flags:
            mm.copy_to_user(q.link_attach_flags + off, zero)
    if err is not None:
        raise KernelError(err, "prog_ids array too small")
    return 0
