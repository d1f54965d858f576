"""bpf() syscall latency: fakekernel vs the real kernel, side by side.

    python3 benchmarks/syscalls.py [--calls N]

Each case is (name, setup) where setup(backend) returns a zero-argument function doing one
call (and a cleanup).  Adding a row (e.g. PROG_TEST_RUN) is one more entry in CASES.
The real-kernel column is skipped when bpf() is not available to this user.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel import Kernel  # noqa: E402
from uapi import calls  # noqa: E402
from uapi.attr import Attr  # noqa: E402
from uapi.backend import HostKernel  # noqa: E402
from uapi.bpf import BpfCmd, MapType  # noqa: E402

ENTRIES = 1000
KEY_SIZE, VALUE_SIZE = 4, 8


def _elem_op(map_type, cmd):
    """One attr reused for every call, as a loader's hot loop would; keys cycle 0..ENTRIES-1."""
    def setup(b):
        fd = calls.map_create(b, map_type, KEY_SIZE, VALUE_SIZE, ENTRIES)
        for i in range(ENTRIES):
            calls.map_update_elem(b, fd, i.to_bytes(KEY_SIZE, "little"), i.to_bytes(VALUE_SIZE, "little"))
        key, value = bytearray(KEY_SIZE), bytearray(VALUE_SIZE)
        a = Attr()
        a.set("map_fd", fd)
        a.set("key", key)
        a.set("value", value)
        size = Attr.size("flags")
        state = [0]

        def one():
            i = state[0] = (state[0] + 1) % ENTRIES
            key[0], key[1] = i & 0xFF, i >> 8
            ret = b.bpf(cmd, a.c, size)
            if ret:
                raise RuntimeError(f"{cmd.name} failed: {ret}")
        return one, lambda: b.close(fd)
    return setup


CASES = [
    ("MAP_LOOKUP_ELEM array", _elem_op(MapType.ARRAY, BpfCmd.MAP_LOOKUP_ELEM)),
    ("MAP_UPDATE_ELEM array", _elem_op(MapType.ARRAY, BpfCmd.MAP_UPDATE_ELEM)),
    ("MAP_LOOKUP_ELEM hash", _elem_op(MapType.HASH, BpfCmd.MAP_LOOKUP_ELEM)),
    ("MAP_UPDATE_ELEM hash", _elem_op(MapType.HASH, BpfCmd.MAP_UPDATE_ELEM)),
]


def _time(setup, backend, n: int) -> float:
    one, cleanup = setup(backend)
    try:
        for _ in range(min(n // 10, 1000)):      # warm-up
            one()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            one()
        return (time.perf_counter_ns() - t0) / n
    finally:
        cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    fake = Kernel()
    host = HostKernel() if HostKernel.available() else None
    print(f"{'case':28} {'fakekernel ns/call':>20} {'kernel ns/call':>16} {'ratio':>8}")
    for name, setup in CASES:
        f = _time(setup, fake, args.calls)
        h = _time(setup, host, args.calls) if host else None
        hs = f"{h:16.0f}" if h else f"{'n/a':>16}"
        ratio = f"{f / h:7.1f}x" if h else f"{'':>8}"
        print(f"{name:28} {f:20.0f} {hs} {ratio}")


if __name__ == "__main__":
    main()
