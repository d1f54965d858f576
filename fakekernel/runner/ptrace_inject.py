"""Running syscalls inside a ptrace-stopped tracee — the runner's ptrace fallback's ADDFD.

At a decision stop (PTRACE_EVENT_SECCOMP, or a syscall-entry stop) the trapped syscall has
not run: setting orig_rax turns it into another syscall (the kernel re-runs the seccomp
filters on it, kernel/seccomp.c __seccomp_filter(recheck_after_trace)).  At its exit stop
rip is rewound onto the `syscall` instruction and rax set to the next number, so further
syscalls run one after the other; the decision stop's registers are restored at the end
with rax = the answer.  `install_fd` passes our open file description to the tracee with
SCM_RIGHTS this way (see ptrace.py's docstring); structures go to a scratch page mapped
once per process.
"""
from __future__ import annotations

import mmap
import os
import socket

import attrs

from fakekernel.runner.notify import NotifError
from fakekernel.uaccess import ProcessMemory
from uapi.errno import Errno
from uapi.ptrace import (MSG_CMSG_CLOEXEC, MSG_DONTWAIT, NR_bind, NR_close, NR_dup3, NR_mmap,
                         NR_ptrace, NR_recvmsg, NR_socket, SCM_RIGHTS, SYSCALL_TRAP, WALL, Ptrace,
                         SyscallInfoOp, ffi, libc)

__all__ = ["PtraceGone", "ptrace", "Stop", "TraceeSyscalls"]

_U64 = (1 << 64) - 1
_MAX_ERRNO = 4095
_SYSCALL_INSN_LEN = 2                   # `syscall` (0f 05)
_PAGE = mmap.PAGESIZE
# scratch page layout (offsets)
_S_ADDR, _S_MSG, _S_IOV, _S_BYTE, _S_CTRL = 0, 128, 192, 208, 224
_CMSG_HDR = ffi.sizeof("struct cmsghdr")
_CTRL_LEN = _CMSG_HDR + 8               # CMSG_SPACE(sizeof(int))


class PtraceGone(NotifError):
    """The tracee died while we were answering it (as ENOENT from a seccomp listener)."""

    def __init__(self, what: str = "the tracee is gone"):
        super().__init__(Errno.ENOENT, what)


