"""The socket syscalls of the simulated world (fakekernel/net/socket.py, af_inet, af_unix),
fakekernel vs the real kernel: socket() over families/types/protocols, bind/listen/connect/
accept/getsockname errnos and states, SOL_SOCKET options and SO_COOKIE."""
from __future__ import annotations

import socket

import pytest

from sockutil import LOCALHOST, close_from
from maputil import both_equal

pytestmark = pytest.mark.differential

SO_COOKIE = 57                  # include/uapi/asm-generic/socket.h (not in Python's socket module)

SOCK_CREATE = [(f, t, p) for f in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
               for t in (1, 2, 3, 4, 5, 6, 11) for p in (0, 1, 6, 17, 255)] + \
    [(99, 1, 0), (46, 1, 0), (socket.AF_INET, 1 | socket.SOCK_NONBLOCK, 0),
     (socket.AF_INET, 1 | socket.SOCK_CLOEXEC, 0), (socket.AF_INET, 1 | 0x100, 0)]


@pytest.mark.parametrize("args", SOCK_CREATE, ids=lambda a: "-".join(map(str, a)))
def test_socket_create_matrix(both, args):
    def scenario(b):
        fd = b.socket(*args)
        if fd < 0:
            return fd
        out = [b.getsockopt(fd, socket.SOL_SOCKET, o) for o in
               (socket.SO_TYPE, socket.SO_PROTOCOL, socket.SO_DOMAIN, socket.SO_ACCEPTCONN)]
        b.close(fd)
        return out
    both_equal(both, scenario)


def test_socket_tcp_lifecycle(both):
    def scenario(b):
        mark = len(b.fds)
        v4 = lambda port: (LOCALHOST, port)          # noqa: E731
        lst = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        out = [b.accept(lst), b.listen(lst), b.getsockopt(lst, socket.SOL_SOCKET, 30)]
        port = b.getsockname(lst)[1]
        cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        out += [b.connect(cl, v4(1)), b.connect(cl, v4(port)), b.connect(cl, v4(port)),
                b.listen(cl), b.bind(cl, v4(0)), b.connect(lst, v4(port))]
        acc = b.accept(lst)
        out += [acc >= 0, b.accept(lst), b.getsockname(acc) == b.getsockname(lst),
                b.getsockopt(acc, socket.SOL_SOCKET, socket.SO_ACCEPTCONN)]
        t = b.socket(socket.AF_INET, socket.SOCK_STREAM)
        out += [b.bind(t, v4(port)), b.bind(t, ("10.9.9.9", 0)), b.bind(t, v4(0)),
                b.bind(t, v4(0))]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_socket_reuse_rules(both):
    def scenario(b):
        mark = len(b.fds)
        out = []
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            a, c, d = (b.socket(socket.AF_INET, kind) for _ in range(3))
            for fd in (a, c):
                out.append(b.setsockopt(fd, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1))
            out.append(b.bind(a, (LOCALHOST, 0)))
            port = b.getsockname(a)[1]
            out += [b.bind(c, (LOCALHOST, port)), b.bind(d, (LOCALHOST, port)),
                    b.getsockopt(a, socket.SOL_SOCKET, socket.SO_REUSEPORT),
                    b.getsockopt(d, socket.SOL_SOCKET, socket.SO_REUSEPORT)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_socket_udp_and_unix(both):
    def scenario(b):
        mark = len(b.fds)
        u = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out = [b.listen(u), b.accept(u), b.getsockname(u), b.connect(u, (LOCALHOST, 9)),
               b.getsockname(u)[0]]
        pair = b.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out += [len(pair), b.listen(pair[0]), b.accept(pair[0])]
        d = b.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        out += [b.listen(d), b.accept(d), b.getsockopt(d, socket.SOL_SOCKET, socket.SO_TYPE)]
        out.append(b.socketpair(socket.AF_INET, socket.SOCK_STREAM))
        close_from(b, mark)
        return out
    both_equal(both, scenario)


def test_socket_cookie_and_errors(both):
    """SO_COOKIE is made on first use (and stays); bad fds/levels/options are errnos."""
    def scenario(b):
        mark = len(b.fds)
        a = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ca, cc, ca2 = (b.getsockopt(fd, socket.SOL_SOCKET, SO_COOKIE, 8) for fd in (a, c, a))
        out = [ca == ca2, int.from_bytes(cc, "little") > int.from_bytes(ca, "little"),
               b.getsockopt(a, socket.SOL_SOCKET, SO_COOKIE, 4),
               b.getsockopt(999, socket.SOL_SOCKET, socket.SO_TYPE), b.bind(999, (LOCALHOST, 0)),
               b.setsockopt(a, socket.SOL_SOCKET, socket.SO_TYPE, 1)]
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_socket_bind_dual_stack(both, kind):
    """One port table for IPv4 and IPv6: the IPv6 wildcard (dual-stack) overlaps IPv4."""
    cases = [(socket.AF_INET6, "::", socket.AF_INET, "127.0.0.1"),
             (socket.AF_INET6, "::1", socket.AF_INET, "127.0.0.1"),
             (socket.AF_INET, "127.0.0.1", socket.AF_INET6, "::"),
             (socket.AF_INET, "127.0.0.1", socket.AF_INET6, "::1"),
             (socket.AF_INET, "0.0.0.0", socket.AF_INET6, "::"),
             (socket.AF_INET6, "::", socket.AF_INET, "0.0.0.0")]

    def scenario(b):
        mark, out = len(b.fds), []
        for f1, a1, f2, a2 in cases:
            s1, s2 = b.socket(f1, kind), b.socket(f2, kind)
            out.append(b.bind(s1, (a1, 0)))
            out.append(b.bind(s2, (a2, b.getsockname(s1)[1])))
            b.close(s1)
            b.close(s2)
        close_from(b, mark)
        return out
    both_equal(both, scenario)


@pytest.mark.parametrize("prog_type", ["SCHED_CLS", "SOCKET_FILTER"])
def test_prog_test_run_get_socket_cookie(both, prog_type):
    """bpf_get_socket_cookie(skb): each test run's sock gets the next cookie of the counter
    sockets share (the same through the run's repetitions)."""
    from uapi import calls
    from uapi.bpf import BpfCmd, FuncId, ProgType
    from uapi.insn import BPF_CALL_HELPER, BPF_EXIT_INSN, assemble_insns
    frame = bytes(12) + b"\x08\x00" + bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
                                             127, 0, 0, 1, 127, 0, 0, 1]) + bytes(8)

    def scenario(b):
        r = calls.prog_load(b, ProgType[prog_type], assemble_insns(
            [BPF_CALL_HELPER(FuncId.get_socket_cookie), BPF_EXIT_INSN()]), strict=False)
        assert r.ret >= 0

        def run(repeat=1):
            ret, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, test__prog_fd=r.ret,
                               test__data_in=frame, test__data_size_in=len(frame),
                               test__repeat=repeat)
            assert ret == 0
            return a.get("test.retval")
        first = run()
        s = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mid = int.from_bytes(b.getsockopt(s, socket.SOL_SOCKET, SO_COOKIE, 8), "little")
        second, third = run(), run(3)
        b.close(s)
        b.close(r.ret)
        return [first != 0, first < (mid & 0xFFFFFFFF) < second < third]
    both_equal(both, scenario)
