"""Files of a process outside the emulator — fs/file.c (fd tables), seen through /proc and seccomp.

A target process holds REAL fds for emulated objects, so that dup3, fcntl(F_DUPFD),
close, fork, exec (O_CLOEXEC) and readlink behave natively.  The design (see
/work/shared/notes/interception.md §2):

* every `File` (struct file) handed to a target is backed by its own memfd, named like the
  kernel's anon inode ("bpf-map", "bpf-prog", "bpf-link", "btf"), so that
  readlink(/proc/self/fd/N) gives "/memfd:bpf-map (deleted)" and bpftool's get_fd_type()
  recognises it.  The target gets a *re-open* of it through /proc/self/fd (memfds
  themselves are FMODE_NONOTIFY), with the File's access mode, installed with
  SECCOMP_IOCTL_NOTIF_ADDFD; dup/fcntl/fork in the target share that description;
* an inotify IN_CLOSE_WRITE/IN_CLOSE_NOWRITE watch on that memfd fires when the target's
  last reference to the description goes (close of all dups, exit of all forks, exec with
  O_CLOEXEC, munmap) -> `File.put()`;
* the target's fd number -> File: stat("/proc/<tid>/fd/<n>") gives (st_dev, st_ino), which
  names exactly one File.  Any other open fd is a File of kind "other".

One memfd per File, not per object: inotify merges identical consecutive events of one
watch, so two descriptions of one inode closed between two of our reads would give ONE
event (measured: close(dup) + close(get_fd_by_id fd) of one map lost a close).  A separate
inode per description makes every close its own watch.  Objects that userspace will mmap
(BPF_F_MMAPABLE arrays, ring buffers) need one shared inode per object instead; that needs
another close-accounting scheme and is not done yet.
"""
from __future__ import annotations

import os

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_ACCMODE, File
from fakekernel.runner.notify import Listener, NotifError
from uapi.vfs import IN_CLOEXEC, IN_NONBLOCK, InMask, ffi as vfs_ffi, libc as vfs_libc

__all__ = ["RemoteFiles", "RemoteFdTable", "OTHER_FILE_KIND"]

OTHER_FILE_KIND = "other"           # an fd the emulator does not own (pipe, tty, regular file)
_FD_MAX = 1 << 31
_EVENT_HDR = vfs_ffi.sizeof("struct inotify_event")
_CLOSE = InMask.CLOSE_WRITE | InMask.CLOSE_NOWRITE


@attrs.define(eq=False)
class _Backing:
    """The memfd behind one File in target processes."""

    file: File
    memfd: int
    wd: int
    key: tuple[int, int]                                   # (st_dev, st_ino)


class RemoteFiles:
    """The supervisor-wide registry: memfd inode <-> the File a target description stands for."""

    def __init__(self):
        self.inotify = vfs_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.inotify < 0:
            raise OSError(vfs_ffi.errno, "inotify_init1")
        self._by_key: dict[tuple[int, int], _Backing] = {}
        self._by_wd: dict[int, _Backing] = {}
        self.overflows = 0

    def open_description(self, file: File) -> int:
        """A new open file description for `file` in *our* process (the caller closes it
        once it is installed in the target, or calls `abandon`)."""
        memfd = os.memfd_create(file.kind, os.MFD_CLOEXEC)
        try:
            st = os.fstat(memfd)
            wd = vfs_libc.inotify_add_watch(self.inotify, f"/proc/self/fd/{memfd}".encode(),
                                            _CLOSE)
            if wd < 0:
                raise OSError(vfs_ffi.errno, "inotify_add_watch")
            fd = os.open(f"/proc/self/fd/{memfd}", (file.f_flags & O_ACCMODE) | os.O_CLOEXEC)
        except OSError:
            os.close(memfd)
            raise
        b = _Backing(file=file, memfd=memfd, wd=wd, key=(st.st_dev, st.st_ino))
        self._by_key[b.key] = b
        self._by_wd[wd] = b
        return fd

    def abandon(self, file: File) -> None:
        """The description opened for `file` never reached the target: forget it (its close
        event, if any, arrives for a watch we no longer know) and drop the File's reference."""
        b = next(b for b in self._by_key.values() if b.file is file)
        self._forget(b)
        file.put()

    def lookup_key(self, key: tuple[int, int]) -> File | None:
        b = self._by_key.get(key)
        return b.file if b is not None else None

    # ---- close events ----
    def process_events(self) -> int:
        """Drain the inotify queue; each close event drops its File. Returns events read."""
        n = 0
        while True:
            try:
                buf = os.read(self.inotify, 64 * 1024)
            except BlockingIOError:
                return n
            off = 0
            while off < len(buf):
                ev = vfs_ffi.cast("struct inotify_event *", vfs_ffi.from_buffer(buf[off:]))
                self._event(ev.wd, ev.mask)
                off += _EVENT_HDR + ev.len
                n += 1

    def _event(self, wd: int, mask: int) -> None:
        if mask & InMask.Q_OVERFLOW:
            self.overflows += 1         # lost closes: those objects stay alive until exit
            return
        b = self._by_wd.get(wd)
        if b is None or not mask & _CLOSE:
            return                      # IN_IGNORED, or a watch already forgotten
        self._forget(b)
        b.file.put()

    def _forget(self, b: _Backing) -> None:
        vfs_libc.inotify_rm_watch(self.inotify, b.wd)
        os.close(b.memfd)
        del self._by_key[b.key], self._by_wd[b.wd]

    def live_files(self) -> list[File]:
        return [b.file for b in self._by_key.values()]

    def close(self) -> None:
        """Supervisor exit: every target is gone; drop whatever close events did not report."""
        self.process_events()
        for b in list(self._by_key.values()):
            self._forget(b)
            b.file.put()
        os.close(self.inotify)


