"""Map operation throughput: fakekernel vs the real kernel, side by side.

    python3 benchmarks/maps.py [--sizes 1,10000,1000000] [--ops N] [--types array,hash,lru]

For each map type and size: a map of 4-byte keys and 8-byte values is filled, then
LOOKUP_ELEM, UPDATE_ELEM (existing keys), DELETE_ELEM (+ re-insert, not timed),
GET_NEXT_KEY and MAP_LOOKUP_BATCH (elements/s, batches of up to 1000) are timed through
``bpf()``.  LRU maps get max_entries = 2n so that no key is evicted.  At the largest size the fake map's memory per entry is measured with
tracemalloc (plus the anonymous-mmap storage areas tracemalloc does not see).
The real-kernel column is skipped when bpf() is not available to this user.
LPM_TRIE keys are {prefixlen 32, an IPv4 address}: 8 bytes; LPM tries have no batch ops.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel import Kernel  # noqa: E402
from fakekernel.bpf_types import MAP_TYPES  # noqa: E402
from uapi import calls  # noqa: E402
from uapi.attr import Attr  # noqa: E402
from uapi.backend import HostKernel  # noqa: E402
from uapi.bpf import BpfCmd, MapFlags, MapType  # noqa: E402
from uapi.errno import Errno  # noqa: E402

KEY_SIZE, VALUE_SIZE = 4, 8
BATCH = 1000
ENOENT = Errno.ENOENT
TYPES = {"array": MapType.ARRAY, "hash": MapType.HASH, "lru": MapType.LRU_HASH, "lpm": MapType.LPM_TRIE}


def _key_size(map_type) -> int:
    return KEY_SIZE + 4 if map_type == MapType.LPM_TRIE else KEY_SIZE


def _key(i: int, map_type=None) -> bytes:
    if map_type == MapType.LPM_TRIE:          # struct bpf_lpm_trie_key_u8: prefixlen, /32
        return (32).to_bytes(4, "little") + i.to_bytes(4, "big")
    return i.to_bytes(KEY_SIZE, "little")


def _create(b, map_type, n):
    flags = MapFlags.NO_PREALLOC if map_type == MapType.LPM_TRIE else 0
    # an LRU map evicts before it is full (per-CPU free lists): give it room for all n keys
    room = 2 * n if map_type == MapType.LRU_HASH else n
    fd = calls.map_create(b, map_type, _key_size(map_type), VALUE_SIZE, max(room, 1),
                          map_flags=flags)
    a = Attr()
    a.set("map_fd", fd)
    a.set("flags", 0)
    for i in range(n):
        a.set("key", _key(i, map_type))
        a.set("value", i.to_bytes(VALUE_SIZE, "little"))
        ret = b.bpf(BpfCmd.MAP_UPDATE_ELEM, a.c, Attr.size("flags"))
        if ret:
            raise RuntimeError(f"fill failed at {i}: {ret}")
    return fd


def _elem_loop(b, fd, cmd, n, ops, last="flags", prep=None, map_type=None):
    """ops calls of `cmd` with keys cycling over 0..n-1; returns ops/s."""
    key, val = bytearray(_key_size(map_type)), bytearray(VALUE_SIZE)
    a = Attr()
    a.set("map_fd", fd)
    a.set("key", key)
    a.set("value" if cmd != BpfCmd.MAP_GET_NEXT_KEY else "next_key",
          val if cmd != BpfCmd.MAP_GET_NEXT_KEY else bytearray(len(key)))
    size = Attr.size(last)
    spent = 0
    for j in range(ops):
        i = j % n
        key[:] = _key(i, map_type)
        t0 = time.perf_counter_ns()
        ret = b.bpf(cmd, a.c, size)
        spent += time.perf_counter_ns() - t0
        if ret and not (cmd == BpfCmd.MAP_GET_NEXT_KEY and ret == -ENOENT):   # the walk's last key
            raise RuntimeError(f"{cmd.name} failed: {ret}")
        if prep:
            prep(i)
    return ops / (spent / 1e9)


def _batch_lookup(b, fd, n):
    """Whole-map MAP_LOOKUP_BATCH walks; returns elements/s."""
    count = min(BATCH, max(n, 1))
    keys, vals, out_b = bytearray(KEY_SIZE * count), bytearray(VALUE_SIZE * count), bytearray(KEY_SIZE)
    done, spent = 0, 0
    while done < max(n, 10 * count) and spent < 2e9:
        a = Attr()
        a.set("batch.map_fd", fd)
        a.set("batch.keys", keys)
        a.set("batch.values", vals)
        a.set("batch.out_batch", out_b)
        in_b = None
        while True:
            a.set("batch.count", count)
            a.set("batch.in_batch", in_b or 0)
            t0 = time.perf_counter_ns()
            ret = b.bpf(BpfCmd.MAP_LOOKUP_BATCH, a.c, Attr.size("batch.flags"))
            spent += time.perf_counter_ns() - t0
            done += a.get("batch.count")
            if ret:
                break
            in_b = bytearray(out_b)
    return done / (spent / 1e9) if spent else 0.0


def bench(b, map_type, n, ops):
    fd = _create(b, map_type, n)
    try:
        mt = map_type
        r = {"lookup": _elem_loop(b, fd, BpfCmd.MAP_LOOKUP_ELEM, n, ops, map_type=mt),
             "update": _elem_loop(b, fd, BpfCmd.MAP_UPDATE_ELEM, n, ops, map_type=mt)}
        if map_type != MapType.ARRAY:
            def reinsert(i):
                calls.map_update_elem(b, fd, _key(i, mt), bytes(VALUE_SIZE))
            r["delete"] = _elem_loop(b, fd, BpfCmd.MAP_DELETE_ELEM, n, min(ops, 5000), "key",
                                     reinsert, map_type=mt)
        r["get_next_key"] = _elem_loop(b, fd, BpfCmd.MAP_GET_NEXT_KEY, n, ops, "next_key",
                                       map_type=mt)
        if map_type != MapType.LPM_TRIE:
            r["batch_lookup"] = _batch_lookup(b, fd, n)
        return r
    finally:
        b.close(fd)


def bytes_per_entry(map_type, n) -> float:
    k = Kernel()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fd = _create(k, map_type, n)
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    m = k.current.files.fdget(fd).private_data
    area = getattr(m, "area", None)
    untraced = len(area.buf) if area is not None and not isinstance(area.buf, bytearray) else 0
    k.close(fd)
    return (traced + untraced) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,10000,1000000")
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--types", default="array,hash,lru,lpm")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    host = HostKernel() if HostKernel.available() else None
    print(f"{'type':6} {'entries':>8} {'op':13} {'fake ops/s':>12} {'kernel ops/s':>13} {'kern/fake':>9}")
    for tname in args.types.split(","):
        map_type = TYPES[tname]
        if map_type not in MAP_TYPES:
            print(f"{tname:6} {'':>8} {'(not implemented in fakekernel)':>40}")
            continue
        for n in sizes:
            f = bench(Kernel(), map_type, n, args.ops)
            h = bench(host, map_type, n, args.ops) if host else {}
            for op, fv in f.items():
                hv = h.get(op)
                hs = f"{hv:13.0f}" if hv else f"{'n/a':>13}"
                slow = f"{hv / fv:8.0f}x" if hv and fv else f"{'':>9}"
                print(f"{tname:6} {n:8} {op:13} {fv:12.0f} {hs} {slow}")
        print(f"{tname:6} {sizes[-1]:8} {'bytes/entry':13} {bytes_per_entry(map_type, sizes[-1]):12.0f}")


if __name__ == "__main__":
    main()
