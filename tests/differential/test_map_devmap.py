"""DEVMAP and DEVMAP_HASH, fakekernel vs the real kernel: the creation matrix (flags, value
sizes, the hash's bucket sizing and fdinfo memlock), element ops with lo (ifindex 1) and
missing devices, BPF_XDP_DEVMAP program fds (ids on lookup, the map owner's frags rule),
array vs hash get_next_key order, random op sequences in lockstep, and XDP programs using
bpf_redirect_map through PROG_TEST_RUN."""
from __future__ import annotations

import os

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from uapi import calls
from uapi.bpf import AttachType, BpfCmd, FuncId, MapFlags, MapType, ProgLoadFlags, ProgType, UpdateFlags
from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_MAP_FD, BPF_MOV64_IMM, assemble_insns

from backends import FakeBackend, HostBackend
from maputil import both_equal, memlock
from redirectutil import LAST, create, load, op, prog_id, u32

pytestmark = pytest.mark.differential

DM, DMH = MapType.DEVMAP, MapType.DEVMAP_HASH
LO = 1
NO_DEV = 0x7FFF0000            # an ifindex no machine has
FRAGS = ProgLoadFlags.XDP_HAS_FRAGS


# ------------------------------------------------------------------ MAP_CREATE matrix

CREATE_CASES = {}
for _t in (DM, DMH):
    _n = _t.name.lower()
    CREATE_CASES.update({
        f"{_n}_v4": dict(map_type=_t),
        f"{_n}_v8": dict(map_type=_t, value_size=8),
        f"{_n}_v8_max100": dict(map_type=_t, value_size=8, max_entries=100),
        f"{_n}_max1": dict(map_type=_t, max_entries=1),
        f"{_n}_max3": dict(map_type=_t, max_entries=3),
        f"{_n}_max5": dict(map_type=_t, max_entries=5),
        f"{_n}_max8193": dict(map_type=_t, max_entries=8193),
        # (2**31 entries are a 16 GiB table: whether the host has it free varies)
        f"{_n}_max_u32": dict(map_type=_t, max_entries=2**32 - 1),
        f"{_n}_v12_einval": dict(map_type=_t, value_size=12),
        f"{_n}_v0_einval": dict(map_type=_t, value_size=0),
        f"{_n}_v5_einval": dict(map_type=_t, value_size=5),
        f"{_n}_key8_einval": dict(map_type=_t, key_size=8),
        f"{_n}_max0_einval": dict(map_type=_t, max_entries=0),
        f"{_n}_numa0": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=0),
        f"{_n}_numa1_einval": dict(map_type=_t, map_flags=MapFlags.NUMA_NODE, numa_node=1),
        f"{_n}_btf_enotsupp": dict(map_type=_t, btf_key_type_id=1, btf_value_type_id=1, btf_fd=0),
        f"{_n}_map_extra_einval": dict(map_type=_t, map_extra=1),
        f"{_n}_name": dict(map_type=_t, map_name=b"dev.map_1"),
    })
    for _bit in MapFlags:
        if _bit in (MapFlags.PATH_FD, MapFlags.VTYPE_BTF_OBJ_FD, MapFlags.TOKEN_FD):
            continue
        CREATE_CASES[f"{_n}_flag_{_bit.name.lower()}"] = dict(map_type=_t, map_flags=_bit)
