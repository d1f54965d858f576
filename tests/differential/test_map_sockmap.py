"""SOCKMAP and SOCKHASH, fakekernel vs the real kernel: creation matrix, which sockets in
which states an update accepts (and the errno otherwise), cookies from lookups, the
EXIST/NOEXIST rules, sockets leaving maps when closed or reset, sockhash iteration order
and capacity, and a hypothesis lockstep machine over random socket/map operations."""
from __future__ import annotations

import socket

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from sockutil import (SOCK_KINDS, Cookies, close_from, elem_delete, elem_lookup, elem_update,
                      eventually, make_sock, memlock, next_key, u32)
from uapi import calls
from uapi.bpf import AttachType, BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import raw
from uapi.errno import Errno
from maputil import both_equal

pytestmark = pytest.mark.differential

SM, SH = MapType.SOCKMAP, MapType.SOCKHASH
LAST = "excl_prog_hash_size"


def create(b, map_type, key_size=4, value_size=8, max_entries=4, **kw) -> int:
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, **kw)
    return ret


# ------------------------------------------------------------------ creation

CREATE_CASES = [
    (4, 4, 1, 0), (4, 8, 1, 0), (4, 0, 1, 0), (4, 2, 1, 0), (4, 16, 1, 0), (0, 8, 1, 0),
    (8, 8, 1, 0), (2, 8, 1, 0), (64, 8, 1, 0), (512, 8, 1, 0), (513, 8, 1, 0), (513, 3, 1, 0),
    (4, 8, 0, 0), (4, 8, 1 << 16, 0), ((4, 8, (1 << 27) + 1, 0)), (4, 8, 1, MapFlags.NO_PREALLOC),
    (4, 8, 1, MapFlags.NUMA_NODE), (4, 8, 1, MapFlags.RDONLY), (4, 8, 1, MapFlags.WRONLY),
    (4, 8, 1, MapFlags.RDONLY_PROG), (4, 8, 1, MapFlags.WRONLY_PROG), (4, 8, 1, MapFlags.MMAPABLE),
    (4, 8, 1, MapFlags.ZERO_SEED), (4, 8, 1, MapFlags.INNER_MAP), (4, 8, 1, 1 << 20),
]


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_map_create_matrix(both, map_type, case):
    key_size, value_size, max_entries, flags = case

    def scenario(b):
        fd = create(b, map_type, key_size, value_size, max_entries, map_flags=flags)
        if fd < 0:
            return fd
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
               memlock(b, fd))
        b.close(fd)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ update: who may go in

@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
@pytest.mark.parametrize("value_size", [4, 8])
@pytest.mark.parametrize("kind", list(SOCK_KINDS))
def test_map_update_socket_kinds(both, map_type, value_size, kind):
    """TCP established/listening, hashed UDP, unix dgram and established unix stream go in;
    anything else EOPNOTSUPP.  Lookup gives the cookie (8-byte values) or ENOSPC."""
    def scenario(b):
        mark, ck = len(b.fds), Cookies()
        m = create(b, map_type, value_size=value_size)
        fd = make_sock(b, kind)
        out = [elem_update(b, m, u32(0), fd.to_bytes(value_size, "little"))]
        ret, val = elem_lookup(b, m, u32(0), value_size)
        out += [ret, ck(val) if ret == 0 else None, elem_delete(b, m, u32(0)),
                elem_lookup(b, m, u32(0), value_size)[0]]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
