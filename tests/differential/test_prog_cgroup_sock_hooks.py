"""cgroup/sock programs FIRING, fakekernel vs the real kernel — and the harness the other
hook tests use: a process in a scratch cgroup creates, binds, connects and names sockets while
programs are attached there.

On the real kernel the process is a forked child moved into the cgroup (cgroup.procs); on
fakekernel the current task is put into the same cgroup for the duration.  Both run the same
socket operations and the results (fds as True, errnos, addresses with ports relative to the
scenario's ports) are compared.
"""
from __future__ import annotations

import os
import pickle
import socket
import uuid

import pytest

from backends import FakeBackend
from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JEQ, BPF_JNE, BPF_W, AttachType as A, BpfCmd, FuncId, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM,
                       BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM,
                       BPF_STX_MEM, assemble_insns)

pytestmark = pytest.mark.differential

CGROUP2 = "/sys/fs/cgroup/unified"
SOL_SOCKET, SO_MARK, SO_PRIORITY = 1, 36, 12


# ---------------------------------------------------------------- running inside a cgroup

class FakeOps:
    """Socket calls of the fake's current task: results as the host's (fd -> handle, -errno)."""

    def __init__(self, b):
        self.k, self.fds = b.kern, []

    def _h(self, fd):
        if isinstance(fd, int) and fd >= 0:
            self.fds.append(fd)
            return len(self.fds) - 1
        return fd

    def socket(self, family, type_):
        return self._h(self.k.socket(family, type_))

    def bind(self, h, addr):
        return self.k.bind(self.fds[h], addr)

    def listen(self, h):
        return self.k.listen(self.fds[h])

    def connect(self, h, addr):
        return self.k.connect(self.fds[h], addr)

    def getsockname(self, h):
        return self.k.getsockname(self.fds[h])

    def getpeername(self, h):
        from fakekernel.cgroup_sock_addr import inet_getname
        from fakekernel.errors import KernelError
        from fakekernel.net.socket import sockfd_lookup
        try:
            return inet_getname(self.k, sockfd_lookup(self.k.current, self.fds[h]), peer=True)
        except KernelError as e:
            return -e.errno

    def getsockopt(self, h, level, optname, optlen=4):
        r = self.k.getsockopt(self.fds[h], level, optname, optlen)
        return r if isinstance(r, int) else bytes(r)

    def setsockopt(self, h, level, optname, value):
        return self.k.setsockopt(self.fds[h], level, optname, value)

    def sk_storage_lookup(self, m, h, vs):
        return _storage_lookup(self.k, m, self.fds[h], vs)

    def close_all(self):
        for fd in self.fds:
            self.k.close(fd)


def _oserr(fn):
    try:
        return fn()
    except OSError as e:
        return -e.errno


class HostOps:
    def __init__(self):
        self.socks = []

    def socket(self, family, type_):
        s = _oserr(lambda: socket.socket(family, type_))
        if isinstance(s, int):
            return s
        self.socks.append(s)
        return len(self.socks) - 1

    def bind(self, h, addr):
        return _oserr(lambda: self.socks[h].bind(addr)) or 0

    def listen(self, h):
        return _oserr(lambda: self.socks[h].listen(16)) or 0

    def connect(self, h, addr):
        return _oserr(lambda: self.socks[h].connect(addr)) or 0

    def getsockname(self, h):
        return _oserr(lambda: self.socks[h].getsockname())

    def getpeername(self, h):
        return _oserr(lambda: self.socks[h].getpeername())

    def getsockopt(self, h, level, optname, optlen=4):
        return _oserr(lambda: self.socks[h].getsockopt(level, optname, optlen))

    def setsockopt(self, h, level, optname, value):
        return _oserr(lambda: self.socks[h].setsockopt(level, optname, value)) or 0

    def sk_storage_lookup(self, m, h, vs):
        from uapi.backend import HostKernel
        return _storage_lookup(HostKernel(), m, self.socks[h].fileno(), vs)

    def close_all(self):
        for s in self.socks:
            s.close()


def _storage_lookup(b, m, fd, vs):
    out = bytearray(vs)
    r = calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=m, key=fd.to_bytes(4, "little"), value=out)[0]
    return r if r < 0 else bytes(out)


