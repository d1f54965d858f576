"""TASK_STORAGE, INODE_STORAGE and CGRP_STORAGE (kernel/bpf/bpf_local_storage.c and the three
owner files), fakekernel vs the real kernel: the creation matrix in the kernel's check order
(BTF required), the fd-keyed syscall ops (pidfds, any fd's inode, cgroup directories), owners
that go away (a reaped child, a removed cgroup), and random op sequences in lockstep."""
from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from backends import CGROUP2, FakeBackend, HostBackend
from maputil import memlock
from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.btf import BtfKind

pytestmark = pytest.mark.differential

TASK, INODE, CGRP = MapType.TASK_STORAGE, MapType.INODE_STORAGE, MapType.CGRP_STORAGE
NP = MapFlags.NO_PREALLOC
MAX_VALUE = 65535 - 128          # U16_MAX - sizeof(struct bpf_local_storage_elem), measured
VS = 8


def types(w=None):
    w = w or BtfWriter()
    t = {}
    t["int"] = w.int_("int", 4, encoding=1)
    t["val"] = w.struct("val", VS, [("a", t["int"], 0), ("b", t["int"], 32)])
    t["u64"] = w.int_("u64", 8)
    t["enum"] = w.enum("e", 4, [("E0", 0)])
    t["i16"] = w.int_("i16", 4, bits=16)
    t["ioff"] = w.int_("ioff", 4, bits=24, offset=8)
    t["tdef"] = w.typedef("u32", t["int"])
    t["big"] = w.array(t["int"], t["int"], MAX_VALUE // 4)
    t["cval"] = w.modifier(BtfKind.CONST, t["val"])
    return w.blob(), t


def load_types(b):
    blob, t = types()
    fd = btf_load(b, blob).ret
    assert fd >= 0
    return fd, t


def create(b, mt, btf, kid, vid, ks=4, vs=VS, n=0, flags=NP, **kw):
    return calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=ks, value_size=vs,
                     max_entries=n, map_flags=flags, btf_fd=btf, btf_key_type_id=kid,
                     btf_value_type_id=vid, **kw)[0]


def k(fd: int) -> bytes:
    return fd.to_bytes(4, "little", signed=True)


def lookup(b, m, key, flags=0):
    out = bytearray(b"\xee" * VS)
    r = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=key, value=out, flags=flags)[0]
    return r if r < 0 else bytes(out)


def update(b, m, key, val, flags=0):
    return calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=key, value=val,
                     flags=flags)[0]


def delete(b, m, key):
    return calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=key)[0]


def next_key(b, m, key):
    out = bytearray(4)
    r = calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=m, key=key, next_key=out)[0]
    return r if r < 0 else bytes(out)


def lookup_and_delete(b, m, key):
    out = bytearray(VS)
    return calls.raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=m, key=key,
                     value=out)[0]


def both_equal(both, scenario):
    fake, host = both
    got_fake, got_host = scenario(fake), scenario(host)
    assert got_fake == got_host
    return got_fake


def cg_mkdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.mkdir(path)
    else:
        os.mkdir(path)


def cg_rmdir(b, path):
    if isinstance(b, FakeBackend):
        b.kern.world.cgroup.rmdir(path)
    else:
        os.rmdir(path)


# ------------------------------------------------------------------ creation

