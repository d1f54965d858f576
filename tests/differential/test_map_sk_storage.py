"""SK_STORAGE (net/core/bpf_sk_storage.c), fakekernel vs the real kernel: the local-storage
creation matrix, socket-fd keys (EBADF / ENOTSOCK), values living and dying with their
socket, BPF_F_CLONE copies to accepted connections, the optmem_max charge (ENOMEM),
random op sequences in lockstep, and bpf_sk_storage_get/delete from test runs."""
from __future__ import annotations

import socket

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from btfutil import BtfWriter, btf_load
from sockutil import close_from, make_sock
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from maputil import both_equal

pytestmark = pytest.mark.differential

SK = MapType.SK_STORAGE
NP = MapFlags.NO_PREALLOC
VS = 8
MAX_VALUE = 65535 - 128


def sk_map(b, value_size=VS, flags=NP) -> int:
    """An SK_STORAGE map with an int key and a char[value_size] value."""
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    arr = w.array(w.int_("char", 1), i, value_size)
    btf = btf_load(b, w.blob()).ret
    assert btf >= 0
    m = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=SK, key_size=4, value_size=value_size,
                  max_entries=0, map_flags=flags, btf_fd=btf, btf_key_type_id=i,
                  btf_value_type_id=arr)[0]
    b.close(btf)
    return m


def k(fd: int) -> bytes:
    return fd.to_bytes(4, "little", signed=True)


def lookup(b, m, fd, vs=VS):
    out = bytearray(b"\xee" * vs)
    r = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=k(fd), value=out)[0]
    return r if r < 0 else bytes(out)


def update(b, m, fd, val: bytes, flags=0):
    return calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=m, key=k(fd), value=val,
                     flags=flags)[0]


def delete(b, m, fd):
    return calls.raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=m, key=k(fd))[0]


CREATE_CASES = {
    "ok": {}, "clone": dict(flags=NP | MapFlags.CLONE), "prealloc": dict(flags=0),
    "rdonly_prog": dict(flags=NP | MapFlags.RDONLY_PROG),
    "numa": dict(flags=NP | MapFlags.NUMA_NODE),
    "max_entries": dict(n=1), "key8": dict(ks=8), "vs0": dict(vs=0), "no_btf": dict(kid=0, vid=0),
    "no_key_id": dict(kid=0), "vs_max": dict(vs=MAX_VALUE), "vs_max_plus1": dict(vs=MAX_VALUE + 1),
    "vs_mismatch": dict(vs=4, vs_btf=VS), "key_u64": dict(kid="u64"), "bad_value_id": dict(vid=99),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_sk_storage(both, case):
    kw = CREATE_CASES[case]

    def scenario(b):
        vs = kw.get("vs", VS)
        w = BtfWriter()
        t = {"int": w.int_("int", 4, encoding=1), "u64": w.int_("u64", 8)}
        t["val"] = w.array(w.int_("char", 1), t["int"], kw.get("vs_btf", vs) or 1)
        btf = btf_load(b, w.blob()).ret
        kid, vid = kw.get("kid", "int"), kw.get("vid", "val")
        fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=SK, key_size=kw.get("ks", 4),
                       value_size=vs, max_entries=kw.get("n", 0), map_flags=kw.get("flags", NP),
                       btf_fd=btf, btf_key_type_id=t.get(kid, kid),
                       btf_value_type_id=t.get(vid, vid))[0]
        out = fd
        if fd >= 0:
            info = calls.obj_get_info_by_fd(b, fd, "map")[0]
            out = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
            b.close(fd)
        b.close(btf)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("kind", ["tcp_fresh", "tcp_listen", "tcp_client", "udp_bound",
                                  "unix_stream_pair", "unix_dgram_fresh", "raw_udp"])