def in_cgroup(b, path, fn):
    """fn(ops) run by a process inside the cgroup at `path`; its (picklable) result."""
    if isinstance(b, FakeBackend):
        k = b.kern
        saved, k.current.cgroup = k.current.cgroup, k.world.cgroup.lookup(path)
        ops = FakeOps(b)
        try:
            return fn(ops)
        finally:
            ops.close_all()
            k.current.cgroup = saved
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # pragma: no cover (child)
        try:
            os.close(r)
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            ops = HostOps()
            try:
                data = pickle.dumps(fn(ops))
            finally:
                ops.close_all()
        except BaseException as e:                # noqa: BLE001 - reported to the parent
            data = pickle.dumps(("child failed", repr(e)))
        os.write(w, data)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return pickle.loads(b"".join(chunks))


class Scratch:
    """A scratch cgroup with programs attached; detached, closed and removed on exit."""

    def __init__(self, b):
        self.b, self.path = b, f"{CGROUP2}/fk-{uuid.uuid4().hex[:10]}"
        self.progs, self.maps = [], []

    def __enter__(self):
        if isinstance(self.b, FakeBackend):
            self.b.kern.world.cgroup.mkdir(self.path)
        else:
            os.mkdir(self.path)
        self.fd = self.b.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return self

    def attach(self, ptype, at, insns, eat=None):
        """Load and attach (ALLOW_MULTI); returns the load result (fd or -errno) for the check."""
        r = calls.prog_load(self.b, ptype, assemble_insns(insns), log_level=1, log_size=1 << 16,
                            expected_attach_type=at if eat is None else eat, strict=False)
        assert r.ret >= 0, r.log
        self.progs.append((r.ret, at))
        ret, _ = calls.raw(self.b, BpfCmd.PROG_ATTACH, None, target_fd=self.fd, attach_bpf_fd=r.ret,
                           attach_type=at, attach_flags=1 << 1)
        assert ret == 0
        return r.ret

    def array(self, value_size, entries=1):
        from uapi.bpf import MapType
        fd = calls.map_create(self.b, MapType.ARRAY, 4, value_size, entries)
        self.maps.append(fd)
        return fd

    def run(self, fn):
        return in_cgroup(self.b, self.path, fn)

    def __exit__(self, *exc):
        for fd, at in self.progs:
            calls.raw(self.b, BpfCmd.PROG_DETACH, None, target_fd=self.fd, attach_bpf_fd=fd, attach_type=at)
            self.b.close(fd)
        for fd in self.maps:
            self.b.close(fd)
        self.b.close(self.fd)
        if isinstance(self.b, FakeBackend):
            self.b.kern.world.cgroup.rmdir(self.path)
        else:
            os.rmdir(self.path)


