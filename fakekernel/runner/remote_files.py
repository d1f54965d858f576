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
inode per description makes every close its own watch.

Objects that userspace maps (BPF_F_MMAPABLE arrays — global data —, ring buffers) are the
exception: their descriptions are re-opens of the object's OWN memfd, whose file offsets
are the kernel's mmap offsets (see fakekernel/syscall/map_mmap.py), so mmap(2) of the fd
in the target maps the very pages the emulator reads and writes, natively, untrapped.
All Files of such an object share one inode, so inotify may merge two of their close
events into one, and cannot say which description died.  Each such description therefore
carries an OFD lock (fcntl F_OFD_SETLK) on a byte of its own, far beyond the data: the
lock lives exactly as long as the description (every dup, fork, SCM_RIGHTS copy and
mapping of it), and F_OFD_GETLK on our own fd tells whether it is still there.  A close
event on the inode checks every File of the object that way; a File whose lock is gone is
put.  (fsnotify reports the close just before __fput drops the locks, so a File found
still locked is checked again after the next events or syscall.)  Which File a target fd
stands for, when several share the inode, is chosen by the description's access mode
(/proc/<tid>/fdinfo "flags").
"""
from __future__ import annotations

import fcntl
import os
import stat
import time

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_ACCMODE, File
from fakekernel.runner.notify import Listener, NotifError
from fakekernel.syscall.map_mmap import user_memfd
from uapi.vfs import IN_CLOEXEC, IN_NONBLOCK, InMask, ffi as vfs_ffi, libc as vfs_libc

__all__ = ["RemoteFiles", "RemoteFdTable", "OTHER_FILE_KIND"]

OTHER_FILE_KIND = "other"           # an fd the emulator does not own (pipe, tty, regular file)
_FD_MAX = 1 << 31
_EVENT_HDR = vfs_ffi.sizeof("struct inotify_event")
_CLOSE = InMask.CLOSE_WRITE | InMask.CLOSE_NOWRITE
_RECHECK_S = 0.05
_LOCK_BASE = 1 << 40            # lock bytes far past any data (locks are advisory, any offset)


@attrs.define(eq=False)
class _Backing:
    """The memfd behind one File in target processes."""

    file: File
    memfd: int
    wd: int
    key: tuple[int, int]                                   # (st_dev, st_ino)


@attrs.define(eq=False)
class _SharedBacking:
    """The object's own memfd, behind every File of an mmap()able object in targets."""

    files: list                                            # [(File, lock slot)]
    wd: int
    key: tuple[int, int]
    check_fd: int                                          # ours, for F_OFD_GETLK
    next_slot: int = 0

    def file_for(self, accmode: int | None) -> File:
        for f, _ in self.files:
            if accmode is None or f.f_flags & O_ACCMODE == accmode:
                return f
        return self.files[0][0]


def _ofd_lock(fd: int, slot: int, cmd: int, ltype: int) -> int:
    """F_OFD_SETLK / F_OFD_GETLK on the byte of `slot`; GETLK returns the l_type found."""
    fl = vfs_ffi.new("struct flock *", {"l_type": ltype, "l_whence": os.SEEK_SET,
                                        "l_start": _LOCK_BASE + slot, "l_len": 1})
    out = fcntl.fcntl(fd, cmd, bytes(vfs_ffi.buffer(fl)))
    vfs_ffi.memmove(fl, out, len(out))
    return fl.l_type


