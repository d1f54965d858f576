"""CPUMAP and XSKMAP, fakekernel vs the real kernel: creation matrices (NR_CPUS, value sizes,
flags, fdinfo memlock), element ops (qsize limits, impossible CPUs, BPF_XDP_CPUMAP program
fds; AF_XDP socket fds, the syscall lookup that is refused, sockets leaving the map when
closed), random op sequences in lockstep, bpf_redirect_map through PROG_TEST_RUN and the
programs the redirect maps hold.  AF_XDP socket calls themselves: test_af_xdp.py.

The fake kernel gets the host's number of possible CPUs (cpumap updates past it are ENODEV).
"""
from __future__ import annotations

import socket

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from fakekernel import Kernel
from uapi import calls
from uapi.bpf import AttachType, BpfCmd, FuncId, MapFlags, MapType, ProgLoadFlags, ProgType, UpdateFlags
from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_MAP_FD, BPF_MOV64_IMM, assemble_insns

from backends import FakeBackend, HostBackend
from maputil import both_equal, memlock, possible_cpus
from redirectutil import create, load, op, prog_id, u32
from xskutil import XDP_COPY, sockaddr_xdp, xsk_bind, xsk_ready

pytestmark = pytest.mark.differential

CM, XM = MapType.CPUMAP, MapType.XSKMAP
FRAGS = ProgLoadFlags.XDP_HAS_FRAGS
AF_XDP = 44


@pytest.fixture
def both(host):
    fake = FakeBackend(Kernel(nr_cpus=possible_cpus()))
    yield fake, host
    assert not fake.cleanup()


# ------------------------------------------------------------------ MAP_CREATE matrix

CREATE_CASES = {}
for _t in (CM, XM):
    _n = _t.name.lower()
    CREATE_CASES.update({
        f"{_n}_v4": dict(map_type=_t),
        f"{_n}_v8": dict(map_type=_t, value_size=8),
        f"{_n}_max1": dict(map_type=_t, max_entries=1),
        f"{_n}_max3": dict(map_type=_t, max_entries=3),
        f"{_n}_max256": dict(map_type=_t, max_entries=256),
        f"{_n}_max257": dict(map_type=_t, max_entries=257),
        f"{_n}_max8193": dict(map_type=_t, max_entries=8193),
        f"{_n}_max_u32": dict(map_type=_t, max_entries=2**32 - 1),
        f"{_n}_v12_einval": dict(map_type=_t, value_size=12),
        f"{_n}_v0_einval": dict(map_type=_t, value_size=0),
        f"{_n}_key8_einval": dict(map_type=_t, key_size=8),
        f"{_n}_key8_max_u32": dict(map_type=_t, key_size=8, max_entries=2**32 - 1),
        f"{_n}_max0_einval": dict(map_type=_t, max_entries=0),
        f"{_n}_numa0": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=0),
        f"{_n}_numa1_einval": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=1),
        f"{_n}_btf_enotsupp": dict(map_type=_t, btf_key_type_id=1, btf_value_type_id=1, btf_fd=0),
        f"{_n}_name": dict(map_type=_t, map_name=b"cpu_map"),
    })
    for _bit in MapFlags:
        if _bit in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
            continue
        CREATE_CASES[f"{_n}_flag_{_bit.name.lower()}"] = dict(map_type=_t, map_flags=_bit)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_cpumap_xskmap(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


# ------------------------------------------------------------------ CPUMAP element ops

def _cpumap_scenario(value_size, max_entries=4):
    def scenario(b):
        cpus = possible_cpus()
        progs = {"zero": 0, "neg": -1, "bad": 9999, "xdp": load(b), "cpumap": load(b, AttachType.XDP_CPUMAP),
                 "devmap": load(b, AttachType.XDP_DEVMAP), "skf": load(b, ptype=ProgType.SOCKET_FILTER),
                 "cpumap_frags": load(b, AttachType.XDP_CPUMAP, flags=FRAGS)}
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        progs["arr"] = arr
        ids = {prog_id(b, progs["cpumap"]): "cpumap_id"}
        fd = calls.map_create(b, CM, 4, value_size, max_entries)
        out = []

        def upd(k, qsize, prog="zero", flags=0):
            v = u32(qsize) + (u32(progs[prog]) if value_size == 8 else b"")
            out.append(("upd", k, qsize, prog, flags,
                        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k), value=v, flags=flags)))

        def lookup(k):
            buf = bytearray(b"\xee" * value_size)
            ret = op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(k), value=buf)
            pid = int.from_bytes(buf[4:8], "little") if value_size == 8 and ret == 0 else None
            out.append(("lookup", k, ret, bytes(buf[:4]), ids.get(pid, pid)))

        upd(0, 1)
        upd(1, 16384)
        upd(1, 16385)
        upd(1, 2**32 - 1)
        for flags in (UpdateFlags.NOEXIST, UpdateFlags.EXIST, 3, UpdateFlags.F_LOCK):
            upd(1, 16385, flags=flags)
            upd(1, 7, flags=flags)
        upd(max_entries, 1)
        upd(cpus, 1)                      # past the possible CPUs: ENODEV, even to delete
        upd(cpus, 0)
        for prog in ("xdp", "devmap", "skf", "arr", "bad", "neg", "cpumap"):
            upd(1, 5, prog)
        upd(0, 3, "cpumap_frags")         # the owner (first prog) has no frags
        upd(1, 0, "bad")                  # qsize 0 deletes without looking at the fd
        for k in range(max_entries + 1):
            lookup(k)
        for k in (None, 0, 1, max_entries - 1, max_entries, 100):
            nk = bytearray(b"\xee" * 4)
            out.append(("next", k, op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                                      key=u32(k) if k is not None else 0, next_key=nk), bytes(nk)))
        for k in (1, 0, 0, max_entries, cpus):
            out.append(("del", k, op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=u32(k))))
        out.append(("memlock", memlock(b, fd)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(0), value=bytearray(8)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd,
                      batch__keys=bytearray(32), batch__values=bytearray(64), batch__count=4))
        out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
        upd(0, 1)
        b.close(fd)
        for name in ("xdp", "cpumap", "devmap", "skf", "cpumap_frags", "arr"):
            b.close(progs[name])
        return out
    return scenario


