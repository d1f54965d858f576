"""bpf_redirect_map and what XDP_REDIRECT does with it — net/core/filter.c
(bpf_xdp_redirect_map, __bpf_xdp_redirect_map of include/linux/filter.h, xdp_do_redirect,
xdp_do_generic_redirect, xdp_ok_fwd_dev).

The helper records its target in the frame's redirect info (``XdpBuff.redirect_map``, a
`BpfRedirectInfo`, next to the ``redirect_ifindex`` bpf_redirect() leaves) and returns
XDP_REDIRECT, or — when the key has no entry and BPF_F_BROADCAST is not set — the default
action in the flags' low bits (and forgets any earlier map target, as the kernel does).

When the program's verdict is XDP_REDIRECT the receive path calls `xdp_do_redirect`:
through a devmap entry the frame is transmitted on the entry's device after the entry's
BPF_XDP_DEVMAP program (fakekernel.maps.devmap); BPF_F_BROADCAST sends a copy through
every entry (BPF_F_EXCLUDE_INGRESS skips the receiving device); through a cpumap entry it
is re-received on the entry's CPU (fakekernel.maps.cpumap); through an xskmap entry it is
queued on the AF_XDP socket's rx ring (fakekernel.net.xsk).  Native (driver) XDP needs a
target whose driver has ndo_xdp_xmit; generic XDP transmits on any device.  A failure is
-errno: the caller drops the frame.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno
from uapi.bpf import FuncId, MapType, RedirectFlags, XdpAction
from uapi.insn import u32, u64

__all__ = ["REDIRECT_RUNTIME", "BpfRedirectInfo", "REDIRECT_BROADCAST_FLAGS", "bpf_xdp_redirect_map",
           "xdp_do_redirect", "xdp_ok_fwd_dev", "xdp_drop_verdict", "dev_xmit_frame"]

REDIRECT_BROADCAST_FLAGS = int(RedirectFlags.BROADCAST | RedirectFlags.EXCLUDE_INGRESS)
#: the verdicts whose values a redirect_map miss may return (the flags' low bits)
_ACTION_MASK = int(XdpAction.ABORTED | XdpAction.DROP | XdpAction.PASS | XdpAction.TX)
_BROADCAST = int(RedirectFlags.BROADCAST)
_EXCLUDE_INGRESS = int(RedirectFlags.EXCLUDE_INGRESS)
VLAN_HLEN = 4                   # include/linux/if_vlan.h
ETH_HLEN = 14                   # dev->hard_header_len of Ethernet-like devices (lo included)
_XDP_ACTIONS = frozenset(int(a) for a in XdpAction)


@attrs.define(eq=False)
class BpfRedirectInfo:
    """The map part of struct bpf_redirect_info that a bpf_redirect_map hit leaves."""

    map_type: int
    map_id: int
    tgt_value: object               # the entry found (None for a broadcast)
    map: object = None              # the map to broadcast through (BPF_F_BROADCAST)
    flags: int = 0


def bpf_xdp_redirect_map(ctx, bpf_map, index: int, flags: int, flag_mask: int, lookup) -> int:
    """__bpf_xdp_redirect_map(): the verdict, with the target recorded on `ctx`."""
    flags = u64(flags)
    if flags & ~(_ACTION_MASK | flag_mask):
        return XdpAction.ABORTED
    key = u32(index)                 # the u64 index is looked up as a u32 key
    tgt = lookup(key)
    if tgt is None and not flags & _BROADCAST:
        ctx.redirect_map = None      # map_id = INT_MAX, map_type = UNSPEC
        return flags & _ACTION_MASK
    ctx.redirect_ifindex = key
    broadcast = bool(flags & _BROADCAST)
    ctx.redirect_map = BpfRedirectInfo(map_type=bpf_map.map_type, map_id=bpf_map.id,
                                       tgt_value=tgt, map=bpf_map if broadcast else None,
                                       flags=flags if broadcast else 0)
    return XdpAction.REDIRECT


def _bpf_redirect_map(env, r1, r2, r3, r4, r5) -> int:
    """BPF_CALL_3(bpf_xdp_redirect_map): the map type's map_redirect op."""
    from fakekernel.interp.memory import InterpreterFault
    bpf_map = env.mem.object_at(r1)
    redirect = getattr(bpf_map, "map_redirect", None)
    if redirect is None:
        raise InterpreterFault(None, f"bpf_redirect_map on map type {bpf_map.map_type} "
                                     "(the verifier should have refused it)")
    return redirect(env.ctx, r2, r3)


REDIRECT_RUNTIME: dict = {FuncId.redirect_map: _bpf_redirect_map}


# ---------------------------------------------------------------- the verdict's effect

