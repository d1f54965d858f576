"""Sockets in known states on either backend, and helpers for the socket-holding maps
(SOCKMAP, SOCKHASH, REUSEPORT_SOCKARRAY, SK_STORAGE) differential tests.

`make_sock(b, kind)` returns the fd of a socket in the state `kind` names (every fd it
opens is tracked by the backend, so teardown closes them).  `Cookies` renames socket
cookies by order of first appearance: real cookies come from a machine-wide counter.
"""
from __future__ import annotations

import socket

from uapi.bpf import BpfCmd
from uapi.calls import raw

__all__ = ["SOCK_KINDS", "make_sock", "Cookies", "elem_update", "elem_lookup", "elem_delete",
           "next_key", "u32", "LOCALHOST", "close_from", "memlock", "eventually"]

LOCALHOST = "127.0.0.1"
SOL_SOCKET, SO_REUSEPORT = socket.SOL_SOCKET, socket.SO_REUSEPORT


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _tcp(b, family=socket.AF_INET, reuseport=False, bind=True):
    fd = b.socket(family, socket.SOCK_STREAM)
    if reuseport:
        assert b.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) == 0
    if bind:
        assert b.bind(fd, (LOCALHOST, 0) if family == socket.AF_INET else ("::1", 0)) == 0
    return fd


def _listener(b, family=socket.AF_INET, reuseport=False):
    fd = _tcp(b, family, reuseport)
    assert b.listen(fd) == 0
    return fd


def _conn(b):
    """(client, listener, accepted) of one loopback TCP connection."""
    lst = _listener(b)
    cl = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert b.connect(cl, b.getsockname(lst)) == 0
    acc = b.accept(lst)
    assert acc >= 0
    return cl, lst, acc


def _udp(b, family=socket.AF_INET, reuseport=False, bind=True):
    fd = b.socket(family, socket.SOCK_DGRAM)
    if reuseport:
        assert b.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) == 0
    if bind:
        assert b.bind(fd, (LOCALHOST, 0) if family == socket.AF_INET else ("::1", 0)) == 0
    return fd


def _close_wait(b):
    cl, _, acc = _conn(b)
    b.close(cl)
    return acc


def _tcp_client_reuseport(b):
    lst = _listener(b)
    fd = _tcp(b, reuseport=True, bind=False)
    assert b.connect(fd, b.getsockname(lst)) == 0
    return fd


def _udp_late_reuseport(b):
    """SO_REUSEPORT set after bind: the socket is in no reuseport group."""
    fd = _udp(b)
    assert b.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) == 0
    return fd


def _udp_connected(b):
    srv = _udp(b)
    fd = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert b.connect(fd, b.getsockname(srv)) == 0
    return fd


SOCK_KINDS = {
    "tcp_fresh": lambda b: _tcp(b, bind=False),
    "tcp_bound": lambda b: _tcp(b),
    "tcp_bound_reuseport": lambda b: _tcp(b, reuseport=True),
    "tcp_listen": lambda b: _listener(b),
    "tcp_listen_reuseport": lambda b: _listener(b, reuseport=True),
    "tcp6_listen_reuseport": lambda b: _listener(b, socket.AF_INET6, reuseport=True),
    "tcp_client": lambda b: _conn(b)[0],
    "tcp_accepted": lambda b: _conn(b)[2],
    "tcp_close_wait": _close_wait,
    "udp_fresh": lambda b: _udp(b, bind=False),
    "udp_bound": lambda b: _udp(b),
    "udp_bound_reuseport": lambda b: _udp(b, reuseport=True),
    "udp6_bound_reuseport": lambda b: _udp(b, socket.AF_INET6, reuseport=True),
    "udp_connected": _udp_connected,
    "tcp_client_reuseport": _tcp_client_reuseport,
    "udp_late_reuseport": _udp_late_reuseport,
    "unix_stream_pair": lambda b: b.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)[0],
    "unix_dgram_pair": lambda b: b.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0],
    "unix_seqpacket_pair": lambda b: b.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)[0],
    "unix_stream_fresh": lambda b: b.socket(socket.AF_UNIX, socket.SOCK_STREAM),
    "unix_dgram_fresh": lambda b: b.socket(socket.AF_UNIX, socket.SOCK_DGRAM),
    "raw_udp": lambda b: b.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP),
}


def make_sock(b, kind: str) -> int:
    return SOCK_KINDS[kind](b)


class Cookies:
    """Cookie values → 'c0', 'c1', ... in order of first appearance."""

    def __init__(self):
        self.names: dict[int, str] = {}

    def __call__(self, value: bytes | int):
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(value, "little")
        if value == 0:
            return 0
        return self.names.setdefault(value, f"c{len(self.names)}")


def elem_update(b, map_fd: int, key: bytes, value: bytes, flags: int = 0) -> int:
    ret, _ = raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=map_fd, key=key, value=value,
                 flags=flags)
    return ret


def elem_lookup(b, map_fd: int, key: bytes, value_size: int) -> tuple[int, bytes]:
    out = bytearray(value_size)
    ret, _ = raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=map_fd, key=key, value=out)
    return ret, bytes(out)


def elem_delete(b, map_fd: int, key: bytes) -> int:
    ret, _ = raw(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=map_fd, key=key)
    return ret


def next_key(b, map_fd: int, key: bytes | None, key_size: int) -> tuple[int, bytes]:
    out = bytearray(key_size)
    ret, _ = raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=map_fd, key=key or 0,
                 next_key=out)
    return ret, bytes(out)


def close_from(b, mark: int) -> None:
    """Close every fd the backend got since ``len(b.fds) == mark`` (newest first)."""
    for fd in reversed(b.fds[mark:]):
        b.close(fd)


def memlock(b, fd: int) -> int:
    """fdinfo's memlock: the map's bpf_map_memory_usage()."""
    kern = getattr(b, "kern", None)
    if kern is not None:
        return kern.current.files.fdget(fd).private_data.memlock
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise AssertionError("no memlock in fdinfo")


def eventually(fn, transient: int, timeout: float = 5.0):
    """fn() until it stops answering `transient` (a -errno): what a real kernel shows once a
    deferred free (a closed map's map_free runs from a workqueue) has happened."""
    import time
    deadline = time.monotonic() + timeout
    ret = fn()
    while ret == transient and time.monotonic() < deadline:
        time.sleep(0.01)
        ret = fn()
    return ret
