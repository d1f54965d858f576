"""The bpf() gateway — attr size rules, user-memory faults, unknown commands — on both kernels."""
from __future__ import annotations

import pytest

from uapi.attr import ATTR_SIZE
from uapi.bpf import BpfCmd, MapType
from uapi.errno import Errno
from uapi.ffi import ffi

PAGE_SIZE = 4096


def _bpf(b, cmd, buf, size):
    ret = b.bpf(cmd, buf, size)
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


def gateway_scenario(b):
    out = {}
    big = bytearray(PAGE_SIZE + 8)
    out["size>PAGE"] = _bpf(b, BpfCmd.MAP_CREATE, big, PAGE_SIZE + 1)
    out["unknown cmd"] = _bpf(b, 9999, bytearray(ATTR_SIZE), ATTR_SIZE)
    out["unknown cmd, E2BIG first"] = _bpf(b, 9999, bytearray(PAGE_SIZE + 8), PAGE_SIZE + 1)
    tail = bytearray(PAGE_SIZE)
    tail[ATTR_SIZE + 3] = 1
    out["non-zero tail"] = _bpf(b, BpfCmd.MAP_CREATE, tail, PAGE_SIZE)
    out["zero tail"] = _bpf(b, 9999, bytearray(PAGE_SIZE), PAGE_SIZE)
    out["NULL attr"] = _bpf(b, BpfCmd.MAP_CREATE, 0, ATTR_SIZE)
    out["NULL attr size 0"] = _bpf(b, 9999, 0, 0)
    out["bad attr address"] = _bpf(b, BpfCmd.MAP_CREATE, 0x10, 72)
    out["size 0 map create"] = _bpf(b, BpfCmd.MAP_CREATE, bytearray(8), 0)
    return out


def test_sys_bpf_gateway_rules(both):
    fake, host = both
    assert gateway_scenario(fake) == gateway_scenario(host)


def test_sys_bpf_gateway_values_fake(fake):
    r = gateway_scenario(fake)
    assert r["size>PAGE"] == -Errno.E2BIG
    assert r["unknown cmd"] == -Errno.EINVAL
    assert r["non-zero tail"] == -Errno.E2BIG
    assert r["NULL attr"] == -Errno.EFAULT


@pytest.mark.parametrize("size", [1, 4, 71, 72, 73, ATTR_SIZE, ATTR_SIZE + 8])
def test_short_attrs_are_zero_filled(both, size):
    """A map-create attr cut at `size` bytes: the rest reads as zero on both kernels."""
    def scen(b):
        buf = ffi.new("char[]", PAGE_SIZE)
        a = ffi.cast("union bpf_attr *", buf)
        a.map_type = MapType.ARRAY
        a.key_size = 4
        a.value_size = 4
        a.max_entries = 1
        ret = b.bpf(BpfCmd.MAP_CREATE, buf, size)
        if ret >= 0:
            b.close(ret)
            return "fd"
        return ret
    fake, host = both
    assert scen(fake) == scen(host)


def test_tail_check_faults_on_unreadable_tail(both):
    """size > sizeof(attr) makes the kernel read the tail: an unmapped tail is EFAULT."""
    def scen(b):
        # an address in the never-mapped first page: the tail read itself faults
        return b.bpf(BpfCmd.MAP_CREATE, 0x1000 - ATTR_SIZE, ATTR_SIZE + 16)
    fake, host = both
    assert scen(fake) == scen(host) == -Errno.EFAULT