CREATE_CASES["devmap_hash_max2p31_plus1_einval"] = dict(map_type=DMH, max_entries=2**31 + 1)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_devmap(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


# ------------------------------------------------------------------ element ops

class _Progs:
    """XDP programs of every relevant kind, plus fds that are not XDP programs."""

    def __init__(self, b):
        self.b = b
        self.xdp = load(b)
        self.devmap = load(b, AttachType.XDP_DEVMAP)
        self.cpumap = load(b, AttachType.XDP_CPUMAP)
        self.devmap_frags = load(b, AttachType.XDP_DEVMAP, flags=FRAGS)
        self.skf = load(b, ptype=ProgType.SOCKET_FILTER)
        self.arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        self.null = os.open("/dev/null", os.O_RDONLY) if isinstance(b, HostBackend) else \
            b.open("/sys/fs/bpf", os.O_RDONLY)

    def fds(self):
        return {"xdp": self.xdp, "devmap": self.devmap, "cpumap": self.cpumap,
                "devmap_frags": self.devmap_frags, "skf": self.skf, "arr": self.arr,
                "null": self.null, "bad": 9999, "neg": -1, "zero": 0}

    def close(self):
        for fd in (self.xdp, self.devmap, self.cpumap, self.devmap_frags, self.skf, self.arr):
            self.b.close(fd)
        if isinstance(self.b, HostBackend):
            os.close(self.null)
        else:
            self.b.close(self.null)


def _elem_scenario(map_type, value_size, max_entries=4):
    def scenario(b):
        p = _Progs(b)
        fds = p.fds()
        ids = {prog_id(b, p.devmap): "devmap_id", prog_id(b, p.devmap_frags): "frags_id"}
        fd = calls.map_create(b, map_type, 4, value_size, max_entries)
        out = []

        def upd(k, ifindex, prog="zero", flags=0):
            v = u32(ifindex) + (u32(fds[prog]) if value_size == 8 else b"")
            out.append(("upd", k, ifindex, prog, flags,
                        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k), value=v, flags=flags)))

        def lookup(k):
            buf = bytearray(b"\xee" * value_size)
            ret = op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(k), value=buf)
            pid = int.from_bytes(buf[4:8], "little") if value_size == 8 and ret == 0 else None
            out.append(("lookup", k, ret, bytes(buf[:4]), ids.get(pid, pid)))

        def next_key(k):
            nk = bytearray(b"\xee" * 4)
            ret = op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                     key=u32(k) if k is not None else 0, next_key=nk)
            out.append(("next", k, ret, bytes(nk)))

        upd(0, LO)
        for flags in (UpdateFlags.NOEXIST, UpdateFlags.EXIST, 3, UpdateFlags.F_LOCK, 8):
            upd(1, LO, flags=flags)
        upd(4, LO)
        upd(5, LO)
        upd(2, NO_DEV)
        upd(2, 0)
        upd(2, 0, "devmap")
        for prog in ("xdp", "cpumap", "skf", "arr", "null", "bad", "neg", "devmap"):
            upd(3, LO, prog)
        upd(0, LO, "devmap")
        upd(1, LO, "devmap_frags")           # the owner (set by the first prog) has no frags
        out.append(("memlock", memlock(b, fd)))
        for k in (0, 1, 2, 3, 4, 5, 2**32 - 1):
            lookup(k)
        for k in (None, 0, 1, 2, 3, 4, 5, 100):
            next_key(k)
        for k in (2, 0, 0, 7, 4, 5):
            out.append(("del", k, op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=u32(k))))
        out.append(("memlock", memlock(b, fd)))
        for k in (None, 1, 3):
            next_key(k)
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=u32(1), value=bytearray(8)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd,
                      batch__keys=bytearray(32), batch__values=bytearray(64), batch__count=4))
        out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
        upd(1, LO)
        lookup(1)
        b.close(fd)
        p.close()
        return out
    return scenario


@pytest.mark.parametrize("value_size", [4, 8])
@pytest.mark.parametrize("map_type", [DM, DMH], ids=lambda t: t.name)
def test_map_devmap_elem_ops(both, map_type, value_size):
    both_equal(both, _elem_scenario(map_type, value_size))


@pytest.mark.parametrize("map_type", [DM, DMH], ids=lambda t: t.name)
def test_map_devmap_hash_order_and_capacity(both, map_type):
    """Bucket order (newest first in a chain), re-insertion moving a key to its chain's
    head, E2BIG when full, and memlock counting the entries."""
    def scenario(b):
        fd = calls.map_create(b, map_type, 4, 4, 6)
        out = []
        for k in (0, 8, 16, 1, 9, 5, 8, 24, 3):
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k % 6 if map_type == DM else k),
                          value=u32(LO)))
        out.append(memlock(b, fd))
        keys, k = [], None
        while len(keys) < 20:
            nk = bytearray(4)
            if op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                  key=u32(k) if k is not None else 0, next_key=nk):
                break
            k = int.from_bytes(nk, "little")
            keys.append(k)
        out.append(keys)
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_map_devmap_owner_frags_rule(both):
    """A devmap's first program fixes its owner: a frags user program cannot load against a
    devmap holding a non-frags program; a devmap_hash has no such check at load time."""
    def scenario(b):
        out = []
        d = load(b, AttachType.XDP_DEVMAP)
        for t in (DM, DMH):
            m = calls.map_create(b, t, 4, 8, 2)
            out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=m, key=u32(0), value=u32(LO) + u32(d)))
            for flags in (0, FRAGS):
                r = calls.prog_load(b, ProgType.XDP, _redirect_insns(m, 0, 0), prog_flags=flags,
                                    strict=False)
                out.append(r.ret >= 0)
                if r.ret >= 0:
                    b.close(r.ret)
            b.close(m)
        b.close(d)
        return out
    got = both_equal(both, scenario)
    assert got == [0, True, False, 0, True, True]