CREATE_CASES = {
    "ok": {},
    "clone": dict(flags=NP | MapFlags.CLONE),
    "prealloc": dict(flags=0),
    "rdonly_prog": dict(flags=NP | MapFlags.RDONLY_PROG),
    "numa": dict(flags=NP | MapFlags.NUMA_NODE),
    "zero_seed": dict(flags=NP | MapFlags.ZERO_SEED),
    "max_entries": dict(n=1),
    "key8": dict(ks=8, kid="u64"),
    "key0": dict(ks=0),
    "vs0": dict(vs=0),
    "no_key_id": dict(kid=0),
    "no_btf_ids": dict(kid=0, vid=0),
    "no_btf_fd": dict(btf=-1),
    "btf_fd_not_btf": dict(btf=0),
    "vs_max_btf_mismatch": dict(vs=MAX_VALUE, vid="big"),
    "vs_near_max": dict(vs=MAX_VALUE // 4 * 4, vid="big"),
    "vs_max_plus1": dict(vs=MAX_VALUE + 1),
    "vs_huge_prealloc": dict(vs=1 << 20, flags=0),         # EINVAL before E2BIG
    "vs_btf_mismatch": dict(vs=4),
    "key_enum": dict(kid="enum"),
    "key_struct": dict(kid="val", ks=VS),
    "key_bits16": dict(kid="i16"),
    "key_offset": dict(kid="ioff"),
    "key_typedef": dict(kid="tdef"),
    "value_const": dict(vid="cval"),
    "value_int": dict(vid="int", vs=4),
    "bad_key_id": dict(kid=500),
    "bad_value_id": dict(vid=500),
}


def _create_case(b, mt, case):
    btf, t = load_types(b)
    kw = dict(CREATE_CASES[case])
    kid = kw.pop("kid", "int")
    vid = kw.pop("vid", "val")
    btf_fd = kw.pop("btf", btf)
    fd = create(b, mt, btf_fd, t.get(kid, kid), t.get(vid, vid), **kw)
    out = fd
    if fd >= 0:
        info = calls.obj_get_info_by_fd(b, fd, "map")[0]
        out = ("ok", info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
               info.btf_key_type_id == t.get(kid, kid), memlock(b, fd))
        b.close(fd)
    b.close(btf)
    return out


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
@pytest.mark.parametrize("mt", [TASK, INODE, CGRP], ids=["task", "inode", "cgrp"])
def test_map_create_local_storage(both, mt, case):
    both_equal(both, lambda b: _create_case(b, mt, case))


# ------------------------------------------------------------------ task storage

def _task_scenario(b):
    btf, t = load_types(b)
    m = create(b, TASK, btf, t["int"], t["val"])
    m2 = create(b, TASK, btf, t["int"], t["val"])
    arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
    me = b.pidfd_open()
    me2 = b.pidfd_open(flags=os.O_NONBLOCK)
    out = [b.sym(m) if m < 0 else "m", lookup(b, m, k(me)),
           update(b, m, k(me), b"A" * VS, UpdateFlags.EXIST),
           update(b, m, k(me), b"A" * VS, UpdateFlags.NOEXIST), lookup(b, m, k(me)),
           lookup(b, m, k(me2)), lookup(b, m2, k(me)),
           update(b, m, k(me), b"B" * VS, UpdateFlags.NOEXIST),
           update(b, m, k(me2), b"B" * VS, UpdateFlags.EXIST), lookup(b, m, k(me)),
           update(b, m, k(me), b"C" * VS), lookup(b, m, k(me)),
           update(b, m, k(me), b"x" * VS, 3), update(b, m, k(me), b"x" * VS, UpdateFlags.F_LOCK),
           update(b, m, k(me), b"x" * VS, 8), lookup(b, m, k(me), UpdateFlags.F_LOCK),
           lookup(b, m, k(me), 1), lookup(b, m, k(me))]
    # fds that are not pidfds
    for fd in (999, -1, arr, btf, 0):
        out += [lookup(b, m, k(fd)), update(b, m, k(fd), b"x" * VS), delete(b, m, k(fd))]
    out += [update(b, m, k(999), b"x" * VS, 3)]          # EBADF before the flags
    out += [next_key(b, m, None), next_key(b, m, k(me)), lookup_and_delete(b, m, k(me))]
    # a child: storage lives with it, goes when it is reaped
    pid = b.spawn()
    child = b.pidfd_open(pid)
    out += [lookup(b, m, k(child)), update(b, m, k(child), b"c" * VS), lookup(b, m, k(child)),
            lookup(b, m, k(me))]
    b.reap(pid)
    out += [lookup(b, m, k(child)), update(b, m, k(child), b"c" * VS), delete(b, m, k(child))]
    out += [delete(b, m, k(me2)), delete(b, m, k(me)), lookup(b, m, k(me)), lookup(b, m2, k(me))]
    # the map goes: a new map starts empty, other maps keep theirs
    update(b, m2, k(me), b"2" * VS)
    b.close(m)
    m3 = create(b, TASK, btf, t["int"], t["val"])
    out += [lookup(b, m3, k(me)), lookup(b, m2, k(me))]
    for fd in (m2, m3, arr, me, me2, child, btf):
        b.close(fd)
    return out


def test_map_task_storage_syscall_ops(both):
    both_equal(both, _task_scenario)


def test_pidfd_open_errors(both):
    def scenario(b):
        return [b.pidfd_open(0), b.pidfd_open(-1), b.pidfd_open(None, 1), b.pidfd_open(1 << 22)]
    both_equal(both, scenario)


# ------------------------------------------------------------------ inode storage

def _inode_scenario(b):
    btf, t = load_types(b)
    m = create(b, INODE, btf, t["int"], t["val"])
    m2 = create(b, INODE, btf, t["int"], t["val"])
    arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
    d = b.pin_dir()
    dfd = b.open(d, os.O_RDONLY | os.O_DIRECTORY)
    dfd2 = b.open(d, os.O_RDONLY | os.O_DIRECTORY)
    cg = b.open(CGROUP2, os.O_RDONLY | os.O_DIRECTORY)
    me = b.pidfd_open()
    me2 = b.pidfd_open()
    out = [lookup(b, m, k(arr)), update(b, m, k(arr), b"O" * VS),
           lookup(b, m, k(btf)), lookup(b, m, k(m2)), lookup(b, m2, k(arr)),     # one anon inode
           lookup(b, m, k(dfd)), update(b, m, k(dfd), b"D" * VS, UpdateFlags.NOEXIST),
           lookup(b, m, k(dfd2)), lookup(b, m, k(cg)),
           update(b, m, k(cg), b"G" * VS, UpdateFlags.EXIST), update(b, m, k(cg), b"G" * VS),
           lookup(b, m, k(cg)), lookup(b, m, k(dfd)),
           update(b, m, k(me), b"P" * VS), lookup(b, m, k(me2)),                  # pidfs inode
           update(b, m, k(dfd), b"x" * VS, 3), update(b, m, k(dfd), b"x" * VS, UpdateFlags.F_LOCK),
           update(b, m, k(dfd), b"E" * VS, UpdateFlags.EXIST), lookup(b, m, k(dfd2))]
    for fd in (999, -1):
        out += [lookup(b, m, k(fd)), update(b, m, k(fd), b"x" * VS), delete(b, m, k(fd))]
    out += [next_key(b, m, None), next_key(b, m, k(dfd)), lookup_and_delete(b, m, k(dfd))]
    out += [delete(b, m, k(dfd2)), delete(b, m, k(dfd)), lookup(b, m, k(dfd)),
            delete(b, m, k(btf)), lookup(b, m, k(arr)), lookup(b, m, k(cg))]
    for fd in (m, m2, arr, dfd, dfd2, cg, me, me2, btf):
        b.close(fd)
    return out


def test_map_inode_storage_syscall_ops(both):
    both_equal(both, _inode_scenario)


def test_map_inode_storage_no_bpf_lsm(fake):
    """Without the bpf LSM inodes have no blob: lookup/delete ENOENT, update EBADF (first)."""
    b = fake
    b.kern.bpf_lsm_active = False
    btf, t = load_types(b)
    m = create(b, INODE, btf, t["int"], t["val"])
    assert m >= 0
    assert [lookup(b, m, k(btf)), update(b, m, k(btf), b"x" * VS),
            update(b, m, k(btf), b"x" * VS, 3), delete(b, m, k(btf)),
            update(b, m, k(999), b"x" * VS)] == [-2, -9, -9, -2, -9]
    b.close(m)
    b.close(btf)


# ------------------------------------------------------------------ cgroup storage

def _cgrp_scenario(b):
    btf, t = load_types(b)
    m = create(b, CGRP, btf, t["int"], t["val"])
    m2 = create(b, CGRP, btf, t["int"], t["val"])
    base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
    cg_mkdir(b, base)
    root = b.open(CGROUP2, os.O_RDONLY | os.O_DIRECTORY)
    cg = b.open(base, os.O_RDONLY | os.O_DIRECTORY)
    cg2 = b.open(base, os.O_RDONLY | os.O_DIRECTORY)
    d = b.pin_dir()
    dfd = b.open(d, os.O_RDONLY | os.O_DIRECTORY)
    out = [lookup(b, m, k(cg)), update(b, m, k(cg), b"G" * VS), lookup(b, m, k(cg2)),
           lookup(b, m, k(root)), lookup(b, m2, k(cg)),
           update(b, m, k(cg), b"H" * VS, UpdateFlags.NOEXIST),
           update(b, m, k(root), b"R" * VS, UpdateFlags.EXIST),
           update(b, m, k(root), b"R" * VS, UpdateFlags.NOEXIST), lookup(b, m, k(root)),
           update(b, m, k(cg), b"x" * VS, 3), lookup(b, m, k(cg), 1)]
    for fd in (999, -1, dfd, btf, m2):
        out += [lookup(b, m, k(fd)), update(b, m, k(fd), b"x" * VS), delete(b, m, k(fd))]
    out += [next_key(b, m, None), lookup_and_delete(b, m, k(cg))]
    # the cgroup goes away: its fds answer ENOENT; a new cgroup of that name starts empty
    cg_rmdir(b, base)
    out += [lookup(b, m, k(cg)), update(b, m, k(cg), b"x" * VS), delete(b, m, k(cg))]
    cg_mkdir(b, base)
    cg3 = b.open(base, os.O_RDONLY | os.O_DIRECTORY)
    out += [lookup(b, m, k(cg3)), update(b, m, k(cg3), b"N" * VS), lookup(b, m, k(cg3)),
            delete(b, m, k(root)), delete(b, m, k(root)), lookup(b, m, k(root))]
    for fd in (m, m2, root, cg, cg2, cg3, dfd, btf):
        b.close(fd)
    cg_rmdir(b, base)
    return out


def test_map_cgrp_storage_syscall_ops(both):
    both_equal(both, _cgrp_scenario)


# ------------------------------------------------------------------ lockstep state machine

class _LocalStorageLockstep(RuleBasedStateMachine):
    """Two maps of each type, a few owners per type; every op's result compared."""

    @initialize()
    def setup(self):
        self.backends = [FakeBackend(), HostBackend()]
        self.base = f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        self.state = []
        for b in self.backends:
            btf, t = load_types(b)
            maps = {mt: [create(b, mt, btf, t["int"], t["val"]) for _ in range(2)]
                    for mt in (TASK, INODE, CGRP)}
            cg_mkdir(b, self.base)
            pin = b.pin_dir()
            self.child = b.spawn()
            owners = {TASK: [b.pidfd_open(), b.pidfd_open(self.child), 999],
                      INODE: [btf, b.open(pin, os.O_RDONLY | os.O_DIRECTORY),
                              b.open(CGROUP2, os.O_RDONLY | os.O_DIRECTORY), 999],
                      CGRP: [b.open(CGROUP2, os.O_RDONLY | os.O_DIRECTORY),
                             b.open(self.base, os.O_RDONLY | os.O_DIRECTORY), btf]}
            self.state.append((b, btf, maps, owners, self.child))

    def _each(self, fn):
        res = [fn(*s) for s in self.state]
        assert res[0] == res[1]

    @rule(mt=st.sampled_from([TASK, INODE, CGRP]), mi=st.integers(0, 1), oi=st.integers(0, 3),
          v=st.binary(min_size=VS, max_size=VS),
          flags=st.sampled_from([0, UpdateFlags.NOEXIST, UpdateFlags.EXIST, 3, UpdateFlags.F_LOCK]))
    def do_update(self, mt, mi, oi, v, flags):
        self._each(lambda b, btf, maps, owners, _c: update(
            b, maps[mt][mi], k(owners[mt][oi % len(owners[mt])]), v, flags))

    @rule(mt=st.sampled_from([TASK, INODE, CGRP]), mi=st.integers(0, 1), oi=st.integers(0, 3))
    def do_lookup(self, mt, mi, oi):
        self._each(lambda b, btf, maps, owners, _c: lookup(
            b, maps[mt][mi], k(owners[mt][oi % len(owners[mt])])))

    @rule(mt=st.sampled_from([TASK, INODE, CGRP]), mi=st.integers(0, 1), oi=st.integers(0, 3))
    def do_delete(self, mt, mi, oi):
        self._each(lambda b, btf, maps, owners, _c: delete(
            b, maps[mt][mi], k(owners[mt][oi % len(owners[mt])])))

    def teardown(self):
        for b, btf, maps, owners, child in getattr(self, "state", []):
            for fds in maps.values():
                for fd in fds:
                    b.close(fd)
            for fds in owners.values():
                for fd in fds:
                    if fd != 999 and fd != btf:
                        b.close(fd)
            b.close(btf)
            b.reap(child)
            cg_rmdir(b, self.base)
            assert not b.cleanup()


def test_map_local_storage_lockstep_random_ops(host):
    _LocalStorageLockstep.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                                       deadline=None)
    _LocalStorageLockstep.TestCase().runTest()


