"""The exec trampoline in Python — the fallback for hosts without a C compiler.

Same argv and protocol as the C trampoline in launch.py.  Runs as a script in a fresh
interpreter (never in a forked copy of the supervisor) and imports only uapi.seccomp.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from uapi.errno import Errno  # noqa: E402
from uapi.seccomp import PR_SET_NO_NEW_PRIVS, ffi, libc  # noqa: E402


def _long(v: int):
    return ffi.cast("long", v)


def main(argv: list[str]) -> int:
    if len(argv) < 11:
        sys.stderr.write("fakekernel-exec: internal use only\n")
        return 127
    sock = socket.socket(fileno=int(argv[1]))
    nr_seccomp, nr_bpf, op, flags, optional = (int(a, 0) for a in argv[2:7])
    filt = bytes.fromhex(argv[7])
    probe_cmd, probe_magic = int(argv[8], 0), int(argv[9], 0)
    buf = ffi.new("char[]", filt)
    prog = ffi.new("struct sock_fprog *")
    prog.len = len(filt) // ffi.sizeof("struct sock_filter")
    prog.filter = ffi.cast("struct sock_filter *", buf)
    z = ffi.cast("unsigned long", 0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sock.sendmsg([f"error prctl {ffi.errno}".encode()])
        return 126
    fd = libc.syscall(_long(nr_seccomp), _long(op), _long(flags), prog)
    if fd < 0 and ffi.errno == Errno.EINVAL and flags & optional:     # < 5.19: retry without
        flags &= ~optional
        fd = libc.syscall(_long(nr_seccomp), _long(op), _long(flags), prog)
    if fd < 0:
        sock.sendmsg([f"error seccomp {ffi.errno}".encode()])
        return 126
    socket.send_fds(sock, [f"listener {flags}".encode()], [fd])
    os.close(fd)
    r = libc.syscall(_long(nr_bpf), _long(probe_cmd), ffi.NULL, z)
    sock.sendmsg([f"probe {r} {ffi.errno if r < 0 else 0}".encode()])
    sock.close()
    if r != probe_magic:
        return 126                      # the supervisor explains
    try:
        os.execvp(argv[10], argv[10:])
    except OSError as e:
        sys.stderr.write(f"fakekernel run: {argv[10]}: {e.strerror}\n")
        return 127 if isinstance(e, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main(sys.argv))
