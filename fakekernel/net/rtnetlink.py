"""rtnetlink — net/core/rtnetlink.c (rtnetlink_rcv_msg, rtnl_setlink/do_setlink's IFLA_XDP,
rtnl_getlink, rtnl_dump_ifinfo, rtnl_xdp_fill), net/core/dev.c (dev_change_xdp_fd) and
net/netlink/af_netlink.c (netlink_rcv_skb, netlink_ack, netlink_dump_done).

What loaders send on a NETLINK_ROUTE socket to attach XDP the pre-link way
(libbpf's bpf_xdp_attach/bpf_xdp_query, `bpftool net attach xdp`, `ip link set xdp`) and
what `bpftool net show` dumps.  `NetlinkSock.rcv(task, datagram)` processes every message
of one sendmsg() and returns the datagrams the kernel would queue on the socket.

Modelled: RTM_SETLINK with IFLA_XDP (flags, fd, expected fd: attach, replace, detach),
RTM_GETLINK (one device or a dump) with IFLA_IFNAME/IFLA_MTU/IFLA_XDP/IFLA_ADDRESS/
IFLA_BROADCAST, acks with extended-ack messages, dumps ending in NLMSG_DONE (with the
dump's error and extack when it fails).  The tc messages (RTM_NEW/DEL/GETQDISC,
RTM_NEW/DEL/GETTFILTER, the RTM_GETTCLASS dump: clsact and cls_bpf) go to
fakekernel/net/sched/tc_netlink.py.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.dev_xdp import (XDP_FLAGS_MASK, XDP_FLAGS_MODES, XdpFlags, XdpMode,
                                    dev_xdp_attach, dev_xdp_mode, dev_xdp_prog)
from fakekernel.net.sched.tc_netlink import TC_DOIT, TC_DUMPIT
from fakekernel.syscall.fdget import bpf_prog_get
from uapi import netlink as nl
from uapi.bpf import ProgType

__all__ = ["NetlinkSock", "dev_change_xdp_fd"]

_IFINFOMSG = nl.ffi.sizeof("struct ifinfomsg")
_TCMSG = nl.ffi.sizeof("struct tcmsg")
_NLMSG_MIN_TYPE = 0x10
_RTM_BASE = 16
_RTM_MAX = 0x7F                      # beyond the last RTM_* the kernel knows
_NLM_F_BULK = 0x200                  # NLM_F_EXCL's bit, on a delete request
_ARPHRD_ETHER, _ARPHRD_LOOPBACK = 1, 772
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING, _IFF_LOWER_UP = 0x1, 0x8, 0x40, 0x10000
_XDP_ATTACHED = ((XdpMode.SKB, nl.XDP_ATTACHED_SKB, nl.IFLA_XDP_SKB_PROG_ID),
                 (XdpMode.DRV, nl.XDP_ATTACHED_DRV, nl.IFLA_XDP_DRV_PROG_ID),
                 (XdpMode.HW, nl.XDP_ATTACHED_HW, nl.IFLA_XDP_HW_PROG_ID))


def _u32(b: bytes) -> int:
    return int.from_bytes(b[:4].ljust(4, b"\0"), "little")


def _s32(b: bytes) -> int:
    v = _u32(b)
    return v - (1 << 32) if v & 0x80000000 else v


class _Ack(Exception):
    """A handler's failure: errno and the extack message (NL_SET_ERR_MSG)."""

    def __init__(self, errno: int, msg: str = ""):
        super().__init__(errno, msg)
        self.errno, self.msg = errno, msg


def dev_change_xdp_fd(kern, task, dev, fd: int, expected_fd: int, flags: int) -> None:
    """dev_change_xdp_fd(): programs by fd (EBADF / EINVAL for a non-XDP or wrongly bound
    one), then dev_xdp_attach() — which keeps `new_prog`'s reference on success."""
    mode = dev_xdp_mode(dev, flags)
    new_prog = old_prog = None
    if fd >= 0:
        new_prog = _xdp_prog_get(task, fd, attach_drv=mode != XdpMode.SKB)
    try:
        if expected_fd >= 0:
            old_prog = _xdp_prog_get(task, expected_fd, attach_drv=mode != XdpMode.SKB)
        dev_xdp_attach(kern.world.net, dev, None, new_prog, old_prog, flags)
    except KernelError:
        if new_prog is not None:
            new_prog.put()
        raise
    finally:
        if old_prog is not None:
            old_prog.put()


def _xdp_prog_get(task, fd: int, attach_drv: bool):
    """bpf_prog_get_type_dev(fd, BPF_PROG_TYPE_XDP, attach_drv): a new reference.  Its
    failures carry no extack message (the `detail` stays empty)."""
    try:
        prog = bpf_prog_get(task, fd)
    except KernelError as e:
        raise KernelError(e.errno) from None
    if prog.type != ProgType.XDP or (not attach_drv and prog.aux.ifindex):
        raise KernelError(Errno.EINVAL)
    return prog.get()


