"""The LRU lists behind LRU hash maps — kernel/bpf/bpf_lru_list.c.

Nodes are the preallocated hash elements themselves (`LruNode` is the ``bpf_lru_node``
part of an element).  A *common* LRU has one global list set (active, inactive, free)
plus per-CPU local free/pending lists that take ``target_free`` nodes at a time from the
global free list, and evict from the global inactive list when that is empty.  A
*per-CPU* LRU (BPF_F_NO_COMMON_LRU) gives every CPU its own list set holding
``max_entries / nr_cpus`` nodes.  Eviction asks the hash table to unlink the element
(``del_from_htab``); a node whose ref bit is set (looked up by a program, or the new node
of a replaced key) gets one more round in the active list.

The lists are intrusive doubly linked rings with a sentinel head, like list_head, because
the kernel's scans depend on positions (the inactive rotation resumes where it stopped).
"""
from __future__ import annotations

from typing import Callable

__all__ = ["LruNode", "BpfLru", "LRU_ACTIVE", "LRU_INACTIVE", "LRU_FREE", "LOCAL_FREE",
           "LOCAL_PENDING", "LOCAL_FREE_TARGET", "PERCPU_FREE_TARGET"]

# enum bpf_lru_list_type
LRU_ACTIVE, LRU_INACTIVE, LRU_FREE, LOCAL_FREE, LOCAL_PENDING = range(5)
_NR_COUNTED = 2                 # only active and inactive are counted
LOCAL_FREE_TARGET = 128
LOCAL_NR_SCANS = LOCAL_FREE_TARGET
PERCPU_FREE_TARGET = 4
PERCPU_NR_SCANS = PERCPU_FREE_TARGET


class _Link:
    __slots__ = ("prev", "next")

    def __init__(self):
        self.prev = self.next = self


class LruNode(_Link):
    """struct bpf_lru_node: list position, owning CPU, list type, reference bit."""

    __slots__ = ("cpu", "type", "ref")

    def __init__(self):
        super().__init__()
        self.cpu = 0
        self.type = LRU_FREE
        self.ref = False


def _unlink(n: _Link) -> None:
    n.prev.next = n.next
    n.next.prev = n.prev
    n.prev = n.next = n


def _add_head(n: _Link, head: _Link) -> None:
    n.prev, n.next = head, head.next
    head.next.prev = n
    head.next = n


def _move_head(n: _Link, head: _Link) -> None:
    _unlink(n)
    _add_head(n, head)


def _empty(head: _Link) -> bool:
    return head.next is head


def _reverse(head: _Link):
    """Tail-to-head walk that tolerates moving the current node (list_for_each_entry_safe_reverse)."""
    cur = head.prev
    while cur is not head:
        prev = cur.prev
        yield cur
        cur = prev


class _LruList:
    """struct bpf_lru_list."""

    __slots__ = ("lists", "counts", "next_inactive_rotation")

    def __init__(self):
        self.lists = [_Link(), _Link(), _Link()]          # active, inactive, free
        self.counts = [0, 0]
        self.next_inactive_rotation = self.lists[LRU_INACTIVE]

    def _count(self, t: int, d: int) -> None:
        if t < _NR_COUNTED:
            self.counts[t] += d

    def move_to_free(self, node: LruNode, free_head: _Link, tgt_type: int) -> None:
        if node is self.next_inactive_rotation:
            self.next_inactive_rotation = node.prev
        self._count(node.type, -1)
        node.type = tgt_type
        _move_head(node, free_head)

    def move_in(self, node: LruNode, tgt_type: int) -> None:
        """From a local list into the active/inactive list, ref bit cleared."""
        self._count(tgt_type, 1)
        node.type = tgt_type
        node.ref = False
        _move_head(node, self.lists[tgt_type])

    def move(self, node: LruNode, tgt_type: int) -> None:
        """Between or within the global lists (to the head), ref bit cleared."""
        if node.type != tgt_type:
            self._count(node.type, -1)
            self._count(tgt_type, 1)
            node.type = tgt_type
        node.ref = False
        if node is self.next_inactive_rotation:
            self.next_inactive_rotation = node.prev
        _move_head(node, self.lists[tgt_type])


