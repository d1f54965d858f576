"""Attaching XDP to a device — net/core/dev.c (dev_xdp_attach, bpf_xdp_link_attach,
bpf_xdp_link ops) and the XDP_FLAGS_* of include/uapi/linux/if_link.h.

Each device has three XDP slots (generic/SKB, native/DRV, offloaded/HW).  A slot holds a
program attached through netlink or a `XdpLink`; a link cannot be replaced (EBUSY),
native and generic cannot be active together (EEXIST), and a device whose driver has no
``ndo_bpf`` (lo, dummy) refuses DRV/HW mode with EOPNOTSUPP.
"""
from __future__ import annotations

import enum

import attrs

from fakekernel.bpf.link import BpfLink
from fakekernel.bpf.link_primer import bpf_link_prime
from fakekernel.errors import Errno, KernelError
from uapi.bpf import AttachType, LinkType

__all__ = ["XdpMode", "XdpFlags", "XDP_FLAGS_MODES", "XDP_FLAGS_MASK", "XdpLink",
           "dev_xdp_attach", "dev_xdp_detach_link", "dev_xdp_mode", "dev_xdp_prog",
           "bpf_xdp_link_attach"]


class XdpMode(enum.IntEnum):
    """enum bpf_xdp_mode (include/linux/netdevice.h)."""

    SKB = 0
    DRV = 1
    HW = 2


class XdpFlags(enum.IntFlag, boundary=enum.KEEP):
    """XDP_FLAGS_* of include/uapi/linux/if_link.h (not part of bpf.h, so not generated)."""

    UPDATE_IF_NOEXIST = 1 << 0
    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2
    HW_MODE = 1 << 3
    REPLACE = 1 << 4


XDP_FLAGS_MODES = XdpFlags.SKB_MODE | XdpFlags.DRV_MODE | XdpFlags.HW_MODE
XDP_FLAGS_MASK = XdpFlags.UPDATE_IF_NOEXIST | XDP_FLAGS_MODES | XdpFlags.REPLACE


def dev_xdp_mode(dev, flags: int) -> XdpMode:
    """dev_xdp_mode(): the mode asked for, else native if the driver has it, else generic."""
    if flags & XdpFlags.HW_MODE:
        return XdpMode.HW
    if flags & XdpFlags.DRV_MODE:
        return XdpMode.DRV
    if flags & XdpFlags.SKB_MODE:
        return XdpMode.SKB
    return XdpMode.DRV if dev.ndo_bpf else XdpMode.SKB


def _state(net, dev):
    return net.xdp[dev.ifindex]


def dev_xdp_prog(net, dev, mode: XdpMode):
    """dev_xdp_prog(): the effective program of a slot (a link's prog or a plain prog)."""
    st = _state(net, dev)
    link = st.link.get(mode)
    return link.prog if link is not None else st.prog.get(mode)


def _prog_count(net, dev) -> int:
    return sum(1 for m in XdpMode if dev_xdp_prog(net, dev, m) is not None)


def _has_bpf_op(dev, mode: XdpMode) -> bool:
    """dev_xdp_bpf_op(): generic XDP always works; native and offload need the driver."""
    return mode == XdpMode.SKB or (mode == XdpMode.DRV and dev.ndo_bpf)


