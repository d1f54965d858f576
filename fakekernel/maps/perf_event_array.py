"""Perf event arrays — kernel/bpf/arraymap.c (perf_event_array_map_ops), kernel/events/core.c
(perf_event_get).

BPF_MAP_TYPE_PERF_EVENT_ARRAY: an fd array of perf events, the targets of
bpf_perf_event_output / bpf_perf_event_read.  Creation follows the fd-array rules (u32
key and value, any max_entries — the kernel does not cap it at the CPU count, libbpf
does), and it is the one array type that accepts BPF_F_PRESERVE_ELEMS.  Userspace cannot
read it back (lookup is ENOTSUPP), and an update whose fd is not a perf event is EBADF.

Not modelled: the simulated kernel has no perf events yet, so no fd can be stored (a file
of kind "perf_event" answers EOPNOTSUPP), and with that the per-map-file release of
entries (perf_event_fd_array_release) and the runtime of bpf_perf_event_output /
bpf_perf_event_read(_value) do not exist either.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.maps.fd_array import FdArrayMap

__all__ = ["PerfEventArrayMap", "PERF_EVENT_FILE_KIND", "perf_event_get"]

PERF_EVENT_FILE_KIND = "perf_event"     # File.kind of a perf_event_open() fd


def perf_event_get(task, fd: int):
    """perf_event_get(): the perf event file behind `fd`, EBADF for any other file."""
    f = task.files.fdget(fd)
    if f.kind != PERF_EVENT_FILE_KIND:
        raise KernelError(Errno.EBADF, f"fd {fd} is not a perf event")
    return f


@attrs.define(eq=False)
class PerfEventArrayMap(FdArrayMap):
    """BPF_MAP_TYPE_PERF_EVENT_ARRAY — perf_event_array_map_ops."""

    def map_fd_get_ptr(self, ufd: int):
        """perf_event_fd_array_get_ptr()."""
        perf_event_get(self.kern.current, ufd)
        raise KernelError(Errno.EOPNOTSUPP, "perf events are not modelled")