def xdp_drop_verdict(kern, dev, prog, act: int, *, aborted_arm: bool = True) -> None:
    """The tail of the devmap/cpumap verdict switches: an action they do not handle is
    warned about (bpf_warn_invalid_xdp_action, "dev N/A") and, where the switch falls through
    into its XDP_ABORTED arm, traced as an exception on `dev` (trace_xdp_exception)."""
    from fakekernel.net.rx import bpf_warn_invalid_xdp_action
    if act == XdpAction.DROP:
        return
    if act != XdpAction.ABORTED or not aborted_arm:
        bpf_warn_invalid_xdp_action(kern, None, prog, act)      # devmap/cpumap pass no device
    if aborted_arm:
        kern.world.trace_xdp_exception(dev, prog, act)


def xdp_ok_fwd_dev(fwd, pktlen: int) -> int:
    """xdp_ok_fwd_dev(): devices are always up; the frame must fit the MTU."""
    if pktlen > fwd.mtu + ETH_HLEN + VLAN_HLEN:
        return -Errno.EMSGSIZE
    return 0


def dev_xmit_frame(kern, dev, frame: bytes) -> None:
    """ndo_xdp_xmit / generic_xdp_tx: the frame leaves `dev`."""
    kern.world.net.tx[dev.ifindex].append(bytes(frame))


def _dev_xdp_enqueue(kern, fwd, frame: bytes, generic: bool) -> int:
    """__xdp_enqueue() (native: the driver needs ndo_xdp_xmit) / generic_xdp_tx()."""
    if not generic and not fwd.ndo_xdp_xmit:
        return -Errno.EOPNOTSUPP
    err = xdp_ok_fwd_dev(fwd, len(frame))
    if err:
        return err
    dev_xmit_frame(kern, fwd, frame)
    return 0


def xdp_do_redirect(kern, dev, xdp, prog, *, generic: bool) -> int:
    """xdp_do_redirect() (native XDP) / xdp_do_generic_redirect() (generic XDP): act on the
    redirect info the program left on `xdp` (received on `dev`); 0 or -errno."""
    from fakekernel.maps.cpumap import cpu_map_enqueue
    ri, xdp.redirect_map = xdp.redirect_map, None
    frame = xdp.frame()
    if ri is None:                   # bpf_redirect(): map_id INT_MAX, the target by ifindex
        fwd = kern.world.net.dev_get_by_index(xdp.redirect_ifindex) if xdp.redirect_ifindex else None
        if fwd is None:
            return -Errno.EINVAL
        return _dev_xdp_enqueue(kern, fwd, frame, generic)
    if ri.map_type in (MapType.DEVMAP, MapType.DEVMAP_HASH):
        if ri.map is not None:
            return _dev_map_enqueue_multi(kern, ri, frame, dev, xdp.rx_queue_index, generic)
        return _dev_map_enqueue(kern, ri.tgt_value, frame, dev, xdp.rx_queue_index, generic)
    if ri.map_type == MapType.CPUMAP:
        return cpu_map_enqueue(kern, ri.tgt_value, frame, dev, generic=generic)
    if ri.map_type == MapType.XSKMAP:
        from fakekernel.net.xsk import xsk_rcv
        return xsk_rcv(kern, ri.tgt_value, frame, dev, xdp.rx_queue_index)
    return -Errno.EBADRQC


def _dev_map_enqueue(kern, entry, frame: bytes, dev_rx, rx_queue: int, generic: bool) -> int:
    """dev_map_enqueue() (native) / dev_map_generic_redirect() (generic): the entry's
    program runs, then the frame leaves the entry's device."""
    from fakekernel.maps.devmap import dev_map_run_prog
    fwd = entry.dev
    if not generic and not fwd.ndo_xdp_xmit:
        return -Errno.EOPNOTSUPP
    err = xdp_ok_fwd_dev(fwd, len(frame))
    if err:
        return err
    out = dev_map_run_prog(kern, entry, frame, dev_rx, rx_queue=rx_queue if generic else 0)
    if out is not None:              # a frame the devmap program dropped still counts as sent
        dev_xmit_frame(kern, fwd, out)
    return 0


def _dev_map_enqueue_multi(kern, ri, frame: bytes, dev_rx, rx_queue: int, generic: bool) -> int:
    """dev_map_enqueue_multi() / dev_map_redirect_multi(): a copy through every entry
    (natively only through devices that can take it), except the receiving device with
    BPF_F_EXCLUDE_INGRESS."""
    exclude = dev_rx.ifindex if ri.flags & _EXCLUDE_INGRESS else None
    for entry in ri.map.broadcast_entries():
        if entry.dev.ifindex == exclude:
            continue
        if not generic and (not entry.dev.ndo_xdp_xmit or xdp_ok_fwd_dev(entry.dev, len(frame))):
            continue                 # is_valid_dst()
        err = _dev_map_enqueue(kern, entry, frame, dev_rx, rx_queue, generic)
        if err:
            return err
    return 0
