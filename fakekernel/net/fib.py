"""Routes, addresses and neighbours of a network namespace — net/ipv4/fib_frontend.c
(fib_add_ifaddr, fib_magic), fib_trie.c (fib_table_lookup), fib_semantics.c
(fib_result_prefsrc), devinet.c (inet_select_addr), net/ipv6/route.c + ip6_fib.c
(fib6_table_lookup), addrconf.c (prefix and anycast routes), net/core/neighbour.c.

As much as bpf_fib_lookup (fakekernel.helpers.fib) asks, driven the way ``ip`` drives the real
tables: `Fib.link_set_up` (``ip link set DEV up``: lo gets 127.0.0.1/8 and ::1),
`Fib.add_addr` (``ip addr add``: the local, prefix and broadcast routes the kernel derives),
`Fib.add_route` (``ip route add``: unicast with a gateway and/or device, blackhole,
unreachable, prohibit; table, metric, src, ``mtu lock``), `Fib.add_neigh` (``ip neigh add``)
and `Fib.set_forwarding` (``sysctl net.ipv{4,6}.conf.{all,DEV}.forwarding``).

Until a policy rule is added (`Fib.add_rule`, ``ip rule add``; fakekernel.net.fib_rules) the IPv4
local and main tables share one trie, as the kernel keeps them merged, and a lookup searches main
then default (IPv4) or local then main (IPv6).  Single-path routes, no tos/dscp selectors, no
exceptions (PMTU).
"""
from __future__ import annotations

import enum
import ipaddress

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.net.fib_rules import FibRules
from fakekernel.net.headers import ETH_ALEN
from fakekernel.net.netdev import LOOPBACK_IFINDEX
from fakekernel.net.socket import AF_INET, AF_INET6

__all__ = ["Fib", "FibRoute", "Neighbour", "Rtn", "Nud", "NUD_VALID", "RT_TABLE_MAIN", "RT_TABLE_LOCAL",
           "RT_TABLE_DEFAULT", "RT_SCOPE_UNIVERSE", "RT_SCOPE_LINK", "RT_SCOPE_HOST"]

# include/uapi/linux/rtnetlink.h
RT_TABLE_DEFAULT, RT_TABLE_MAIN, RT_TABLE_LOCAL = 253, 254, 255
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
IP6_RT_PRIO_ADDRCONF, IP6_RT_PRIO_USER = 256, 1024       # include/net/ip6_route.h


class Rtn(enum.IntEnum):
    """Route types (RTN_*)."""

    UNSPEC, UNICAST, LOCAL, BROADCAST, ANYCAST, MULTICAST, BLACKHOLE, UNREACHABLE, PROHIBIT = range(9)