@attrs.define(eq=False)
class NetlinkSock:
    """One NETLINK_ROUTE socket: its port id and the socket options that shape replies."""

    kern: object
    portid: int
    ext_ack: bool = False            # NETLINK_EXT_ACK
    cap_ack: bool = False            # NETLINK_CAP_ACK

    def rcv(self, task, data: bytes) -> list[bytes]:
        """netlink_rcv_skb(): each complete message in turn; the replies, in order."""
        out: list[bytes] = []
        off = 0
        while off + nl.NLMSG_HDRLEN <= len(data):
            hdr = nl.ffi.new("struct nlmsghdr *")
            nl.ffi.memmove(hdr, data[off:off + nl.NLMSG_HDRLEN], nl.NLMSG_HDRLEN)
            length = hdr.nlmsg_len
            if length < nl.NLMSG_HDRLEN or off + length > len(data):
                break
            msg = data[off:off + length]
            off += nl.nla_align(length)
            err, extmsg, dumped = 0, "", False
            if hdr.nlmsg_flags & nl.NLM_F_REQUEST and hdr.nlmsg_type >= _NLMSG_MIN_TYPE:
                try:
                    replies, dumped = self._rcv_msg(task, hdr, msg[nl.NLMSG_HDRLEN:])
                    out.extend(replies)
                except _Ack as a:
                    err, extmsg = -a.errno, a.msg
            if dumped:
                continue
            if hdr.nlmsg_flags & nl.NLM_F_ACK or err:
                out.append(self._ack(hdr, msg, err, extmsg))
        return out

    # ---- netlink_ack() ----
    def _ack(self, hdr, msg: bytes, err: int, extmsg: str) -> bytes:
        # errors echo the whole request unless NETLINK_CAP_ACK; acks only its header
        full = bool(err) and not self.cap_ack
        echo = msg if full else msg[:nl.NLMSG_HDRLEN]
        flags = 0 if full else nl.NLM_F_CAPPED
        tlvs = b""
        if self.ext_ack and err and extmsg:
            tlvs = nl.nla_put(nl.NLMSGERR_ATTR_MSG, extmsg.encode() + b"\0")
            flags |= nl.NLM_F_ACK_TLVS
        payload = (err & 0xFFFFFFFF).to_bytes(4, "little") + echo + tlvs
        return nl.nlmsg(nl.NLMSG_ERROR, flags, hdr.nlmsg_seq, self.portid, payload)

    def _dump_done(self, hdr, err: int, extmsg: str) -> bytes:
        """netlink_dump_done(): NLMSG_DONE carrying the dump's error (and its extack)."""
        flags, tlvs = nl.NLM_F_MULTI, b""
        if self.ext_ack and extmsg:
            flags |= nl.NLM_F_ACK_TLVS
            tlvs = nl.nla_put(nl.NLMSGERR_ATTR_MSG, extmsg.encode() + b"\0")
        return nl.nlmsg(nl.NLMSG_DONE, flags, hdr.nlmsg_seq, self.portid,
                        (err & 0xFFFFFFFF).to_bytes(4, "little") + tlvs)

    # ---- rtnetlink_rcv_msg() ----
    def _rcv_msg(self, task, hdr, body: bytes) -> tuple[list[bytes], bool]:
        mtype = hdr.nlmsg_type
        if mtype > _RTM_MAX:
            raise _Ack(Errno.EOPNOTSUPP)
        if not body:                     # every message carries at least a family byte
            return [], False
        kind = (mtype - _RTM_BASE) & 3
        if kind != 2 and not task.net_admin_capable():
            raise _Ack(Errno.EPERM)
        if kind == 2 and hdr.nlmsg_flags & nl.NLM_F_DUMP:     # either bit makes a dump
            if mtype == nl.RTM_GETLINK:
                msgs = [self._fill_ifinfo(dev, hdr.nlmsg_seq, nl.NLM_F_MULTI)
                        for _, dev in sorted(self.kern.world.net.devices.items())]
            elif mtype in TC_DUMPIT:
                try:
                    msgs = TC_DUMPIT[mtype](self, task, hdr, body)
                except KernelError as e:
                    return [self._dump_done(hdr, -e.errno, e.detail)], True
            else:
                raise _Ack(Errno.EOPNOTSUPP)
            return msgs + [self._dump_done(hdr, 0, "")], True
        if mtype == nl.RTM_SETLINK:
            self._setlink(task, body)
            return [], False
        if mtype == nl.RTM_GETLINK:
            dev = self._dev_from_ifinfo(body)
            return [self._fill_ifinfo(dev, hdr.nlmsg_seq, 0)], False
        if mtype in TC_DOIT:
            if kind == 1 and hdr.nlmsg_flags & _NLM_F_BULK:     # a DEL: no tc handler does bulk
                raise _Ack(Errno.EOPNOTSUPP, "Bulk delete is not supported")
            return self._tc(TC_DOIT[mtype], task, hdr, body), False
        raise _Ack(Errno.EOPNOTSUPP)

    def _tc(self, handler, task, hdr, body: bytes) -> list[bytes]:
        """A tc handler (fakekernel/net/sched/tc_netlink.py): its replies, or the ack error
        with its extack message."""
        try:
            return handler(self, task, hdr, body)
        except KernelError as e:
            raise _Ack(e.errno, e.detail) from None

    def _dev_from_ifinfo(self, body: bytes):
        """rtnl_setlink()/rtnl_getlink(): the device by ifi_index, else by IFLA_IFNAME."""
        if len(body) < _IFINFOMSG:
            raise _Ack(Errno.EINVAL)
        ifm = nl.ffi.new("struct ifinfomsg *")
        nl.ffi.memmove(ifm, body[:_IFINFOMSG], _IFINFOMSG)
        tb = nl.nla_parse(body[_IFINFOMSG:])
        if tb is None:
            raise _Ack(Errno.EINVAL)
        net = self.kern.world.net
        if ifm.ifi_index > 0:
            dev = net.dev_get_by_index(ifm.ifi_index)
        elif nl.IFLA_IFNAME in tb:
            name = tb[nl.IFLA_IFNAME].split(b"\0", 1)[0].decode(errors="replace")
            dev = next((d for d in net.devices.values() if d.name == name), None)
        else:
            raise _Ack(Errno.EINVAL)
        if dev is None:
            raise _Ack(Errno.ENODEV)
        return dev

    def _setlink(self, task, body: bytes) -> None:
        """rtnl_setlink() -> do_setlink(): the IFLA_XDP part, check by check."""
        dev = self._dev_from_ifinfo(body)
        tb = nl.nla_parse(body[_IFINFOMSG:])
        if nl.IFLA_XDP not in tb:
            return
        xdp = nl.nla_parse(tb[nl.IFLA_XDP])
        if xdp is None:
            raise _Ack(Errno.EINVAL)
        if nl.IFLA_XDP_ATTACHED in xdp or nl.IFLA_XDP_PROG_ID in xdp:
            raise _Ack(Errno.EINVAL)
        flags = 0
        if nl.IFLA_XDP_FLAGS in xdp:
            flags = _u32(xdp[nl.IFLA_XDP_FLAGS])
            if flags & ~int(XDP_FLAGS_MASK) or bin(flags & XDP_FLAGS_MODES).count("1") > 1:
                raise _Ack(Errno.EINVAL)
        if nl.IFLA_XDP_FD not in xdp:
            return
        expected_fd = -1
        if flags & XdpFlags.REPLACE:
            if nl.IFLA_XDP_EXPECTED_FD not in xdp:
                raise _Ack(Errno.EINVAL)
            expected_fd = _s32(xdp[nl.IFLA_XDP_EXPECTED_FD])
        try:
            dev_change_xdp_fd(self.kern, task, dev, _s32(xdp[nl.IFLA_XDP_FD]), expected_fd, flags)
        except KernelError as e:
            raise _Ack(e.errno, e.detail) from None

    # ---- rtnl_fill_ifinfo() (the attributes loaders read) ----
    def _fill_ifinfo(self, dev, seq: int, flags: int) -> bytes:
        lo = dev.kind == "loopback"
        ifm = nl.ffi.new("struct ifinfomsg *", {
            "ifi_type": _ARPHRD_LOOPBACK if lo else _ARPHRD_ETHER, "ifi_index": dev.ifindex,
            "ifi_flags": _IFF_UP | _IFF_RUNNING | _IFF_LOWER_UP | (_IFF_LOOPBACK if lo else 0)})
        attrs_ = (nl.nla_put(nl.IFLA_IFNAME, dev.name.encode() + b"\0")
                  + nl.nla_put(nl.IFLA_MTU, dev.mtu.to_bytes(4, "little"))
                  + nl.nla_put(nl.IFLA_XDP, self._xdp_fill(dev))
                  + nl.nla_put(nl.IFLA_ADDRESS, dev.dev_addr)
                  + nl.nla_put(nl.IFLA_BROADCAST, dev.broadcast))
        return nl.nlmsg(nl.RTM_NEWLINK, flags, seq, self.portid,
                        bytes(nl.ffi.buffer(ifm)) + attrs_)

    def _xdp_fill(self, dev) -> bytes:
        """rtnl_xdp_fill(): per-mode prog ids, the attached mode (MULTI for several), and
        IFLA_XDP_PROG_ID unless several modes are in use."""
        out, prog_id, mode = b"", 0, nl.XDP_ATTACHED_NONE
        for xmode, attached, attr in _XDP_ATTACHED:
            prog = dev_xdp_prog(self.kern.world.net, dev, xmode)
            if prog is None:
                continue
            prog_id = prog.aux.id
            out += nl.nla_put(attr, prog_id.to_bytes(4, "little"))
            mode = nl.XDP_ATTACHED_MULTI if mode != nl.XDP_ATTACHED_NONE else attached
        out += nl.nla_put(nl.IFLA_XDP_ATTACHED, bytes([mode]))
        if prog_id and mode != nl.XDP_ATTACHED_MULTI:
            out += nl.nla_put(nl.IFLA_XDP_PROG_ID, prog_id.to_bytes(4, "little"))
        return out
