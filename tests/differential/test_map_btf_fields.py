"""Special fields in BTF-described map values (btf_parse_fields / map_check_btf / BTF_LOAD's
struct metas) and BPF_F_LOCK on LOOKUP/UPDATE, fake vs the real kernel: which map types
accept which fields, what a lookup shows (special fields zeroed), what BPF_F_LOCK does."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags

pytestmark = pytest.mark.differential

MAP_TYPES = (MapType.ARRAY, MapType.HASH, MapType.LRU_HASH, MapType.PERCPU_ARRAY,
             MapType.PERCPU_HASH)
F_LOCK = int(UpdateFlags.F_LOCK)


def _base():
    w = BtfWriter()
    t = {"u32": w.int_("unsigned int", 4), "u64": w.int_("long long unsigned int", 8)}
    t["lock"] = w.struct("bpf_spin_lock", 4, [("val", t["u32"], 0)])
    t["res_lock"] = w.struct("bpf_res_spin_lock", 4, [("val", t["u32"], 0)])
    t["timer"] = w.struct("bpf_timer", 16, [("a", t["u64"], 0), ("b", t["u64"], 64)])
    t["wq"] = w.struct("bpf_wq", 16, [("a", t["u64"], 0), ("b", t["u64"], 64)])
    t["task_work"] = w.struct("bpf_task_work", 8, [("a", t["u64"], 0)])
    t["refcount"] = w.struct("bpf_refcount", 4, [("a", t["u32"], 0)])
    return w, t


def _kptr(w, t, tag, target):
    s = w.struct(target, 8, [("x", t["u64"], 0)])
    return w.ptr(w.type_tag(tag, s))


# value layouts: name -> fn(w, t) -> (value type id, value size)
def _v(*members, size):
    def build(w, t):
        ms = []
        for name, typ, off in members:
            tid = typ(w, t) if callable(typ) else t[typ]
            ms.append((name, tid, off * 8))
        return w.struct("val", size, ms), size
    return build


def _nested(inner_members, outer, size):
    def build(w, t):
        inner = w.struct("inner", 8, [(n, t[ty], o * 8) for n, ty, o in inner_members])
        ms = []
        for name, typ, off in outer:
            ms.append((name, inner if typ == "inner" else
                       w.array(inner, t["u32"], 2) if typ == "inner[2]" else t[typ], off * 8))
        return w.struct("outer", size, ms), size
    return build


def _graph(root="bpf_list_head", node="bpf_list_node", node_size=24, lock=True, tag="contains:node:n",
           root_size=16):
    """struct node { u64 data; struct <node> n; }; struct val { lock; struct <root> h __contains(...) }."""
    def build(w, t):
        n = w.struct(node, node_size, [("o", t["u64"], 0)] * 0 + [("a", t["u64"], 0)])
        item = w.struct("node", 8 + node_size, [("data", t["u64"], 0), ("n", n, 64)])
        r = w.struct(root, root_size, [("a", t["u64"], 0), ("b", t["u64"], 64)])
        members = ([("l", t["lock"], 0)] if lock else [("x", t["u32"], 0)]) + [("h", r, 64)]
        val = w.struct("val", 24, members)
        if tag:
            w.decl_tag(tag, val, component_idx=1)
        assert item
        return val, 24
    return build


LAYOUTS = {
    "list_head": _graph(),
    "rb_root": _graph("bpf_rb_root", "bpf_rb_node", node_size=32),
    "list_head_no_lock": _graph(lock=False),
    "list_head_no_tag": _graph(tag=None),
    "list_head_unknown_type": _graph(tag="contains:nope:n"),
    "list_head_unknown_node": _graph(tag="contains:node:zz"),
    "list_head_no_node_name": _graph(tag="contains:node"),
    "list_head_node_wrong_type": _graph(node="bpf_rb_node", node_size=32),
    "plain": _v(("a", "u32", 0), ("x", "u32", 4), size=8),
    "lock": _v(("l", "lock", 0), ("x", "u32", 4), size=8),
    "lock_after": _v(("x", "u32", 0), ("l", "lock", 4), size=8),
    "lock_misaligned": _v(("x", "u32", 0), ("l", "lock", 2), size=8),
    "two_locks": _v(("a", "lock", 0), ("b", "lock", 4), size=8),
    "res_lock": _v(("l", "res_lock", 0), ("x", "u32", 4), size=8),
    "lock_and_res_lock": _v(("l", "lock", 0), ("r", "res_lock", 4), size=8),
    "timer": _v(("x", "u64", 0), ("t", "timer", 8), size=24),
    "two_timers": _v(("t", "timer", 0), ("u", "timer", 16), size=32),
    "wq": _v(("w", "wq", 0), ("x", "u64", 16), size=24),
    "task_work": _v(("w", "task_work", 0), ("x", "u64", 8), size=16),
    "refcount": _v(("r", "refcount", 0), ("x", "u32", 4), size=8),
    "lock_timer": _v(("l", "lock", 0), ("x", "u32", 4), ("t", "timer", 8), size=24),
    "kptr_prog_type": _v(("k", lambda w, t: _kptr(w, t, "kptr", "mine"), 0), size=8),
    "kptr_untrusted": _v(("k", lambda w, t: _kptr(w, t, "kptr_untrusted", "mine"), 0), size=8),
    "percpu_kptr": _v(("k", lambda w, t: _kptr(w, t, "percpu_kptr", "mine"), 0), size=8),
    "kptr_task": _v(("k", lambda w, t: _kptr(w, t, "kptr", "task_struct"), 0), size=8),
    "kptr_skb": _v(("k", lambda w, t: _kptr(w, t, "kptr", "sk_buff"), 0), size=8),
    "untrusted_skb": _v(("k", lambda w, t: _kptr(w, t, "kptr_untrusted", "sk_buff"), 0), size=8),
    "kptr_bad_tag": _v(("k", lambda w, t: _kptr(w, t, "nope", "mine"), 0), size=8),
    "kptr_and_lock": _v(("l", "lock", 0), ("k", lambda w, t: _kptr(w, t, "kptr", "mine"), 8),
                        size=16),
    "uptr": _v(("u", lambda w, t: _kptr(w, t, "uptr", "mine"), 0), size=8),
    "nested_one": _nested([("l", "lock", 0), ("x", "u32", 4)], [("a", "inner", 0), ("y", "u64", 8)], 16),
    "nested_two": _nested([("l", "lock", 0), ("x", "u32", 4)], [("a", "inner", 0), ("b", "inner", 8)], 16),
    "nested_and_direct": _nested([("l", "lock", 0), ("x", "u32", 4)],
                                 [("l", "lock", 0), ("a", "inner", 8)], 16),
    "array_of_locked": _nested([("l", "lock", 0), ("x", "u32", 4)], [("a", "inner[2]", 0)], 16),
    "timer_typedef": lambda w, t: (w.struct("val", 16, [("t", w.typedef("tm", t["timer"]), 0)]), 16),
    "fake_lock_8": lambda w, t: (w.struct("val", 8, [("l", w.struct("bpf_spin_lock", 8, [
        ("v", t["u64"], 0)]), 0)]), 8),
}


def _create(b, mt, btf, kid, vid, vs):
    return calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=4, value_size=vs,
                     max_entries=2, btf_fd=btf, btf_key_type_id=kid, btf_value_type_id=vid)[0]


def _elem_ops(b, fd, vs, nr_slots):
    """F_LOCK update, plain update, lookups with and without F_LOCK: (rets, lookup bytes)."""
    pattern = bytes((i * 7 + 1) & 0xFF for i in range(vs * nr_slots))
    v = bytearray(vs * nr_slots)
    key = bytes(4)
    out = [calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=key, value=pattern,
                     flags=F_LOCK)[0],
           calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=key, value=pattern,
                     flags=F_LOCK | int(UpdateFlags.NOEXIST))[0],
           calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=key, value=pattern, flags=0)[0],
           calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=fd, key=key, value=v, flags=F_LOCK)[0]]
    out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=fd, key=key, value=v, flags=0)[0])
    out.append(_mask_kernel_pointers(bytes(v[:vs])))
    return out


_KERNEL_HALF = 0xFFFF800000000000


def _mask_kernel_pointers(value: bytes) -> str:
    """An empty bpf_list_head reads as two equal kernel pointers (to itself in the kernel's
    bounce buffer, an address of its own): compare their shape, not their value."""
    words = [value[i:i + 8] for i in range(0, len(value) - len(value) % 8, 8)]
    out = []
    for i, w in enumerate(words):
        n = int.from_bytes(w, "little")
        pair = (i + 1 < len(words) and words[i + 1] == w) or (i and words[i - 1] == w)
        out.append("<kptr>" if n >= _KERNEL_HALF and pair else w.hex())
    return "".join(out) + value[len(words) * 8:].hex()


def scenario_layout(b, name):
    w, t = _base()
    vid, vs = LAYOUTS[name](w, t)
    r = btf_load(b, w.blob())
    if r.ret < 0:
        return ("btf_load", r.ret)
    out = []
    for mt in MAP_TYPES:
        fd = _create(b, mt, r.ret, t["u32"], vid, vs)
        if fd < 0:
            out.append((int(mt), fd))
            continue
        percpu = mt in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH)
        slots = os.cpu_count() if percpu else 1         # the fake boots with the host's 2 CPUs
        out.append((int(mt), "ok", _elem_ops(b, fd, (vs + 7) // 8 * 8 if percpu else vs, slots)))
        b.close(fd)
    b.close(r.ret)
    return out


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_map_value_special_fields_match_kernel(both, name):
    fake, host = both
    assert scenario_layout(fake, name) == scenario_layout(host, name)


def scenario_hash_lock_update_keeps_bucket_order(b):
    """BPF_F_LOCK on an existing hash key updates in place; a plain update moves it to the
    head of its bucket (GET_NEXT_KEY order shows it)."""
    w, t = _base()
    vid, vs = LAYOUTS["lock"](w, t)
    btf = btf_load(b, w.blob()).ret
    fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.HASH, key_size=4, value_size=vs,
                   max_entries=1, btf_fd=btf, btf_key_type_id=t["u32"], btf_value_type_id=vid,
                   map_flags=0)[0]
    out = [fd >= 0]
    for k in range(1):
        calls.map_update_elem(b, fd, k.to_bytes(4, "little"), bytes(vs))
    out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=(5).to_bytes(4, "little"),
                         value=bytes(vs), flags=F_LOCK)[0])       # full: E2BIG
    out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=(0).to_bytes(4, "little"),
                         value=b"\xff" * vs, flags=F_LOCK | int(UpdateFlags.EXIST))[0])
    v = bytearray(vs)
    out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=fd, key=bytes(4), value=v,
                         flags=F_LOCK)[0])
    out.append(bytes(v).hex())
    b.close(fd)
    b.close(btf)
    return out


def test_hash_f_lock_update_in_place(both):
    fake, host = both
    assert scenario_hash_lock_update_keeps_bucket_order(fake) == \
        scenario_hash_lock_update_keeps_bucket_order(host)


def scenario_rdonly_prog_with_lock(b, flag):
    w, t = _base()
    vid, vs = LAYOUTS["lock"](w, t)
    btf = btf_load(b, w.blob()).ret
    fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.ARRAY, key_size=4, value_size=vs,
                   max_entries=1, btf_fd=btf, btf_key_type_id=t["u32"], btf_value_type_id=vid,
                   map_flags=flag)[0]
    if fd >= 0:
        b.close(fd)
    b.close(btf)
    return fd if fd < 0 else "ok"


@pytest.mark.parametrize("flag", [1 << 7, 1 << 8, 0])      # BPF_F_RDONLY_PROG, WRONLY_PROG
def test_map_special_fields_with_prog_access_flags_eacces(both, flag):
    fake, host = both
    assert scenario_rdonly_prog_with_lock(fake, flag) == scenario_rdonly_prog_with_lock(host, flag)


# ---- hypothesis: random struct layouts with special fields placed anywhere

_KINDS = ["u32", "u64", "lock", "timer", "refcount", "wq", "res_lock"]
_SIZE = {"u32": 4, "u64": 8, "lock": 4, "timer": 16, "refcount": 4, "wq": 16, "res_lock": 4}


@st.composite
def layouts(draw):
    members = []
    off = 0
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(_KINDS))
        off += draw(st.sampled_from([0, 0, 4, 2]))     # 2: a misaligned field is ignored
        members.append((f"m{i}", kind, off))
        off += _SIZE[kind]
    size = off + draw(st.sampled_from([0, 4]))
    return members, max(size, 4)


def scenario_random(b, members, size, mt):
    w, t = _base()
    vid = w.struct("val", size, [(n, t[k], o * 8) for n, k, o in members])
    r = btf_load(b, w.blob())
    if r.ret < 0:
        return ("btf_load", r.ret)
    fd = _create(b, mt, r.ret, t["u32"], vid, size)
    out = [fd if fd < 0 else "ok"]
    if fd >= 0:
        out += _elem_ops(b, fd, size, 1)
        b.close(fd)
    b.close(r.ret)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(layouts(), st.sampled_from([MapType.ARRAY, MapType.HASH, MapType.LRU_HASH]))
def test_random_special_field_layouts_match_kernel(both, layout, mt):
    fake, host = both
    members, size = layout
    assert scenario_random(fake, members, size, mt) == scenario_random(host, members, size, mt)


def scenario_batch_with_lock(b, mt, elem_flags):
    """UPDATE_BATCH / LOOKUP_BATCH with elem_flags BPF_F_LOCK on values holding a lock."""
    w, t = _base()
    vid, vs = LAYOUTS["lock"](w, t)
    bfd = btf_load(b, w.blob()).ret
    m = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=4, value_size=vs, max_entries=4,
                  btf_fd=bfd, btf_key_type_id=t["u32"], btf_value_type_id=vid,
                  map_flags=int(MapFlags.ZERO_SEED) if mt == MapType.HASH else 0)[0]
    keys = b"".join(i.to_bytes(4, "little") for i in range(4))
    vals = b"".join(b"\xff" * 4 + i.to_bytes(4, "little") for i in range(4))
    ret, a = calls.raw(b, BpfCmd.MAP_UPDATE_BATCH, None, batch__map_fd=m, batch__keys=bytearray(keys),
                       batch__values=bytearray(vals), batch__count=4, batch__elem_flags=elem_flags)
    out = [ret, a.get("batch.count")]
    kb, vb, ob = bytearray(16), bytearray(32), bytearray(4)
    ret, a = calls.raw(b, BpfCmd.MAP_LOOKUP_BATCH, None, batch__map_fd=m, batch__keys=kb, batch__values=vb,
                       batch__count=4, batch__out_batch=ob, batch__elem_flags=elem_flags)
    out += [ret, a.get("batch.count"), bytes(kb).hex(), bytes(vb).hex()]
    b.close(m)
    b.close(bfd)
    return out


@pytest.mark.parametrize("mt", [MapType.ARRAY, MapType.HASH])
@pytest.mark.parametrize("elem_flags", [0, F_LOCK, 8])
def test_batch_ops_with_f_lock_match_kernel(both, mt, elem_flags):
    fake, host = both
    assert scenario_batch_with_lock(fake, mt, elem_flags) == scenario_batch_with_lock(host, mt, elem_flags)


def scenario_lookup_and_delete(b, mt, flags, lock):
    w, t = _base()
    vid, vs = LAYOUTS["lock" if lock else "plain"](w, t)
    bfd = btf_load(b, w.blob()).ret
    if bfd < 0:
        return ("btf_load", bfd)
    m = _create(b, mt, bfd, t["u32"], vid, vs)
    out = [m if m < 0 else "ok"]
    if m >= 0:
        calls.map_update_elem(b, m, bytes(4), b"\xff" * vs)
        v = bytearray(vs)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, None, map_fd=m, key=bytes(4),
                             value=v, flags=flags)[0])
        out.append(bytes(v).hex())
        b.close(m)
    b.close(bfd)
    return out


@pytest.mark.parametrize("mt", [MapType.HASH, MapType.ARRAY, MapType.LRU_HASH])
@pytest.mark.parametrize("flags", [0, F_LOCK, 1])
@pytest.mark.parametrize("lock", [True, False])
def test_lookup_and_delete_with_f_lock_matches_kernel(both, mt, flags, lock):
    fake, host = both
    assert scenario_lookup_and_delete(fake, mt, flags, lock) == scenario_lookup_and_delete(host, mt, flags, lock)


def _walk(b, fd):
    """Every key in GET_NEXT_KEY order."""
    keys, key = [], None
    while True:
        nk = bytearray(4)
        if calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, None, map_fd=fd, key=key, next_key=nk)[0]:
            return keys
        key = bytes(nk)
        keys.append(int.from_bytes(key, "little"))


def scenario_hash_order_after_updates(b):
    """BPF_F_LOCK on an existing key updates it in place (its place in the bucket stays); a
    plain update replaces the element at the head of its bucket: GET_NEXT_KEY shows both."""
    w, t = _base()
    vid, vs = LAYOUTS["lock"](w, t)
    bfd = btf_load(b, w.blob()).ret
    fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.HASH, key_size=4, value_size=vs,
                   max_entries=8, btf_fd=bfd, btf_key_type_id=t["u32"], btf_value_type_id=vid,
                   map_flags=int(MapFlags.ZERO_SEED))[0]
    for k in range(8):
        calls.map_update_elem(b, fd, k.to_bytes(4, "little"), bytes(vs))
    out = [_walk(b, fd)]
    for k in (0, 5):
        calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=k.to_bytes(4, "little"),
                  value=b"\x01" * vs, flags=F_LOCK)
    out.append(_walk(b, fd))
    for k in (0, 5):
        calls.map_update_elem(b, fd, k.to_bytes(4, "little"), b"\x02" * vs)
    out.append(_walk(b, fd))
    b.close(fd)
    b.close(bfd)
    return out


def test_hash_order_after_f_lock_and_plain_updates_matches_kernel(both):
    fake, host = both
    got = scenario_hash_order_after_updates(fake)
    assert got == scenario_hash_order_after_updates(host)
    assert sorted(got[0]) == list(range(8))