@attrs.define(eq=False)
class RemoteFdTable:
    """`FdTable` of thread `tid` of a target process (same interface as fdtable.FdTable).

    `notif_id` is the notification being answered: `install` puts the new fd into the
    target with ADDFD and replies with it atomically (ADDFD_FLAG_SEND), so the fd exists
    in the target exactly when the syscall returns it.  `replied` tells the supervisor
    the reply has been sent.
    """

    files: RemoteFiles
    listener: Listener
    tid: int
    notif_id: int = 0
    replied: bool = False

    def install(self, file: File, lowest: int = 0) -> int:
        """get_unused_fd_flags + fd_install in the target; the file's reference is consumed."""
        if lowest:
            file.put()
            raise KernelError(Errno.EINVAL, "a lowest fd is not supported in a remote fd table")
        if self.replied:
            file.put()
            raise KernelError(Errno.EINVAL, "a second fd in one syscall reply")
        ours = self.files.open_description(file)
        try:
            fd = self.listener.addfd(self.notif_id, ours, send=True)
        except NotifError as e:
            self.files.abandon(file)
            if e.errno == Errno.EMFILE:
                raise KernelError(Errno.EMFILE, "target fd table full") from None
            raise KernelError(Errno(e.errno), f"ADDFD failed: {e}") from None
        finally:
            os.close(ours)
        self.replied = True
        return fd

    def _stat(self, fd: int) -> os.stat_result | None:
        if not 0 <= fd < _FD_MAX:
            return None
        try:
            return os.stat(f"/proc/{self.tid}/fd/{fd}")
        except OSError:
            return None

    def lookup(self, fd: int) -> File | None:
        st = self._stat(fd)
        if st is None:
            return None
        f = self.files.lookup_key((st.st_dev, st.st_ino))
        return f if f is not None else File(kind=OTHER_FILE_KIND)

    def fdget(self, fd: int) -> File:
        f = self.lookup(fd)
        if f is None:
            raise KernelError(Errno.EBADF, f"fd {fd} is not open in task {self.tid}")
        return f

    def close(self, fd: int) -> None:
        raise KernelError(Errno.EOPNOTSUPP, "the emulator cannot close a target's fd")

    def dup(self, fd: int) -> int:
        """The target dups its fds itself (sharing the description); the emulator never does."""
        raise KernelError(Errno.EOPNOTSUPP, "the emulator cannot dup a target's fd")

    def items(self) -> list[tuple[int, File]]:
        try:
            names = os.listdir(f"/proc/{self.tid}/fd")
        except OSError:
            return []
        out = []
        for name in sorted(names, key=int):
            f = self.lookup(int(name))
            if f is not None:
                out.append((int(name), f))
        return out

    def close_all(self) -> None:
        """The target closes its own fds when it exits; close events do the rest."""
