"""Object ids — lib/idr.c as used by kernel/bpf/syscall.c (idr_alloc_cyclic).

Ids start at 1 and grow cyclically: a freed id is not reused until the counter wraps
(INT_MAX), so an id that stopped resolving stays dead, as on Linux.
"""
from __future__ import annotations

import bisect

import attrs

from fakekernel.errors import Errno, KernelError

__all__ = ["Idr", "INT_MAX"]

INT_MAX = 2**31 - 1


@attrs.define(eq=False)
class Idr:
    """A cyclic id allocator: id -> object, plus ordered iteration for *_GET_NEXT_ID."""

    start: int = 1
    _next: int = attrs.field(default=0, init=False)
    _objs: dict[int, object] = attrs.field(factory=dict, init=False)
    _ids: list[int] = attrs.field(factory=list, init=False)     # sorted

    def __attrs_post_init__(self) -> None:
        self._next = self.start

    def alloc_cyclic(self, obj: object) -> int:
        """idr_alloc_cyclic(idr, obj, start, INT_MAX): the next free id at or after the cursor."""
        for _ in range(2):
            cand = self._next
            while cand in self._objs and cand <= INT_MAX:
                cand += 1
            if cand <= INT_MAX:
                self._objs[cand] = obj
                bisect.insort(self._ids, cand)
                self._next = cand + 1
                return cand
            self._next = self.start
        raise KernelError(Errno.ENOSPC, "id space exhausted")

    def remove(self, id_: int) -> None:
        if self._objs.pop(id_, None) is not None:
            i = bisect.bisect_left(self._ids, id_)
            del self._ids[i]

    def find(self, id_: int) -> object | None:
        return self._objs.get(id_)

    def get_next(self, start: int) -> tuple[int, object] | None:
        """The first (id, obj) with id > start (idr_get_next on start + 1)."""
        i = bisect.bisect_right(self._ids, start)
        if i == len(self._ids):
            return None
        nid = self._ids[i]
        return nid, self._objs[nid]

    def __len__(self) -> int:
        return len(self._objs)

    # ---- saved state (fakekernel/state.py): ids survive a save and reload ----
    @property
    def cursor(self) -> int:
        """Where the next alloc_cyclic starts looking."""
        return self._next

    @cursor.setter
    def cursor(self, value: int) -> None:
        self._next = value if self.start <= value <= INT_MAX else self.start

    def alloc_at(self, obj: object, id_: int) -> None:
        """Put `obj` at exactly `id_` (EEXIST if taken); the cursor does not move."""
        if id_ in self._objs:
            raise KernelError(Errno.EEXIST, f"id {id_} is taken")
        if not self.start <= id_ <= INT_MAX:
            raise KernelError(Errno.EINVAL, f"id {id_} out of range")
        self._objs[id_] = obj
        bisect.insort(self._ids, id_)

    def values(self) -> list[object]:
        return [self._objs[i] for i in self._ids]