@pytest.mark.parametrize("value_size", [4, 8])
def test_map_cpumap_elem_ops(both, value_size):
    both_equal(both, _cpumap_scenario(value_size))


def test_map_cpumap_owner_frags_rule(both):
    def scenario(b):
        out = []
        c = load(b, AttachType.XDP_CPUMAP)
        m = calls.map_create(b, CM, 4, 8, 2)
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=m, key=u32(0), value=u32(4) + u32(c)))
        for flags in (0, FRAGS):
            r = calls.prog_load(b, ProgType.XDP, _redirect_insns(m, 0, 0), prog_flags=flags, strict=False)
            out.append(r.ret >= 0)
            if r.ret >= 0:
                b.close(r.ret)
        b.close(m)
        b.close(c)
        return out
    assert both_equal(both, scenario) == [0, True, False]


class _CpumapLockstep(RuleBasedStateMachine):
    @initialize(max_entries=st.integers(1, 4), value_size=st.sampled_from([4, 8]))
    def setup(self, max_entries, value_size):
        self.value_size = value_size
        self.backends = [FakeBackend(Kernel(nr_cpus=possible_cpus())), HostBackend()]
        self.fds = [calls.map_create(b, CM, 4, value_size, max_entries) for b in self.backends]
        self.progs = [load(b, AttachType.XDP_CPUMAP) for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd, p) for b, fd, p in zip(self.backends, self.fds, self.progs)]
        assert res[0] == res[1]

    @rule(k=st.integers(0, 5), qsize=st.sampled_from([0, 1, 64, 16384, 16385]),
          with_prog=st.booleans(), flags=st.sampled_from([0, 0, UpdateFlags.EXIST, UpdateFlags.NOEXIST, 3]))
    def update(self, k, qsize, with_prog, flags):
        def go(b, fd, p):
            v = u32(qsize) + (u32(p if with_prog else 0) if self.value_size == 8 else b"")
            return op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k), value=v, flags=flags)
        self._each(go)

    @rule(k=st.integers(0, 5))
    def lookup(self, k):
        def go(b, fd, p):
            buf = bytearray(b"\xee" * self.value_size)
            ret = op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(k), value=buf)
            return ret, bytes(buf[:4]), buf[4:] == u32(prog_id(b, p)) if ret == 0 and self.value_size == 8 else None
        self._each(go)

    @rule(k=st.integers(0, 5))
    def delete(self, k):
        self._each(lambda b, fd, p: op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=u32(k)))

    @rule(k=st.integers(0, 5), flags=st.sampled_from([0, 1, 2, 3, 4, 8]))
    def redirect(self, k, flags):
        """bpf_redirect_map from a test run: the verdict follows the map's contents."""
        def go(b, fd, p):
            prog = calls.prog_load(b, ProgType.XDP, _redirect_insns(fd, k, flags))
            r = calls.prog_test_run(b, prog, FRAME, data_size_out=256)
            b.close(prog)
            return r.ret, r.retval
        self._each(go)

    @rule(k=st.one_of(st.none(), st.integers(0, 5)))
    def next_key(self, k):
        def go(b, fd, p):
            nk = bytearray(b"\xee" * 4)
            return op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                      key=u32(k) if k is not None else 0, next_key=nk), bytes(nk)
        self._each(go)

    def teardown(self):
        for b, fd, p in zip(getattr(self, "backends", []), getattr(self, "fds", []), getattr(self, "progs", [])):
            b.close(fd)
            b.close(p)
            assert not b.cleanup()


