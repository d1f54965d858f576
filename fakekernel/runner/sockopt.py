"""Socket filters on a target's real sockets — net/core/sock.c sk_setsockopt() (SO_ATTACH_BPF,
SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_FILTER, SO_DETACH_REUSEPORT_BPF, SO_ATTACH_FILTER) and
net/core/filter.c (sk_attach_bpf, sk_reuseport_attach_bpf, sk_detach_filter).

The target's sockets are the host's; its BPF programs are the emulator's (an fd the real
kernel sees as a memfd, so it would answer EINVAL).  setsockopt(SOL_SOCKET, ...) with these
options is trapped (filter.py, by level and option):

* SO_ATTACH_BPF / SO_ATTACH_REUSEPORT_EBPF naming an emulated fd get the kernel's checks in
  its order -- SOCK_FILTER_LOCKED (read from the real socket: SO_LOCK_FILTER itself runs
  natively) -> EPERM, not a program -> EINVAL, wrong type -> EINVAL, SK_REUSEPORT on
  anything but TCP/UDP over IPv4/6 -> ENOTSUPP, no reuseport group possible -> EINVAL --
  and are then recorded for the socket (holding a program reference, replacing the
  previous one; the socket's native classic filter is detached, as the new filter
  replaces it in the kernel).  Any other fd (not open, not ours) CONTINUEs: the real
  kernel's answer (EBADF, EINVAL) is the emulated kernel's too;
* SO_DETACH_FILTER (= SO_DETACH_BPF) / SO_DETACH_REUSEPORT_BPF drop a recorded program
  (EPERM when locked); with none recorded they CONTINUE (native ENOENT or a native
  classic filter detached);
* SO_ATTACH_FILTER (classic BPF) runs natively; on a socket with a recorded program it
  is applied through our copy of the socket (pidfd_getfd) so that its result decides
  whether the recorded program is replaced;
* getsockopt(SO_GET_FILTER) on a socket with a recorded program is EACCES (sk_get_filter:
  an eBPF filter has no classic original to dump); otherwise it CONTINUEs.

What does not happen: the recorded program is not run on the socket's traffic (received
packets are neither filtered nor truncated by it, and a reuseport program does not
select sockets); the optmem_max charge (ENOMEM for huge programs) is not checked; a
record outlives the socket until the supervisor exits.
"""
from __future__ import annotations

import os
import socket
import stat

from fakekernel.errors import Errno, KernelError
from fakekernel.net.sock_reuseport import SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF
from fakekernel.runner.remote_files import OTHER_FILE_KIND
from fakekernel.syscall.fdget import bpf_prog_get
from uapi.bpf import ProgType
from uapi.seccomp import NR_X86_64, ffi, libc

__all__ = ["SocketFilters", "SOCKET_FILTER_OPTS", "SOL_SOCKET", "SO_GET_FILTER"]

# include/uapi/asm-generic/socket.h
SOL_SOCKET = 1
SO_ATTACH_FILTER = 26
SO_GET_FILTER = SO_ATTACH_FILTER    # getsockopt's name for it
SO_DETACH_FILTER = 27               # also SO_DETACH_BPF
SO_LOCK_FILTER = 44
SO_ATTACH_BPF = 50
SOCKET_FILTER_OPTS = (SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_ATTACH_BPF,
                      SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF)