@pytest.mark.parametrize("value_size", [4, 8])
def test_map_update_bad_fds(both, map_type, value_size):
    """Not a socket: ENOTSOCK; no such fd: EBADF; an fd above S32_MAX: EINVAL."""
    def scenario(b):
        mark = len(b.fds)
        m = create(b, map_type, value_size=value_size)
        other = create(b, MapType.ARRAY, 4, 4, 1)
        out = [elem_update(b, m, u32(0), v.to_bytes(value_size, "little"))
               for v in (other, 999, 0xFFFFFFFF, 1 << 31)]
        if value_size == 8:
            out.append(elem_update(b, m, u32(0), (1 << 33).to_bytes(8, "little")))
        # errno precedence: a bad fd wins over bad flags and an out-of-range key
        out.append(elem_update(b, m, u32(100), (999).to_bytes(value_size, "little"), 7))
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_map_update_flags_exist_noexist(both, map_type):
    def scenario(b):
        mark, ck = len(b.fds), Cookies()
        m = create(b, map_type, max_entries=2)
        a, c = make_sock(b, "udp_bound"), make_sock(b, "udp_bound")
        val = lambda fd: fd.to_bytes(8, "little")   # noqa: E731
        out = [elem_update(b, m, u32(0), val(a), UpdateFlags.EXIST),
               elem_update(b, m, u32(0), val(a), UpdateFlags.NOEXIST),
               elem_update(b, m, u32(0), val(c), UpdateFlags.NOEXIST),
               elem_update(b, m, u32(0), val(c), UpdateFlags.EXIST),
               elem_update(b, m, u32(0), val(a), UpdateFlags.F_LOCK),
               elem_update(b, m, u32(0), val(a), 3),
               elem_update(b, m, u32(5), val(a), 0)]
        out += [ck(elem_lookup(b, m, u32(0), 8)[1]), ck(elem_lookup(b, m, u32(5), 8)[1])]
        # the same socket in two slots, then delete one slot
        out += [elem_update(b, m, u32(1), val(c)), elem_delete(b, m, u32(0)),
                elem_lookup(b, m, u32(1), 8)[0], elem_delete(b, m, u32(0)),
                elem_delete(b, m, u32(7))]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ sockets leaving maps

@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_map_socket_close_removes_from_every_map(both, map_type):
    def scenario(b):
        mark = len(b.fds)
        m1, m2 = create(b, map_type), create(b, map_type)
        fd = make_sock(b, "tcp_listen")
        keep = make_sock(b, "udp_bound")
        out = [elem_update(b, m1, u32(1), fd.to_bytes(8, "little")),
               elem_update(b, m2, u32(2), fd.to_bytes(8, "little")),
               elem_update(b, m1, u32(3), keep.to_bytes(8, "little"))]
        dup = b.dup(fd)
        b.close(fd)                    # the dup keeps the socket open
        out += [elem_lookup(b, m1, u32(1), 8)[0], elem_lookup(b, m2, u32(2), 8)[0]]
        b._close(dup)
        out += [elem_lookup(b, m1, u32(1), 8)[0], elem_lookup(b, m2, u32(2), 8)[0],
                elem_lookup(b, m1, u32(3), 8)[0]]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_map_tcp_peer_close_and_reset(both, map_type):
    """A peer's FIN leaves the socket in the map (CLOSE_WAIT, no new updates); a listener
    closed with an unaccepted connection resets its client, which leaves the map."""
    def scenario(b):
        mark = len(b.fds)
        m = create(b, map_type)
        val = lambda fd: fd.to_bytes(8, "little")   # noqa: E731
        cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst = make_sock(b, "tcp_listen")
        assert b.connect(cl, b.getsockname(lst)) == 0
        acc = b.accept(lst)
        out = [elem_update(b, m, u32(0), val(acc)), elem_update(b, m, u32(1), val(cl))]
        b.close(cl)
        out += [elem_lookup(b, m, u32(0), 8)[0], elem_lookup(b, m, u32(1), 8)[0],
                elem_update(b, m, u32(2), val(acc))]
        lst2 = make_sock(b, "tcp_listen")
        cl2 = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        assert b.connect(cl2, b.getsockname(lst2)) == 0
        out += [elem_update(b, m, u32(3), val(cl2)), elem_lookup(b, m, u32(3), 8)[0]]
        b.close(lst2)
        out += [elem_lookup(b, m, u32(3), 8)[0], elem_update(b, m, u32(3), val(cl2))]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_free_releases_sockets(both):
    """Closing the map lets its sockets go into a reuseport array (sk_user_data free)."""
    def scenario(b):
        mark = len(b.fds)
        fd = make_sock(b, "tcp_listen_reuseport")
        sm = create(b, SM)
        ra = create(b, MapType.REUSEPORT_SOCKARRAY)
        val = fd.to_bytes(8, "little")
        out = [elem_update(b, sm, u32(0), val), elem_update(b, ra, u32(0), val)]
        b.close(sm)                 # sock_map_free (deferred in the kernel) drops the psock
        out.append(eventually(lambda: elem_update(b, ra, u32(0), val), -Errno.EBUSY))
        out.append(elem_update(b, create(b, SH), u32(0), val))    # now the array holds it
        close_from(b, mark)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ iteration, capacity