# ------------------------------------------------------------------ lockstep state machine

class _DevmapLockstep(RuleBasedStateMachine):
    MAP_TYPE = DM

    @initialize(max_entries=st.integers(1, 6), value_size=st.sampled_from([4, 8]))
    def setup(self, max_entries, value_size):
        self.value_size = value_size
        self.backends = [FakeBackend(), HostBackend()]
        self.fds = [calls.map_create(b, self.MAP_TYPE, 4, value_size, max_entries) for b in self.backends]
        self.progs = [load(b, AttachType.XDP_DEVMAP) for b in self.backends]

    def _each(self, fn):
        res = [fn(b, fd, p) for b, fd, p in zip(self.backends, self.fds, self.progs)]
        assert res[0] == res[1]

    @rule(k=st.integers(0, 8), ifindex=st.sampled_from([0, LO, LO, NO_DEV]),
          with_prog=st.booleans(), flags=st.sampled_from([0, 0, UpdateFlags.EXIST, UpdateFlags.NOEXIST, 3]))
    def update(self, k, ifindex, with_prog, flags):
        def go(b, fd, p):
            v = u32(ifindex) + (u32(p if with_prog else 0) if self.value_size == 8 else b"")
            return op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=u32(k), value=v, flags=flags)
        self._each(go)

    @rule(k=st.integers(0, 8))
    def lookup(self, k):
        def go(b, fd, p):
            buf = bytearray(b"\xee" * self.value_size)
            ret = op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=u32(k), value=buf)
            return ret, bytes(buf[:4]), buf[4:] == u32(prog_id(b, p)) if ret == 0 and self.value_size == 8 else None
        self._each(go)

    @rule(k=st.integers(0, 8))
    def delete(self, k):
        self._each(lambda b, fd, p: op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=u32(k)))

    @rule(k=st.one_of(st.none(), st.integers(0, 8)))
    def next_key(self, k):
        def go(b, fd, p):
            nk = bytearray(b"\xee" * 4)
            return op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd,
                      key=u32(k) if k is not None else 0, next_key=nk), bytes(nk)
        self._each(go)

    @rule()
    def mem(self):
        self._each(lambda b, fd, p: memlock(b, fd))

    @rule(k=st.integers(0, 8), flags=st.sampled_from([0, 1, 2, 3, 4, 8, 8 | 16, 16, 2 | 16, 32]))
    def redirect(self, k, flags):
        """bpf_redirect_map from a test run: the verdict follows the map's contents."""
        def go(b, fd, p):
            prog = calls.prog_load(b, ProgType.XDP, _redirect_insns(fd, k, flags))
            r = calls.prog_test_run(b, prog, FRAME, data_size_out=256)
            b.close(prog)
            return r.ret, r.retval
        self._each(go)

    def teardown(self):
        for b, fd, p in zip(getattr(self, "backends", []), getattr(self, "fds", []), getattr(self, "progs", [])):
            b.close(fd)
            b.close(p)
            assert not b.cleanup()


class _DevmapHashLockstep(_DevmapLockstep):
    MAP_TYPE = DMH


@pytest.mark.usefixtures("host")
def test_map_devmap_lockstep():
    _DevmapLockstep.TestCase().runTest()


@pytest.mark.usefixtures("host")
def test_map_devmap_hash_lockstep():
    _DevmapHashLockstep.TestCase().runTest()


# ------------------------------------------------------------------ bpf_redirect_map via PROG_TEST_RUN

def _redirect_insns(map_fd, key, flags):
    return assemble_insns([BPF_LD_MAP_FD(1, map_fd), BPF_MOV64_IMM(2, key), BPF_MOV64_IMM(3, flags),
                           BPF_CALL_HELPER(FuncId.redirect_map), BPF_EXIT_INSN()])