# ------------------------------------------------------------------ program side (raw_tp test runs)

def _task_prog(m, flags=None, init_map=None):
    """flags None: bpf_task_storage_delete(map, current); else v = task_storage_get(map,
    current, init, flags): NULL -> 99, else ++v->a and return it.  `init_map`: an array
    map whose value 0 is the init value."""
    from uapi.bpf import BPF_JNE
    from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM,
                           BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM)
    from uapi.bpf import BPF_W, FuncId
    pre = []
    if init_map is not None:
        pre = [BPF_MOV64_IMM(1, 0), BPF_STX_MEM(BPF_W, 10, 1, -4), *BPF_LD_MAP_FD(1, init_map),
               BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(0x00, 2, -4),
               BPF_CALL_HELPER(FuncId.map_lookup_elem), BPF_MOV64_REG(7, 0)]
    cur = [BPF_CALL_HELPER(FuncId.get_current_task_btf), BPF_MOV64_REG(2, 0), *BPF_LD_MAP_FD(1, m)]
    if flags is None:
        return pre + cur + [BPF_CALL_HELPER(FuncId.task_storage_delete), BPF_EXIT_INSN()]
    init = [BPF_MOV64_REG(3, 7)] if init_map is not None else [BPF_MOV64_IMM(3, 0)]
    return pre + cur + init + [
        BPF_MOV64_IMM(4, flags), BPF_CALL_HELPER(FuncId.task_storage_get),
        BPF_JMP_IMM(BPF_JNE, 0, 0, 2), BPF_MOV64_IMM(0, 99), BPF_EXIT_INSN(),
        BPF_LDX_MEM(BPF_W, 1, 0, 0), BPF_ALU64_IMM(0x00, 1, 1), BPF_STX_MEM(BPF_W, 0, 1, 0),
        BPF_MOV64_REG(0, 1), BPF_EXIT_INSN()]