_U32 = 4                            # sizeof(u32): the program fd's size
_FPROG = ffi.sizeof("struct sock_fprog")
_INSN = ffi.sizeof("struct sock_filter")
_IPPROTO_TCP, _IPPROTO_UDP = 6, 17


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class SocketFilters:
    """Per supervisor: socket (st_dev, st_ino) -> the emulated program attached to it."""

    def __init__(self) -> None:
        self.filters: dict[tuple[int, int], object] = {}        # sk->sk_filter
        self.reuseport: dict[tuple[int, int], object] = {}      # reuse->prog

    def setsockopt(self, task, n, cont):
        fd, level, opt = _s32(n.data.args[0]), _s32(n.data.args[1]), _s32(n.data.args[2])
        optval, optlen = n.data.args[3], n.data.args[4] & 0xFFFFFFFF
        if level != SOL_SOCKET or opt not in SOCKET_FILTER_OPTS:
            return cont
        try:
            st = os.stat(f"/proc/{task.pid}/fd/{fd}")
        except OSError:
            return cont                         # EBADF from the real kernel
        if not stat.S_ISSOCK(st.st_mode):
            return cont                         # ENOTSOCK
        try:
            return self._setsockopt(task, fd, (st.st_dev, st.st_ino), opt, optval, optlen, cont)
        except KernelError as e:                # our copy of the socket could not be had
            return -e.errno

    def _setsockopt(self, task, fd: int, key, opt: int, optval: int, optlen: int, cont):
        if opt in (SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_EBPF):
            return self._attach(task, fd, key, opt, optval, optlen, cont)
        table = self.reuseport if opt == SO_DETACH_REUSEPORT_BPF else self.filters
        if opt == SO_ATTACH_FILTER:
            return self._attach_classic(task, fd, key, optval, optlen) if key in self.filters \
                else cont
        if key not in table:
            return cont
        if opt == SO_DETACH_FILTER and self._locked(task, fd):
            return -Errno.EPERM                 # sk_detach_filter()
        table.pop(key).put()
        return 0

    def getsockopt(self, task, n, cont):
        fd, level, opt = _s32(n.data.args[0]), _s32(n.data.args[1]), _s32(n.data.args[2])
        if level != SOL_SOCKET or opt != SO_GET_FILTER:
            return cont
        try:
            st = os.stat(f"/proc/{task.pid}/fd/{fd}")
        except OSError:
            return cont
        return -Errno.EACCES if (st.st_dev, st.st_ino) in self.filters else cont

    def _attach(self, task, fd: int, key, opt: int, optval: int, optlen: int, cont):
        if optlen != _U32:
            return cont                         # EINVAL (or EFAULT) from the real kernel
        try:
            ufd = _s32(int.from_bytes(task.mm.copy_from_user(optval, _U32), "little"))
        except KernelError:
            return cont
        f = task.files.lookup(ufd)
        if f is None or f.kind == OTHER_FILE_KIND:
            return cont                         # EBADF / EINVAL, or a real program
        with _SocketCopy(task, fd) as sk:
            if sk.getsockopt(SOL_SOCKET, SO_LOCK_FILTER):
                return -Errno.EPERM             # __get_bpf() / sk_reuseport_attach_bpf()
            try:
                prog = bpf_prog_get(task, ufd)
            except KernelError as e:
                return -e.errno
            if opt == SO_ATTACH_BPF:
                if prog.type != ProgType.SOCKET_FILTER:
                    return -Errno.EINVAL        # bpf_prog_get_type()
                try:
                    sk.setsockopt(SOL_SOCKET, SO_DETACH_FILTER, 0)   # replaced
                except OSError:
                    pass
                table = self.filters
            else:
                err = _reuseport_check(sk, prog)
                if err:
                    return -err
                table = self.reuseport
        prog.get()
        old = table.get(key)
        table[key] = prog
        if old is not None:
            old.put()
        return 0

    def _attach_classic(self, task, fd: int, key, optval: int, optlen: int) -> int:
        """SO_ATTACH_FILTER over a recorded program: the kernel's own answer decides."""
        if optlen != _FPROG:
            return -Errno.EINVAL                # copy_bpf_fprog_from_user()
        try:
            fprog = ffi.from_buffer("struct sock_fprog *",
                                    bytearray(task.mm.copy_from_user(optval, _FPROG)))
            insns = bytearray(task.mm.copy_from_user(int(ffi.cast("uintptr_t", fprog.filter)),
                                                     fprog.len * _INSN) or b"\0")
        except KernelError as e:
            return -e.errno
        ours = ffi.new("struct sock_fprog *", {"len": fprog.len,
                                               "filter": ffi.from_buffer("struct sock_filter[]",
                                                                         insns)})
        with _SocketCopy(task, fd) as sk:
            try:
                sk.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, bytes(ffi.buffer(ours)))
            except OSError as e:
                return -e.errno
        self.filters.pop(key).put()
        return 0

    def _locked(self, task, fd: int) -> bool:
        with _SocketCopy(task, fd) as sk:
            return bool(sk.getsockopt(SOL_SOCKET, SO_LOCK_FILTER))

    def close(self) -> None:
        for table in (self.filters, self.reuseport):
            for prog in table.values():
                prog.put()
            table.clear()


def _reuseport_check(sk: socket.socket, prog) -> int:
    """sk_reuseport_attach_bpf() + reuseport_attach_prog()'s checks; 0 or an errno."""
    if prog.type not in (ProgType.SOCKET_FILTER, ProgType.SK_REUSEPORT):
        return Errno.EINVAL
    if prog.type == ProgType.SK_REUSEPORT and (
            sk.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM)
            or sk.proto not in (_IPPROTO_TCP, _IPPROTO_UDP)
            or sk.family not in (socket.AF_INET, socket.AF_INET6)):
        return Errno.ENOTSUPP
    if not sk.getsockopt(SOL_SOCKET, socket.SO_REUSEPORT):
        return Errno.EINVAL                 # no group, and none can be made
    return 0


class _SocketCopy:
    """Our own fd for the target's socket `fd` (pidfd_getfd), as a socket object."""

    def __init__(self, task, fd: int):
        self.task, self.fd = task, fd
        self.sock: socket.socket | None = None

    def __enter__(self) -> socket.socket:
        pidfd = os.pidfd_open(self.task.tgid)
        try:
            ours = libc.syscall(NR_X86_64.pidfd_getfd, ffi.cast("int", pidfd),
                                ffi.cast("int", self.fd), ffi.cast("unsigned int", 0))
            if ours < 0:
                raise KernelError(Errno(ffi.errno), "pidfd_getfd of the target's socket")
        finally:
            os.close(pidfd)
        self.sock = socket.socket(fileno=ours)
        return self.sock

    def __exit__(self, *exc) -> None:
        self.sock.close()
