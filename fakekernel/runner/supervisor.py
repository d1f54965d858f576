"""The supervisor: answers the trapped syscalls of a whole process tree from ONE `Kernel`.

The counterpart of the kernel's syscall entry for processes running under
`fakekernel run`: each seccomp notification is one syscall of one target thread (the
notification's pid is the TID).  bpf() goes to `sys_bpf` with a `Task` whose memory is
that thread's (`ProcessMemory(pid=tid)`) and whose fd table is the thread's real one
(`RemoteFdTable`).  Path syscalls (runner/paths.py) are answered when they name the emulated bpffs, an
emulated object or a virtual file, and handed back to the real kernel
(SECCOMP_USER_NOTIF_FLAG_CONTINUE) otherwise; so are epoll_ctl on emulated ring buffers
(runner/epoll.py), NETLINK_ROUTE sockets (runner/netlink.py) and perf events
(runner/perf.py), and socket filters naming emulated programs (runner/sockopt.py).  The
same `handle` serves the LD_PRELOAD fallback (runner/preload.py) and the ptrace fallback
(runner/ptrace.py).

Side effects and replies: the filter is installed with WAIT_KILLABLE_RECV where the kernel
has it (5.19+), so once we have RECVed a notification only a fatal signal can cancel
the call -- as in the kernel, the work is then done and the process dies.  We check
SECCOMP_IOCTL_NOTIF_ID_VALID before acting, and new fds are installed and returned in
one step (ADDFD with SECCOMP_ADDFD_FLAG_SEND).
"""
from __future__ import annotations

import contextlib
import select
import sys
import traceback

from fakekernel.errors import Errno, KernelError
from fakekernel.runner.cgroups import HostCgroups
from fakekernel.runner.epoll import EpollBridge
from fakekernel.runner.netlink import NetlinkSockets
from fakekernel.runner.stat import BpffsStat
from fakekernel.runner.notify import Listener, NotifError
from fakekernel.runner.paths import CONTINUE, PathSyscalls
from fakekernel.runner.perf import sys_ioctl_trap, sys_perf_event_open_trap
from fakekernel.runner.remote_files import RemoteFdTable, RemoteFiles
from fakekernel.runner.sockopt import SocketFilters
from fakekernel.runner.trace import Tracer, format_bpf_args, format_ret
from fakekernel.runner.vfiles import VirtualFiles
from fakekernel.syscall import sys_bpf
from fakekernel.syscall.command import ATTR_SIZE
from fakekernel.task import Task
from fakekernel.uaccess import ProcessMemory
from uapi.perf_event import NR_ioctl, NR_perf_event_open
from uapi.seccomp import NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch
from uapi.netlink import SOL_NETLINK
from uapi.vfs import PATH_MAX

__all__ = ["Supervisor", "CONTINUE"]

_MAX_CACHED_TASKS = 4096


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