def test_map_sk_storage_syscall_ops(both, kind):
    def scenario(b):
        mark = len(b.fds)
        m = sk_map(b)
        fd = make_sock(b, kind)
        out = [lookup(b, m, fd), delete(b, m, fd), update(b, m, fd, b"A" * VS, UpdateFlags.EXIST),
               update(b, m, fd, b"B" * VS, UpdateFlags.NOEXIST), lookup(b, m, fd),
               update(b, m, fd, b"C" * VS, UpdateFlags.NOEXIST),
               update(b, m, fd, b"D" * VS, UpdateFlags.EXIST), lookup(b, m, fd),
               update(b, m, fd, b"E" * VS, UpdateFlags.F_LOCK), update(b, m, fd, b"F" * VS, 4),
               update(b, m, fd, b"G" * VS), lookup(b, m, fd),
               calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=m, key=k(fd),
                         next_key=bytearray(4))[0],
               calls.raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=m, key=k(fd),
                         value=bytearray(VS))[0],
               delete(b, m, fd), delete(b, m, fd), lookup(b, m, fd)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_sk_storage_bad_keys(both):
    def scenario(b):
        mark = len(b.fds)
        m = sk_map(b)
        arr = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = []
        for fd in (arr, 999, -1, 0x7FFFFFFF):
            out += [lookup(b, m, fd), update(b, m, fd, b"x" * VS), delete(b, m, fd)]
        out.append(update(b, m, 999, b"x" * VS, 8))        # bad flags vs bad fd: EBADF first
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_sk_storage_dies_with_socket(both):
    """A closed socket's values go; a new socket that gets the same fd starts empty.  Values
    live on the socket, not the fd: a dup sees them."""
    def scenario(b):
        mark = len(b.fds)
        m1, m2 = sk_map(b), sk_map(b)
        fd = make_sock(b, "udp_bound")
        out = [update(b, m1, fd, b"1" * VS), update(b, m2, fd, b"2" * VS)]
        dup = b.dup(fd)
        out += [lookup(b, m1, dup), lookup(b, m2, dup)]
        b._close(dup)
        b.close(fd)
        fd2 = make_sock(b, "udp_bound")
        out += [fd2 == fd, lookup(b, m1, fd2), lookup(b, m2, fd2)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_sk_storage_clone_on_accept(both):
    """BPF_F_CLONE maps' values are copied to connections a listener accepts; others not."""
    def scenario(b):
        mark = len(b.fds)
        plain, clone = sk_map(b), sk_map(b, flags=NP | MapFlags.CLONE)
        lst = make_sock(b, "tcp_listen")
        out = [update(b, plain, lst, b"P" * VS), update(b, clone, lst, b"C" * VS)]
        cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        assert b.connect(cl, b.getsockname(lst)) == 0
        acc = b.accept(lst)
        out += [lookup(b, plain, acc), lookup(b, clone, acc), lookup(b, clone, cl),
                update(b, clone, acc, b"c" * VS), lookup(b, clone, lst), lookup(b, clone, acc)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_map_sk_storage_optmem_charge(both):
    """Each element is charged to the socket's option memory (net.core.optmem_max): a second
    large element does not fit; a replace allocates before freeing; a delete uncharges."""
    def scenario(b):
        mark = len(b.fds)
        big1, big2 = sk_map(b, MAX_VALUE), sk_map(b, 65344)
        over, small = sk_map(b, 65345), sk_map(b, 60000)
        fd = make_sock(b, "udp_bound")
        out = [update(b, big1, fd, bytes(MAX_VALUE)), update(b, over, fd, bytes(65345)),
               update(b, big1, fd, bytes(MAX_VALUE)),
               update(b, big1, fd, bytes(MAX_VALUE), UpdateFlags.NOEXIST),
               update(b, small, fd, bytes(60000), UpdateFlags.EXIST),
               update(b, big2, fd, bytes(65344)), update(b, small, fd, bytes(60000))]
        # (a closed map uncharges only when its deferred free runs: not compared)
        out.append(delete(b, big2, fd))
        out.append(update(b, small, fd, bytes(60000)))
        out.append(delete(b, big1, fd))
        out.append(update(b, over, fd, bytes(65345)))
        close_from(b, mark)
        return out
    both_equal(both, scenario)


# ------------------------------------------------------------------ lockstep

KINDS = ["tcp_fresh", "tcp_listen", "tcp_client", "udp_bound", "unix_stream_pair"]


class SkStorageLockstep(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        from backends import FakeBackend, HostBackend
        self.backends = (FakeBackend(), HostBackend())
        self.maps = [tuple(sk_map(b, flags=f) for b in self.backends)
                     for f in (NP, NP | MapFlags.CLONE)]
        self.socks = []

    def _both(self, fn):
        got = tuple(fn(b, j) for j, b in enumerate(self.backends))
        assert got[0] == got[1]

    @rule(kind=st.sampled_from(KINDS))
    def new_socket(self, kind):
        marks = [len(b.fds) for b in self.backends]
        for b in self.backends:
            make_sock(b, kind)
        self.socks.extend(zip(*[b.fds[m:] for b, m in zip(self.backends, marks)]))

    @rule(i=st.integers(0, 30))
    def accept_from(self, i):
        """Connect to and accept from socket i (a listener, or an errno)."""
        if not self.socks:
            return
        pair = self.socks[i % len(self.socks)]
        marks = [len(b.fds) for b in self.backends]

        def go(b, j):
            if b.getsockopt(pair[j], socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != b"\1\0\0\0":
                return "not listening"
            cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
            ret = b.connect(cl, b.getsockname(pair[j]))
            return ret, b.accept(pair[j]) >= 0 if ret == 0 else None
        self._both(go)
        self.socks.extend(zip(*[b.fds[m:] for b, m in zip(self.backends, marks)]))

    @rule(i=st.integers(0, 30))
    def close_socket(self, i):
        if self.socks:
            pair = self.socks.pop(i % len(self.socks))
            self._both(lambda b, j: b.close(pair[j]))

    @rule(m=st.integers(0, 1), i=st.integers(0, 30), v=st.binary(min_size=VS, max_size=VS),
          flags=st.sampled_from([0, 1, 2, 3]))
    def do_update(self, m, i, v, flags):
        if self.socks:
            pair = self.socks[i % len(self.socks)]
            self._both(lambda b, j: update(b, self.maps[m][j], pair[j], v, flags))

    @rule(m=st.integers(0, 1), i=st.integers(0, 30))
    def do_lookup(self, m, i):
        if self.socks:
            pair = self.socks[i % len(self.socks)]
            self._both(lambda b, j: lookup(b, self.maps[m][j], pair[j]))

    @rule(m=st.integers(0, 1), i=st.integers(0, 30))
    def do_delete(self, m, i):
        if self.socks:
            pair = self.socks[i % len(self.socks)]
            self._both(lambda b, j: delete(b, self.maps[m][j], pair[j]))

    def teardown(self):
        for b in getattr(self, "backends", ()):
            for fd in reversed(list(b.fds)):
                b.close(fd)
            assert not b.cleanup()


def test_map_sk_storage_lockstep(both):
    SkStorageLockstep.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                                   deadline=None)
    SkStorageLockstep.TestCase().runTest()


# ------------------------------------------------------------------ program side (PROG_TEST_RUN)

def _sk_prog(m, op, flags=1, null_check=True):
    """r2 = skb->sk (88 if NULL); get: v = bpf_sk_storage_get(m, sk, NULL, flags), 99 if NULL,
    else return ++*(u32 *)v; del: return bpf_sk_storage_delete(m, sk)."""
    from uapi.bpf import BPF_DW, BPF_JNE, BPF_W, FuncId
    from uapi.ffi import ffi
    from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM,
                           BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_STX_MEM)
    pre = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_DW, 2, 6, ffi.offsetof("struct __sk_buff", "sk"))]
    if null_check:
        pre += [BPF_JMP_IMM(BPF_JNE, 2, 0, 2), BPF_MOV64_IMM(0, 88), BPF_EXIT_INSN()]
    pre += [*BPF_LD_MAP_FD(1, m)]
    if op == "del":
        return pre + [BPF_CALL_HELPER(FuncId.sk_storage_delete), BPF_EXIT_INSN()]
    return pre + [
        BPF_MOV64_IMM(3, 0), BPF_MOV64_IMM(4, flags), BPF_CALL_HELPER(FuncId.sk_storage_get),
        BPF_JMP_IMM(BPF_JNE, 0, 0, 2), BPF_MOV64_IMM(0, 99), BPF_EXIT_INSN(),
        BPF_LDX_MEM(BPF_W, 1, 0, 0), BPF_ALU64_IMM(0x00, 1, 1), BPF_STX_MEM(BPF_W, 0, 1, 0),
        BPF_MOV64_REG(0, 1), BPF_EXIT_INSN()]