def dev_xdp_attach(net, dev, link, new_prog, old_prog, flags: int) -> None:
    """dev_xdp_attach(): install `new_prog` or `link` in the slot `flags` select.

    A plain prog passed in is consumed on success (the slot keeps the caller's reference).
    """
    num_modes = bin(flags & XDP_FLAGS_MODES).count("1")
    if link is not None and (new_prog is not None or old_prog is not None):
        raise KernelError(Errno.EINVAL, "either a link or a prog")
    if link is not None and flags & ~int(XDP_FLAGS_MODES):
        raise KernelError(Errno.EINVAL, "Invalid XDP flags for BPF link attachment")
    if num_modes > 1:
        raise KernelError(Errno.EINVAL, "Only one XDP mode flag can be set")
    if not num_modes and _prog_count(net, dev) > 1:
        raise KernelError(Errno.EINVAL, "More than one program loaded, unset mode is ambiguous")
    if old_prog is not None and not flags & XdpFlags.REPLACE:
        raise KernelError(Errno.EINVAL, "XDP_FLAGS_REPLACE is not specified")
    mode = dev_xdp_mode(dev, flags)
    st = _state(net, dev)
    if st.link.get(mode) is not None:
        raise KernelError(Errno.EBUSY, "Can't replace active BPF XDP link")
    cur_prog = dev_xdp_prog(net, dev, mode)
    if link is not None and cur_prog is not None:
        raise KernelError(Errno.EBUSY, "Can't replace active XDP program with BPF link")
    if flags & XdpFlags.REPLACE and cur_prog is not old_prog:
        raise KernelError(Errno.EEXIST, "Active program does not match expected")
    if link is not None:
        new_prog = link.prog
    if new_prog is not None:
        other = XdpMode.DRV if mode == XdpMode.SKB else XdpMode.SKB
        if flags & XdpFlags.UPDATE_IF_NOEXIST and cur_prog is not None:
            raise KernelError(Errno.EBUSY, "XDP program already attached")
        if mode != XdpMode.HW and dev_xdp_prog(net, dev, other) is not None:
            raise KernelError(Errno.EEXIST, "Native and generic XDP can't be active at the same time")
        if new_prog.aux.ifindex and mode == XdpMode.SKB:
            raise KernelError(Errno.EINVAL, "Can't attach device-bound programs in generic mode")
        if new_prog.expected_attach_type == AttachType.XDP_DEVMAP:
            raise KernelError(Errno.EINVAL, "BPF_XDP_DEVMAP programs can not be attached to a device")
        if new_prog.expected_attach_type == AttachType.XDP_CPUMAP:
            raise KernelError(Errno.EINVAL, "BPF_XDP_CPUMAP programs can not be attached to a device")
    if new_prog is not cur_prog and not _has_bpf_op(dev, mode):
        raise KernelError(Errno.EOPNOTSUPP, "Underlying driver does not support XDP in native mode")
    if link is not None:
        st.link[mode] = link
    else:
        st.prog[mode] = new_prog
        if new_prog is None:
            st.prog.pop(mode, None)
    if cur_prog is not None and link is None:
        cur_prog.put()


def dev_xdp_detach_link(net, dev, link) -> None:
    """dev_xdp_detach_link()."""
    mode = dev_xdp_mode(dev, link.flags)
    st = _state(net, dev)
    if st.link.get(mode) is not link:
        raise KernelError(Errno.EINVAL, "link is not the one installed")
    del st.link[mode]


@attrs.define(eq=False)
class XdpLink(BpfLink):
    """struct bpf_xdp_link."""

    dev: object = None
    flags: int = 0

    def release(self) -> None:
        """bpf_xdp_link_release(): close of the last fd detaches from the device."""
        if self.dev is not None:
            dev_xdp_detach_link(self.kern.world.net, self.dev, self)
            self.dev = None

    def detach(self) -> None:
        self.release()

    def update_prog(self, new_prog, old_prog) -> None:
        """bpf_xdp_link_update()."""
        if self.dev is None:
            raise KernelError(Errno.ENOLINK, "device is gone")
        if old_prog is not None and self.prog is not old_prog:
            raise KernelError(Errno.EPERM, "old_prog does not match")
        if new_prog.type != self.prog.type or \
                new_prog.expected_attach_type != self.prog.expected_attach_type:
            raise KernelError(Errno.EINVAL, "prog type or expected attach type differs")
        old, self.prog = self.prog, new_prog.get()
        old.put()

    def fill_link_info(self, info, task) -> None:
        info.xdp.ifindex = self.dev.ifindex if self.dev is not None else 0


def bpf_xdp_link_attach(kern, task, attr, prog) -> int:
    """bpf_xdp_link_attach(): EINVAL for a missing device; returns the link fd."""
    lc = attr.link_create
    net = kern.world.net
    dev = net.dev_get_by_index(lc.target_ifindex)
    if dev is None:
        raise KernelError(Errno.EINVAL, f"no device with ifindex {lc.target_ifindex}")
    link = XdpLink(kern=kern, type=LinkType.XDP, attach_type=AttachType.XDP, prog=prog,
                   dev=dev, flags=lc.flags)
    primer = bpf_link_prime(link)
    try:
        dev_xdp_attach(net, dev, link, None, None, link.flags)
    except KernelError:
        link.dev = None
        primer.cleanup()
        raise
    return primer.settle(task)
