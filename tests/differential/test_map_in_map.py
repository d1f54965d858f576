"""ARRAY_OF_MAPS and HASH_OF_MAPS, fakekernel vs the real kernel: the inner_map_fd template
(EBADF/EINVAL/ENOTSUPP), map_meta_equal on update, map fds in and map ids out, and the
references an outer map holds on its inner maps."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from maputil import both_equal

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
AOM, HOM = MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS
A, H = MapType.ARRAY, MapType.HASH


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def map_id(b, fd) -> int:
    info, _ = calls.obj_get_info_by_fd(b, fd, "map")
    return info.id


TEMPLATES = {
    "array": (A, 4, 8, 4, 0),
    "array_inner_map_flag": (A, 4, 8, 4, MapFlags.INNER_MAP),
    "hash": (H, 4, 8, 4, 0),
    "queue": (MapType.QUEUE, 0, 8, 4, 0),
    "lpm": (MapType.LPM_TRIE, 8, 8, 4, MapFlags.NO_PREALLOC),
    "prog_array": (MapType.PROG_ARRAY, 4, 4, 4, 0),
}


def _gone_eventually(b, mid: int) -> int:
    """MAP_GET_FD_BY_ID until the map is gone (deferred frees), at most ~2 s: the last errno."""
    import time
    for _ in range(200):
        ret, _ = raw(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=mid)
        if ret < 0:
            return ret
        b.close(ret)
        time.sleep(0.01)
    return ret


def _create_outer(b, outer, inner_fd, key_size=4, value_size=4, max_entries=4, **kw):
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=outer, key_size=key_size, value_size=value_size,
                 max_entries=max_entries, inner_map_fd=inner_fd, **kw)
    return ret


@pytest.mark.parametrize("outer", [AOM, HOM], ids=["aom", "hom"])
def test_map_create_map_in_map_templates(both, outer):
    def scenario(b):
        out = []
        for name, (t, ks, vs, me, fl) in sorted(TEMPLATES.items()):
            inner = calls.map_create(b, t, ks, vs, me, map_flags=fl)
            fd = _create_outer(b, outer, inner)
            out.append((name, fd >= 0 or fd))
            if fd >= 0:
                nested = _create_outer(b, outer, fd)           # a map of maps cannot be a template
                out.append(("nested", nested >= 0 or nested))
                if nested >= 0:
                    b.close(nested)
                b.close(fd)
            b.close(inner)
        inner = calls.map_create(b, A, 4, 8, 4)
        def outer_ret(fd):
            if fd >= 0:
                b.close(fd)
                return "fd"
            return fd
        out.append(_create_outer(b, outer, 9999))               # EBADF
        out.append(_create_outer(b, outer, 0))                  # stdin: not a map
        out.append(outer_ret(_create_outer(b, outer, inner, value_size=8)))
        out.append(outer_ret(_create_outer(b, outer, inner, key_size=0)))
        out.append(outer_ret(_create_outer(b, outer, inner, max_entries=0)))
        out.append(outer_ret(_create_outer(b, outer, inner, map_flags=MapFlags.RDONLY_PROG)))
        out.append(outer_ret(_create_outer(b, outer, inner, map_flags=MapFlags.INNER_MAP)))
        out.append(outer_ret(_create_outer(b, outer, inner, map_flags=MapFlags.NO_PREALLOC)))
        out.append(_create_outer(b, outer, 9999, value_size=8))     # alloc_check before the template
        for f in list(b.fds):
            b.close(f)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("outer", [AOM, HOM], ids=["aom", "hom"])
def test_map_in_map_elem_semantics(both, outer):
    def scenario(b):
        tmpl = calls.map_create(b, A, 4, 8, 4)
        fd = _create_outer(b, outer, tmpl)
        same = calls.map_create(b, A, 4, 8, 4)
        same2 = calls.map_create(b, A, 4, 8, 4)
        other_max = calls.map_create(b, A, 4, 8, 5)
        other_val = calls.map_create(b, A, 4, 16, 4)
        hash_ = calls.map_create(b, H, 4, 8, 4)
        rdonly = calls.map_create(b, A, 4, 8, 4, map_flags=MapFlags.RDONLY_PROG)
        names = {map_id(b, same): "same", map_id(b, same2): "same2", map_id(b, tmpl): "tmpl"}
        up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=k32(v), flags=f)

        def look(k):
            v = bytearray(4)
            r = op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=v)
            return r, names.get(int.from_bytes(v, "little"), int.from_bytes(v, "little"))
        out = [look(0)]
        out += [up(0, 9999), up(0, 1), up(0, other_max), up(0, other_val), up(0, hash_), up(0, rdonly),
                up(0, fd)]
        out += [up(0, same), look(0), up(0, tmpl), look(0), up(1, same, UpdateFlags.NOEXIST),
                up(1, same2, UpdateFlags.NOEXIST), up(2, same2, UpdateFlags.EXIST), up(1, same, 4), up(9, same)]
        out += [look(1), look(9)]
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(1)))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(1)))
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(7)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=bytearray(4)))
        walk, key = [], None
        while len(walk) < 8:
            nk = bytearray(4)
            if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key or 0, next_key=nk):
                break
            walk.append(bytes(nk))
            key = bytes(nk)
        out.append(sorted(walk))
        # the outer map keeps its inner maps alive after their fds close
        up(3 if outer == AOM else 5, same2)
        sid = map_id(b, same2)
        b.close(same2)
        f2 = calls.map_get_fd_by_id(b, sid)
        out.append(f2 >= 0)
        b.close(f2)
        b.close(fd)                 # ... and drops them when it goes (the kernel frees after an RCU grace period)
        out.append(_gone_eventually(b, sid))
        for f in (tmpl, same, other_max, other_val, hash_, rdonly):
            b.close(f)
        return out
    both_equal(both, scenario)


def test_map_in_map_inner_map_flag_allows_other_max_entries(both):
    def scenario(b):
        tmpl = calls.map_create(b, A, 4, 8, 4, map_flags=MapFlags.INNER_MAP)
        fd = _create_outer(b, AOM, tmpl)
        big = calls.map_create(b, A, 4, 8, 100, map_flags=MapFlags.INNER_MAP)
        plain = calls.map_create(b, A, 4, 8, 4)
        out = [op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(big)),
               op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(1), value=k32(plain))]
        for f in (tmpl, fd, big, plain):
            b.close(f)
        return out
    both_equal(both, scenario)


def test_map_in_map_batch_lookup_returns_ids(both):
    def scenario(b):
        tmpl = calls.map_create(b, H, 4, 8, 4)
        fd = _create_outer(b, AOM, tmpl, max_entries=3)
        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(1), value=k32(tmpl))
        keys, vals = bytearray(12), bytearray(12)
        ret, a = raw(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=keys,
                     batch__values=vals, batch__count=3, batch__out_batch=bytearray(4))
        ids = [int.from_bytes(vals[i:i + 4], "little") for i in range(0, 12, 4)]
        out = [ret, a.get("batch.count"), bytes(keys), [i == map_id(b, tmpl) if i else 0 for i in ids]]
        b.close(fd)
        b.close(tmpl)
        return out
    both_equal(both, scenario)