def _ipv4_udp_frame() -> bytes:
    ip = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1])
    return bytes(12) + b"\x08\x00" + ip + bytes(8)


def test_prog_test_run_sk_storage_helpers(both):
    """sched_cls test runs get a fresh socket per run whose storage lives across repeats:
    get with/without F_CREATE and bad flags, delete, and socket filters' refusal (they have
    no sk_storage helpers).  (Passing skb->sk unchecked for NULL is EACCES in the kernel; the
    emulated verifier does not check ARG_PTR_TO_BTF_ID_SOCK_COMMON yet.)"""
    from uapi.bpf import ProgType
    from uapi.insn import assemble_insns
    frame = _ipv4_udp_frame()

    def scenario(b):
        m = sk_map(b)
        out = []
        for pt, op, flags, null_check in (
                (ProgType.SCHED_CLS, "get", 1, True), (ProgType.SCHED_CLS, "get", 0, True),
                (ProgType.SCHED_CLS, "get", 2, True), (ProgType.SCHED_CLS, "del", 0, True),
                (ProgType.SOCKET_FILTER, "get", 1, True)):
            r = calls.prog_load(b, pt, assemble_insns(_sk_prog(m, op, flags, null_check)),
                                strict=False)
            if r.ret < 0:
                out.append(r.ret)
                continue
            for repeat in (1, 3, 1):
                ret, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, test__prog_fd=r.ret,
                                   test__data_in=frame, test__data_size_in=len(frame),
                                   test__repeat=repeat)
                out.append((ret, a.get("test.retval")))
            b.close(r.ret)
        b.close(m)
        return out
    both_equal(both, scenario)