@pytest.mark.parametrize("key_size", [4, 8, 13])
def test_sockhash_get_next_key_order(both, key_size):
    """jhash with seed 0 and head insertion: the walk order is reproducible."""
    def scenario(b):
        mark = len(b.fds)
        m = create(b, SH, key_size=key_size, max_entries=16)
        fd = make_sock(b, "udp_bound")
        keys = [(i * 2654435761 % (1 << 32)).to_bytes(4, "little").ljust(key_size, b"k")
                for i in range(16)]
        out = [elem_update(b, m, k, fd.to_bytes(8, "little")) for k in keys]
        out.append(elem_update(b, m, b"x" * key_size, fd.to_bytes(8, "little")))   # full
        out.append(elem_update(b, m, keys[3], fd.to_bytes(8, "little")))            # replace
        walk, key = [], None
        while True:
            ret, nxt = next_key(b, m, key, key_size)
            if ret:
                walk.append(ret)
                break
            walk.append(nxt)
            key = nxt
        out.append(walk)
        out.append(next_key(b, m, b"\xff" * key_size, key_size))     # unknown key: first
        out.append(memlock(b, m))
        out += [elem_delete(b, m, keys[0]), elem_delete(b, m, keys[0]), memlock(b, m)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_sockmap_get_next_key(both):
    def scenario(b):
        m = create(b, SM, max_entries=3)
        out = [next_key(b, m, k, 4) for k in (None, u32(0), u32(1), u32(2), u32(3), u32(99))]
        b.close(m)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_map_other_commands_enotsupp(both, map_type):
    """No lookup-and-delete, no batch ops; freeze works and makes updates EPERM."""
    def scenario(b):
        mark = len(b.fds)
        m = create(b, map_type)
        fd = make_sock(b, "udp_bound")
        out = [elem_update(b, m, u32(0), fd.to_bytes(8, "little"))]
        out.append(raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=m, key=u32(0),
                       value=bytearray(8))[0])
        keys, vals = bytearray(64), bytearray(64)
        for cmd in (BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH):
            out.append(raw(b, cmd, "batch.flags", batch__map_fd=m, batch__keys=keys,
                           batch__values=vals, batch__count=1)[0])
        out.append(raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=m)[0])
        out.append(elem_update(b, m, u32(1), fd.to_bytes(8, "little")))
        out.append(elem_delete(b, m, u32(0)))
        close_from(b, mark)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ lockstep machine

MACHINE_KINDS = ["tcp_listen", "tcp_listen_reuseport", "tcp_client", "udp_bound",
                 "udp_bound_reuseport", "unix_stream_pair", "unix_dgram_fresh", "tcp_fresh",
                 "unaccepted", "udp_connected", "unix_dgram_pair", "tcp6_listen_reuseport"]
SOCKMAP_ATTACH_TYPES = [AttachType.SK_MSG_VERDICT, AttachType.SK_SKB_STREAM_PARSER,
                        AttachType.SK_SKB_STREAM_VERDICT, AttachType.SK_SKB_VERDICT]
# (map type, key size, value size): sockmap, sockmap with u32 values (lookups ENOSPC),
# sockhash with 8-byte keys, reuseport array
MACHINE_MAPS = [(SM, 4, 8), (SM, 4, 4), (SH, 8, 8), (MapType.REUSEPORT_SOCKARRAY, 4, 8)]


