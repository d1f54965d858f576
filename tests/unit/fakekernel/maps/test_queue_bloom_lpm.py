"""fakekernel/maps/queue_stack_maps.py, bloom_filter.py, lpm_trie.py — through Kernel.bpf,
against plain Python models (deque, set, prefix dict)."""
from __future__ import annotations

import collections

from hypothesis import given, settings, strategies as st

from fakekernel import Kernel
from fakekernel.maps.bloom_filter import bloom_bitset_mask
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.errno import Errno

NP = MapFlags.NO_PREALLOC


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def _pop(kern, fd, cmd=BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM):
    v = bytearray(2)
    return op(kern, cmd, map_fd=fd, key=0, value=v), bytes(v)


@settings(max_examples=60, deadline=None)
@given(map_type=st.sampled_from([MapType.QUEUE, MapType.STACK]), max_entries=st.integers(1, 4),
       ops=st.lists(st.tuples(st.sampled_from(["push", "force", "pop", "peek"]), st.integers(0, 255)),
                    max_size=30))
def test_queue_stack_match_deque_model(map_type, max_entries, ops):
    kern = Kernel()
    fd = calls.map_create(kern, map_type, 0, 2, max_entries)
    model: collections.deque = collections.deque()
    for what, x in ops:
        v = bytes([x, 1])
        if what in ("push", "force"):
            ret = op(kern, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=v,
                     flags=UpdateFlags.EXIST if what == "force" else 0)
            if len(model) == max_entries:
                if what == "push":
                    assert ret == -Errno.E2BIG
                    continue
                model.popleft()                 # BPF_EXIST drops the oldest
            assert ret == 0
            model.append(v)
            continue
        got = _pop(kern, fd, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM if what == "pop" else BpfCmd.MAP_LOOKUP_ELEM)
        if not model:
            assert got[0] == -Errno.ENOENT
            continue
        want = model[0] if map_type == MapType.QUEUE else model[-1]
        assert got == (0, want)
        if what == "pop":
            model.popleft() if map_type == MapType.QUEUE else model.pop()
    kern.close(fd)
    kern.shutdown()


def test_queue_memlock_and_key_errors(kernel):
    fd = calls.map_create(kernel, MapType.QUEUE, 0, 3, 7)
    assert kernel.current.files.fdget(fd).private_data.memlock == 312 + 8 * 3
    assert op(kernel, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=0) == -Errno.EINVAL
    assert op(kernel, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=0,
              next_key=bytearray(4)) == -Errno.EINVAL
    assert op(kernel, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=b"k", value=b"abc") == -Errno.EINVAL
    kernel.close(fd)


def test_bloom_sizing():
    assert bloom_bitset_mask(1, 5) == 63                 # at least one long
    assert bloom_bitset_mask(10, 5) == 127               # 70 bits -> 128
    assert bloom_bitset_mask(2**32 - 1, 1) == 2**32 - 1  # overflow saturates
    assert bloom_bitset_mask(2**31, 2) == 2**32 - 1


@settings(max_examples=30, deadline=None)
@given(values=st.sets(st.binary(min_size=5, max_size=5), max_size=20),
       probes=st.lists(st.binary(min_size=5, max_size=5), max_size=20), seeded=st.booleans())
def test_bloom_has_no_false_negatives(values, probes, seeded):
    kern = Kernel()
    fd = calls.map_create(kern, MapType.BLOOM_FILTER, 0, 5, 20, map_flags=0 if seeded else MapFlags.ZERO_SEED)
    for v in values:
        assert op(kern, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=0, value=v) == 0
    for v in list(values) + probes:
        ret = op(kern, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=0, value=v)
        assert ret == 0 if v in values else ret in (0, -Errno.ENOENT)
    kern.close(fd)
    kern.shutdown()


def _lpm_model_lookup(model: dict, plen: int, data: int, bits: int):
    best = None
    for (p, d), v in model.items():
        if p <= plen and (d >> (bits - p) if p else 0) == (data >> (bits - p) if p else 0):
            if best is None or p > best[0]:
                best = (p, v)
    return best


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["up", "del", "look"]), st.integers(0, 16),
                              st.integers(0, 0xFFFF)), max_size=40))
def test_lpm_trie_matches_prefix_model(ops):
    kern = Kernel()
    fd = calls.map_create(kern, MapType.LPM_TRIE, 6, 1, 64, map_flags=NP)
    model: dict = {}
    raw_data: dict = {}
    for i, (what, plen, data) in enumerate(ops):
        canon = data >> (16 - plen) << (16 - plen) if plen else 0
        k = plen.to_bytes(4, "little") + data.to_bytes(2, "big")
        if what == "up":
            assert op(kern, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k, value=bytes([i])) == 0
            model[(plen, canon)] = bytes([i])
            raw_data[(plen, canon)] = data          # the trie keeps the bits past prefixlen as given
        elif what == "del":
            want = 0 if (plen, canon) in model else -Errno.ENOENT
            assert op(kern, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k) == want
            model.pop((plen, canon), None)
        else:
            v = bytearray(1)
            ret = op(kern, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k, value=v)
            best = _lpm_model_lookup(model, plen, data, 16)
            assert (ret, bytes(v)) == ((0, best[1]) if best else (-Errno.ENOENT, b"\0"))
    seen, key = set(), 0
    while True:
        nk = bytearray(6)
        if op(kern, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key, next_key=nk):
            break
        seen.add((int.from_bytes(nk[:4], "little"), int.from_bytes(nk[4:], "big")))
        key = bytes(nk)
    assert seen == {(p, raw_data[(p, c)]) for p, c in model}
    kern.close(fd)
    kern.shutdown()