def _s64(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


def ptrace(req: int, pid: int, addr=0, data=0) -> int:
    """ptrace(2); PtraceGone on ESRCH (the tracee died or is not stopped), OSError else."""
    r = libc.syscall(ffi.cast("long", NR_ptrace), ffi.cast("long", req), ffi.cast("long", pid),
                     ffi.cast("void *", addr), ffi.cast("void *", data))
    if r < 0:
        e = ffi.errno
        if e == Errno.ESRCH:
            raise PtraceGone(f"ptrace({Ptrace(req).name}, {pid}): no such process")
        raise OSError(e, f"ptrace({Ptrace(req).name}, {pid}): {os.strerror(e)}")
    return r


@attrs.define(eq=False)
class Stop:
    """One tracee thread stopped at a decision point (its syscall not run yet)."""
    id: int
    tid: int
    arch: int
    regs: object = None                 # struct user_regs_struct at the decision point
    executed: bool = False              # we ran syscalls in it: it is at a syscall-exit stop
    reply: object = None                # int | CONTINUE (ptrace.py)
    gone: bool = False
    signals: list = attrs.Factory(list)  # signals that arrived while we ran its syscalls


class TraceeSyscalls:
    """Mixin of PtraceListener (the tracer thread): needs `_exited(pid, status)`."""

    def __init__(self):
        self._scratch: dict[int, int] = {}      # tgid -> our page's address in it
        self._tgid: dict[int, int] = {}
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._names = 0
        self._info = ffi.new("struct ptrace_syscall_info *")

    def install_fd(self, stop: Stop, srcfd: int, cloexec: bool) -> int:
        """Our `srcfd`'s description as the tracee's lowest free fd (SCM_RIGHTS inside it)."""
        page = self._scratch_page(stop)
        mem = ProcessMemory(stop.tid)
        self._names += 1
        name = f"\0fakekernel-ptrace-{os.getpid()}-{self._names}".encode()
        sun = ffi.new("struct sockaddr_un *", {"sun_family": socket.AF_UNIX})
        ffi.memmove(sun.sun_path, name, len(name))
        namelen = ffi.offsetof("struct sockaddr_un", "sun_path") + len(name)
        mem.copy_to_user(page + _S_ADDR, bytes(ffi.buffer(sun))[:namelen])
        s = self._inject_ok(stop, NR_socket, socket.AF_UNIX,
                            socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        newfd = -1
        try:
            self._inject_ok(stop, NR_bind, s, page + _S_ADDR, namelen)
            self._sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          int(srcfd).to_bytes(4, "little"))], 0, name)
            msg = ffi.new("struct msghdr *", {"msg_iov": ffi.cast("void *", page + _S_IOV),
                                              "msg_iovlen": 1,
                                              "msg_control": ffi.cast("void *", page + _S_CTRL),
                                              "msg_controllen": _CTRL_LEN})
            iov = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", page + _S_BYTE),
                                             "iov_len": 1})
            mem.copy_to_user(page + _S_MSG, bytes(ffi.buffer(msg)))
            mem.copy_to_user(page + _S_IOV, bytes(ffi.buffer(iov)))
            mem.copy_to_user(page + _S_CTRL, bytes(_CTRL_LEN))
            self._inject_ok(stop, NR_recvmsg, s, page + _S_MSG,
                            MSG_DONTWAIT | (MSG_CMSG_CLOEXEC if cloexec else 0))
            ctrl = mem.copy_from_user(page + _S_CTRL, _CTRL_LEN)
            hdr = ffi.from_buffer("struct cmsghdr *", ctrl)
            if hdr.cmsg_level != socket.SOL_SOCKET or hdr.cmsg_type != SCM_RIGHTS:
                raise NotifError(Errno.EMFILE, "the tracee's fd table is full")
            newfd = int.from_bytes(ctrl[_CMSG_HDR:_CMSG_HDR + 4], "little", signed=True)
            self._inject_ok(stop, NR_dup3, newfd, s, os.O_CLOEXEC if cloexec else 0)
        except BaseException:
            if not stop.gone:
                for fd in (newfd, s):
                    if fd >= 0:
                        self._inject(stop, NR_close, fd)
            raise
        self._inject(stop, NR_close, newfd)
        return s

    def _regs(self, stop: Stop):
        """The decision stop's registers, fetched when first needed (not for CONTINUE)."""
        if stop.regs is None:
            stop.regs = self._getregs(stop.tid)
        return stop.regs

    def _getregs(self, tid: int):
        regs = ffi.new("struct user_regs_struct *")
        ptrace(Ptrace.GETREGS, tid, 0, regs)
        return regs

    def _inject(self, stop: Stop, nr: int, *args: int) -> int:
        """Run syscall `nr` in the stopped tracee; its (signed) result."""
        regs = ffi.new("struct user_regs_struct *")
        ffi.memmove(regs, self._regs(stop), ffi.sizeof(regs[0]))
        if stop.executed:           # at an exit stop: run the `syscall` instruction again
            regs.rip -= _SYSCALL_INSN_LEN
            regs.rax = nr
        else:                       # at the decision stop: this syscall becomes `nr`
            regs.orig_rax = nr
        a = list(args) + [0] * (6 - len(args))
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = (v & _U64 for v in a)
        ptrace(Ptrace.SETREGS, stop.tid, 0, regs)
        self._run_to_exit(stop)
        stop.executed = True
        return _s64(self._getregs(stop.tid).rax)

    def _inject_ok(self, stop: Stop, nr: int, *args: int) -> int:
        r = self._inject(stop, nr, *args)
        if r < 0:
            raise NotifError(-r, f"syscall {nr} in the tracee: {os.strerror(-r)}")
        return r

    def _run_to_exit(self, stop: Stop) -> None:
        """PTRACE_SYSCALL until the tracee's syscall-exit stop."""
        tid = stop.tid
        try:
            ptrace(Ptrace.SYSCALL, tid)
            while True:
                _, status = os.waitpid(tid, WALL)
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    self._exited(tid, status)
                    raise PtraceGone()
                sig, event = os.WSTOPSIG(status), status >> 16
                if sig == SYSCALL_TRAP and self._syscall_info(tid) == SyscallInfoOp.EXIT:
                    return
                if sig != SYSCALL_TRAP and not event:
                    stop.signals.append(sig)        # delivered again afterwards
                ptrace(Ptrace.SYSCALL, tid)
        except PtraceGone:
            stop.gone = True
            raise

    def _scratch_page(self, stop: Stop) -> int:
        tgid = self._tgid_of(stop.tid)
        page = self._scratch.get(tgid)
        if page is None:
            page = self._inject(stop, NR_mmap, 0, _PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                                mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
            if -_MAX_ERRNO <= page < 0:
                raise NotifError(-page, "mmap of the scratch page in the tracee")
            self._scratch[tgid] = page & _U64
        return page & _U64

    def _tgid_of(self, tid: int) -> int:
        t = self._tgid.get(tid)
        if t is None:
            t = tid
            try:
                with open(f"/proc/{tid}/status", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"Tgid:"):
                            t = int(line.split()[1])
                            break
            except OSError:
                pass
            self._tgid[tid] = t
        return t

    def _syscall_info(self, tid: int) -> int:
        ptrace(Ptrace.GET_SYSCALL_INFO, tid, ffi.sizeof("struct ptrace_syscall_info"), self._info)
        return self._info.op