def _unaccepted(b) -> int:
    """A client whose connection waits in a listener's accept queue."""
    lst = make_sock(b, "tcp_listen")
    cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert b.connect(cl, b.getsockname(lst)) == 0
    return cl


class SocketMapsLockstep(RuleBasedStateMachine):
    """Random socket creation/close and map ops on both kernels; every result compared."""

    @initialize()
    def setup(self):
        from backends import FakeBackend, HostBackend
        self.backends = (FakeBackend(), HostBackend())
        self.cookies = (Cookies(), Cookies())
        self.maps = [tuple(create(b, mt, ks, vs, 3) for b in self.backends)
                     for mt, ks, vs in MACHINE_MAPS]
        self.socks = []                 # (fake fd, host fd) of every socket made
        # one SK_SKB and one SK_MSG program per backend, for the attach rules
        from uapi.bpf import ProgType
        from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns
        ret1 = assemble_insns([BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN()])
        self.progs = {t: tuple(calls.prog_load(b, t, ret1) for b in self.backends)
                      for t in (ProgType.SK_SKB, ProgType.SK_MSG)}

    @staticmethod
    def _key(m: int, key: int) -> bytes:
        return key.to_bytes(MACHINE_MAPS[m][1], "little")

    def _both(self, fn):
        got = tuple(fn(b, i) for i, b in enumerate(self.backends))
        assert got[0] == got[1]
        return got[0]

    @rule(kind=st.sampled_from(MACHINE_KINDS))
    def new_socket(self, kind):
        marks = [len(b.fds) for b in self.backends]
        for b in self.backends:
            _unaccepted(b) if kind == "unaccepted" else make_sock(b, kind)
        new = [b.fds[m:] for b, m in zip(self.backends, marks)]
        assert len(new[0]) == len(new[1])
        self.socks.extend(zip(*new))

    @rule(i=st.integers(0, 30))
    def close_socket(self, i):
        if not self.socks:
            return
        pair = self.socks.pop(i % len(self.socks))
        self._both(lambda b, j: b.close(pair[j]))

    @rule(i=st.integers(0, 30))
    def dup_then_close(self, i):
        """The socket lives on through a dup: closing one fd leaves it in its maps."""
        if not self.socks:
            return
        k = i % len(self.socks)
        old = self.socks[k]
        self.socks[k] = tuple(b.dup(fd) for b, fd in zip(self.backends, old))
        for b, fd in zip(self.backends, self.socks[k]):
            b.fds.append(fd)
        self._both(lambda b, j: b.close(old[j]))

    @rule(m=st.integers(0, 3), key=st.integers(0, 3), i=st.integers(-1, 30),
          flags=st.sampled_from([0, 1, 2, 3]))
    def update(self, m, key, i, flags):
        pairs = self.socks
        vs = MACHINE_MAPS[m][2]

        def go(b, j):
            fd = pairs[i % len(pairs)][j] if pairs and i >= 0 else 999
            return elem_update(b, self.maps[m][j], self._key(m, key), fd.to_bytes(vs, "little"),
                               flags)
        self._both(go)

    @rule(m=st.integers(0, 3), atype=st.sampled_from(SOCKMAP_ATTACH_TYPES),
          detach=st.booleans())
    def attach_prog(self, m, atype, detach):
        """PROG_ATTACH/DETACH of an SK_SKB/SK_MSG program with the map as target: later
        socket updates take the map's programs (EBUSY / EOPNOTSUPP cases)."""
        from uapi.bpf import ProgType
        ptype = ProgType.SK_MSG if atype == AttachType.SK_MSG_VERDICT else ProgType.SK_SKB
        cmd = BpfCmd.PROG_DETACH if detach else BpfCmd.PROG_ATTACH
        self._both(lambda b, j: raw(b, cmd, None, target_fd=self.maps[m][j],
                                    attach_bpf_fd=self.progs[ptype][j], attach_type=atype)[0])

    @rule(m=st.integers(0, 3), key=st.integers(0, 3))
    def delete(self, m, key):
        self._both(lambda b, j: elem_delete(b, self.maps[m][j], self._key(m, key)))

    @rule(m=st.integers(0, 3), key=st.integers(0, 3))
    def lookup(self, m, key):
        vs = MACHINE_MAPS[m][2]

        def go(b, j):
            ret, val = elem_lookup(b, self.maps[m][j], self._key(m, key), vs)
            return ret, self.cookies[j](val) if ret == 0 else None
        self._both(go)

    @rule(m=st.integers(0, 3), key=st.one_of(st.none(), st.integers(0, 3)))
    def get_next_key(self, m, key):
        ks = MACHINE_MAPS[m][1]
        self._both(lambda b, j: next_key(b, self.maps[m][j],
                                         None if key is None else self._key(m, key), ks))

    def teardown(self):
        for b in getattr(self, "backends", ()):
            for fd in reversed(list(b.fds)):
                b.close(fd)
            assert not b.cleanup()


