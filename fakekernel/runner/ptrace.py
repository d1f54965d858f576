"""The runner's ptrace fallback — the same supervisor, fed by a tracer (kernel/ptrace.c, the
PTRACE_EVENT_SECCOMP / syscall-stop side of kernel/seccomp.c and kernel/entry/common.c).

For statically linked targets where seccomp notification cannot reach bpf() (an outer
listener: EBUSY; an outer filter answering bpf() first: Docker's EPERM) and LD_PRELOAD
cannot either.  `PtraceListener` stands in for `notify.Listener`: each trapped syscall
stop of a tracee becomes one call of `Supervisor.handle`, answered in place.

Two modes, chosen by a probe bpf() the trampoline (ptrace_launch.py) makes before exec:

* "seccomp": the trampoline installed our filter returning SECCOMP_RET_TRACE for the
  syscalls the emulator owns (filter.py, the same list as the listener's), so only those
  stop, at a PTRACE_EVENT_SECCOMP stop before the syscall runs; tracees run under
  PTRACE_CONT otherwise;
* "syscall": an outer filter decides first (ERRNO outranks TRACE, USER_NOTIF outranks it
  too), so every syscall stops (PTRACE_SYSCALL); at the entry stop -- before any seccomp
  filter sees the syscall -- the same filter program, run here (filter.run_filter), says
  whether it is the emulator's.

Answering at a decision stop: a value is returned by skipping the syscall (orig_rax = -1 at
a seccomp stop, rax = value; in "syscall" mode the syscall becomes getpid, which every
profile allows, and rax is set at its exit stop); CONTINUE resumes it unchanged.  The
ADDFD equivalent runs syscalls in the tracee (rewinding rip onto its `syscall`
instruction): socket(AF_UNIX, SOCK_DGRAM) + bind to an abstract name, we send the fd with
SCM_RIGHTS, recvmsg, dup3 onto the socket's number (the lowest free fd, as ADDFD picks),
close.  The tracee thus holds our very open file description (inotify close accounting
and OFD locks work as under seccomp).  A scratch page mapped once per process (mmap,
inherited by forks, remapped after exec) holds the structures.

Differences from seccomp notification: per trapped call 2 (seccomp) or 4+ (syscall mode)
context switches; installing an fd costs 5 syscalls in the target (6 the first time per
process); a signal arriving while we run syscalls in the target is re-sent afterwards;
i386 (compat) tracees get values but no new fds (ENOSYS); a group stop arriving during
an fd install is not honoured for that thread.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback

from fakekernel.runner.filter import build_filter, run_filter
from fakekernel.runner.notify import NotifError, Notif, NotifData
from fakekernel.runner.ptrace_inject import PtraceGone, Stop, TraceeSyscalls, ptrace
from uapi.errno import Errno
from uapi.ptrace import (NR_getpid, NR_tgkill, SYSCALL_TRAP, WALL, WNOTHREAD, Ptrace, PtraceEvent,
                         SyscallInfoOp, ffi, libc)
from uapi.seccomp import NR_X86_64, AuditArch, SeccompRet

__all__ = ["PtraceListener", "PtraceGone", "ptrace"]

_U64 = (1 << 64) - 1
_GROUP_STOP_SIGS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
_CONT = object()


class PtraceListener(TraceeSyscalls):
    """`notify.Listener`'s interface over a ptrace tracer thread (see the module docstring).

    The tracer thread (ptrace_launch.py starts it; ptrace requests must come from the
    thread that attached) calls `Supervisor.handle` under `sup.lock`; the supervisor's
    serve loop watches `fd`, a pipe that hangs up once every tracee is gone."""

    def __init__(self):
        super().__init__()
        self.fd, self._hup = os.pipe2(os.O_CLOEXEC)
        self.addfd_send = True
        self.sup = None
        self.mode: str | None = None    # "seccomp" | "syscall"; None until the probe
        self.tracees: set[int] = set()
        self.main_pid = 0
        self.on_main_exit = None        # callback(wait status)
        self.probe = (0, 0)             # (PROBE_CMD, PROBE_MAGIC) (ptrace_launch.py)
        self.stops = 0                  # decision stops served (benchmarks, tests)
        self._filter = build_filter(action=SeccompRet.TRACE)
        self._cur: Stop | None = None
        self._next_id = 0
        self._msg = ffi.new("unsigned long *")
        self._probing = False

    # ---- the Listener interface the supervisor uses ----
    def attach(self, sup) -> None:
        self.sup = sup

    def recv(self):
        raise NotifError(Errno.ENOENT, "ptrace stops are served by the tracer thread")

    def id_valid(self, notif_id: int) -> bool:
        c = self._cur
        return c is not None and c.id == notif_id and not c.gone

    def send(self, notif_id: int, ret: int) -> None:
        if self.id_valid(notif_id):
            self._cur.reply = ret

    def send_continue(self, notif_id: int) -> None:
        if self.id_valid(notif_id):
            self._cur.reply = _CONT

    def set_sync_wakeup(self) -> None:
        pass

    def addfd(self, notif_id: int, srcfd: int, *, send: bool, cloexec: bool = True) -> int:
        """ADDFD: our `srcfd`'s description as the tracee's lowest free fd (ptrace_inject.py)."""
        stop = self._cur
        if not self.id_valid(notif_id):
            raise NotifError(Errno.ENOENT, "no such stop")
        if stop.arch != AuditArch.X86_64:
            raise NotifError(Errno.ENOSYS, "fds cannot be installed in i386 tracees")
        fd = self.install_fd(stop, srcfd, cloexec)
        if send:
            stop.reply = fd
        return fd

    def close(self) -> None:
        for fd in (self.fd, self._hup):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self._hup = -1
        self._sock.close()


    # ---- the tracer loop (runs in the tracer thread) ----
    def _resume(self, tid: int, sig: int = 0) -> None:
        req = Ptrace.CONT if self.mode == "seccomp" else Ptrace.SYSCALL
        try:
            ptrace(req, tid, 0, sig)
        except PtraceGone:
            pass

    def trace_loop(self) -> None:
        """Serve every stop until no tracee is left; then hang up `fd`."""
        try:
            while self.tracees:
                try:
                    pid, status = os.waitpid(-1, WALL | WNOTHREAD)
                except ChildProcessError:
                    break
                try:
                    self._event(pid, status)
                except PtraceGone:
                    pass
                except Exception:
                    sys.stderr.write(f"fakekernel run: internal error in the ptrace tracer:\n"
                                     f"{traceback.format_exc()}")
                    self._resume(pid)
        finally:
            os.close(self._hup)
            self._hup = -1

    def _exited(self, pid: int, status: int) -> None:
        self.tracees.discard(pid)
        self._tgid.pop(pid, None)
        if pid == self.main_pid and self.on_main_exit is not None:
            self.on_main_exit(status)

    def _event(self, pid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._exited(pid, status)
            return
        self.tracees.add(pid)               # an auto-attached child may report first
        sig, event = os.WSTOPSIG(status), status >> 16
        if sig == SYSCALL_TRAP:
            self._syscall_stop(pid)
        elif event == PtraceEvent.SECCOMP:
            self._seccomp_stop(pid)
        elif event in (PtraceEvent.FORK, PtraceEvent.VFORK, PtraceEvent.CLONE):
            ptrace(Ptrace.GETEVENTMSG, pid, 0, self._msg)
            child = int(self._msg[0])
            self.tracees.add(child)
            parent_page = self._scratch.get(self._tgid_of(pid))
            if parent_page is not None and self._tgid_of(child) == child:
                self._scratch[child] = parent_page      # a new process: a copy of our page
            self._resume(pid)
        elif event == PtraceEvent.EXEC:
            ptrace(Ptrace.GETEVENTMSG, pid, 0, self._msg)
            former = int(self._msg[0])
            for t in {pid, former}:
                self._tgid.pop(t, None)
            self._scratch.pop(pid, None)
            if former != pid:
                self.tracees.discard(former)
            if self.sup is not None:
                with self.sup.lock:
                    for t in {pid, former}:
                        self.sup.tasks.pop(t, None)
            self._resume(pid)
        elif event == PtraceEvent.STOP:
            if sig in _GROUP_STOP_SIGS:     # group-stop: stay stopped, hear of SIGCONT
                ptrace(Ptrace.LISTEN, pid)
            else:
                self._resume(pid)
        elif event:
            self._resume(pid)
        else:                               # signal-delivery-stop: deliver it
            self._resume(pid, sig)

    def _syscall_stop(self, pid: int) -> None:
        op = self._syscall_info(pid)
        info = self._info
        if op == SyscallInfoOp.ENTRY:
            nr, args = int(info.entry.nr), tuple(info.entry.args)
            if self.mode is None:
                if pid == self.main_pid and nr == NR_X86_64.bpf and args[0] == self.probe[0]:
                    self._probing = True
            elif self.mode == "syscall" and run_filter(self._filter, nr, info.arch, args) \
                    == SeccompRet.TRACE:
                self._decide(pid, info.arch, nr, args)
                return
        elif op == SyscallInfoOp.EXIT and self.mode is None and self._probing:
            self.mode = "syscall"           # an outer filter answered the probe, not us
            self.sup._trace(pid, "ptrace: an outer seccomp filter decides first: stopping at "
                                 "every syscall (PTRACE_SYSCALL)")
        self._resume(pid)

    def _seccomp_stop(self, pid: int) -> None:
        self._syscall_info(pid)
        info = self._info
        nr, args = int(info.seccomp.nr), tuple(info.seccomp.args)
        if (self.mode is None and pid == self.main_pid and nr == NR_X86_64.bpf
                and args[0] == self.probe[0]):
            self.mode = "seccomp"
            self.sup._trace(pid, "ptrace: stopping at the trapped syscalls (SECCOMP_RET_TRACE)")
            regs = self._getregs(pid)
            regs.orig_rax, regs.rax = _U64, self.probe[1]
            ptrace(Ptrace.SETREGS, pid, 0, regs)
            self._resume(pid)
        elif self.mode == "seccomp":
            self._decide(pid, info.arch, nr, args)
        else:
            self._resume(pid)               # "syscall" mode decided at the entry stop

    def _decide(self, pid: int, arch: int, nr: int, args: tuple) -> None:
        self._next_id += 1
        stop = self._cur = Stop(id=self._next_id, tid=pid, arch=arch)
        self.stops += 1
        try:
            with self.sup.lock:
                self.sup.handle(Notif(id=stop.id, pid=pid, data=NotifData(arch=arch, nr=nr,
                                                                         args=args)))
        finally:
            self._cur = None
        if stop.gone:
            return
        try:
            self._finish(stop)
        finally:
            for sig in stop.signals:
                libc.syscall(ffi.cast("long", NR_tgkill), ffi.cast("long", self._tgid_of(pid)),
                             ffi.cast("long", pid), ffi.cast("long", sig))

    def _finish(self, stop: Stop) -> None:
        if stop.reply is _CONT and not stop.executed:
            self._resume(stop.tid)
            return
        value = stop.reply if isinstance(stop.reply, int) else -Errno.ENOSYS
        regs = self._regs(stop)
        if not stop.executed:
            if self.mode == "seccomp":
                regs.orig_rax = _U64            # skipped: rax is the result
            else:                               # getpid runs instead; rax set at its exit
                self._inject(stop, NR_getpid)
        regs.rax = value & _U64
        ptrace(Ptrace.SETREGS, stop.tid, 0, regs)
        self._resume(stop.tid)
