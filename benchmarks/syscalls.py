"""bpf() syscall latency: fakekernel vs the real kernel, side by side.

    python3 benchmarks/syscalls.py [--calls N]

Each case is (name, setup) where setup(backend) returns a zero-argument function doing one
call (and a cleanup).  Adding a row (e.g. PROG_TEST_RUN) is one more entry in CASES.
The real-kernel column is skipped when bpf() is not available to this user.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel import Kernel  # noqa: E402
from uapi import calls  # noqa: E402
from uapi.attr import Attr  # noqa: E402
from uapi.backend import HostKernel  # noqa: E402
from uapi.bpf import BPF_ADD, BPF_B, BPF_JGT, BPF_W, BpfCmd, MapType, ProgType  # noqa: E402
from uapi.ffi import ffi  # noqa: E402
from uapi.insn import (BPF_ALU64_IMM, BPF_ALU64_REG, BPF_EXIT_INSN, BPF_JMP_REG,  # noqa: E402
                       BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM, assemble_insns)

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


TEST_RUN_REPEAT = 1000
TEST_RUN_CALLS = 20               # each call runs the program TEST_RUN_REPEAT times
SUM_BYTES = 9                     # 3 + 5 * 9 + 8 = 56 instructions


def _sum_prog() -> bytes:
    """SCHED_CLS: r0 = sum of the first SUM_BYTES packet bytes (bounds-checked), swap bytes 0/1."""
    O = lambda f: ffi.offsetof("struct __sk_buff", f)      # noqa: E731
    swap = 3 + 5 * SUM_BYTES
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, O("data")), BPF_LDX_MEM(BPF_W, 3, 1, O("data_end")),
             BPF_MOV64_IMM(0, 0)]
    for i in range(SUM_BYTES):
        j = len(insns) + 2
        insns += [BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, i + 1),
                  BPF_JMP_REG(BPF_JGT, 4, 3, swap - j - 1),
                  BPF_LDX_MEM(BPF_B, 5, 2, i), BPF_ALU64_REG(BPF_ADD, 0, 5)]
    insns += [BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, 2), BPF_JMP_REG(BPF_JGT, 4, 3, 4),
              BPF_LDX_MEM(BPF_B, 5, 2, 0), BPF_LDX_MEM(BPF_B, 4, 2, 1),
              BPF_STX_MEM(BPF_B, 2, 4, 0), BPF_STX_MEM(BPF_B, 2, 5, 1), BPF_EXIT_INSN()]
    return assemble_insns(insns)


def _test_run(b):
    """BPF_PROG_TEST_RUN of a 56-insn tc program over a 64-byte packet, repeat=1000."""
    fd = calls.prog_load(b, ProgType.SCHED_CLS, _sum_prog())
    packet = bytes(range(64))
    out = bytearray(128)
    a = Attr()
    for field, value in (("test.prog_fd", fd), ("test.data_in", packet), ("test.data_size_in", 64),
                         ("test.data_out", out), ("test.data_size_out", len(out)),
                         ("test.repeat", TEST_RUN_REPEAT)):
        a.set(field, value)
    size = Attr.size("test.batch_size")

    def one():
        ret = b.bpf(BpfCmd.PROG_TEST_RUN, a.c, size)
        if ret:
            raise RuntimeError(f"PROG_TEST_RUN failed: {ret}")
    return one, lambda: b.close(fd)


def _test_run_tier(tier: str):
    """The same test run with the fakekernel engine pinned to one tier (no effect on the kernel)."""
    def setup(b):
        saved = os.environ.get("FAKEKERNEL_ENGINE")
        os.environ["FAKEKERNEL_ENGINE"] = tier
        one, cleanup = _test_run(b)

        def restore():
            cleanup()
            if saved is None:
                os.environ.pop("FAKEKERNEL_ENGINE", None)
            else:
                os.environ["FAKEKERNEL_ENGINE"] = saved
        return one, restore
    return setup


CASES = [
    ("MAP_LOOKUP_ELEM array", _elem_op(MapType.ARRAY, BpfCmd.MAP_LOOKUP_ELEM)),
    ("MAP_UPDATE_ELEM array", _elem_op(MapType.ARRAY, BpfCmd.MAP_UPDATE_ELEM)),
    ("MAP_LOOKUP_ELEM hash", _elem_op(MapType.HASH, BpfCmd.MAP_LOOKUP_ELEM)),
    ("MAP_UPDATE_ELEM hash", _elem_op(MapType.HASH, BpfCmd.MAP_UPDATE_ELEM)),
    (f"PROG_TEST_RUN x{TEST_RUN_REPEAT} (56 insns)", _test_run, TEST_RUN_CALLS),
    ("  same, interpreter tier", _test_run_tier("interp"), TEST_RUN_CALLS),
    ("  same, generated-Python tier", _test_run_tier("python"), TEST_RUN_CALLS),
    ("  same, C tier", _test_run_tier("c"), TEST_RUN_CALLS),
]


def _time(setup, backend, n: int) -> float | str:
    try:
        one, cleanup = setup(backend)
    except calls.BpfError as e:          # e.g. a prog type this kernel cannot load yet
        return f"n/a ({e.strerror})"
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
    print(f"{'case':32} {'fakekernel ns/call':>20} {'kernel ns/call':>16} {'ratio':>8}")
    for name, setup, *limit in CASES:
        n = min(args.calls, *limit) if limit else args.calls
        f = _time(setup, fake, n)
        h = _time(setup, host, n) if host else None
        fs = f"{f:20.0f}" if isinstance(f, float) else f"{f:>20}"
        hs = f"{h:16.0f}" if isinstance(h, float) else f"{h or 'n/a':>16}"
        both = isinstance(f, float) and isinstance(h, float)
        ratio = f"{f / h:7.1f}x" if both else f"{'':>8}"
        print(f"{name:32} {fs} {hs} {ratio}")


if __name__ == "__main__":
    main()