def free_ports(n):
    """Ports free on the host (the fake has nothing bound): the same numbers for both kernels."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def be16(port):
    """A port as the __u32 value of a network-order user_port field."""
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def set_retval(errno, verdict):
    return [BPF_MOV64_IMM(1, -errno), BPF_CALL_HELPER(FuncId.set_retval)] + ret(verdict)


SOCK = "struct bpf_sock"
SA = "struct bpf_sock_addr"


def S(field):
    return ffi.offsetof(SOCK, field)


def SAo(field):
    return ffi.offsetof(SA, field)


# ---------------------------------------------------------------- sock_create / post_bind

def _create_ops(o):
    out = [o.socket(socket.AF_INET, socket.SOCK_STREAM), o.socket(socket.AF_INET6, socket.SOCK_DGRAM),
           o.socket(socket.AF_UNIX, socket.SOCK_STREAM)]
    return [x >= 0 or x for x in out]


@pytest.mark.parametrize("name,insns", [
    ("refuse", ret(0)),
    ("allow", ret(1)),
    ("retval_eacces", set_retval(Errno.EACCES, 0)),
    ("retval_then_allow", set_retval(Errno.EACCES, 1)),
    ("retval_unnamed_errno", set_retval(4000, 0)),
    ("refuse_tcp_only", [BPF_LDX_MEM(BPF_W, 2, 1, S("protocol")), BPF_JMP_IMM(BPF_JEQ, 2, 6, 2)] + ret(1) + ret(0)),
])
def test_sock_create_verdict_in_cgroup(both, name, insns):
    """socket(2) inside the cgroup: 0 is EPERM, set_retval's errno wins even over 1, AF_UNIX
    sockets are not filtered."""
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, insns)
            out.append(cg.run(_create_ops))
    assert out[0] == out[1]


def test_sock_create_writes_mark_and_priority(both):
    insns = [BPF_MOV64_IMM(2, 42), BPF_STX_MEM(BPF_W, 1, 2, S("mark")), BPF_MOV64_IMM(2, 5),
             BPF_STX_MEM(BPF_W, 1, 2, S("priority"))] + ret(1)

    def ops(o):
        h = o.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return [o.getsockopt(h, SOL_SOCKET, SO_MARK), o.getsockopt(h, SOL_SOCKET, SO_PRIORITY)]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, insns)
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0][0] == (42).to_bytes(4, "little")


def test_post_bind4_refuses_one_port(both):
    """A post_bind4 refusal undoes the bind: the socket can bind elsewhere afterwards."""
    p1, p2 = free_ports(2)
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, S("src_port")), BPF_JMP_IMM(BPF_JNE, 2, p1, 2)] + ret(0) + ret(1)

    def ops(o):
        h = o.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = [o.bind(h, ("127.0.0.1", p1))]
        name = o.getsockname(h)
        r.append(name[1] if isinstance(name, tuple) else name)
        r.append(o.bind(h, ("127.0.0.1", p2)))
        name = o.getsockname(h)
        r.append(name[1] - p2 if isinstance(name, tuple) else name)
        return r
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND, insns)
            out.append(cg.run(ops))
    assert out[0] == out[1]
    assert out[0][0] == -Errno.EPERM


def test_sock_create_two_programs_first_retval_kept(both):
    """Effective array order: the first program's set_retval(-EACCES) stays even when the
    second refuses (an error return code is not replaced by EPERM)."""
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, set_retval(Errno.EACCES, 1))
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, ret(0))
            out.append(cg.run(_create_ops))
    assert out[0] == out[1]
    assert out[0][0] == -Errno.EACCES


def test_post_bind6_reads_src_ip6(both):
    p1, = free_ports(1)
    refuse_lo6 = [BPF_LDX_MEM(BPF_W, 2, 1, S("src_ip6") + 12), BPF_JMP_IMM(BPF_JNE, 2, 0x01000000, 2)] \
        + ret(0) + ret(1)

    def ops(o):
        s = o.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        r = [o.bind(s, ("::1", p1, 0, 0))]
        name = o.getsockname(s)
        r.append(name[1] if isinstance(name, tuple) else name)
        r.append(o.bind(s, ("::", p1, 0, 0)))
        name = o.getsockname(s)
        return r + [name[:2] == ("::", p1) if isinstance(name, tuple) else name]
    out = []
    for b in both:
        with Scratch(b) as cg:
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND, refuse_lo6)
            out.append(cg.run(ops))
    assert out[0] == out[1] == [-Errno.EPERM, 0, 0, True]


# bpf_setsockopt / bpf_getsockopt from a sock_addr program: (set?, level, optname, optlen, value)


def test_sock_release_program_counts_closed_inet_sockets(both):
    """sock_release runs when an INET socket is closed (not for AF_UNIX); its verdict is ignored."""
    out = []
    for b in both:
        with Scratch(b) as cg:
            m = cg.array(8)
            insns = [BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, m), BPF_MOV64_REG(2, 10),
                     BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem),
                     BPF_JMP_IMM(BPF_JEQ, 0, 0, 3), BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1),
                     BPF_STX_MEM(BPF_DW, 0, 1, 0)] + ret(0)
            cg.attach(ProgType.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE, insns)
            r = cg.run(_create_ops)           # the sockets close when the process is done
            out.append((r, calls.map_lookup_elem(b, m, bytes(4), 8)))
    assert out[0] == out[1] == ([True, True, True], (2).to_bytes(8, "little"))
