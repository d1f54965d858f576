"""--state: the pins, and what they reach, saved to JSON and loaded into a fresh kernel (fakekernel/state.py)."""
from __future__ import annotations

import json

import pytest

from fakekernel import Kernel
from fakekernel.pytest_plugin import check_leaks
from fakekernel.state import StateError, load, load_dir, save, save_dir
from uapi import calls
from uapi.ffi import ffi
from uapi.bpf import (BPF_ADD, BPF_FUNC_map_lookup_elem, BPF_JEQ, MapFlags, MapType, ProgType,
                      XdpAction)
from uapi.insn import (BPF_ALU64_IMM, BPF_DW, BPF_EXIT_INSN, BPF_EMIT_CALL, BPF_JMP_IMM,
                       BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, BPF_W, encode_prog)

K = lambda i: i.to_bytes(4, "little")          # noqa: E731
V = lambda i, n=8: i.to_bytes(n, "little")    # noqa: E731


def all_elements(b, fd, key_size, value_size):
    out, key = [], None
    while True:
        try:
            key = calls.map_get_next_key(b, fd, key, key_size)
        except calls.BpfError:
            return out
        out.append((key, calls.map_lookup_elem(b, fd, key, value_size)))


def counter_prog(map_fd: int, data_fd: int) -> bytes:
    """XDP: counts[1] += 1 through a lookup, *(u64 *)(data + 8) += 1 through a map value ref."""
    insns = [
        BPF_ST_MEM(BPF_W, 10, -4, 1),
        BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
        *BPF_LD_MAP_FD(1, map_fd),
        BPF_EMIT_CALL(BPF_FUNC_map_lookup_elem),
        BPF_JMP_IMM(BPF_JEQ, 0, 0, 3),
        BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_STX_MEM(BPF_DW, 0, 1, 0),
        *BPF_LD_MAP_VALUE(1, data_fd, 8),
        BPF_LDX_MEM(BPF_DW, 2, 1, 0), BPF_ALU64_IMM(BPF_ADD, 2, 1), BPF_STX_MEM(BPF_DW, 1, 2, 0),
        *BPF_LD_MAP_FD(3, map_fd),                   # the same map again
        BPF_MOV64_IMM(0, XdpAction.PASS), BPF_EXIT_INSN(),
    ]
    return encode_prog(insns)


def populate(k: Kernel) -> dict:
    """Maps of every type, a program using two of them, dirs and pins; returns what to expect."""
    fds = {}
    fds["h"] = calls.map_create(k, MapType.HASH, 4, 8, 64, name="h")      # random hashrnd
    fds["a"] = calls.map_create(k, MapType.ARRAY, 4, 8, 16, name="a",
                                map_flags=MapFlags.MMAPABLE)
    fds["pa"] = calls.map_create(k, MapType.PERCPU_ARRAY, 4, 4, 4, name="pa")
    fds["ph"] = calls.map_create(k, MapType.PERCPU_HASH, 4, 4, 8, name="ph")
    fds["lru"] = calls.map_create(k, MapType.LRU_HASH, 4, 8, 32, name="lru")
    fds["ro"] = calls.map_create(k, MapType.ARRAY, 4, 16, 1, name="data",
                                 map_flags=MapFlags.RDONLY_PROG)
    fds["gone"] = calls.map_create(k, MapType.HASH, 4, 8, 4, name="unpinned")
    for i in range(40):
        calls.map_update_elem(k, fds["h"], K(i * 7), V(i * 1000 + 1))
        calls.map_update_elem(k, fds["lru"], K(i), V(i))
    for i in (0, 3, 15):
        calls.map_update_elem(k, fds["a"], K(i), V(i + 100))
    calls.map_update_elem(k, fds["pa"], K(2), V(5, 4) + V(6, 4))
    calls.map_update_elem(k, fds["ph"], K(9), V(7, 4) + V(8, 4))
    calls.map_update_elem(k, fds["ro"], K(0), bytes(range(16)))
    calls.map_freeze(k, fds["ro"])
    data = calls.map_create(k, MapType.ARRAY, 4, 16, 1, name="bss")
    prog = calls.prog_load(k, ProgType.XDP, counter_prog(fds["a"], data), name="counter")
    k.sysctls["kernel.bpf_stats_enabled"] = 1           # run_cnt counts only with stats on
    calls.prog_test_run(k, prog, b"\0" * 64)
    k.sysctls["kernel.bpf_stats_enabled"] = 0
    assert k.mkdir("/sys/fs/bpf/dir", 0o750) == 0
    assert k.mkdir("/sys/fs/bpf/dir/sub", 0o700) == 0
    for name in ("h", "pa", "ph", "lru", "ro"):
        calls.obj_pin(k, fds[name], f"/sys/fs/bpf/dir/{name}")
    calls.obj_pin(k, prog, "/sys/fs/bpf/dir/sub/prog")
    expect = {name: all_elements(k, fd, 4, {"pa": 8, "ph": 8, "ro": 16}.get(name, 8))
              for name, fd in fds.items()}
    expect["ids"] = {name: calls.obj_get_info_by_fd(k, fd, "map")[0].id for name, fd in fds.items()}
    expect["data_id"] = calls.obj_get_info_by_fd(k, data, "map")[0].id
    expect["prog_id"] = calls.obj_get_info_by_fd(k, prog, "prog")[0].id
    for fd in (*fds.values(), data, prog):
        k.close(fd)
    return expect


