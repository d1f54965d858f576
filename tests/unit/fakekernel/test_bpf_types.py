"""fakekernel/bpf_types.py — the map registry lists every enum bpf_map_type value exactly once."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel.bpf_types import MAP_TYPES, NOT_IMPLEMENTED_MAP_TYPES
from uapi.bpf import BpfCmd, MapType
from uapi.calls import raw
from uapi.errno import Errno


def test_map_registry_covers_every_map_type():
    assert set(MAP_TYPES) | set(NOT_IMPLEMENTED_MAP_TYPES) == set(MapType) - {MapType.UNSPEC}
    assert not set(MAP_TYPES) & set(NOT_IMPLEMENTED_MAP_TYPES)


def test_every_map_type_of_the_enum_is_implemented():
    """6.18 built with every map type: none is left out of the registry."""
    assert not NOT_IMPLEMENTED_MAP_TYPES


@pytest.mark.parametrize("map_type", [max(MapType) + 1, 0xFFFF, 0xFFFFFFFF])
def test_map_create_unknown_type_einval(map_type):
    """A type beyond the enum finds no bpf_map_ops: EINVAL for any attrs."""
    k = Kernel()
    ret, _ = raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, key_size=4, value_size=8,
                 max_entries=4)
    assert ret == -Errno.EINVAL


def test_map_create_type_absent_from_registry_einval(monkeypatch):
    """A type absent from the registry behaves as in a kernel built without it: EINVAL."""
    from fakekernel import bpf_types
    monkeypatch.delitem(bpf_types.MAP_TYPES, MapType.BLOOM_FILTER)
    k = Kernel()
    ret, _ = raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.BLOOM_FILTER, key_size=0,
                 value_size=8, max_entries=4)
    assert ret == -Errno.EINVAL