FRAME = bytes(range(14)) + b"\x45" + bytes(45)


@pytest.mark.parametrize("map_type", [DM, DMH], ids=lambda t: t.name)
def test_xdp_redirect_map_test_run_retval(both, map_type):
    """retval is XDP_REDIRECT on a hit (or with BPF_F_BROADCAST), the flags' low bits on a
    miss, XDP_ABORTED for unknown flags; data_out is the frame either way."""
    cases = [(0, 0), (1, 0), (1, 2), (1, 3), (0, 1), (7, 0), (7, 1), (7, 2), (7, 3), (1, 4), (1, 8),
             (1, 16), (1, 24), (1, 32), (0, 2 | 16), (2**31 - 1, 8)]

    def scenario(b):
        m = calls.map_create(b, map_type, 4, 4, 4)
        calls.map_update_elem(b, m, u32(0), u32(LO))
        out = []
        for key, flags in cases:
            p = calls.prog_load(b, ProgType.XDP, _redirect_insns(m, key, flags))
            r = calls.prog_test_run(b, p, FRAME, data_size_out=256, repeat=2)
            out.append((key, flags, r.ret, r.retval, r.data_out[:r.data_size_out] == FRAME))
            b.close(p)
        b.close(m)
        return out
    both_equal(both, scenario)


def _lookup_prog(m, key, write=False):
    from uapi.bpf import BPF_ADD, BPF_JEQ, BPF_W
    from uapi.insn import BPF_ALU64_IMM, BPF_JMP_IMM, BPF_LDX_MEM, BPF_MOV64_REG, BPF_ST_MEM
    access = [BPF_ST_MEM(BPF_W, 0, 0, 5), BPF_MOV64_IMM(0, 2)] if write else \
        [BPF_LDX_MEM(BPF_W, 0, 0, 0), BPF_ALU64_IMM(BPF_ADD, 0, 10)]
    return assemble_insns([
        BPF_ST_MEM(BPF_W, 10, -4, key), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
        BPF_LD_MAP_FD(1, m), BPF_CALL_HELPER(FuncId.map_lookup_elem),
        BPF_JMP_IMM(BPF_JEQ, 0, 0, 3), *access, BPF_EXIT_INSN(), BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])


@pytest.mark.parametrize("map_type", [DM, DMH], ids=lambda t: t.name)
def test_xdp_devmap_lookup_from_prog_reads_the_ifindex(both, map_type):
    """Programs read {ifindex, prog id} through a lookup; the value is read-only."""
    def scenario(b):
        m = calls.map_create(b, map_type, 4, 8, 4)
        calls.map_update_elem(b, m, u32(0), u32(LO) + u32(0))
        out = []
        for key in (0, 1):
            r = calls.prog_load(b, ProgType.XDP, _lookup_prog(m, key), strict=False)
            out.append((key, calls.prog_test_run(b, r.ret, FRAME).retval if r.ret >= 0 else r.ret))
            if r.ret >= 0:
                b.close(r.ret)
        r = calls.prog_load(b, ProgType.XDP, _lookup_prog(m, 0, write=True), strict=False)
        out.append(("write", r.ret if r.ret < 0 else "fd"))
        if r.ret >= 0:
            b.close(r.ret)
        b.close(m)
        return out
    assert both_equal(both, scenario)[:2] == [(0, 11), (1, 1)]


