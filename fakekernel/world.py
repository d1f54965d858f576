"""The simulated world around the bpf() syscall — the hook points programs attach to.

``kern.world`` holds the network namespace (`net`: devices, XDP slots, sockets), the
cgroup2 hierarchy (`cgroup`) and the tracing side (`trace`: kallsyms, kprobe_multi
fprobes), plus the kernel log the hooks write to.  Firing a hook from Python:

* ``kern.world.net.receive(ifindex, frame) -> RxResult`` — XDP, then local delivery
  through the receiving socket's cgroup ingress programs;
* ``kern.world.cgroup_skb(cgroup, "ingress"|"egress", ip_packet) -> bool``;
* ``kern.world.trace.call("do_sys_openat2", args=(...), ret=...)``.
"""
from __future__ import annotations

import os

from fakekernel.cgroup import CGROUP_FILE_KIND, CgroupFs
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import File
from fakekernel.net import rx
from fakekernel.net.headers import AF_INET, AF_INET6, ETH_P_IP, ETH_P_IPV6
from fakekernel.net.net_namespace import NETNS_PATHS, open_netns
from fakekernel.net.netdev import LOOPBACK_IFINDEX, NetNs
from fakekernel.trace.kprobe import Tracing
from uapi.bpf import AttachType

__all__ = ["World", "Network"]

_DIRECTIONS = {"ingress": AttachType.CGROUP_INET_INGRESS, "egress": AttachType.CGROUP_INET_EGRESS}
_NET_XMIT_OK = (rx.NET_XMIT_SUCCESS, rx.NET_XMIT_CN)
_IPV4_VERSION = 4


class Network(NetNs):
    """`NetNs` plus the Python-facing ways to make traffic."""

    def receive(self, ifindex: int, frame: bytes, *, rx_queue: int = 0) -> rx.RxResult:
        """An Ethernet frame arrives on `ifindex`."""
        return rx.netif_receive(self.kern, ifindex, frame, rx_queue=rx_queue)

    def bind(self, protocol: int, port: int, *, family: int = AF_INET, addr: bytes | None = None,
             cgroup=None) -> rx.Socket:
        """A socket bound to `port` (rx.IPPROTO_UDP / IPPROTO_TCP) in `cgroup` (default: the
        current task's cgroup, else the root)."""
        world = self.kern.world
        cg = world.cgroup.get(cgroup) if cgroup is not None else \
            (self.kern.current.cgroup or world.cgroup.root)
        for s in self.sockets:
            if s.family == family and s.protocol == protocol and s.port == port:
                raise KernelError(Errno.EADDRINUSE, f"port {port} in use")
        sock = rx.Socket(family=family, protocol=protocol, port=port, cgroup=cg, addr=addr)
        self.sockets.append(sock)
        return sock

    def close_socket(self, sock: rx.Socket) -> None:
        self.sockets.remove(sock)


class World:
    def __init__(self, kern):
        self.kern = kern
        self.net = Network(kern)
        from fakekernel.net.socket import SocketTable
        self.net.socktab = SocketTable(kern)           # socket(2) sockets (fakekernel.net.socket)
        self.cgroup = CgroupFs(kern)
        self.trace = Tracing(kern)
        self.dmesg: list[str] = []
        self._warned: set[str] = set()

    # ---- what other kernel code asks of the world ----
    @property
    def netdevs(self) -> dict:
        return self.net.devices

    def dev_get_by_index(self, ifindex: int):
        return self.net.dev_get_by_index(ifindex)

    def open(self, path: str, flags: int, task) -> int:
        """open(2): cgroup2 directories and the network namespace file here, everything else
        through the bpffs/VFS tree."""
        if path in NETNS_PATHS:
            return open_netns(self.kern, task, flags)
        if self.cgroup.owns(path):
            cg = self.cgroup.lookup(path)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise KernelError(Errno.EISDIR, "a cgroup directory opened for writing")
            return task.files.install(File(kind=CGROUP_FILE_KIND, private_data=cg, f_flags=flags))
        return self.kern.bpffs.open(path, flags, task)

    def attached_objects(self) -> set:
        """Progs and links a hook currently holds (the leak check expects them alive)."""
        return self.net.attached_objects() | self.cgroup.attached_objects() | \
            self.trace.attached_objects()

    # ---- the kernel log ----
    def dmesg_once(self, line: str) -> None:
        """pr_warn_once()."""
        if line not in self._warned:
            self._warned.add(line)
            self.dmesg.append(line)

    def trace_xdp_exception(self, dev, prog, act: int) -> None:
        """The xdp:xdp_exception tracepoint (recorded in the trace buffer)."""
        self.kern.trace_lines.append(
            f"xdp_exception: prog_id={prog.aux.id} action={act} ifindex={dev.ifindex}")

    # ---- firing hooks from Python ----
    def cgroup_skb(self, cgroup, direction: str, packet: bytes, *, ifindex: int = LOOPBACK_IFINDEX,
                   sock: rx.Socket | None = None) -> bool:
        """Run `cgroup`'s effective ingress/egress skb programs on an IP packet.

        Returns whether the packet is let through (egress: sent, possibly with congestion
        notification).  `cgroup_skb_result` gives the kernel's return code.
        """
        ret = self.cgroup_skb_result(cgroup, direction, packet, ifindex=ifindex, sock=sock)
        if direction == "egress":
            return ret in _NET_XMIT_OK
        return ret == 0

    def cgroup_skb_result(self, cgroup, direction: str, packet: bytes, *,
                          ifindex: int = LOOPBACK_IFINDEX, sock: rx.Socket | None = None) -> int:
        """__cgroup_bpf_run_filter_skb()'s return: 0 / -EPERM, or NET_XMIT_* for egress."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}")
        cg = self.cgroup.get(cgroup)
        dev = self.net.dev_get_by_index(ifindex)
        if dev is None:
            raise KernelError(Errno.ENODEV, f"no device with ifindex {ifindex}")
        v4 = bool(packet) and packet[0] >> 4 == _IPV4_VERSION
        skb = rx.make_skb(dev, packet, protocol=ETH_P_IP if v4 else ETH_P_IPV6)
        parsed = rx._parse_ip(packet)
        if sock is None:
            family = AF_INET if v4 else AF_INET6
            sock = rx.Socket(family=family, protocol=parsed[1] if parsed else 0,
                             port=parsed[4] if parsed else 0, cgroup=cg)
        local = parsed[3] if parsed else bytes(4 if v4 else 16)
        if direction == "egress" and parsed:
            local = parsed[2]
        skb.sk = sock.sock(local)
        return rx.cgroup_run_filter_skb(self.kern, cg, _DIRECTIONS[direction], skb)