class RemoteFiles:
    """The supervisor-wide registry: memfd inode <-> the File a target description stands for."""

    def __init__(self):
        self.inotify = vfs_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.inotify < 0:
            raise OSError(vfs_ffi.errno, "inotify_init1")
        self._by_key: dict[tuple[int, int], _Backing] = {}
        self._by_wd: dict[int, _Backing] = {}
        self._shared: dict[tuple[int, int], _SharedBacking] = {}
        self._shared_by_wd: dict[int, _SharedBacking] = {}
        self._pending: set = set()          # shared backings to check again
        self._last_recheck = 0.0
        self.overflows = 0
        # fds the emulator did not hand out but still gives meaning to (a cgroup2 directory
        # the target opened natively): (st_dev, st_ino, path) -> File | None
        self.foreign = None

    def open_description(self, file: File) -> int:
        """A new open file description for `file` in *our* process (the caller closes it
        once it is installed in the target, or calls `abandon`)."""
        shm = user_memfd(file.private_data)
        if shm is not None:
            return self._open_shared(file, shm)
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
        sb = next((sb for sb in self._shared.values() if any(f is file for f, _ in sb.files)),
                  None)
        if sb is not None:
            sb.files = [(f, slot) for f, slot in sb.files if f is not file]
            if not sb.files:
                self._forget_shared(sb)
            file.put()
            return
        b = next(b for b in self._by_key.values() if b.file is file)
        self._forget(b)
        file.put()

    def lookup_key(self, key: tuple[int, int], accmode=None) -> File | None:
        """The File behind inode `key`; `accmode()` gives the description's O_ACCMODE when
        several Files share the inode (mmap()able objects)."""
        b = self._by_key.get(key)
        if b is not None:
            return b.file
        sb = self._shared.get(key)
        if sb is None:
            return None
        return sb.file_for(accmode() if accmode is not None and len(sb.files) > 1 else None)

    # ---- mmap()able objects: one shared inode ----
    def _open_shared(self, file: File, shm: int) -> int:
        st = os.fstat(shm)
        key = (st.st_dev, st.st_ino)
        sb = self._shared.get(key)
        if sb is None:
            wd = vfs_libc.inotify_add_watch(self.inotify, f"/proc/self/fd/{shm}".encode(), _CLOSE)
            if wd < 0:
                raise OSError(vfs_ffi.errno, "inotify_add_watch")
            check_fd = os.open(f"/proc/self/fd/{shm}", os.O_RDWR | os.O_CLOEXEC)
            sb = _SharedBacking(files=[], wd=wd, key=key, check_fd=check_fd)
            self._shared[key] = sb
            self._shared_by_wd[wd] = sb
        accmode = file.f_flags & O_ACCMODE
        fd = os.open(f"/proc/self/fd/{shm}", accmode | os.O_CLOEXEC)
        slot, sb.next_slot = sb.next_slot, sb.next_slot + 1
        try:        # a read lock needs a readable description, a write lock a writable one
            _ofd_lock(fd, slot, fcntl.F_OFD_SETLK,
                      fcntl.F_WRLCK if accmode == os.O_WRONLY else fcntl.F_RDLCK)
        except OSError:
            os.close(fd)
            raise
        sb.files.append((file, slot))
        return fd

    def _forget_shared(self, sb: _SharedBacking) -> None:
        self._pending.discard(sb)
        vfs_libc.inotify_rm_watch(self.inotify, sb.wd)
        os.close(sb.check_fd)
        del self._shared[sb.key], self._shared_by_wd[sb.wd]

    def _shared_event(self, sb: _SharedBacking) -> None:
        """A description of the object closed: put the Files whose lock went with it."""
        alive = []
        for f, slot in sb.files:
            if _ofd_lock(sb.check_fd, slot, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK:
                alive.append((f, slot))
            else:
                f.put()
        sb.files = alive
        if not alive:
            self._forget_shared(sb)
        else:
            self._pending.add(sb)       # the closing __fput may not have dropped its lock yet

    def _recheck_shared(self, events: int) -> None:
        """Check again the objects a close event left with live Files: after any batch of
        events, else at most every _RECHECK_S seconds."""
        if not self._pending:
            return
        now = time.monotonic()
        if not events and now - self._last_recheck < _RECHECK_S:
            return
        self._last_recheck = now
        for sb in list(self._pending):
            self._pending.discard(sb)
            if sb.key in self._shared:
                self._shared_event(sb)
        if not events:
            self._pending.clear()       # one late look is enough once the closer is done

    # ---- close events ----
    def process_events(self) -> int:
        """Drain the inotify queue; each close event drops its File. Returns events read."""
        n = 0
        while True:
            try:
                buf = os.read(self.inotify, 64 * 1024)
            except BlockingIOError:
                self._recheck_shared(n)
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
        if not mask & _CLOSE:
            return                      # IN_IGNORED
        sb = self._shared_by_wd.get(wd)
        if sb is not None:
            self._shared_event(sb)
            return
        b = self._by_wd.get(wd)
        if b is None:
            return                      # a watch already forgotten
        self._forget(b)
        b.file.put()

    def _forget(self, b: _Backing) -> None:
        vfs_libc.inotify_rm_watch(self.inotify, b.wd)
        os.close(b.memfd)
        del self._by_key[b.key], self._by_wd[b.wd]

    def live_files(self) -> list[File]:
        return [b.file for b in self._by_key.values()] + \
            [f for sb in self._shared.values() for f, _ in sb.files]

    def close(self) -> None:
        """Supervisor exit: every target is gone; drop whatever close events did not report."""
        self.process_events()
        for b in list(self._by_key.values()):
            self._forget(b)
            b.file.put()
        for sb in list(self._shared.values()):
            self._forget_shared(sb)
            for f, _ in sb.files:
                f.put()
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
        f = self.files.lookup_key((st.st_dev, st.st_ino), lambda: _fd_accmode(self.tid, fd))
        if f is None and self.files.foreign is not None and stat.S_ISDIR(st.st_mode):
            try:
                path = os.readlink(f"/proc/{self.tid}/fd/{fd}")
            except OSError:
                path = None
            if path is not None:
                f = self.files.foreign(st.st_dev, st.st_ino, path)
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


def _fd_accmode(tid: int, fd: int) -> int | None:
    """O_ACCMODE of the description behind `fd` of `tid` (/proc/<tid>/fdinfo/<fd> "flags")."""
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as fh:
            for line in fh:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8) & O_ACCMODE
    except (OSError, ValueError):
        pass
    return None