def test_xdp_devmap_cpumap_prog_ctx_access(both):
    """egress_ifindex is readable by BPF_XDP_DEVMAP programs only."""
    from uapi.bpf import BPF_W
    from uapi.insn import BPF_LDX_MEM
    from uapi.ffi import ffi

    def scenario(b):
        out = []
        for eat in (0, AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
            for field in ("ingress_ifindex", "rx_queue_index", "egress_ifindex"):
                off = ffi.offsetof("struct xdp_md", field)
                r = calls.prog_load(b, ProgType.XDP, assemble_insns([BPF_LDX_MEM(BPF_W, 0, 1, off), BPF_EXIT_INSN()]),
                                    expected_attach_type=eat, strict=False)
                out.append((eat, field, r.ret if r.ret < 0 else "fd"))
                if r.ret >= 0:
                    b.close(r.ret)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("helpers", [("redirect_map", "lookup"), ("update", "delete")])
def test_xdp_redirect_map_func_compatibility(both, helpers):
    """Which map types bpf_redirect_map takes, and which helpers the redirect maps allow."""
    from uapi.bpf import BPF_ADD, BPF_W
    from uapi.insn import BPF_ALU64_IMM, BPF_MOV64_REG, BPF_ST_MEM

    def with_key(m, func, extra=()):
        return assemble_insns([BPF_ST_MEM(BPF_W, 10, -8, 0), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -8),
                               BPF_MOV64_REG(3, 2), BPF_MOV64_IMM(4, 0), BPF_LD_MAP_FD(1, m),
                               BPF_CALL_HELPER(func), *extra, BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN()])

    def scenario(b):
        out = []
        for t, vs in ((MapType.ARRAY, 4), (MapType.HASH, 4), (DM, 4), (DMH, 4), (MapType.CPUMAP, 4),
                      (MapType.XSKMAP, 4)):
            m = calls.map_create(b, t, 4, vs, 2)
            progs = {"redirect_map": _redirect_insns(m, 0, 0),
                     "lookup": with_key(m, FuncId.map_lookup_elem),
                     "update": with_key(m, FuncId.map_update_elem),
                     "delete": with_key(m, FuncId.map_delete_elem)}
            for name in helpers:
                insns = progs[name]
                r = calls.prog_load(b, ProgType.XDP, insns, strict=False, log_level=1, log_size=1 << 16)
                out.append((t.name, name, r.ret if r.ret < 0 else "fd",
                            r.log.splitlines()[-2] if r.ret < 0 else ""))
                if r.ret >= 0:
                    b.close(r.ret)
            b.close(m)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ privilege gate and check order

def _priv_scenario(b) -> dict:
    """DEVMAP/DEVMAP_HASH/XSKMAP need CAP_NET_ADMIN, CPUMAP CAP_BPF; devmaps check their attrs
    before the gate (map_alloc_check), cpumaps and xskmaps after it (in map_alloc)."""
    out = {}
    for t in (DM, DMH, MapType.CPUMAP, MapType.XSKMAP):
        for name, kw in (("ok", {}), ("bad_value", dict(value_size=12)), ("bad_key", dict(key_size=8))):
            ret = op(b, BpfCmd.MAP_CREATE, LAST, map_type=t, key_size=kw.get("key_size", 4),
                     value_size=kw.get("value_size", 4), max_entries=4)
            if ret >= 0:
                b.close(ret)
                ret = "fd"
            out[f"{t.name} {name}"] = ret
    return out


def _host_with_caps(caps: set) -> dict:
    """_priv_scenario in a child of the real kernel whose capability sets are exactly `caps`."""
    import json
    import cffi
    ffi = cffi.FFI()
    ffi.cdef("struct cap_header { uint32_t version; int pid; };"
             "struct cap_data { uint32_t effective, permitted, inheritable; };"
             "int capset(struct cap_header *hdr, const struct cap_data *data);")
    libc = ffi.dlopen(None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            mask = sum(1 << int(c) for c in caps)
            hdr = ffi.new("struct cap_header *", {"version": 0x20080522})   # _LINUX_CAPABILITY_VERSION_3
            data = ffi.new("struct cap_data[2]")
            for i in range(2):
                data[i].effective = data[i].permitted = (mask >> (32 * i)) & 0xFFFFFFFF
            payload = {"error": "capset"} if libc.capset(hdr, data) else _priv_scenario(HostBackend())
            os.write(w, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


@pytest.mark.parametrize("caps", ["bpf", "net_admin", "bpf+net_admin"])
def test_map_create_redirect_maps_privileges_and_check_order(host, caps):
    from fakekernel import Creds, Kernel
    from uapi.capability import Cap
    if os.geteuid() != 0:
        pytest.skip("needs root to choose the capability set of the oracle child")
    capset = {"bpf": {Cap.BPF}, "net_admin": {Cap.NET_ADMIN}, "bpf+net_admin": {Cap.BPF, Cap.NET_ADMIN}}[caps]
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        disabled = int(f.read())
    fake = FakeBackend(Kernel(creds=Creds(uid=0, caps=frozenset(capset)),
                              sysctls={"kernel.unprivileged_bpf_disabled": disabled}))
    got_fake = _priv_scenario(fake)
    fake.cleanup()
    assert got_fake == _host_with_caps(capset)
