"""The supervisor: answers the trapped syscalls of a whole process tree from ONE `Kernel`.

The counterpart of the kernel's syscall entry for processes running under
`fakekernel run`: each seccomp notification is one syscall of one target thread (the
notification's pid is the TID).  bpf() goes to `sys_bpf` with a `Task` whose memory is
that thread's (`ProcessMemory(pid=tid)`) and whose fd table is the thread's real one
(`RemoteFdTable`).  statfs/fstatfs/mkdir/unlink/rmdir are answered when they name the
emulated bpffs (or an emulated object), and handed back to the real kernel
(SECCOMP_USER_NOTIF_FLAG_CONTINUE) otherwise.

Side effects and replies: the filter is installed with WAIT_KILLABLE_RECV where the kernel
has it (5.19+), so once we have RECVed a notification only a fatal signal can cancel
the call -- as in the kernel, the work is then done and the process dies.  We check
SECCOMP_IOCTL_NOTIF_ID_VALID before acting, and new fds are installed and returned in
one step (ADDFD with SECCOMP_ADDFD_FLAG_SEND).
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import traceback

from fakekernel.errors import Errno, KernelError
from fakekernel.runner.epoll import EpollBridge
from fakekernel.runner.notify import Listener, NotifError
from fakekernel.runner.perf import sys_ioctl_trap, sys_perf_event_open_trap
from fakekernel.runner.remote_files import OTHER_FILE_KIND, RemoteFdTable, RemoteFiles
from fakekernel.runner.trace import Tracer, format_bpf_args, format_ret
from fakekernel.runner.vfiles import VirtualFiles, memfd_with
from fakekernel.syscall import sys_bpf
from fakekernel.syscall.command import ATTR_SIZE
from fakekernel.task import Task
from fakekernel.uaccess import ProcessMemory
from uapi.perf_event import NR_ioctl, NR_perf_event_open
from uapi.seccomp import NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch
from uapi.vfs import AT_FDCWD, AT_REMOVEDIR, NAME_MAX, PATH_MAX, FsMagic, StFlag, ffi as vfs_ffi

__all__ = ["Supervisor", "CONTINUE"]

CONTINUE = object()         # "let the real kernel run this syscall"
_PAGE_SIZE = 4096
_MAX_CACHED_TASKS = 4096


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


class Supervisor:
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
        ep = select.epoll()
        ep.register(self.listener.fd, select.EPOLLIN)
        ep.register(self.files.inotify, select.EPOLLIN)
        if pidfd is not None:
            ep.register(pidfd, select.EPOLLIN)
        hup = False
        child_alive = pidfd is not None
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
                    elif fd == pidfd:
                        ep.unregister(pidfd)
                        child_alive = False
                        if on_child_exit is not None:
                            on_child_exit()
        finally:
            ep.close()

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

    # ------------------------------------------------------------------ paths on the bpffs
    def _path_arg(self, task: Task, addr: int, dirfd: int = AT_FDCWD) -> tuple[str, str] | None:
        """(path as the target wrote it, made absolute; its normalised form) when it names
        something under the emulated bpffs mount, else None (the real kernel answers)."""
        try:
            raw = task.mm.strncpy_from_user(addr, PATH_MAX)
        except KernelError:
            return None
        if not raw or len(raw) >= PATH_MAX:
            return None
        path = raw.decode(errors="surrogateescape")
        if not path.startswith("/"):
            try:
                base = os.readlink(f"/proc/{task.pid}/cwd" if dirfd == AT_FDCWD
                                   else f"/proc/{task.pid}/fd/{dirfd}")
            except OSError:
                return None
            if not base.startswith("/"):
                return None
            path = self.vfiles.translate(base).rstrip("/") + "/" + path
        norm = os.path.normpath(path)
        mnt = self.kern.bpffs_mount
        if norm != mnt and not norm.startswith(mnt + "/"):
            return None
        return path, norm

    def _vfs(self, task: Task, name: str, path: str, fn) -> int:
        try:
            fn()
            ret = 0
        except KernelError as e:
            ret = -e.errno
        self._trace(task.pid, f'{name}("{path}") = {format_ret(ret)}')
        return ret

    def sys_statfs(self, task: Task, n):
        p = self._path_arg(task, n.data.args[0])
        if p is None:
            return CONTINUE

        def do():
            self.kern.bpffs.lookup(p[0], task)
            task.mm.copy_to_user(n.data.args[1], _statfs_bytes(FsMagic.BPF_FS_MAGIC,
                                                               StFlag.VALID | StFlag.RELATIME))
        return self._vfs(task, "statfs", p[0], do)

    def sys_fstatfs(self, task: Task, n):
        f = task.files.lookup(_s32(n.data.args[0]))
        if f is None or f.kind == OTHER_FILE_KIND:
            return CONTINUE
        # bpf objects live on the anon inode fs (anon_inode_getfile)
        return self._vfs(task, "fstatfs", f"fd {_s32(n.data.args[0])}",
                         lambda: task.mm.copy_to_user(
                             n.data.args[1], _statfs_bytes(FsMagic.ANON_INODE_FS_MAGIC,
                                                           StFlag.VALID)))

    def _mkdir(self, task: Task, n, dirfd: int, path_arg: int, mode: int):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE

        def do():
            bpffs = self.kern.bpffs
            saved, bpffs.umask = bpffs.umask, _umask(task.pid, bpffs.umask)
            try:
                bpffs.mkdir(p[0], mode, task)
            finally:
                bpffs.umask = saved
        return self._vfs(task, "mkdir", p[0], do)

    def sys_mkdir(self, task: Task, n):
        return self._mkdir(task, n, AT_FDCWD, n.data.args[0], _u32(n.data.args[1]))

    def sys_mkdirat(self, task: Task, n):
        return self._mkdir(task, n, _s32(n.data.args[0]), n.data.args[1], _u32(n.data.args[2]))

    def _remove(self, task: Task, dirfd: int, path_arg: int, rmdir: bool):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE
        fn = self.kern.bpffs.rmdir if rmdir else self.kern.bpffs.unlink
        return self._vfs(task, "rmdir" if rmdir else "unlink", p[0], lambda: fn(p[0], task))

    def sys_unlink(self, task: Task, n):
        return self._remove(task, AT_FDCWD, n.data.args[0], rmdir=False)

    def sys_rmdir(self, task: Task, n):
        return self._remove(task, AT_FDCWD, n.data.args[0], rmdir=True)

    def sys_unlinkat(self, task: Task, n):
        flags = _s32(n.data.args[2])
        if flags & ~AT_REMOVEDIR:
            return CONTINUE                         # the kernel's EINVAL
        return self._remove(task, _s32(n.data.args[0]), n.data.args[1],
                            rmdir=bool(flags & AT_REMOVEDIR))

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

    # ------------------------------------------------------------------ virtual files
    def _open(self, task: Task, n, dirfd: int, path_arg: int, flags: int):
        """open(2)/openat(2): virtual files (vfiles.py) are answered, all else CONTINUEs."""
        try:
            raw = task.mm.strncpy_from_user(path_arg, PATH_MAX)
        except KernelError:
            return CONTINUE
        if not raw or len(raw) >= PATH_MAX:
            return CONTINUE
        path = raw.decode(errors="surrogateescape")
        if not path.startswith("/"):
            try:
                base = os.readlink(f"/proc/{task.pid}/cwd" if dirfd == AT_FDCWD
                                   else f"/proc/{task.pid}/fd/{dirfd}")
            except OSError:
                return CONTINUE
            path = self.vfiles.translate(base).rstrip("/") + "/" + path
        norm = os.path.normpath(path)
        what = self.vfiles.lookup(task, norm, flags)
        if what is None:
            mnt = self.kern.bpffs_mount
            if norm != mnt and not norm.startswith(mnt + "/"):
                return CONTINUE
            what = self.vfiles.bpffs_open(task, path, flags)
        if isinstance(what, int):
            self._trace(task.pid, f'open("{path}") = {format_ret(what)}')
            return what
        ours = (memfd_with(what) if isinstance(what, bytes)
                else os.open(what, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        try:
            fd = self.listener.addfd(n.id, ours, send=True, cloexec=bool(flags & os.O_CLOEXEC))
        except NotifError as e:
            if e.errno == Errno.ENOENT:             # the target is gone
                task.files.replied = True
                return 0
            return -e.errno
        finally:
            os.close(ours)
        task.files.replied = True
        self._trace(task.pid, f'open("{path}") = {fd}')
        return fd

    def sys_open(self, task: Task, n):
        return self._open(task, n, AT_FDCWD, n.data.args[0], _s32(n.data.args[1]))

    def sys_openat(self, task: Task, n):
        return self._open(task, n, _s32(n.data.args[0]), n.data.args[1], _s32(n.data.args[2]))

    def close(self) -> None:
        with self.lock:
            self.epoll.close()
            self.files.close()
            self.vfiles.close()


def _statfs_bytes(magic: int, flags: int) -> bytes:
    """simple_statfs(): what bpffs and anon_inodefs report."""
    s = vfs_ffi.new("struct statfs *")
    s.f_type = magic
    s.f_bsize = _PAGE_SIZE
    s.f_frsize = _PAGE_SIZE
    s.f_namelen = NAME_MAX
    s.f_flags = flags
    return bytes(vfs_ffi.buffer(s))


def _comm(tid: int) -> str:
    try:
        with open(f"/proc/{tid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _umask(tid: int, default: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return default


def _read_str(task: Task, addr: int) -> str:
    try:
        return task.mm.strncpy_from_user(addr, PATH_MAX).decode(errors="replace")
    except KernelError:
        return "<EFAULT>"
