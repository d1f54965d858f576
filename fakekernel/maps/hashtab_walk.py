"""Hash map bucket order — kernel/bpf/hashtab.c: the bucket array that
htab_map_get_next_key() and the batch ops walk.

The kernel walks buckets ``0 .. n_buckets-1`` and, inside a bucket, its hlist from the
head (newest element first).  `HtabBuckets` keeps exactly that shape for the keys of one
map: a list per non-empty bucket (oldest first, so the head is the last item) and a
64-ary bitmap of non-empty buckets, so that "the next non-empty bucket at or after b" is
a handful of dict look-ups instead of a scan (the kernel's scan costs nothing it could
observe).  Hashing is deferred: elements linked since the last walk wait in insertion
order in ``pending`` and are hashed into their buckets when a walk needs them, so a
stream of updates never hashes.
"""
from __future__ import annotations

__all__ = ["BucketBitmap", "HtabBuckets"]

_WORD_BITS = 64
_WORD_SHIFT = 6
_WORD_MASK = _WORD_BITS - 1
_LEVELS = 6                     # 64**6 > 2**31 buckets, the largest hash table


def _lowbit(word: int) -> int:
    return (word & -word).bit_length() - 1


class BucketBitmap:
    """A set of bucket numbers with O(levels) add / discard / find_next."""

    __slots__ = ("levels",)

    def __init__(self):
        self.levels = [{} for _ in range(_LEVELS)]      # level -> word index -> 64-bit word

    def add(self, i: int) -> None:
        for level in self.levels:
            w, bit = i >> _WORD_SHIFT, 1 << (i & _WORD_MASK)
            word = level.get(w, 0)
            level[w] = word | bit
            if word:
                return
            i = w

    def discard(self, i: int) -> None:
        for level in self.levels:
            w, bit = i >> _WORD_SHIFT, 1 << (i & _WORD_MASK)
            word = level.get(w, 0) & ~bit
            if word:
                level[w] = word
                return
            level.pop(w, None)
            i = w

    def find_next(self, i: int) -> int | None:
        """The smallest member >= i, or None."""
        levels = self.levels
        lvl = 0
        while True:
            if lvl == _LEVELS:
                return None
            w, bit = i >> _WORD_SHIFT, i & _WORD_MASK
            word = levels[lvl].get(w, 0) >> bit
            if word:
                i = (w << _WORD_SHIFT) + bit + _lowbit(word)
                break
            i = w + 1
            lvl += 1
        while lvl:
            lvl -= 1
            i = (i << _WORD_SHIFT) + _lowbit(levels[lvl][i])
        return i


class HtabBuckets:
    """The walk order of a hash map's keys.

    `link(key, elem)` puts an element at the head of its bucket (a new element, or one an
    update replaced or moved to the head); `unlink(key, elem)` takes it out.  Elements
    carry ``bucket`` (None while pending) and ``hash`` (cached jhash).
    """

    __slots__ = ("hash_fn", "mask", "buckets", "bitmap", "pending")

    def __init__(self, hash_fn, n_buckets: int):
        self.hash_fn = hash_fn
        self.mask = n_buckets - 1
        self.clear()

    def clear(self) -> None:
        self.buckets: dict[int, list] = {}
        self.bitmap = BucketBitmap()
        self.pending: dict = {}                 # key -> elem, oldest first

    def link(self, key: bytes, elem) -> None:
        if elem.bucket is not None:
            self._remove(key, elem)
        self.pending.pop(key, None)
        self.pending[key] = elem

    def unlink(self, key: bytes, elem) -> None:
        if elem.bucket is not None:
            self._remove(key, elem)
        elif self.pending.get(key) is elem:
            del self.pending[key]

    def _remove(self, key: bytes, elem) -> None:
        b = elem.bucket
        keys = self.buckets[b]
        keys.remove(key)
        if not keys:
            del self.buckets[b]
            self.bitmap.discard(b)
        elem.bucket = None

    def sync(self) -> None:
        """Hash the pending elements into their buckets (at the head, oldest first)."""
        if not self.pending:
            return
        buckets, mask, hash_fn = self.buckets, self.mask, self.hash_fn
        for key, elem in self.pending.items():
            if elem.hash is None:
                elem.hash = hash_fn(key)
            b = elem.hash & mask
            elem.bucket = b
            keys = buckets.get(b)
            if keys is None:
                buckets[b] = [key]
                self.bitmap.add(b)
            else:
                keys.append(key)
        self.pending.clear()

    def next_bucket(self, b: int) -> int | None:
        """The first non-empty bucket at or after `b` (call `sync` first)."""
        return self.bitmap.find_next(b)

    def bucket_keys(self, b: int) -> list:
        """The keys of bucket `b` in walk order (head first)."""
        return self.buckets[b][::-1]

    def next_key(self, key: bytes | None, elem) -> bytes | None:
        """The key after `key` (`elem` is its element, or None to start over), or None."""
        if self.pending:
            self.sync()
        b = 0
        if elem is not None:
            keys = self.buckets[elem.bucket]    # oldest first: the walk goes from the end
            i = len(keys) - 1 if keys[-1] == key else keys.index(key)
            if i:
                return keys[i - 1]
            b = elem.bucket + 1
        # the next non-empty bucket, most often in the same 64-bucket word
        word = self.bitmap.levels[0].get(b >> _WORD_SHIFT, 0) >> (b & _WORD_MASK)
        if word:
            nb = b + (word & -word).bit_length() - 1
        else:
            nb = self.bitmap.find_next(((b >> _WORD_SHIFT) + 1) << _WORD_SHIFT)
            if nb is None:
                return None
        return self.buckets[nb][-1]
