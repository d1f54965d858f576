"""fakekernel.net.fib: the ip addr/route/neigh API and the table lookups."""
from __future__ import annotations

import ipaddress

import pytest

from fakekernel import Kernel
from fakekernel.errors import Errno, KernelError
from fakekernel.net.fib import RT_TABLE_LOCAL, RT_TABLE_MAIN, Rtn
from fakekernel.net.socket import AF_INET, AF_INET6

A = ipaddress.ip_address


@pytest.fixture
def net():
    kern = Kernel()
    net = kern.world.net
    dev = net.add_device("d0", "veth")
    net.fib.link_set_up(dev)
    net.fib.add_addr(dev, "10.0.0.1/24")
    net.dev0 = dev
    yield net
    kern.shutdown()


def test_loopback_routes_by_default():
    fib = Kernel().world.net.fib
    err, rt = fib.fib4_lookup(A("127.9.9.9"))
    assert err == 0 and rt.type == Rtn.LOCAL and rt.table == RT_TABLE_LOCAL
    assert fib.fib6_lookup(A("::1")).type == Rtn.LOCAL


def test_add_addr_derives_local_prefix_and_broadcast_routes(net):
    fib = net.fib
    assert fib.fib4_lookup(A("10.0.0.1"))[1].type == Rtn.LOCAL
    assert fib.fib4_lookup(A("10.0.0.255"))[1].type == Rtn.BROADCAST
    rt = fib.fib4_lookup(A("10.0.0.7"))[1]
    assert (rt.type, rt.table, rt.oif, rt.prefsrc) == (Rtn.UNICAST, RT_TABLE_MAIN, net.dev0, A("10.0.0.1"))


def test_add_addr_twice_eexist(net):
    with pytest.raises(KernelError) as e:
        net.fib.add_addr(net.dev0, "10.0.0.1/24")
    assert e.value.errno == Errno.EEXIST


def test_add_addr_unknown_device_enodev(net):
    with pytest.raises(KernelError) as e:
        net.fib.add_addr(99, "10.0.0.1/24")
    assert e.value.errno == Errno.ENODEV


def test_add_route_gateway_not_on_a_link_enetunreach(net):
    with pytest.raises(KernelError) as e:
        net.fib.add_route("192.168.0.0/16", via="172.16.0.1")
    assert e.value.errno == Errno.ENETUNREACH


def test_add_route_device_down_enetdown(net):
    dev = net.add_device("d1", "veth")
    with pytest.raises(KernelError) as e:
        net.fib.add_route("192.168.0.0/16", dev=dev)
    assert e.value.errno == Errno.ENETDOWN


def test_add_route_duplicate_eexist(net):
    net.fib.add_route("192.168.0.0/16", via="10.0.0.2")
    with pytest.raises(KernelError) as e:
        net.fib.add_route("192.168.0.0/16", via="10.0.0.3")
    assert e.value.errno == Errno.EEXIST


def test_longest_prefix_then_metric(net):
    fib = net.fib
    fib.add_route("192.168.0.0/16", via="10.0.0.2", metric=10)
    fib.add_route("192.168.0.0/16", via="10.0.0.3", metric=5)
    fib.add_route("192.168.1.0/24", via="10.0.0.4", metric=50)
    assert fib.fib4_lookup(A("192.168.2.1"))[1].gateway == A("10.0.0.3")
    assert fib.fib4_lookup(A("192.168.1.1"))[1].gateway == A("10.0.0.4")


def test_reject_routes_and_oif_filter(net):
    fib = net.fib
    fib.add_route("10.9.0.0/16", type="blackhole")
    fib.add_route("10.8.0.0/16", type="unreachable")
    assert fib.fib4_lookup(A("10.9.0.1"))[0] == -Errno.EINVAL
    assert fib.fib4_lookup(A("10.8.0.1"))[0] == -Errno.EHOSTUNREACH
    assert fib.fib4_lookup(A("8.8.8.8"))[0] == -Errno.ENETUNREACH
    assert fib.fib4_lookup(A("10.0.0.7"), oif=1)[0] == -Errno.ENETUNREACH