def roundtrip(k: Kernel) -> Kernel:
    doc, warnings = save(k)
    assert warnings == []
    k2 = Kernel()
    load(k2, json.loads(json.dumps(doc)))
    return k2


def test_state_roundtrip_keeps_ids_contents_order_flags():
    k = Kernel()
    expect = populate(k)
    k2 = roundtrip(k)
    for name in ("h", "pa", "ph", "lru", "ro"):
        fd = calls.obj_get(k2, f"/sys/fs/bpf/dir/{name}")
        info, _ = calls.obj_get_info_by_fd(k2, fd, "map")
        assert info.id == expect["ids"][name]
        assert all_elements(k2, fd, 4, {"pa": 8, "ph": 8, "ro": 16}.get(name, 8)) == expect[name]
        k2.close(fd)
    # frozen survives: a syscall write is refused
    fd = calls.obj_get(k2, "/sys/fs/bpf/dir/ro")
    with pytest.raises(calls.BpfError) as e:
        calls.map_update_elem(k2, fd, K(0), bytes(16))
    assert e.value.errno == 1            # EPERM: frozen
    k2.close(fd)
    check_leaks(k)
    check_leaks(k2)


def test_state_prog_reloaded_with_its_maps():
    k = Kernel()
    expect = populate(k)
    k2 = roundtrip(k)
    prog = calls.obj_get(k2, "/sys/fs/bpf/dir/sub/prog")
    info, _ = calls.obj_get_info_by_fd(k2, prog, "prog")
    assert info.id == expect["prog_id"]
    assert ffi.string(info.name) == b"counter"
    assert info.run_cnt == 1
    # the MMAPABLE array was unpinned but the program uses it: it lives on with its id
    a = calls.map_get_fd_by_id(k2, expect["ids"]["a"])
    d = calls.map_get_fd_by_id(k2, expect["data_id"])
    assert calls.map_lookup_elem(k2, a, K(1), 8) == V(1)      # one test run before the save
    calls.prog_test_run(k2, prog, b"\0" * 64)
    assert calls.map_lookup_elem(k2, a, K(1), 8) == V(2)      # and one after: same map
    assert calls.map_lookup_elem(k2, d, K(0), 16)[8:] == V(2)
    # an object no pin reached is not saved, and its id stays dead
    with pytest.raises(calls.BpfError):
        calls.map_get_fd_by_id(k2, expect["ids"]["gone"])
    for fd in (prog, a, d):
        k2.close(fd)
    check_leaks(k)
    check_leaks(k2)


def test_state_new_ids_continue_after_saved_ones():
    k = Kernel()
    populate(k)
    fd = calls.map_create(k, MapType.ARRAY, 4, 4, 1)
    next_id = calls.obj_get_info_by_fd(k, fd, "map")[0].id + 1
    k.close(fd)
    k2 = roundtrip(k)
    fd = calls.map_create(k2, MapType.ARRAY, 4, 4, 1)
    assert calls.obj_get_info_by_fd(k2, fd, "map")[0].id == next_id
    k2.close(fd)
    check_leaks(k)
    check_leaks(k2)


def test_state_bpffs_tree_modes_and_order():
    k = Kernel()
    populate(k)
    k2 = roundtrip(k)
    for path in ("/sys/fs/bpf/dir", "/sys/fs/bpf/dir/sub", "/sys/fs/bpf/dir/h",
                 "/sys/fs/bpf/dir/sub/prog"):
        a, b = k.bpffs.lookup(path, k.current), k2.bpffs.lookup(path, k2.current)
        assert (a.mode, a.uid, a.gid, list(a.children)) == (b.mode, b.uid, b.gid, list(b.children))
    check_leaks(k)
    check_leaks(k2)


def test_state_dir_files_and_lock(tmp_path):
    k = Kernel()
    populate(k)
    assert save_dir(k, str(tmp_path / "s")) == []
    doc = json.loads((tmp_path / "s" / "state.json").read_text())
    assert (doc["format"], doc["version"]) == ("fakekernel-state", 2)
    k2 = Kernel()
    assert load_dir(k2, str(tmp_path / "s")) is True
    assert set(k2.bpffs.pins()) == set(k.bpffs.pins())
    assert load_dir(Kernel(), str(tmp_path / "empty")) is False
    check_leaks(k)
    check_leaks(k2)


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(format="x"), "not a fakekernel state file"),
    (lambda d: d.update(nr_cpus=64), "nr_cpus=64"),
    (lambda d: d.pop("maps"), "malformed"),
])
def test_state_load_rejects_bad_documents(mutate, msg):
    k = Kernel()
    fd = calls.map_create(k, MapType.HASH, 4, 4, 4)
    calls.obj_pin(k, fd, "/sys/fs/bpf/m")
    k.close(fd)
    doc, _ = save(k)
    mutate(doc)
    k2 = Kernel()
    with pytest.raises(StateError, match=msg):
        load(k2, doc)
    check_leaks(k)
    check_leaks(k2)


