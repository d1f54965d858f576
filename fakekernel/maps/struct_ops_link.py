"""struct_ops links — kernel/bpf/bpf_struct_ops.c (bpf_struct_ops_link_create,
bpf_struct_ops_map_link_ops: dealloc, detach, fill_link_info).

A BPF_F_LINK struct_ops map whose value was accepted stops in state READY; LINK_CREATE with
attach_type BPF_STRUCT_OPS and its fd as ``link_create.map_fd`` registers it (for
tcp_congestion_ops: the congestion control's name must be free, else EEXIST) and the link
holds a reference on the map.  LINK_DETACH unregisters and drops the map (a second detach
is a no-op); closing the last reference of an attached link does the same.  Link info shows
the map's id.  Not modelled: LINK_UPDATE with a new map (update_map) and poll.
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from uapi.bpf import AttachType, LinkType, MapFlags, MapType

__all__ = ["StructOpsLink", "bpf_struct_ops_link_create"]


def _valid_to_reg(m) -> bool:
    """bpf_struct_ops_valid_to_reg()."""
    from fakekernel.maps.struct_ops import BPF_STRUCT_OPS_STATE_READY
    return (m.map_type == MapType.STRUCT_OPS and bool(m.map_flags & MapFlags.LINK)
            and m.state == BPF_STRUCT_OPS_STATE_READY)


def _ops(m):
    from fakekernel.maps.struct_ops import _OPS
    return _OPS.get(m.desc.name)


@attrs.define(eq=False)
class StructOpsLink(BpfLink):
    """struct bpf_struct_ops_link: no program, the registered map."""

    map: object = None

    def _unreg(self) -> None:
        m, self.map = self.map, None
        if m is None:
            return
        _ops(m).unreg(self.kern, m.desc, m.uvalue[m.desc.data_off:])
        m.put()

    def release(self) -> None:
        """bpf_struct_ops_map_link_dealloc()."""
        self._unreg()

    def detach(self) -> None:
        """bpf_struct_ops_map_link_detach(): idempotent."""
        self._unreg()

    def fill_link_info(self, info, task) -> None:
        """bpf_struct_ops_map_link_fill_link_info()."""
        info.struct_ops.map_id = self.map.id if self.map is not None else 0


def bpf_struct_ops_link_create(kern, task, attr) -> int:
    """bpf_struct_ops_link_create(): a READY BPF_F_LINK struct_ops map, registered by the link."""
    from fakekernel.syscall.fdget import bpf_map_get
    _, m = bpf_map_get(task, attr.link_create.map_fd)           # EBADF / EINVAL
    if not _valid_to_reg(m):
        raise KernelError(Errno.EINVAL, "not a READY BPF_F_LINK struct_ops map")
    ops = _ops(m)
    if ops is None or ops.reg is None:
        raise KernelError(Errno.ENOTSUPP, f"registering {m.desc.name} is not modelled")
    link = StructOpsLink(kern=kern, type=LinkType.STRUCT_OPS, attach_type=AttachType.STRUCT_OPS, prog=None)
    primer = bpf_link_prime(link)
    try:
        ops.reg(kern, m.desc, m.uvalue[m.desc.data_off:])
    except KernelError:
        primer.cleanup()
        raise
    link.map = m.get()
    return primer.settle(task)