def test_socket_maps_lockstep(both):
    SocketMapsLockstep.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                                    deadline=None)
    SocketMapsLockstep.TestCase().runTest()


# ------------------------------------------------------------------ program side

def _delete_prog(m, key: int):
    """return bpf_map_delete_elem(m, &key)."""
    from uapi.bpf import BPF_W, FuncId
    from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_MAP_FD,
                           BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM)
    return [BPF_MOV64_IMM(1, key), BPF_STX_MEM(BPF_W, 10, 1, -4), *BPF_LD_MAP_FD(1, m),
            BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(0x00, 2, -4),
            BPF_CALL_HELPER(FuncId.map_delete_elem), BPF_EXIT_INSN()]


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_prog_test_run_map_delete_elem(both, map_type):
    """tc and XDP programs may delete from socket maps (sock_map_delete_elem: EINVAL for an
    empty sockmap slot or an index past the end, ENOENT for a missing sockhash key)."""
    from uapi.bpf import ProgType
    from uapi.insn import assemble_insns
    frame = bytes(12) + b"\x08\x00" + bytes(50)

    def scenario(b):
        mark = len(b.fds)
        m = create(b, map_type, max_entries=2)
        fd = make_sock(b, "udp_bound")
        out = [elem_update(b, m, u32(0), fd.to_bytes(8, "little"))]
        for pt in (ProgType.SCHED_CLS, ProgType.XDP):
            for key in (0, 1, 7):
                r = calls.prog_load(b, pt, assemble_insns(_delete_prog(m, key)), strict=False)
                assert r.ret >= 0, r.log
                ret, a = raw(b, BpfCmd.PROG_TEST_RUN, None, test__prog_fd=r.ret,
                             test__data_in=frame, test__data_size_in=len(frame))
                out += [ret, a.get("test.retval"), elem_lookup(b, m, u32(0), 8)[0]]
                b.close(r.ret)
            out.append(elem_update(b, m, u32(0), fd.to_bytes(8, "little")))
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("map_type", [SM, SH, MapType.REUSEPORT_SOCKARRAY],
                         ids=["sockmap", "sockhash", "reuseport"])
def test_map_create_btf_and_inner_map(both, map_type):
    """BTF key/value types are refused (map_check_no_btf: ENOTSUPP, reuseport arrays take
    them); as an inner map template the type is accepted by map-in-maps or not."""
    from btfutil import BtfWriter, btf_load

    def scenario(b):
        w = BtfWriter()
        i32 = w.int_("int", 4, encoding=1)
        u64 = w.int_("u64", 8)
        btf = btf_load(b, w.blob()).ret
        m = create(b, map_type, btf_fd=btf, btf_key_type_id=i32, btf_value_type_id=u64)
        out = [m if m < 0 else "ok"]
        if m >= 0:
            b.close(m)
        inner = create(b, map_type)
        for outer in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            o = create(b, outer, 4, 4, 2, inner_map_fd=inner)
            out.append(o if o < 0 else "ok")
            if o >= 0:
                out.append(elem_update(b, o, u32(0), inner.to_bytes(4, "little")))
                b.close(o)
        b.close(inner)
        b.close(btf)
        return out
    both_equal(both, scenario)