@pytest.mark.usefixtures("host")
def test_map_cpumap_lockstep():
    _CpumapLockstep.TestCase().runTest()


# ------------------------------------------------------------------ bpf_redirect_map via PROG_TEST_RUN

def _redirect_insns(map_fd, key, flags):
    return assemble_insns([BPF_LD_MAP_FD(1, map_fd), BPF_MOV64_IMM(2, key), BPF_MOV64_IMM(3, flags),
                           BPF_CALL_HELPER(FuncId.redirect_map), BPF_EXIT_INSN()])


FRAME = bytes(range(14)) + b"\x45" + bytes(45)


def test_xdp_redirect_cpumap_test_run_retval(both):
    """Hit, miss with each default action, unknown flags (BPF_F_BROADCAST is one for cpumaps)."""
    cases = [(0, 0), (1, 0), (1, 2), (1, 3), (0, 1), (3, 2), (0, 8), (1, 8), (0, 16), (0, 4)]

    def scenario(b):
        m = calls.map_create(b, CM, 4, 4, 4)
        calls.map_update_elem(b, m, u32(0), u32(16))
        out = []
        for key, flags in cases:
            p = calls.prog_load(b, ProgType.XDP, _redirect_insns(m, key, flags))
            r = calls.prog_test_run(b, p, FRAME, data_size_out=256)
            out.append((key, flags, r.ret, r.retval, r.data_out[:r.data_size_out] == FRAME))
            b.close(p)
        b.close(m)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ AF_XDP sockets and XSKMAP

def _xskmap_scenario(bind_first: bool):
    def scenario(b):
        out = []
        x = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        if bind_first:
            xsk_ready(b, x)
            assert xsk_bind(b, x, sockaddr_xdp(1, 0, XDP_COPY)) == 0
        u = b.socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        m = calls.map_create(b, XM, 4, 4, 4)

        def upd(k, fd, flags=0):
            out.append(("upd", k, b.sym(fd), flags,
                        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=m, key=u32(k), value=u32(fd), flags=flags)))
        upd(0, x)
        upd(0, x, UpdateFlags.NOEXIST)
        upd(1, x, UpdateFlags.EXIST)
        upd(1, x, UpdateFlags.NOEXIST)
        upd(1, x, 3)
        upd(1, x, UpdateFlags.F_LOCK)
        upd(4, x)
        upd(2, u)
        upd(2, arr)
        upd(2, 9999)
        upd(2, -1)
        out.append(("memlock", memlock(b, m)))
        for k in (0, 3, 9):
            buf = bytearray(b"\xee" * 4)
            out.append(("lookup", k, op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=m, key=u32(k), value=buf), bytes(buf)))
        for k in (None, 0, 3, 4):
            nk = bytearray(b"\xee" * 4)
            out.append(("next", k, op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=m,
                                      key=u32(k) if k is not None else 0, next_key=nk), bytes(nk)))
        for k in (3, 0, 0, 4):
            out.append(("del", k, op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=u32(k))))
        out.append(("memlock", memlock(b, m)))
        upd(0, x)
        upd(2, x)
        out.append(("memlock", memlock(b, m)))
        # the sockets' nodes hold the map: closing its fd does not free it
        mid = calls.obj_get_info_by_fd(b, m, "map")[0].id
        b.close(m)
        m2 = op(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=mid)
        out.append(("by id", b.sym(m2) if m2 < 0 else "fd", memlock(b, m2) if m2 >= 0 else None))
        if m2 >= 0:
            b.close(m2)
        b.close(x)                       # the socket leaves the map, its last reference goes
        out.append(("by id after close", op(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=mid)))
        b.close(u)
        b.close(arr)
        return out
    return scenario