class _LocalList:
    """struct bpf_lru_locallist: per-CPU free and pending lists of a common LRU."""

    __slots__ = ("free", "pending", "next_steal")

    def __init__(self, cpu: int):
        self.free = _Link()
        self.pending = _Link()
        self.next_steal = cpu


class BpfLru:
    """struct bpf_lru.  `del_from_htab(node) -> bool` unlinks the element if it is still hashed."""

    def __init__(self, percpu: bool, nr_cpus: int, del_from_htab: Callable[[LruNode], bool]):
        self.percpu = percpu
        self.nr_cpus = nr_cpus
        self.del_from_htab = del_from_htab
        self.target_free = 0
        self.virgin: list[int] = []
        self.new_node: Callable[[], LruNode] | None = None
        if percpu:
            self.percpu_lru = [_LruList() for _ in range(nr_cpus)]
            self.nr_scans = PERCPU_NR_SCANS
        else:
            self.lru_list = _LruList()
            self.local = [_LocalList(cpu) for cpu in range(nr_cpus)]
            self.nr_scans = LOCAL_NR_SCANS

    # ---- bpf_lru_populate ----
    def populate(self, nr_elems: int, new_node: Callable[[], LruNode]) -> None:
        """All `nr_elems` nodes start on the free list(s).

        Nodes never used are only counted (``virgin``): they sit at the tail of their free
        list, behind every node that was used and freed, so they are created when a pop
        reaches them and a large map costs nothing until it fills.
        """
        self.new_node = new_node
        if self.percpu:
            per_cpu = nr_elems // self.nr_cpus
            self.virgin = [per_cpu] * self.nr_cpus
            self.virgin[-1] += nr_elems - per_cpu * self.nr_cpus
        else:
            self.virgin = [nr_elems]
            self.target_free = min(max(nr_elems // self.nr_cpus // 2, 1), LOCAL_FREE_TARGET)

    def _take_free(self, lst: "_LruList", idx: int):
        """The first node of a free list (materialising a never-used one), or None."""
        free = lst.lists[LRU_FREE]
        if not _empty(free):
            return free.next
        if not self.virgin[idx]:
            return None
        self.virgin[idx] -= 1
        node = self.new_node()
        node.type, node.cpu = LRU_FREE, idx if self.percpu else 0
        _add_head(node, free)
        return node

    # ---- rotation and shrinking of one list set ----
    def _rotate_active(self, lst: _LruList) -> None:
        active = lst.lists[LRU_ACTIVE]
        first = active.next
        for i, node in enumerate(_reverse(active), 1):
            lst.move(node, LRU_ACTIVE if node.ref else LRU_INACTIVE)
            if i == self.nr_scans or node is first:
                break

    def _rotate_inactive(self, lst: _LruList) -> None:
        inactive = lst.lists[LRU_INACTIVE]
        if _empty(inactive):
            return
        last = lst.next_inactive_rotation.next
        if last is inactive:
            last = last.next
        cur = lst.next_inactive_rotation
        nxt = inactive
        i = 0
        while i < self.nr_scans:
            if cur is inactive:
                cur = cur.prev
                continue
            nxt = cur.prev
            if cur.ref:
                lst.move(cur, LRU_ACTIVE)
            if cur is last:
                break
            cur = nxt
            i += 1
        lst.next_inactive_rotation = nxt

    def _rotate(self, lst: _LruList) -> None:
        if lst.counts[LRU_INACTIVE] < lst.counts[LRU_ACTIVE]:
            self._rotate_active(lst)
        self._rotate_inactive(lst)

    def _shrink_inactive(self, lst: _LruList, tgt: int, free_head: _Link, free_type: int) -> int:
        done = 0
        for i, node in enumerate(_reverse(lst.lists[LRU_INACTIVE]), 1):
            if node.ref:
                lst.move(node, LRU_ACTIVE)
            elif self.del_from_htab(node):
                lst.move_to_free(node, free_head, free_type)
                done += 1
                if done == tgt:
                    break
            if i == self.nr_scans:
                break
        return done

    def _shrink(self, lst: _LruList, tgt: int, free_head: _Link, free_type: int) -> int:
        done = self._shrink_inactive(lst, tgt, free_head, free_type)
        if done:
            return done
        victims = lst.lists[LRU_INACTIVE]
        if _empty(victims):
            victims = lst.lists[LRU_ACTIVE]
        for node in _reverse(victims):          # forced: the ref bit is ignored
            if self.del_from_htab(node):
                lst.move_to_free(node, free_head, free_type)
                return 1
        return 0

    # ---- common LRU: local lists ----
    def _flush_local(self, loc: _LocalList) -> None:
        for node in _reverse(loc.pending):
            self.lru_list.move_in(node, LRU_ACTIVE if node.ref else LRU_INACTIVE)

    def _refill_local(self, loc: _LocalList) -> None:
        lst = self.lru_list
        self._flush_local(loc)
        self._rotate(lst)
        nfree = 0
        while nfree < self.target_free:
            node = self._take_free(lst, 0)
            if node is None:
                break
            lst.move_to_free(node, loc.free, LOCAL_FREE)
            nfree += 1
        if nfree < self.target_free:
            self._shrink(lst, self.target_free - nfree, loc.free, LOCAL_FREE)

    @staticmethod
    def _pop_local_free(loc: _LocalList):
        node = loc.free.next
        if node is loc.free:
            return None
        _unlink(node)
        return node

    def _pop_local_pending(self, loc: _LocalList):
        for force in (False, True):
            for node in _reverse(loc.pending):
                if (force or not node.ref) and self.del_from_htab(node):
                    _unlink(node)
                    return node
        return None

    def _add_pending(self, loc: _LocalList, cpu: int, node: LruNode) -> None:
        node.cpu, node.type, node.ref = cpu, LOCAL_PENDING, False
        _add_head(node, loc.pending)

    def _common_pop_free(self, cpu: int):
        loc = self.local[cpu]
        node = self._pop_local_free(loc)
        if node is None:
            self._refill_local(loc)
            node = self._pop_local_free(loc)
        if node is not None:
            self._add_pending(loc, cpu, node)
            return node
        # steal, round-robin from loc.next_steal, from free then pending lists
        first = steal = loc.next_steal
        while True:
            victim = self.local[steal]
            node = self._pop_local_free(victim) or self._pop_local_pending(victim)
            steal = (steal + 1) % self.nr_cpus
            if node is not None or steal == first:
                break
        loc.next_steal = steal
        if node is not None:
            self._add_pending(loc, cpu, node)
        return node

    def _percpu_pop_free(self, cpu: int):
        lst = self.percpu_lru[cpu]
        self._rotate(lst)
        free = lst.lists[LRU_FREE]
        node = self._take_free(lst, cpu)
        if node is None:
            self._shrink(lst, PERCPU_FREE_TARGET, free, LRU_FREE)
            node = self._take_free(lst, cpu)
        if node is None:
            return None
        node.ref = False
        lst.move(node, LRU_INACTIVE)
        return node

    # ---- bpf_lru_pop_free / bpf_lru_push_free ----
    def pop_free(self, cpu: int):
        """A free node for an element inserted on `cpu` (evicting if needed), or None."""
        return self._percpu_pop_free(cpu) if self.percpu else self._common_pop_free(cpu)

    def push_free(self, node: LruNode) -> None:
        if self.percpu:
            self.percpu_lru[node.cpu].move(node, LRU_FREE)
            return
        if node.type == LOCAL_PENDING:
            node.type, node.ref = LOCAL_FREE, False
            _move_head(node, self.local[node.cpu].free)
            return
        self.lru_list.move(node, LRU_FREE)
