"""Perf event arrays — kernel/bpf/arraymap.c (perf_event_array_map_ops: perf_event_fd_array_get_ptr,
perf_event_fd_array_put_ptr, perf_event_fd_array_release, perf_event_fd_array_map_free).

BPF_MAP_TYPE_PERF_EVENT_ARRAY: an fd array of perf events, the targets of
bpf_perf_event_output (fakekernel/helpers/perf_output.py).  Creation follows the fd-array
rules (u32 key and value, any max_entries — the kernel does not cap it at the CPU count,
libbpf does), and it is the one array type that accepts BPF_F_PRESERVE_ELEMS.  Userspace
cannot read it back (lookup is ENOTSUPP); an update whose fd is not a perf event is EBADF.

Each slot holds a `BpfEventEntry` (struct bpf_event_entry): a reference to the perf event's
*file* — closing the perf fd does not empty the slot — and the map file the update came
through.  When that map file is released, its entries go (perf_event_fd_array_release),
unless the map has BPF_F_PRESERVE_ELEMS; the rest go when the map is freed.
MAP_UPDATE_ELEM hands the map file over through `sys_update_via`.
"""
from __future__ import annotations

import attrs

from fakekernel.maps.fd_array import FdArrayMap
from fakekernel.perf.core import PERF_EVENT_FILE_KIND, perf_event_get
from uapi.bpf import MapFlags

__all__ = ["PerfEventArrayMap", "BpfEventEntry", "PERF_EVENT_FILE_KIND", "perf_event_get"]


@attrs.define(eq=False)
class BpfEventEntry:
    """struct bpf_event_entry: the event, its file (held) and the map file that stored it."""

    event: object
    perf_file: object
    map_file: object


@attrs.define(eq=False)
class PerfEventArrayMap(FdArrayMap):
    """BPF_MAP_TYPE_PERF_EVENT_ARRAY — perf_event_array_map_ops."""

    _map_file: object = None            # the map file of the update in progress

    def sys_update_via(self, map_file, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_array_map_update_elem(map, map_file, ...): the slot remembers `map_file`."""
        self._map_file = map_file
        try:
            self.sys_update(key, value, flags)
        finally:
            self._map_file = None

    def map_fd_get_ptr(self, ufd: int):
        """perf_event_fd_array_get_ptr(): EBADF unless `ufd` is a perf event."""
        perf_file = perf_event_get(self.kern.current, ufd)
        return BpfEventEntry(event=perf_file.private_data, perf_file=perf_file.get(),
                             map_file=self._map_file)

    def map_fd_put_ptr(self, ptr) -> None:
        """perf_event_fd_array_put_ptr(): drop the file reference."""
        ptr.perf_file.put()

    def map_release(self, map_file) -> None:
        """perf_event_fd_array_release(): this map file's entries go with it."""
        if self.map_flags & MapFlags.PRESERVE_ELEMS:
            return
        for index in sorted(self.ptrs):
            ee = self.ptrs[index]
            if ee.map_file is map_file:
                del self.ptrs[index]
                self.map_fd_put_ptr(ee)

    def file_release(self, file) -> None:
        """bpf_map_release(): map_release for this file, then the user reference."""
        self.map_release(file)
        super().file_release(file)