def test_other_table_only_by_id(net):
    fib = net.fib
    fib.add_route("198.51.100.0/24", via="10.0.0.2", table=100)
    assert fib.fib4_lookup(A("198.51.100.1"))[0] == -Errno.ENETUNREACH
    assert fib.fib4_table_lookup(100, A("198.51.100.1"))[1].gateway == A("10.0.0.2")
    assert fib.table_exists(AF_INET, 100) and not fib.table_exists(AF_INET, 101)


def test_forwarding_default_all_and_device(net):
    fib = net.fib
    assert not fib.forwarding(AF_INET, net.dev0)
    fib.set_forwarding(AF_INET, True)
    assert fib.forwarding(AF_INET, net.dev0) and not fib.forwarding(AF_INET6, net.dev0)
    fib.set_forwarding(AF_INET, False, net.dev0)
    assert not fib.forwarding(AF_INET, net.dev0) and fib.forwarding(AF_INET, 1)
    later = net.add_device("d9", "veth")
    assert fib.forwarding(AF_INET, later)


def test_ipv6_prefix_route_and_anycast_when_forwarding(net):
    fib = net.fib
    fib.add_addr(net.dev0, "2001:db8::1/64")
    rt = fib.fib6_lookup(A("2001:db8::"))
    assert rt.type == Rtn.UNICAST and rt.metric == 256
    fib.set_forwarding(AF_INET6, True)
    assert fib.fib6_lookup(A("2001:db8::")).type == Rtn.ANYCAST


def test_del_device_drops_its_routes_addresses_neighbours(net):
    fib = net.fib
    fib.add_route("192.168.0.0/16", via="10.0.0.2")
    fib.add_neigh("10.0.0.2", bytes(6), net.dev0)
    net.del_device(net.dev0)
    assert fib.fib4_lookup(A("192.168.0.1"))[0] == -Errno.ENETUNREACH
    assert fib.neigh_lookup(net.dev0, "10.0.0.2") is None
    assert not [a for a in fib.addrs if a.ifindex == net.dev0]


def test_inet_select_addr_prefers_gateway_subnet(net):
    fib = net.fib
    fib.add_addr(net.dev0, "10.5.0.1/24")
    assert fib.inet_select_addr(net.dev0, A("10.5.0.9"), 0) == A("10.5.0.1")
    assert fib.inet_select_addr(net.dev0, None, 0) == A("10.0.0.1")
    assert fib.inet_select_addr(net.dev0, A("1.2.3.4"), 0) == A("10.0.0.1")


def test_rules_unmerge_local_and_main_and_match_fwmark(net):
    fib = net.fib
    fib.add_route("198.51.100.0/24", via="10.0.0.2", table=100)
    assert fib.fib4_table_lookup(RT_TABLE_MAIN, A("10.0.0.1"))[1].type == Rtn.LOCAL      # merged
    fib.add_rule(AF_INET, pref=100, fwmark=7, table=100)
    assert fib.fib4_table_lookup(RT_TABLE_MAIN, A("10.0.0.1"))[1].type == Rtn.UNICAST    # split
    assert fib.fib4_lookup(A("10.0.0.1"))[1].type == Rtn.LOCAL                            # rule 0: local
    assert fib.fib4_lookup(A("198.51.100.1"), mark=7)[1].gateway == A("10.0.0.2")
    assert fib.fib4_lookup(A("198.51.100.1"), mark=6)[0] == -Errno.ENETUNREACH


def test_rule_actions_and_default_pref(net):
    fib = net.fib
    r = fib.add_rule(AF_INET, action="prohibit", dst="10.9.0.0/16")
    assert r.pref == 32765
    assert fib.fib4_lookup(A("10.9.0.1"))[0] == -Errno.EACCES
    fib.add_rule(AF_INET, pref=5, action="blackhole", src="10.1.0.0/16", invert=True)
    assert fib.fib4_lookup(A("10.0.0.7"), saddr=A("10.2.0.1"))[0] == -Errno.EINVAL
    assert fib.fib4_lookup(A("10.0.0.7"), saddr=A("10.1.0.1"))[0] == 0
    with pytest.raises(KernelError) as e:
        fib.add_rule(AF_INET, action="nat")
    assert e.value.errno == Errno.EINVAL
