"""fakekernel/bpf/memcg.py — Kernel(memlock_limit=...) and what maps charge."""
from __future__ import annotations

from fakekernel import Kernel
from fakekernel.bpf.memcg import bpf_map_memcg_charge, memcg_usage
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.errno import Errno

MiB = 1 << 20


def _create(k, map_type=MapType.ARRAY, key_size=4, value_size=MiB, max_entries=1, flags=0, name=b""):
    ret, _ = calls.raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, key_size=key_size,
                       value_size=value_size, max_entries=max_entries, map_flags=flags, map_name=name)
    return ret


def _map(k, fd):
    return k.current.files.fdget(fd).private_data


def test_memlock_limit_default_unlimited():
    k = Kernel()
    assert k.memlock_limit is None
    fd = _create(k, value_size=64 * MiB)
    assert fd >= 0
    k.close(fd)


def test_memlock_limit_exceeded_enomem_and_nothing_left():
    k = Kernel(memlock_limit=4 * MiB)
    assert _create(k, value_size=8 * MiB) == -Errno.ENOMEM
    assert k.live_objects()["maps"] == []
    fd = _create(k, value_size=2 * MiB)
    assert fd >= 0
    assert memcg_usage(k) == _map(k, fd).memlock
    assert _create(k, value_size=2 * MiB) == -Errno.ENOMEM         # 2 MiB + headers each
    k.close(fd)
    assert memcg_usage(k) == 0
    fd = _create(k, value_size=3 * MiB)
    assert fd >= 0
    k.close(fd)


def test_memlock_limit_before_name_check_enomem():
    """The charge fails inside map_alloc, before bpf_obj_name_cpy() looks at the name."""
    k = Kernel(memlock_limit=MiB)
    assert _create(k, value_size=2 * MiB, name=b"bad-name") == -Errno.ENOMEM
    assert _create(k, value_size=MiB // 2, name=b"bad-name") == -Errno.EINVAL


def test_memcg_charge_excludes_percpu_values():
    k = Kernel()
    fd = _create(k, MapType.PERCPU_ARRAY, 4, 4096, 1024)
    m = _map(k, fd)
    assert bpf_map_memcg_charge(m) == m.memlock - 4096 * 1024 * k.nr_cpus
    fd2 = _create(k, MapType.PERCPU_HASH, 4, 100, 64, MapFlags.NO_PREALLOC)
    m2 = _map(k, fd2)
    assert bpf_map_memcg_charge(m2) == m2.memlock           # no elements yet
    k.close(fd)
    k.close(fd2)


def test_memcg_pinned_map_stays_charged(tmp_path):
    k = Kernel(memlock_limit=3 * MiB)
    fd = _create(k, value_size=2 * MiB)
    assert calls.raw(k, BpfCmd.OBJ_PIN, "file_flags", bpf_fd=fd, pathname=b"/sys/fs/bpf/m\0")[0] == 0
    k.close(fd)
    assert _create(k, value_size=2 * MiB) == -Errno.ENOMEM
    assert k.unlink("/sys/fs/bpf/m") == 0
    fd = _create(k, value_size=2 * MiB)
    assert fd >= 0
    k.close(fd)
