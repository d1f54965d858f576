"""Map memory against a memory cgroup limit: `Kernel(memlock_limit=N)` against a real process
in a memory cgroup with a limit of N bytes (cgroup v1 ``memory.limit_in_bytes`` or v2
``memory.max``).  MAP_CREATE that would go over the limit is ENOMEM; per-CPU values are not
charged (measured); freed maps give their memory back."""
from __future__ import annotations

import os
import pickle
import uuid

import pytest

from backends import FakeBackend, HostBackend, host_unavailable_reason
from fakekernel import Kernel
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType

pytestmark = pytest.mark.differential

MiB = 1 << 20
LIMIT = 16 * MiB
_V1 = "/sys/fs/cgroup/memory"
_V2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def _memcg_dir() -> tuple[str, str] | None:
    """(a new cgroup directory with its limit set, its procs file), or None."""
    name = f"fk-memcg-{uuid.uuid4().hex[:8]}"
    if os.path.exists(f"{_V1}/memory.limit_in_bytes"):
        path, limit_file = f"{_V1}/{name}", "memory.limit_in_bytes"
    else:
        for root in _V2_CANDIDATES:
            try:
                with open(f"{root}/cgroup.controllers") as f:
                    if "memory" in f.read().split():
                        break
            except OSError:
                continue
        else:
            return None
        path, limit_file = f"{root}/{name}", "memory.max"
    try:
        os.mkdir(path)
        with open(f"{path}/{limit_file}", "w") as f:
            f.write(str(LIMIT))
    except OSError:
        if os.path.isdir(path):
            os.rmdir(path)
        return None
    return path, f"{path}/cgroup.procs"


def run_in_memcg(scenario):
    """scenario(HostBackend()) in a forked child inside a fresh memory cgroup of LIMIT bytes."""
    reason = host_unavailable_reason()
    if reason:
        pytest.skip(f"real bpf() unavailable: {reason}")
    cg = _memcg_dir()
    if cg is None:
        pytest.skip("no writable memory cgroup controller")
    path, procs = cg
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # pragma: no cover (child)
        try:
            os.close(r)
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            b = HostBackend()
            res = scenario(b)
            leaked = b.cleanup()
            os.write(w, pickle.dumps((res, leaked)))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    os.rmdir(path)
    res, leaked = pickle.loads(data)
    assert not leaked
    return res


def run_fake(scenario):
    b = FakeBackend(Kernel(memlock_limit=LIMIT))
    res = scenario(b)
    assert not b.cleanup()
    live = b.kern.live_objects()
    assert not any(live.values()), live
    return res


def create(b, map_type, key_size, value_size, max_entries, flags=0):
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, key_size=key_size,
                       value_size=value_size, max_entries=max_entries, map_flags=flags)
    return ret


SINGLE = {   # far from the boundary on both sides
    "array_1m": (MapType.ARRAY, 4, 4096, 256), "array_32m": (MapType.ARRAY, 4, 4096, 8192),
    "array_64m_one_value": (MapType.ARRAY, 4, 64 * MiB, 1),
    "hash_prealloc_72m": (MapType.HASH, 4, 1024, 65536),
    "hash_noprealloc": (MapType.HASH, 4, 1024, 65536, MapFlags.NO_PREALLOC),
    "ringbuf_1m": (MapType.RINGBUF, 0, 0, MiB), "ringbuf_64m": (MapType.RINGBUF, 0, 0, 64 * MiB),
    "user_ringbuf_64m": (MapType.USER_RINGBUF, 0, 0, 64 * MiB),
    "percpu_array_256m": (MapType.PERCPU_ARRAY, 4, 4096, 32768),
    "percpu_hash_128m": (MapType.PERCPU_HASH, 4, 1024, 65536),
    "queue_32m": (MapType.QUEUE, 0, 1024, 32768),
}


@pytest.mark.parametrize("case", SINGLE.values(), ids=SINGLE.keys())
def test_map_create_over_memcg_limit_enomem(case):
    def scenario(b):
        fd = create(b, *case)
        if fd >= 0:
            b.close(fd)
            return "ok"
        return fd
    assert run_fake(scenario) == run_in_memcg(scenario)


def test_map_create_memcg_cumulative_and_freed():
    """6 MiB arrays: two fit in 16 MiB, the third does not; closing one makes room again."""
    def scenario(b):
        fds, out = [], []
        for _ in range(3):
            fd = create(b, MapType.ARRAY, 4, 6 * MiB, 1)
            out.append(fd >= 0 or fd)
            if fd >= 0:
                fds.append(fd)
        b.close(fds.pop(0))
        fd = create(b, MapType.ARRAY, 4, 6 * MiB, 1)
        out.append(fd >= 0 or fd)
        if fd >= 0:
            fds.append(fd)
        for fd in fds:
            b.close(fd)
        return out
    res = run_fake(scenario)
    assert res == run_in_memcg(scenario)
    assert res == [True, True, -12, True]