def test_prog_test_run_task_storage_helpers(both):
    """raw_tp test runs on the calling task: get (with/without F_CREATE, bad flags, an init
    value from a map), delete, and the syscall view of what programs stored."""
    from uapi.bpf import ProgType
    from uapi.insn import assemble_insns

    def scenario(b):
        btf, t = load_types(b)
        m = create(b, TASK, btf, t["int"], t["val"])
        init = calls.map_create(b, MapType.ARRAY, 4, VS, 1)
        calls.map_update_elem(b, init, k(0), (40).to_bytes(4, "little") + b"IIII")
        progs = {}
        for name, kw in {"get": dict(flags=0), "create": dict(flags=1), "bad": dict(flags=3),
                         "delete": dict(), "create_init": dict(flags=1, init_map=init)}.items():
            r = calls.prog_load(b, ProgType.RAW_TRACEPOINT, assemble_insns(_task_prog(m, **kw)),
                                strict=False)
            assert r.ret >= 0, r.log
            progs[name] = r.ret
        me = b.pidfd_open()

        def run(name):
            ret, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, test__prog_fd=progs[name])
            return ret, a.get("test.retval")
        out = [run("get"), run("bad"), run("delete"), run("create"), run("create"), run("get"),
               lookup(b, m, k(me)), update(b, m, k(me), (7).to_bytes(4, "little") + b"SSSS"),
               run("get"), lookup(b, m, k(me)), run("delete"), run("delete"), lookup(b, m, k(me)),
               run("create_init"), lookup(b, m, k(me)), run("create_init"), run("bad")]
        for fd in (*progs.values(), me, init, m, btf):
            b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_local_storage_as_inner_map_and_frozen(both):
    """Local storage maps can sit in a map-in-map; a frozen one refuses syscall updates."""
    def scenario(b):
        btf, t = load_types(b)
        me = b.pidfd_open()
        out = []
        for mt in (TASK, INODE, CGRP):
            m = create(b, mt, btf, t["int"], t["val"])
            o = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=MapType.ARRAY_OF_MAPS, key_size=4,
                          value_size=4, max_entries=1, inner_map_fd=m)[0]
            out.append(o if o < 0 else "ok")
            if o >= 0:
                out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=o, key=k(0),
                                     value=k(m))[0])
                b.close(o)
            out += [calls.raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=m)[0],
                    update(b, m, k(me), b"F" * VS), lookup(b, m, k(me)), delete(b, m, k(me))]
            b.close(m)
        b.close(me)
        b.close(btf)
        return out
    both_equal(both, scenario)