class Supervisor(PathSyscalls):
    def __init__(self, kern, listener: Listener, *, tracer: Tracer | None = None, lock=None):
        self.kern = kern
        # held while the Kernel is used: several supervisors (threads) may share one Kernel
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.listener = listener
        self.tracer = tracer
        self.files = RemoteFiles()
        self.tasks: dict[int, Task] = {}
        self.vfiles = VirtualFiles(kern, self.task_for)
        self.epoll = EpollBridge()
        self.cgroups = HostCgroups(kern)
        self.bpffs_stat = BpffsStat(kern)
        self.netlink = NetlinkSockets(self)
        self.sockfilters = SocketFilters()
        self._watches: dict[int, object] = {}     # our fds in the serve loop -> callback(fd, ev)
        self._ep = None
        self.files.foreign = self.cgroups.file_for
        self.internal_errors = 0
        self.calls = 0
        x64, i386 = AuditArch.X86_64, AuditArch.I386
        # (arch, nr) -> handler(task, notif) -> int | CONTINUE   (≈ sys_call_table)
        self.syscalls = {
            (x64, NR_X86_64.bpf): self.sys_bpf,
            (i386, NR_I386.bpf): self.sys_bpf,
            (x64, NR_X86_64.statfs): self.sys_statfs,
            (x64, NR_X86_64.fstatfs): self.sys_fstatfs,
            (x64, NR_X86_64.mkdir): self.sys_mkdir,
            (x64, NR_X86_64.mkdirat): self.sys_mkdirat,
            (x64, NR_X86_64.unlink): self.sys_unlink,
            (x64, NR_X86_64.unlinkat): self.sys_unlinkat,
            (x64, NR_X86_64.rmdir): self.sys_rmdir,
            (x64, NR_X86_64.open): self.sys_open,
            (x64, NR_X86_64.openat): self.sys_openat,
            (x64, NR_X86_64.epoll_ctl): self.sys_epoll_ctl,
            (x64, NR_X86_64.epoll_wait): lambda t, n: self.epoll.epoll_wait(t, n, CONTINUE),
            (x64, NR_X86_64.epoll_pwait): lambda t, n: self.epoll.epoll_wait(t, n, CONTINUE),
            (x64, NR_X86_64.epoll_pwait2): lambda t, n: self.epoll.epoll_wait(t, n, CONTINUE),
            (x64, NR_X86_64.socket): self.netlink.socket,
            (x64, NR_X86_64.bind): lambda t, n: self.netlink.bind(t, n, CONTINUE),
            (x64, NR_X86_64.getsockname): lambda t, n: self.netlink.getsockname(t, n, CONTINUE),
            (x64, NR_X86_64.setsockopt): self.sys_setsockopt,
            (x64, NR_X86_64.getsockopt): lambda t, n: self.sockfilters.getsockopt(t, n, CONTINUE),
            (x64, NR_X86_64.stat): self.sys_stat,
            (x64, NR_X86_64.lstat): self.sys_lstat,
            (x64, NR_X86_64.symlink): self.sys_symlink,
            (x64, NR_X86_64.symlinkat): self.sys_symlinkat,
            (x64, NR_X86_64.readlink): self.sys_readlink,
            (x64, NR_X86_64.readlinkat): self.sys_readlinkat,
            (x64, NR_X86_64.newfstatat): self.sys_newfstatat,
            (x64, NR_X86_64.statx): self.sys_statx,
            (x64, NR_X86_64.access): self.sys_access,
            (x64, NR_X86_64.faccessat): self.sys_faccessat,
            (x64, NR_X86_64.faccessat2): self.sys_faccessat,
            (x64, NR_perf_event_open): lambda t, n: sys_perf_event_open_trap(self, t, n, CONTINUE),
            (x64, NR_ioctl): lambda t, n: sys_ioctl_trap(self, t, n, CONTINUE),
        }

    # ------------------------------------------------------------------ tasks
    def task_for(self, tid: int) -> Task:
        t = self.tasks.get(tid)
        if t is None:
            if len(self.tasks) >= _MAX_CACHED_TASKS:
                self.tasks.clear()
            tgid = tid
            try:
                with open(f"/proc/{tid}/status", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"Tgid:"):
                            tgid = int(line.split()[1])
                            break
            except OSError:
                pass
            t = Task(pid=tid, tgid=tgid, comm=_comm(tid), creds=self.kern.creds,
                     files=RemoteFdTable(self.files, self.listener, tid), mm=ProcessMemory(tid))
            self.tasks[tid] = t
        return t

    # ------------------------------------------------------------------ the loop
    def serve(self, pidfd: int | None = None, on_child_exit=None) -> None:
        """Answer notifications until every target task is gone (listener EPOLLHUP) and the
        direct child (pidfd) has been reaped by `on_child_exit`."""
        ep = self._ep = select.epoll()
        for wfd in self._watches:
            ep.register(wfd, select.EPOLLIN)
        ep.register(self.listener.fd, select.EPOLLIN)
        ep.register(self.files.inotify, select.EPOLLIN)
        if pidfd is not None:
            ep.register(pidfd, select.EPOLLIN)
        hup = False
        child_alive = pidfd is not None
        idle = getattr(self.listener, "idle", None)     # the LD_PRELOAD listener never HUPs
        try:
            while not hup or child_alive:
                for fd, ev in ep.poll():
                    if fd == self.listener.fd:
                        if ev & select.EPOLLIN:
                            self.handle_one()
                        elif ev & (select.EPOLLHUP | select.EPOLLERR):
                            hup = True
                            ep.unregister(fd)
                    elif fd == self.files.inotify:
                        with self.lock:
                            self.files.process_events()
                    elif fd in self._watches:
                        self._watches[fd](fd, ev)
                    elif fd == pidfd:
                        ep.unregister(pidfd)
                        child_alive = False
                        if on_child_exit is not None:
                            on_child_exit()
                if idle is not None and not child_alive and idle():
                    hup = True
        finally:
            self._ep = None
            ep.close()

    def watch(self, fd: int, callback) -> None:
        """Serve `fd` of ours too: `callback(fd, events)` when it is readable or hung up."""
        self._watches[fd] = callback
        if self._ep is not None:
            self._ep.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if self._watches.pop(fd, None) is not None and self._ep is not None:
            self._ep.unregister(fd)

    def handle_one(self) -> None:
        try:
            n = self.listener.recv()
        except NotifError as e:
            if e.errno == Errno.ENOENT:          # the target went away before we got it
                return
            raise
        with self.lock:
            self.handle(n)

    def handle(self, n) -> None:
        # close events the target caused before this syscall must be seen first
        self.files.process_events()
        self.calls += 1
        arch = n.data.arch
        nr = n.data.nr & ~X32_SYSCALL_BIT if arch == AuditArch.X86_64 else n.data.nr
        handler = self.syscalls.get((arch, nr))
        if handler is None:
            self.listener.send_continue(n.id)
            return
        if not self.listener.id_valid(n.id):
            return                                  # killed or interrupted: do nothing
        task = self.task_for(n.pid)
        task.files.notif_id, task.files.replied = n.id, False
        saved, self.kern.current = self.kern.current, task      # `current` of this syscall
        try:
            ret = handler(task, n)
        except Exception:                           # an emulator bug: say so, loudly
            self.internal_errors += 1
            sys.stderr.write(f"fakekernel run: internal error answering syscall {nr} of "
                             f"pid {n.pid}:\n{traceback.format_exc()}")
            ret = -Errno.ENOTSUPP
            if task.files.replied:
                return
        finally:
            self.kern.current = saved
        if ret is CONTINUE:
            self.listener.send_continue(n.id)
        elif not task.files.replied:
            self.listener.send(n.id, ret)

    def _trace(self, tid: int, text: str) -> None:
        if self.tracer is not None:
            self.tracer.line(tid, text)

    # ------------------------------------------------------------------ bpf(2)
    def sys_bpf(self, task: Task, n) -> int:
        """SYSCALL_DEFINE3(bpf, int cmd, union bpf_attr __user *uattr, unsigned int size)."""
        cmd, uattr, size = _s32(n.data.args[0]), n.data.args[1], _u32(n.data.args[2])
        if self.tracer is None:
            return sys_bpf(self.kern, task, cmd, uattr, size)
        # decode before the call: once the reply is sent the target runs on
        try:
            raw = task.mm.copy_from_user(uattr, min(size, ATTR_SIZE))
        except KernelError:
            raw = b""
        args = format_bpf_args(cmd, raw, lambda a: _read_str(task, a))
        ret = sys_bpf(self.kern, task, cmd, uattr, size)
        self._trace(task.pid, f"bpf({args}) = {format_ret(ret)}")
        return ret

    # ------------------------------------------------------------------ epoll
    def sys_epoll_ctl(self, task: Task, n):
        """epoll_ctl(2) on an emulated pollable fd (runner/epoll.py); CONTINUE otherwise."""
        try:
            ret = self.epoll.epoll_ctl(task, n, CONTINUE)
        except KernelError as e:
            ret = -e.errno
        if ret is not CONTINUE:
            self._trace(task.pid, f"epoll_ctl({_s32(n.data.args[0])}, {_s32(n.data.args[1])}, "
                                  f"{_s32(n.data.args[2])}) = {format_ret(ret)}")
        return ret

    def sys_setsockopt(self, task: Task, n):
        """setsockopt(2): SOL_NETLINK on emulated rtnetlink sockets (netlink.py); socket
        filters naming emulated programs (sockopt.py); everything else CONTINUEs."""
        if _s32(n.data.args[1]) == SOL_NETLINK:
            return self.netlink.setsockopt(task, n, CONTINUE)
        ret = self.sockfilters.setsockopt(task, n, CONTINUE)
        if ret is not CONTINUE:
            self._trace(task.pid, f"setsockopt({_s32(n.data.args[0])}, SOL_SOCKET, "
                                  f"{_s32(n.data.args[2])}) = {format_ret(ret)}")
        return ret

    def close(self) -> None:
        with self.lock:
            self.sockfilters.close()
            self.epoll.close()
            self.netlink.close()
            self.files.close()
            self.vfiles.close()


def _comm(tid: int) -> str:
    try:
        with open(f"/proc/{tid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _read_str(task: Task, addr: int) -> str:
    try:
        return task.mm.strncpy_from_user(addr, PATH_MAX).decode(errors="replace")
    except KernelError:
        return "<EFAULT>"
