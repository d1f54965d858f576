"""struct bpf_link and its ops — include/linux/bpf.h, kernel/bpf/syscall.c (bpf_link_*)."""
from __future__ import annotations

import attrs

__all__ = ["BpfLink"]


@attrs.define(eq=False)
class BpfLink:
    """A prog attached somewhere; releasing the link detaches it.

    Link types subclass this and override `release` (detach from the hook),
    `fill_link_info`, `update_prog` and `detach`.
    """

    kern: object
    type: int
    attach_type: int
    prog: object
    id: int = 0
    refcnt: int = 1
    freed: bool = False
    detached: bool = False

    def release(self) -> None:
        """Detach from the hook point (bpf_link_ops.release)."""

    def get(self) -> "BpfLink":
        self.refcnt += 1
        return self

    def put(self) -> None:
        self.refcnt -= 1
        if self.refcnt == 0:
            self._free()

    def _free(self) -> None:
        if self.freed:
            return
        self.freed = True
        if not self.detached:
            self.release()
            self.detached = True
        self.kern.link_idr.remove(self.id)
        if self.prog is not None:
            self.prog.put()
            self.prog = None

    def file_release(self, file) -> None:
        self.put()
