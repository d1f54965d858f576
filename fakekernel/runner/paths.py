"""Path syscalls of targets — fs/namei.c, fs/stat.c, fs/statfs.c, fs/open.c as the runner
answers them: the calls that name something under the emulated bpffs mount (statfs, the
stat family, access, mkdir, unlink, rmdir, symlink, readlink, open of its directories) or one of the
emulator's virtual files (/proc/<pid>/fdinfo of emulated fds, tracefs/sysfs files, CPU
lists) are answered from the `Kernel`; every other path CONTINUEs to the real kernel.

A mixin of `Supervisor` (runner/supervisor.py), which provides `kern`, `listener`,
`vfiles`, `bpffs_stat`, `_trace`.  Relative paths are resolved against the target's cwd
or dirfd (/proc/<pid>/cwd, /proc/<pid>/fd/N), mapping the snapshot directories handed out
for bpffs directories back to the bpffs paths they mirror.
"""
from __future__ import annotations

import os

from fakekernel.errors import Errno, KernelError
from fakekernel.runner.notify import NotifError
from fakekernel.runner.perf import fire_sys_enter
from fakekernel.runner.remote_files import OTHER_FILE_KIND
from fakekernel.runner.trace import format_ret
from fakekernel.runner.vfiles import memfd_with
from fakekernel.task import Task
from uapi.vfs import AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, NAME_MAX, PATH_MAX, FsMagic, StFlag, ffi as vfs_ffi

__all__ = ["PathSyscalls", "CONTINUE"]

CONTINUE = object()         # "let the real kernel run this syscall"
_PAGE_SIZE = 4096


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


class PathSyscalls:
    def _absolute(self, task: Task, addr: int, dirfd: int) -> str | None:
        """The path argument at `addr`, made absolute (None: unreadable, empty, too long)."""
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
        return path

    def _in_bpffs(self, norm: str) -> bool:
        mnt = self.kern.bpffs_mount
        return norm == mnt or norm.startswith(mnt + "/")

    def _path_arg(self, task: Task, addr: int, dirfd: int = AT_FDCWD) -> tuple[str, str] | None:
        """(path as the target wrote it, made absolute; its normalised form) when it names
        something under the emulated bpffs mount, else None (the real kernel answers)."""
        path = self._absolute(task, addr, dirfd)
        if path is None:
            return None
        norm = os.path.normpath(path)
        return (path, norm) if self._in_bpffs(norm) else None

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

    def _stat(self, task: Task, name: str, dirfd: int, path_arg: int, out: int, statx=False,
              follow: bool = True):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE

        def do():
            node = self.kern.bpffs.lookup(p[0], task, follow=follow)
            rec = self.bpffs_stat.statx(node) if statx else self.bpffs_stat.stat(node)
            task.mm.copy_to_user(out, rec)
        return self._vfs(task, name, p[0], do)

    def sys_stat(self, task: Task, n):
        return self._stat(task, "stat", AT_FDCWD, n.data.args[0], n.data.args[1])

    def sys_lstat(self, task: Task, n):
        return self._stat(task, "lstat", AT_FDCWD, n.data.args[0], n.data.args[1], follow=False)

    def sys_newfstatat(self, task: Task, n):
        return self._stat(task, "newfstatat", _s32(n.data.args[0]), n.data.args[1],
                          n.data.args[2], follow=not n.data.args[3] & AT_SYMLINK_NOFOLLOW)

    def sys_statx(self, task: Task, n):
        return self._stat(task, "statx", _s32(n.data.args[0]), n.data.args[1], n.data.args[4],
                          statx=True, follow=not n.data.args[2] & AT_SYMLINK_NOFOLLOW)

    def _symlink(self, task: Task, target_arg: int, dirfd: int, path_arg: int):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE
        try:
            target = task.mm.strncpy_from_user(target_arg, PATH_MAX).decode(errors="surrogateescape")
        except KernelError as e:
            return -e.errno
        return self._vfs(task, "symlink", p[0], lambda: self.kern.bpffs.symlink(target, p[0], task))

    def sys_symlink(self, task: Task, n):
        return self._symlink(task, n.data.args[0], AT_FDCWD, n.data.args[1])

    def sys_symlinkat(self, task: Task, n):
        return self._symlink(task, n.data.args[0], _s32(n.data.args[1]), n.data.args[2])

    def _readlink(self, task: Task, dirfd: int, path_arg: int, buf: int, bufsiz: int):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE
        if _s32(bufsiz) <= 0:
            return -Errno.EINVAL
        try:
            target = self.kern.bpffs.readlink(p[0], task).encode(errors="surrogateescape")[:bufsiz]
            task.mm.copy_to_user(buf, target)
            ret = len(target)
        except KernelError as e:
            ret = -e.errno
        self._trace(task.pid, f'readlink("{p[0]}") = {format_ret(ret)}')
        return ret

    def sys_readlink(self, task: Task, n):
        return self._readlink(task, AT_FDCWD, n.data.args[0], n.data.args[1], _u32(n.data.args[2]))

    def sys_readlinkat(self, task: Task, n):
        return self._readlink(task, _s32(n.data.args[0]), n.data.args[1], n.data.args[2],
                              _u32(n.data.args[3]))

    def _access(self, task: Task, dirfd: int, path_arg: int, mode: int):
        p = self._path_arg(task, path_arg, dirfd)
        if p is None:
            return CONTINUE

        def do():
            node = self.kern.bpffs.lookup(p[0], task)
            if not self.bpffs_stat.may_access(task, node, mode):
                raise KernelError(Errno.EACCES, "access denied")
        return self._vfs(task, "access", p[0], do)

    def sys_access(self, task: Task, n):
        return self._access(task, AT_FDCWD, n.data.args[0], _s32(n.data.args[1]))

    def sys_faccessat(self, task: Task, n):
        return self._access(task, _s32(n.data.args[0]), n.data.args[1], _s32(n.data.args[2]))

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

    # ------------------------------------------------------------------ virtual files
    def _open(self, task: Task, n, dirfd: int, path_arg: int, flags: int):
        """open(2)/openat(2): virtual files (vfiles.py) are answered, all else CONTINUEs."""
        path = self._absolute(task, path_arg, dirfd)
        if path is None:
            return CONTINUE
        norm = os.path.normpath(path)
        what = self.vfiles.lookup(task, norm, flags)
        if what is None:
            if not self._in_bpffs(norm):
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
        fire_sys_enter(self.kern, task, "sys_enter_openat", n.data.args)
        return self._open(task, n, _s32(n.data.args[0]), n.data.args[1], _s32(n.data.args[2]))


def _statfs_bytes(magic: int, flags: int) -> bytes:
    """simple_statfs(): what bpffs and anon_inodefs report."""
    s = vfs_ffi.new("struct statfs *")
    s.f_type = magic
    s.f_bsize = _PAGE_SIZE
    s.f_frsize = _PAGE_SIZE
    s.f_namelen = NAME_MAX
    s.f_flags = flags
    return bytes(vfs_ffi.buffer(s))


def _umask(tid: int, default: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return default
