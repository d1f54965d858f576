"""Network devices and the namespace that owns them — include/linux/netdevice.h (struct
net_device), net/core/dev.c (dev_get_by_index, register_netdevice).

A `NetDevice` is the static description of a device (ifindex, name, kind, addresses, rx
queues, whether its driver has native XDP — ``ndo_bpf``).  Mutable per-device state (the
XDP programs/links per mode, the frames it transmitted) lives in the kernel's `NetNs`,
``kern.world.net``, so the module-level `LOOPBACK` template is never shared state.
Every namespace has ``lo`` at ifindex 1; more devices come from `NetNs.add_device`.
"""
from __future__ import annotations

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.headers import ETH_ALEN

__all__ = ["NetDevice", "NetNs", "DevXdpState", "LOOPBACK", "LOOPBACK_IFINDEX", "DEVICE_KINDS",
           "dev_get_by_index", "IFNAMSIZ"]

LOOPBACK_IFINDEX = 1
IFNAMSIZ = 16                 # include/uapi/linux/if.h (counts the NUL)
_LOOPBACK_MTU = 65536
_ETH_DATA_LEN = 1500


@attrs.frozen
class NetDevice:
    ifindex: int
    name: str
    dev_addr: bytes = bytes(ETH_ALEN)
    broadcast: bytes = b"\xff" * ETH_ALEN
    real_num_rx_queues: int = 1
    xdp_rxq_registered: bool = True      # xdp_rxq_info_is_reg() of every rx queue
    kind: str = "loopback"               # rtnl_link_ops kind ("veth", "dummy") or "loopback"
    ndo_bpf: bool = False                # the driver implements native (DRV mode) XDP
    ndo_xdp_xmit: bool = False           # native XDP may redirect frames out of it (veth)
    mtu: int = _LOOPBACK_MTU


# loopback_setup(): no hardware address, and an all-zero "broadcast" address too
LOOPBACK = NetDevice(ifindex=LOOPBACK_IFINDEX, name="lo", broadcast=bytes(ETH_ALEN))

# what `ip link add type KIND` gives: veth has native XDP (veth_xdp), dummy does not
DEVICE_KINDS = {"veth": True, "dummy": False}


@attrs.define(eq=False)
class DevXdpState:
    """dev->xdp_state[mode]: the program and/or link installed in each XDP mode."""

    prog: dict = attrs.field(factory=dict)      # XdpMode -> BpfProg (holds a reference)
    link: dict = attrs.field(factory=dict)      # XdpMode -> XdpLink


#: init_net's net_cookie on 6.18 (measured: the boot hands out cookies 1 and 2 first)
INIT_NET_COOKIE = 3


class NetNs:
    """struct net: the devices of the (only) network namespace, by ifindex and by name."""

    def __init__(self, kern):
        self.kern = kern
        self.devices: dict[int, NetDevice] = {}
        self.xdp: dict[int, DevXdpState] = {}
        self.tx: dict[int, list[bytes]] = {}          # frames each device sent (XDP_TX, redirects)
        self.sockets: list = []                        # bound sockets (fakekernel.net.rx.Socket)
        self.dev_maps: list = []                       # devmaps (dev_map_list: unregister notifier)
        self.tcx: dict = {}                            # ifindex -> {TCX attach type: MprogEntry}
        self.bpf: dict = {}                            # netns hooks (fakekernel.net.net_namespace)
        self.sched: dict = {}                          # ifindex -> DevSched (fakekernel.net.sched)
        self.net_cookie = INIT_NET_COOKIE              # struct net's cookie (bpf_get_netns_cookie)
        self._ifindex = LOOPBACK_IFINDEX
        self._register(LOOPBACK)
        from fakekernel.net.fib import Fib
        self.fib = Fib(self)                           # routes, addresses, neighbours (fakekernel.net.fib)

    def _register(self, dev: NetDevice) -> None:
        self.devices[dev.ifindex] = dev
        self.xdp[dev.ifindex] = DevXdpState()
        self.tx[dev.ifindex] = []

    def add_device(self, name: str, kind: str = "veth", *, dev_addr: bytes | None = None,
                   mtu: int = _ETH_DATA_LEN, rx_queues: int = 1) -> int:
        """`ip link add NAME type KIND`: a new device with the next free ifindex."""
        if kind not in DEVICE_KINDS:
            raise KernelError(Errno.EOPNOTSUPP, f"unknown link kind {kind!r}")
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", ".."):
            raise KernelError(Errno.EINVAL, f"bad device name {name!r}")
        if any(d.name == name for d in self.devices.values()):
            raise KernelError(Errno.EEXIST, f"device {name} exists")
        while self._ifindex in self.devices:
            self._ifindex += 1
        ifindex = self._ifindex
        addr = dev_addr if dev_addr is not None else bytes([0x02, 0, 0, 0, 0, ifindex & 0xFF])
        self._register(NetDevice(ifindex=ifindex, name=name, dev_addr=addr, kind=kind,
                                 ndo_bpf=DEVICE_KINDS[kind], ndo_xdp_xmit=DEVICE_KINDS[kind], mtu=mtu,
                                 real_num_rx_queues=rx_queues))
        return ifindex

    def del_device(self, ifindex: int) -> None:
        """`ip link del`: XDP programs go with it; links stay but are detached (dev = NULL)."""
        if ifindex == LOOPBACK_IFINDEX or ifindex not in self.devices:
            raise KernelError(Errno.EINVAL if ifindex == LOOPBACK_IFINDEX else Errno.ENODEV,
                              "cannot delete this device")
        for dtab in list(self.dev_maps):          # dev_map_notification(NETDEV_UNREGISTER)
            dtab.netdev_unregister(self.devices[ifindex])
        socktab = getattr(self, "socktab", None)  # xsk_notifier: AF_XDP sockets bound to it
        for sk in list(socktab.socks if socktab is not None else ()):
            if hasattr(sk, "netdev_unregister"):
                sk.netdev_unregister(self.devices[ifindex])
        from fakekernel.net.tcx import tcx_uninstall
        tcx_uninstall(self, self.devices[ifindex])
        from fakekernel.net.sched.sch_ingress import sched_uninstall
        sched_uninstall(self, self.devices[ifindex])
        state = self.xdp.pop(ifindex)
        for link in state.link.values():
            link.dev = None
        for prog in state.prog.values():
            if prog is not None:
                prog.put()
        self.fib.netdev_unregister(ifindex)
        del self.devices[ifindex]
        del self.tx[ifindex]

    def dev_get_by_index(self, ifindex: int) -> NetDevice | None:
        return self.devices.get(ifindex)

    def dev_get_by_name(self, name: str) -> NetDevice | None:
        return next((d for d in self.devices.values() if d.name == name), None)

    def attached_objects(self) -> set:
        from fakekernel.net.net_namespace import netns_attached_objects
        from fakekernel.net.tcx import tcx_attached_objects
        from fakekernel.net.sched.sch_ingress import sched_attached_objects
        out = tcx_attached_objects(self) | netns_attached_objects(self) | \
            sched_attached_objects(self)
        for state in self.xdp.values():
            out.update(p for p in state.prog.values() if p is not None)
            for link in state.link.values():
                out.add(link)
                if link.prog is not None:
                    out.add(link.prog)
        return out


def dev_get_by_index(kern, ifindex: int) -> NetDevice | None:
    """The device with this ifindex in the caller's namespace, or None (the caller's ENODEV)."""
    world = getattr(kern, "world", None)
    net = getattr(world, "net", None)
    if net is not None:
        return net.dev_get_by_index(ifindex)
    return LOOPBACK if ifindex == LOOPBACK_IFINDEX else None
