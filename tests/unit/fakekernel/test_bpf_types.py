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


@pytest.mark.parametrize("map_type", sorted(NOT_IMPLEMENTED_MAP_TYPES), ids=lambda t: MapType(t).name)
def test_map_create_not_implemented_type_einval(map_type):
    """Absent from the registry = a kernel built without the type: EINVAL for any attrs."""
    k = Kernel()
    ret, _ = raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, key_size=4, value_size=8,
                 max_entries=4)
    assert ret == -Errno.EINVAL