def test_state_pinned_link_is_reported_not_saved():
    from fakekernel.bpffs import BPF_TYPE_LINK

    class FakeLink:
        def get(self):
            pass

        def put(self):
            pass
    k = Kernel()
    k.bpffs.pin(FakeLink(), BPF_TYPE_LINK, "/sys/fs/bpf/l", k.current)
    doc, warnings = save(k)
    assert warnings == ["/sys/fs/bpf/l: pinned links are not saved"]
    assert doc["bpffs"]["children"] == {}


def btf_objects(k):
    """A BTF with int, a struct { int; bpf_spin_lock } value and a main() FUNC; its fd and ids."""
    from btfutil import BtfWriter, btf_load
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    lock = w.struct("bpf_spin_lock", 4, [("val", i, 0)])
    val = w.struct("val", 8, [("cnt", i, 0), ("lock", lock, 32)])
    proto = w.func_proto(i, [("ctx", i)])
    main = w.func("main", proto, linkage=1)
    r = btf_load(k, w.blob())
    assert r.ret > 0
    return r.ret, i, val, main


def test_state_roundtrip_keeps_btf_of_maps_and_progs():
    k = Kernel()
    btf_fd, i, val, main = btf_objects(k)
    m = calls.map_create(k, MapType.HASH, 4, 8, 4, name="locked", btf_fd=btf_fd,
                         btf_key_type_id=i, btf_value_type_id=val)
    calls.map_update_elem(k, m, K(1), V(5, 4) + bytes(4))
    finfo = (0).to_bytes(4, "little") + main.to_bytes(4, "little")
    ret, _ = calls.raw(k, calls.BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.XDP,
                       insns=encode_prog([BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN()]), insn_cnt=2,
                       license=b"GPL\0", prog_btf_fd=btf_fd, func_info=finfo, func_info_cnt=1,
                       func_info_rec_size=8)
    assert ret > 0
    calls.obj_pin(k, m, "/sys/fs/bpf/locked")
    calls.obj_pin(k, ret, "/sys/fs/bpf/prog")
    m_info = calls.obj_get_info_by_fd(k, m, "map")[0]
    p_info = calls.obj_get_info_by_fd(k, ret, "prog")[0]
    for fd in (m, ret, btf_fd):
        k.close(fd)
    k2 = roundtrip(k)
    m2 = calls.obj_get(k2, "/sys/fs/bpf/locked")
    p2 = calls.obj_get(k2, "/sys/fs/bpf/prog")
    m2_info = calls.obj_get_info_by_fd(k2, m2, "map")[0]
    p2_info = calls.obj_get_info_by_fd(k2, p2, "prog")[0]
    assert (m2_info.btf_id, m2_info.btf_key_type_id, m2_info.btf_value_type_id) == \
        (m_info.btf_id, m_info.btf_key_type_id, m_info.btf_value_type_id) != (0, 0, 0)
    assert (p2_info.btf_id, p2_info.nr_func_info) == (p_info.btf_id, 1)
    assert calls.map_lookup_elem(k2, m2, K(1), 8) == V(5, 4) + bytes(4)
    with pytest.raises(calls.BpfError):            # the spin lock is known again: BPF_F_LOCK works only with it
        calls.map_lookup_elem(k2, m2, K(1), 8, flags=4 << 1)
    assert calls.map_lookup_elem(k2, m2, K(1), 8, flags=4) == V(5, 4) + bytes(4)
    for fd in (m2, p2):
        k2.close(fd)
    check_leaks(k)
    check_leaks(k2)


def test_state_version_1_documents_still_load():
    k = Kernel()
    fd = calls.map_create(k, MapType.HASH, 4, 4, 4, name="old")
    calls.map_update_elem(k, fd, K(3), V(9, 4))
    calls.obj_pin(k, fd, "/sys/fs/bpf/old")
    k.close(fd)
    doc, _ = save(k)
    doc["version"] = 1
    doc.pop("btfs")
    for m in doc["maps"]:
        for f in ("btf_id", "btf_key_type_id", "btf_value_type_id", "btf_vmlinux_value_type_id"):
            m.pop(f)
    k2 = Kernel()
    load(k2, doc)
    fd2 = calls.obj_get(k2, "/sys/fs/bpf/old")
    assert calls.map_lookup_elem(k2, fd2, K(3), 4) == V(9, 4)
    k2.close(fd2)
    check_leaks(k)
    check_leaks(k2)