class Nud(enum.IntFlag):
    """Neighbour states (include/uapi/linux/neighbour.h)."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


NUD_VALID = Nud.PERMANENT | Nud.NOARP | Nud.REACHABLE | Nud.PROBE | Nud.STALE | Nud.DELAY
# fib_props[type].error: what a lookup that lands on a reject route returns
_REJECT = {Rtn.BLACKHOLE: -Errno.EINVAL, Rtn.UNREACHABLE: -Errno.EHOSTUNREACH, Rtn.PROHIBIT: -Errno.EACCES}
_TYPES = {"unicast": Rtn.UNICAST, "local": Rtn.LOCAL, "broadcast": Rtn.BROADCAST,
          "blackhole": Rtn.BLACKHOLE, "unreachable": Rtn.UNREACHABLE, "prohibit": Rtn.PROHIBIT}
_FAMILY = {4: AF_INET, 6: AF_INET6}


@attrs.define(eq=False)
class FibRoute:
    """One fib_alias + fib_info (IPv4) or fib6_info (IPv6), single nexthop."""

    family: int
    dst: object                       # ipaddress.IPv4Network / IPv6Network
    type: int = Rtn.UNICAST
    table: int = RT_TABLE_MAIN
    oif: int = 0                      # the nexthop device (0: none, reject routes)
    gateway: object = None            # ipaddress address or None
    metric: int = 0                   # fib_priority / fib6_metric
    prefsrc: object = None
    mtu: int = 0                      # RTAX_MTU
    mtu_locked: bool = False          # RTAX_LOCK has RTAX_MTU
    scope: int = RT_SCOPE_UNIVERSE

    def key(self) -> tuple:
        return (self.family, self.dst, self.table, self.metric)


@attrs.define(eq=False)
class Neighbour:
    ifindex: int
    addr: object
    lladdr: bytes
    state: int = Nud.PERMANENT


@attrs.define(eq=False)
class IfAddr:
    ifindex: int
    iface: object                     # ipaddress.IPv4Interface / IPv6Interface

    @property
    def scope(self) -> int:
        return RT_SCOPE_HOST if self.iface.ip.is_loopback else RT_SCOPE_UNIVERSE


def _ip(addr):
    return addr if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(addr)


class Fib:
    """The routing state of one namespace (``net.fib``)."""

    def __init__(self, net):
        self.net = net
        self.routes: list[FibRoute] = []
        self.addrs: list[IfAddr] = []
        self.neighs: dict[tuple, Neighbour] = {}
        self.up: set[int] = set()
        self.tables = {AF_INET: {RT_TABLE_LOCAL, RT_TABLE_MAIN}, AF_INET6: {RT_TABLE_LOCAL, RT_TABLE_MAIN}}
        # devconf forwarding: "default" for devices still to come, then per ifindex
        self.fwd = {AF_INET: {"default": False}, AF_INET6: {"default": False}}
        self.rules = {AF_INET: FibRules(RT_TABLE_MAIN, RT_TABLE_LOCAL, RT_TABLE_DEFAULT, with_default=True),
                      AF_INET6: FibRules(RT_TABLE_MAIN, RT_TABLE_LOCAL, RT_TABLE_DEFAULT, with_default=False)}
        self.link_set_up(LOOPBACK_IFINDEX)

    # ---------------------------------------------------------------- configuration

    def _dev(self, ifindex: int):
        dev = self.net.dev_get_by_index(ifindex)
        if dev is None:
            raise KernelError(Errno.ENODEV, f"no device {ifindex}")
        return dev

    def link_set_up(self, ifindex: int) -> None:
        """``ip link set DEV up``: lo gets its addresses; every address gets its routes."""
        self._dev(ifindex)
        if ifindex in self.up:
            return
        self.up.add(ifindex)
        if ifindex == LOOPBACK_IFINDEX:
            self.addrs += [IfAddr(ifindex, ipaddress.ip_interface("127.0.0.1/8")),
                           IfAddr(ifindex, ipaddress.ip_interface("::1/128"))]
        for ifa in [a for a in self.addrs if a.ifindex == ifindex]:
            self._add_ifaddr_routes(ifa)

    def add_addr(self, ifindex: int, cidr: str) -> None:
        """``ip addr add CIDR dev DEV`` (IPv6: ``nodad``)."""
        self._dev(ifindex)
        ifa = IfAddr(ifindex, ipaddress.ip_interface(cidr))
        if any(a.ifindex == ifindex and a.iface == ifa.iface for a in self.addrs):
            raise KernelError(Errno.EEXIST, "address exists")
        self.addrs.append(ifa)
        self._add_ifaddr_routes(ifa)

    def _add_ifaddr_routes(self, ifa: IfAddr) -> None:
        """fib_add_ifaddr() / addrconf's local and prefix routes."""
        ip, net, dev = ifa.iface.ip, ifa.iface.network, ifa.ifindex
        fam = _FAMILY[ip.version]
        up = dev in self.up
        if fam == AF_INET:
            self._magic(fam, ipaddress.ip_network(f"{ip}/32"), Rtn.LOCAL, dev, ip, RT_SCOPE_HOST)
            if not up:
                return
            if net.network_address.packed[0] and (net.network_address != ip or net.prefixlen < 32):
                loop = dev == LOOPBACK_IFINDEX
                self._magic(fam, net, Rtn.LOCAL if loop else Rtn.UNICAST, dev, ip,
                            RT_SCOPE_HOST if loop else RT_SCOPE_LINK)
                if net.prefixlen < 31:
                    self._magic(fam, ipaddress.ip_network(f"{net.broadcast_address}/32"), Rtn.BROADCAST, dev, ip,
                                RT_SCOPE_LINK)
            return
        if not up:
            return
        self._magic(fam, ipaddress.ip_network(f"{ip}/128"), Rtn.LOCAL, dev, None, RT_SCOPE_HOST)
        if net.prefixlen < 128 or dev == LOOPBACK_IFINDEX:
            self._magic(fam, net, Rtn.UNICAST, dev, None, RT_SCOPE_LINK, metric=IP6_RT_PRIO_ADDRCONF,
                        table=RT_TABLE_MAIN)

    def _magic(self, fam, dst, rtype, dev, prefsrc, scope, *, metric=0, table=None) -> None:
        if table is None:
            table = RT_TABLE_MAIN if rtype == Rtn.UNICAST else RT_TABLE_LOCAL
        rt = FibRoute(family=fam, dst=dst, type=rtype, table=table, oif=dev, prefsrc=prefsrc, scope=scope,
                      metric=metric)
        if not any(r.key() == rt.key() and r.type == rt.type for r in self.routes):
            self.routes.append(rt)

    def add_route(self, dst: str, *, dev: int | None = None, via: str | None = None, type: str = "unicast",
                  table: int = RT_TABLE_MAIN, metric: int | None = None, src: str | None = None,
                  mtu: int = 0, mtu_lock: bool = False) -> FibRoute:
        """``ip route add [TYPE] DST [via GW] [dev DEV] [table T] [metric M] [src S] [mtu [lock] N]``."""
        net = ipaddress.ip_network(dst)
        fam = _FAMILY[net.version]
        rtype = _TYPES.get(type)
        if rtype is None:
            raise KernelError(Errno.EINVAL, f"unknown route type {type!r}")
        gw = _ip(via) if via is not None else None
        if rtype in _REJECT:
            dev = LOOPBACK_IFINDEX if fam == AF_INET6 else 0
            scope = RT_SCOPE_UNIVERSE
        else:
            if dev is None and gw is None:
                raise KernelError(Errno.EINVAL, "a unicast route needs a device or a gateway")
            if dev is not None:
                self._dev(dev)
                if dev not in self.up:
                    raise KernelError(Errno.ENETDOWN, "nexthop device is not up")
            if gw is not None:
                dev = self._gateway_dev(fam, gw, dev)
            scope = RT_SCOPE_UNIVERSE if gw is not None else RT_SCOPE_LINK
        if metric is None:
            metric = IP6_RT_PRIO_USER if fam == AF_INET6 else 0
        rt = FibRoute(family=fam, dst=net, type=rtype, table=table, oif=dev or 0, gateway=gw, metric=metric,
                      prefsrc=_ip(src) if src is not None else None, mtu=mtu, mtu_locked=mtu_lock, scope=scope)
        if any(r.key() == rt.key() for r in self.routes):
            raise KernelError(Errno.EEXIST, "route exists")
        self.tables[fam].add(table)
        self.routes.append(rt)
        return rt

    def _gateway_dev(self, fam: int, gw, dev: int | None) -> int:
        """fib_check_nh(): the gateway must be on a link (a connected route)."""
        hits = [r for r in self._table_routes(fam, RT_TABLE_MAIN) if gw in r.dst and r.type == Rtn.UNICAST
                and r.gateway is None and (dev is None or r.oif == dev)]
        if not hits:
            raise KernelError(Errno.ENETUNREACH, "nexthop has invalid gateway")
        return dev if dev is not None else max(hits, key=lambda r: r.dst.prefixlen).oif

    def add_neigh(self, addr: str, lladdr: bytes, ifindex: int, nud: Nud = Nud.PERMANENT) -> None:
        """``ip neigh add ADDR lladdr MAC dev DEV nud STATE``."""
        self._dev(ifindex)
        if len(lladdr) != ETH_ALEN:
            raise KernelError(Errno.EINVAL, "lladdr must be 6 bytes")
        ip = _ip(addr)
        self.neighs[(ifindex, ip)] = Neighbour(ifindex, ip, bytes(lladdr), int(nud))

    def add_rule(self, family: int, *, pref: int | None = None, action: str = "table", table: int = 0,
                 iif: int = 0, oif: int = 0, fwmark: int | None = None, mask: int | None = None,
                 src: str | None = None, dst: str | None = None, invert: bool = False):
        """``ip [-6] rule add [not] [from P] [to P] [iif DEV] [oif DEV] [fwmark M[/MASK]]
        [pref N] (table T | blackhole | unreachable | prohibit)`` (fakekernel.net.fib_rules)."""
        for dev in (iif, oif):
            if dev:
                self._dev(dev)
        if table:
            self.tables[family].add(table)
        return self.rules[family].add(pref=pref, action=action, table=table, iif=iif, oif=oif, fwmark=fwmark,
                                      mask=mask, src=src, dst=dst, invert=invert,
                                      version=4 if family == AF_INET else 6)

    def set_forwarding(self, family: int, on: bool, ifindex: int | None = None) -> None:
        """``sysctl net.ipv4.conf.all.forwarding`` (ifindex None: default and every device) or
        ``...conf.DEV.forwarding``."""
        conf = self.fwd[family]
        if ifindex is None:
            for k in list(conf) + list(self.net.devices):
                conf[k] = on
        else:
            self._dev(ifindex)
            conf[ifindex] = on

    def netdev_unregister(self, ifindex: int) -> None:
        """The device left: its addresses, routes and neighbours go with it."""
        self.up.discard(ifindex)
        self.addrs = [a for a in self.addrs if a.ifindex != ifindex]
        self.routes = [r for r in self.routes if r.oif != ifindex]
        self.neighs = {k: n for k, n in self.neighs.items() if n.ifindex != ifindex}
        for conf in self.fwd.values():
            conf.pop(ifindex, None)

    # ---------------------------------------------------------------- queries

    def forwarding(self, family: int, ifindex: int) -> bool:
        """IN_DEV_FORWARD(in_dev) / idev->cnf.forwarding."""
        conf = self.fwd[family]
        return conf.get(ifindex, conf["default"])

    def table_exists(self, family: int, table: int) -> bool:
        """fib_get_table() / fib6_get_table() (table 0 means main)."""
        return (table or RT_TABLE_MAIN) in self.tables[family]

    def _table_routes(self, family: int, table: int) -> list:
        table = table or RT_TABLE_MAIN
        merged = (RT_TABLE_LOCAL, RT_TABLE_MAIN) if family == AF_INET and table in (RT_TABLE_LOCAL, RT_TABLE_MAIN) \
            and not self.rules[AF_INET].custom else (table,)        # fib_unmerge() splits them
        routes = [r for r in self.routes if r.family == family and r.table in merged]
        if family == AF_INET6 and table == RT_TABLE_LOCAL:
            routes += self._anycast_routes()
        return routes

    def _anycast_routes(self) -> list:
        """addrconf_join_anycast(): a forwarding device's subnet-router anycast addresses."""
        out = []
        for a in self.addrs:
            net = a.iface.network
            if net.version == 6 and a.ifindex in self.up and self.forwarding(AF_INET6, a.ifindex) \
                    and int(net.network_address) and net.prefixlen < 127:
                out.append(FibRoute(family=AF_INET6, dst=ipaddress.ip_network(f"{net.network_address}/128"),
                                    type=Rtn.ANYCAST, table=RT_TABLE_LOCAL, oif=a.ifindex))
        return out

    def fib4_table_lookup(self, table: int, daddr, oif: int = 0) -> tuple[int, FibRoute | None]:
        """fib_table_lookup(): longest prefix first; within one prefix by metric; a reject route
        ends the search with its error; a nexthop on another device than `oif` is passed over.
        (0, route) or (-errno, None); -EAGAIN: nothing matched."""
        return self._lookup(self._table_routes(AF_INET, table), daddr, oif, reject=True)

    def fib4_lookup(self, daddr, oif: int = 0, *, iif: int = 0, mark: int = 0, saddr=None) -> tuple:
        """fib_lookup(): the rules once there are custom ones (__fib_lookup), else main, then
        default when it exists."""
        rules = self.rules[AF_INET]
        if rules.custom:
            def table_lookup(tb):
                return self.fib4_table_lookup(tb, daddr, oif) if self.table_exists(AF_INET, tb) \
                    else (-Errno.EAGAIN, None)
            err, rt = rules.lookup(table_lookup, iif, oif, mark, saddr or ipaddress.IPv4Address(0), daddr)
            return (-Errno.ENETUNREACH if err == -Errno.ESRCH else err), rt
        err, rt = self.fib4_table_lookup(RT_TABLE_MAIN, daddr, oif)
        if err and RT_TABLE_DEFAULT in self.tables[AF_INET]:
            err, rt = self.fib4_table_lookup(RT_TABLE_DEFAULT, daddr, oif)
        return (-Errno.ENETUNREACH if err == -Errno.EAGAIN else err), rt

    def fib6_table_lookup(self, table: int, daddr) -> FibRoute | None:
        """fib6_table_lookup(): the longest matching prefix's lowest-metric route, or None
        (fib6_null_entry)."""
        return self._lookup(self._table_routes(AF_INET6, table), daddr, 0, reject=False)[1]

    def fib6_lookup(self, daddr, *, iif: int = 0, oif: int = 0, mark: int = 0, saddr=None) -> FibRoute | None:
        """fib6_lookup(): the rules once there are custom ones (a rule's reject action is a
        miss to bpf_fib_lookup), else local, then main."""
        rules = self.rules[AF_INET6]
        if rules.custom:
            def table_lookup(tb):
                rt = self.fib6_table_lookup(tb, daddr) if self.table_exists(AF_INET6, tb) else None
                return (0, rt) if rt is not None else (-Errno.EAGAIN, None)
            return rules.lookup(table_lookup, iif, oif, mark, saddr or ipaddress.IPv6Address(0), daddr)[1]
        return self.fib6_table_lookup(RT_TABLE_LOCAL, daddr) or self.fib6_table_lookup(RT_TABLE_MAIN, daddr)

    def _lookup(self, routes: list, daddr, oif: int, *, reject: bool) -> tuple[int, FibRoute | None]:
        hits = sorted((r for r in routes if daddr in r.dst), key=lambda r: (-r.dst.prefixlen, r.metric))
        for rt in hits:
            if reject and rt.type in _REJECT:
                return _REJECT[rt.type], None
            if oif and rt.oif != oif and rt.type not in _REJECT:
                continue
            return 0, rt
        return -Errno.EAGAIN, None

    def mtu(self, rt: FibRoute) -> int:
        """ip_mtu_from_fib_result() / ip6_mtu_from_fib6(): a locked route MTU, else the device's."""
        if rt.mtu_locked and rt.mtu:
            return rt.mtu
        return self.net.dev_get_by_index(rt.oif).mtu

    def neigh_lookup(self, ifindex: int, addr) -> Neighbour | None:
        """__ipv4_neigh_lookup_noref() / __ipv6_neigh_lookup_noref()."""
        return self.neighs.get((ifindex, _ip(addr)))

    def inet_select_addr(self, ifindex: int, dst, scope: int):
        """inet_select_addr(): a primary address of the device (one on dst's subnet first), then
        any device's; None when there is none."""
        v4 = [a for a in self.addrs if a.iface.version == 4]
        first = None
        for a in (a for a in v4 if a.ifindex == ifindex and a.scope <= scope):
            if dst is None or int(dst) == 0 or dst in a.iface.network:
                return a.iface.ip
            first = first or a.iface.ip
        if first is not None:
            return first
        return next((a.iface.ip for a in v4 if a.scope != RT_SCOPE_LINK and a.scope <= scope), None)

    def fib_result_prefsrc(self, rt: FibRoute):
        return rt.prefsrc if rt.prefsrc is not None else self.inet_select_addr(rt.oif, rt.gateway, rt.scope)

    def ipv6_dev_get_saddr(self, ifindex: int, daddr):
        """ipv6_dev_get_saddr(), reduced: a global address of the device (the longest common
        prefix with daddr), else of any device; None when there is none."""
        cands = [a for a in self.addrs if a.iface.version == 6 and not a.iface.ip.is_loopback
                 and a.ifindex in self.up]
        if not cands:
            return None

        def score(a):
            common = 128 - (int(a.iface.ip) ^ int(daddr)).bit_length()
            return (a.ifindex == ifindex, common)
        return max(cands, key=score).iface.ip
