"""Link creation in two steps — kernel/bpf/syscall.c: bpf_link_prime(), bpf_link_settle(), bpf_link_cleanup().

A link gets its id when it is *primed*, before the hook accepts it; if the attach then
fails the id is freed again (the id space still moved on: link ids are cyclic), and
the caller keeps its program reference.  On success the link takes its own reference on
the program and a new "bpf-link" fd owns the link.
"""
from __future__ import annotations

import attrs

__all__ = ["LinkPrimer", "bpf_link_prime"]


@attrs.define(eq=False)
class LinkPrimer:
    """struct bpf_link_primer."""

    link: object
    id: int

    def settle(self, task) -> int:
        """bpf_link_settle(): the link holds a prog reference and is reachable by id and fd."""
        from fakekernel.syscall import fdget     # the syscall package imports the hooks
        link = self.link
        if link.prog is not None:
            link.prog.get()
        return fdget.bpf_link_new_fd(link.kern, task, link)

    def cleanup(self) -> None:
        """bpf_link_cleanup(): forget the link; the prog reference stays with the caller."""
        link = self.link
        link.prog = None
        link.detached = True
        link.freed = True
        link.kern.link_idr.remove(self.id)


def bpf_link_prime(link) -> LinkPrimer:
    """bpf_link_prime(): allocate the link id (idr_alloc_cyclic)."""
    link.id = link.kern.link_idr.alloc_cyclic(link)
    return LinkPrimer(link=link, id=link.id)