@pytest.mark.parametrize("bind_first", [False, True])
def test_map_xskmap_elem_ops(both, bind_first):
    both_equal(both, _xskmap_scenario(bind_first))


def test_map_xskmap_socket_close_empties_the_slots(both):
    def scenario(b):
        x1, x2 = b.socket(AF_XDP, socket.SOCK_RAW, 0), b.socket(AF_XDP, socket.SOCK_RAW, 0)
        m = calls.map_create(b, XM, 4, 4, 8)
        out = []
        for k, fd in ((0, x1), (1, x2), (2, x1), (3, x1)):
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=m, key=u32(k), value=u32(fd)))
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=m, key=u32(3), value=u32(x2)))   # replace
        out.append(memlock(b, m))
        b.close(x1)
        out.append(memlock(b, m))
        b.close(x2)
        out.append(memlock(b, m))
        b.close(m)
        return out
    both_equal(both, scenario)


def test_xdp_redirect_xskmap_test_run_retval(both):
    cases = [(0, 0), (1, 0), (1, 2), (0, 8), (9, 1)]

    def scenario(b):
        x = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        m = calls.map_create(b, XM, 4, 4, 4)
        calls.map_update_elem(b, m, u32(0), u32(x))
        out = []
        for key, flags in cases:
            p = calls.prog_load(b, ProgType.XDP, _redirect_insns(m, key, flags))
            r = calls.prog_test_run(b, p, FRAME, data_size_out=256)
            out.append((key, flags, r.ret, r.retval, r.data_out[:r.data_size_out] == FRAME))
            b.close(p)
        b.close(m)
        b.close(x)
        return out
    both_equal(both, scenario)


def test_xdp_xskmap_lookup_from_prog_reads_queue_id(both):
    """A program's XSKMAP lookup gives the socket (struct bpf_xdp_sock: queue_id) or NULL."""
    from uapi.bpf import BPF_ADD, BPF_JEQ, BPF_W
    from uapi.insn import BPF_ALU64_IMM, BPF_JMP_IMM, BPF_LDX_MEM, BPF_MOV64_REG, BPF_ST_MEM

    def prog(m, key):
        return assemble_insns([
            BPF_ST_MEM(BPF_W, 10, -4, key), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
            BPF_LD_MAP_FD(1, m), BPF_CALL_HELPER(FuncId.map_lookup_elem),
            BPF_JMP_IMM(BPF_JEQ, 0, 0, 3), BPF_LDX_MEM(BPF_W, 0, 0, 0), BPF_ALU64_IMM(BPF_ADD, 0, 10),
            BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])

    def scenario(b):
        x = b.socket(AF_XDP, socket.SOCK_RAW, 0)
        m = calls.map_create(b, XM, 4, 4, 4)
        calls.map_update_elem(b, m, u32(0), u32(x))
        out = []
        for key in (0, 1, 7):
            r = calls.prog_load(b, ProgType.XDP, prog(m, key), strict=False)
            if r.ret >= 0:
                out.append((key, calls.prog_test_run(b, r.ret, FRAME).retval))
                b.close(r.ret)
            else:
                out.append((key, r.ret))
        b.close(m)
        b.close(x)
        return out
    assert both_equal(both, scenario) == [(0, 10), (1, 1), (7, 1)]


def test_map_redirect_maps_as_inner_maps(both):
    """All four redirect map types may be inner maps; an xskmap's max_entries must match."""
    def scenario(b):
        out = []
        for t, vs in ((MapType.DEVMAP, 4), (MapType.DEVMAP_HASH, 8), (CM, 4), (XM, 4)):
            inner = calls.map_create(b, t, 4, vs, 4)
            outer = op(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.ARRAY_OF_MAPS, key_size=4,
                       value_size=4, max_entries=2, inner_map_fd=inner)
            out.append((t.name, b.sym(outer)))
            for max_entries in (4, 5):
                other = calls.map_create(b, t, 4, vs, max_entries)
                out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=outer, key=u32(0), value=u32(other)))
                b.close(other)
            b.close(outer)
            b.close(inner)
        return out
    both_equal(both, scenario)