def test_map_local_storage_spin_lock_value_f_lock(both):
    """A value with a bpf_spin_lock: BPF_F_LOCK is accepted (creating the first element too),
    the lock word never comes from userspace and reads back as zero."""
    def scenario(b):
        w = BtfWriter()
        i = w.int_("int", 4, encoding=1)
        lock = w.struct("bpf_spin_lock", 4, [("val", i, 0)])
        val = w.struct("lval", 12, [("a", i, 0), ("l", lock, 32), ("b", i, 64)])
        btf = btf_load(b, w.blob()).ret
        me = b.pidfd_open()
        cg = b.open(CGROUP2, os.O_RDONLY | os.O_DIRECTORY)
        out = []
        for mt, owner in ((TASK, me), (CGRP, cg), (INODE, me)):
            m = create(b, mt, btf, i, val, vs=12)
            key = k(owner)

            def lk(flags=0):
                buf = bytearray(b"\xee" * 12)
                r = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=key, value=buf,
                              flags=flags)[0]
                return r, bytes(buf)
            out += [m if m < 0 else "m",
                    update(b, m, key, b"A" * 12, UpdateFlags.F_LOCK | UpdateFlags.EXIST),
                    update(b, m, key, b"A" * 12, UpdateFlags.F_LOCK), lk(), lk(UpdateFlags.F_LOCK),
                    update(b, m, key, b"B" * 12, UpdateFlags.F_LOCK | UpdateFlags.NOEXIST),
                    update(b, m, key, b"C" * 12, UpdateFlags.F_LOCK | UpdateFlags.EXIST), lk(),
                    update(b, m, key, b"D" * 12), lk(UpdateFlags.F_LOCK),
                    update(b, m, key, b"E" * 12, UpdateFlags.F_LOCK | 3), delete(b, m, key)]
            b.close(m)
        for fd in (cg, me, btf):
            b.close(fd)
        return out
    both_equal(both, scenario)
