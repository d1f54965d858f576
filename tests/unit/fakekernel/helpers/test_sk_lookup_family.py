"""fakekernel.helpers.sk_lookup_family: references taken by lookups and dropped by sk_release."""
from __future__ import annotations

import ipaddress
import socket

import pytest

from fakekernel import Kernel
from fakekernel.helpers import sk_lookup_family as skl
from fakekernel.interp.run import RunEnv


def _tuple(saddr, sport, daddr, dport) -> bytes:
    return (ipaddress.ip_address(saddr).packed + ipaddress.ip_address(daddr).packed
            + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))


@pytest.fixture
def world():
    kern = Kernel()
    lst = kern.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert kern.bind(lst, ("127.0.0.1", 5001)) == 0 and kern.listen(lst) == 0
    cli = kern.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert kern.connect(cli, ("127.0.0.1", 5001)) == 0
    srv = kern.accept(lst)
    tup = bytearray(64)
    region = kern.mem.map_region(tup, "stack", "tuple")
    env = RunEnv(mem=kern.mem, kernel=kern, ctx=object())
    eph = kern.getsockname(cli)[1]
    yield kern, env, region, tup, eph
    kern.mem.unmap(region)
    for fd in (srv, cli, lst):
        kern.close(fd)


def _lookup(env, region, tup, raw, fn=skl.bpf_sk_lookup_tcp):
    tup[:len(raw)] = raw
    return fn(env, 0, region.base, len(raw), (1 << 64) - 1, 0)


def test_established_lookup_takes_a_reference_release_drops_it(world):
    kern, env, region, tup, eph = world
    ptr = _lookup(env, region, tup, _tuple("127.0.0.1", eph, "127.0.0.1", 5001))
    _, sk = skl.sk_of_ptr(env, ptr)
    assert sk.state == 1 and sk.bpf_refs == 1
    assert skl.bpf_sk_release(env, ptr, 0, 0, 0, 0) == 0
    assert sk.bpf_refs == 0 and kern.mem.region_at(ptr) is None


def test_listener_lookup_is_not_refcounted(world):
    kern, env, region, tup, eph = world
    ptr = _lookup(env, region, tup, _tuple("127.0.0.1", 1, "127.0.0.1", 5001))
    _, sk = skl.sk_of_ptr(env, ptr)
    assert sk.state == 10 and sk.bpf_refs == 0
    tp = skl.bpf_tcp_sock(env, ptr, 0, 0, 0, 0)
    assert tp and tp != ptr
    skl.bpf_sk_release(env, tp, 0, 0, 0, 0)           # through the tcp_sock view: both regions go
    assert kern.mem.region_at(ptr) is None and kern.mem.region_at(tp) is None


def test_lookup_misses_return_null(world):
    kern, env, region, tup, eph = world
    assert _lookup(env, region, tup, _tuple("127.0.0.1", 1, "127.0.0.1", 5999)) == 0
    assert _lookup(env, region, tup, _tuple("127.0.0.1", 1, "127.0.0.1", 5001), skl.bpf_sk_lookup_udp) == 0
    tup[:12] = _tuple("127.0.0.1", 1, "127.0.0.1", 5001)
    assert skl.bpf_sk_lookup_tcp(env, 0, region.base, 12, 0, 0) == 0          # netns id 0: none
    assert skl.bpf_sk_lookup_tcp(env, 0, region.base, 12, (1 << 64) - 1, 1) == 0
    assert skl.bpf_sk_lookup_tcp(env, 0, region.base, 11, (1 << 64) - 1, 0) == 0


def _tcph(flags, seq, ack=0, opts=b""):
    return ((1234).to_bytes(2, "big") + (80).to_bytes(2, "big") + seq.to_bytes(4, "big") + ack.to_bytes(4, "big")
            + bytes([(20 + len(opts)) // 4 << 4, flags]) + bytes(6) + opts)


@pytest.mark.parametrize("opts,mss", [(b"", 0), (b"\x02\x04\x05\xb4", 1460), (b"\x01\x01\x02\x04\x05\x14", 0),
                                      (b"\x01\x01\x02\x04\x05\x14\x00\x00", 1300), (b"\x00\x02\x04\x05\xb4\x00\x00\x00", 0),
                                      (b"\x08\x01\x00\x00", 0), (b"\x02\x04\x00\x00", 0)])
def test_tcp_parse_mss_option(opts, mss):
    from fakekernel.helpers.syncookies import tcp_parse_mss_option
    assert tcp_parse_mss_option(_tcph(2, 1, opts=opts)) == mss


def test_raw_syncookie_roundtrip_and_window(world):
    from fakekernel.helpers import syncookies as sc
    kern, env, region, tup, eph = world
    iph = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    syn = _tcph(2, 1000, opts=b"\x02\x04\x05\x78")           # MSS 1400 -> the 1300 slot
    tup[:20], tup[20:20 + len(syn)] = iph, syn
    ret = sc.SYNCOOKIES_RUNTIME[sc.FuncId.tcp_raw_gen_syncookie_ipv4](env, region.base, region.base + 20, len(syn), 0, 0)
    cookie, mss = ret & 0xFFFFFFFF, ret >> 32
    assert mss == 1300
    check = sc.SYNCOOKIES_RUNTIME[sc.FuncId.tcp_raw_check_syncookie_ipv4]
    tup[20:40] = _tcph(0x10, 1001, (cookie + 1) & 0xFFFFFFFF)
    assert check(env, region.base, region.base + 20, 0, 0, 0) == 0
    tup[20:40] = _tcph(0x10, 1001, (cookie + 1 + (3 << 24)) & 0xFFFFFFFF)     # three minutes old
    assert check(env, region.base, region.base + 20, 0, 0, 0) != 0