class _XskmapLockstep(RuleBasedStateMachine):
    """Random updates (with sockets, a UDP socket, bad fds), deletes, next-key walks, socket
    closes and memlock on both kernels."""

    @initialize(max_entries=st.integers(1, 5))
    def setup(self, max_entries):
        self.backends = [FakeBackend(), HostBackend()]
        self.fds = [calls.map_create(b, XM, 4, 4, max_entries) for b in self.backends]
        self.socks = [[b.socket(AF_XDP, socket.SOCK_RAW, 0) for _ in range(3)] +
                      [b.socket(socket.AF_INET, socket.SOCK_DGRAM, 0)] for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd, socks) for b, fd, socks in zip(self.backends, self.fds, self.socks)]
        assert res[0] == res[1]

    @rule(k=st.integers(0, 6), which=st.integers(0, 4),
          flags=st.sampled_from([0, 0, UpdateFlags.EXIST, UpdateFlags.NOEXIST, 3]))
    def update(self, k, which, flags):
        def go(b, fd, socks):
            sfd = socks[which] if which < len(socks) else 9999
            if sfd is None:
                sfd = 9999
            return op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k), value=u32(sfd), flags=flags)
        self._each(go)

    @rule(k=st.integers(0, 6))
    def delete(self, k):
        self._each(lambda b, fd, s: op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=u32(k)))

    @rule(k=st.one_of(st.none(), st.integers(0, 6)))
    def next_key(self, k):
        def go(b, fd, s):
            nk = bytearray(b"\xee" * 4)
            return op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                      key=u32(k) if k is not None else 0, next_key=nk), bytes(nk)
        self._each(go)

    @rule(which=st.integers(0, 2))
    def close_socket(self, which):
        def go(b, fd, socks):
            if socks[which] is not None:
                b.close(socks[which])
                socks[which] = None
            return memlock(b, fd)
        self._each(go)

    @rule()
    def mem(self):
        self._each(lambda b, fd, s: memlock(b, fd))

    def teardown(self):
        for b, fd, socks in zip(getattr(self, "backends", []), getattr(self, "fds", []),
                                getattr(self, "socks", [])):
            b.close(fd)
            for s in socks:
                if s is not None:
                    b.close(s)
            assert not b.cleanup()


@pytest.mark.usefixtures("host")
def test_map_xskmap_lockstep():
    _XskmapLockstep.TestCase().runTest()


def _prog_gone_eventually(b, pid: int) -> int:
    """PROG_GET_FD_BY_ID until the prog is gone (RCU-deferred entry frees), at most ~2 s."""
    import time
    for _ in range(200):
        ret = op(b, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=pid)
        if ret < 0:
            return ret
        b.close(ret)
        time.sleep(0.01)
    return ret


@pytest.mark.parametrize("map_type,eat,first", [(MapType.DEVMAP, AttachType.XDP_DEVMAP, 1),
                                                (MapType.DEVMAP_HASH, AttachType.XDP_DEVMAP, 1),
                                                (CM, AttachType.XDP_CPUMAP, 8)],
                         ids=["devmap", "devmap_hash", "cpumap"])
def test_map_redirect_maps_hold_their_programs(both, map_type, eat, first):
    """An entry keeps its program alive after the prog fd is closed; replacing, deleting the
    entry or freeing the map lets it go."""
    def scenario(b):
        out = []
        m = calls.map_create(b, map_type, 4, 8, 2)
        for how in ("replace", "delete", "map_free"):
            p = load(b, eat)
            pid = prog_id(b, p)
            calls.map_update_elem(b, m, u32(0), u32(first) + u32(p))
            b.close(p)
            again = op(b, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=pid)
            out.append((how, "held" if again >= 0 else again))
            if again >= 0:
                b.close(again)
            if how == "replace":
                calls.map_update_elem(b, m, u32(0), u32(first) + u32(0))
            elif how == "delete":
                calls.map_delete_elem(b, m, u32(0))
            else:
                b.close(m)
            out.append((how, _prog_gone_eventually(b, pid)))
        return out
    both_equal(both, scenario)
