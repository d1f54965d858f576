"""fakekernel/maps/hashtab_walk.py: the bucket bitmap and walk order against plain models."""
from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from fakekernel import Kernel
from fakekernel.maps.hashtab_walk import BucketBitmap, HtabBuckets
from uapi import calls
from uapi.bpf import MapFlags, MapType

BIG = 2**31


@given(st.lists(st.tuples(st.booleans(), st.integers(0, BIG - 1)), max_size=60),
       st.lists(st.integers(0, BIG - 1), max_size=20))
def test_bitmap_find_next_matches_sorted_set(ops, probes):
    bm, model = BucketBitmap(), set()
    for add, i in ops:
        (bm.add if add else bm.discard)(i)
        (model.add if add else model.discard)(i)
    for p in probes + [0] + sorted(model):
        want = min((x for x in model if x >= p), default=None)
        assert bm.find_next(p) == want


class _Elem:
    __slots__ = ("bucket", "hash")

    def __init__(self):
        self.bucket = self.hash = None


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from("lud"), st.integers(0, 40)), max_size=80))
def test_walk_matches_bucket_then_newest_first_model(ops):
    n_buckets = 8
    walk, elems, stamp, clock = HtabBuckets(lambda k: k[0] * 2654435761, n_buckets), {}, {}, 0
    for op, k in ops:
        key = bytes([k])
        clock += 1
        if op in "lu":
            if op == "u" or key not in elems:
                elems.setdefault(key, _Elem())
                walk.link(key, elems[key])
                stamp[key] = clock
        elif key in elems:
            walk.unlink(key, elems.pop(key))
            del stamp[key]
        if clock % 3 == 0:
            walk.sync()
    model = sorted(elems, key=lambda k: ((k[0] * 2654435761) & (n_buckets - 1), -stamp[k]))
    got, key = [], None
    while (key := walk.next_key(key, None if key is None else elems[key])) is not None:
        got.append(key)
    assert got == model


def test_get_next_key_walk_of_200k_hash_is_linear():
    """A whole GET_NEXT_KEY walk costs O(1) per step (was a re-sort after every change)."""
    k = Kernel()
    n = 200_000
    fd = calls.map_create(k, MapType.HASH, 4, 4, n, map_flags=MapFlags.NO_PREALLOC)
    m = k.current.files.fdget(fd).private_data
    for i in range(n):
        m.map_update_elem(i.to_bytes(4, "little"), bytes(4), 0)
    t0 = time.perf_counter()
    key, seen = None, 0
    while True:
        try:
            key = m.map_get_next_key(key)
        except Exception:       # KernelError(ENOENT) at the end
            break
        seen += 1
        if seen % 1000 == 0:    # interleaved changes used to force a full re-sort each
            m.map_delete_elem(key)
            m.map_update_elem(key, bytes(4), 0)
    assert seen >= n
    assert time.perf_counter() - t0 < 20
    k.close(fd)
