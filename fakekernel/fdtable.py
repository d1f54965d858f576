"""Files and fd tables — fs/file.c, include/linux/fs.h (struct file, files_struct).

An fd names a `File`; the file holds one reference on the object behind it
(`private_data`: a BpfMap, BpfProg, BpfLink, Btf, or a non-BPF file such as a
cgroup directory or a tty).  Closing the last fd of a file drops that reference.
"""
from __future__ import annotations

import enum

import attrs

from fakekernel.errors import Errno, KernelError

__all__ = ["File", "FdTable", "FMode", "O_RDONLY", "O_WRONLY", "O_RDWR", "O_CLOEXEC",
           "NR_OPEN_DEFAULT"]

# include/uapi/asm-generic/fcntl.h
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_ACCMODE = 0o3
O_CLOEXEC = 0o2000000

NR_OPEN_DEFAULT = 1024      # RLIMIT_NOFILE soft limit of a default process


class FMode(enum.IntFlag):
    READ = 0x1
    WRITE = 0x2


@attrs.define(eq=False)
class File:
    """struct file: what an fd points at."""

    kind: str                          # "bpf-map", "bpf-prog", "bpf-link", "btf", "cgroup", "tty", ...
    private_data: object = None
    f_flags: int = O_RDWR
    refcnt: int = 1                    # fds (and other holders) sharing this file

    @property
    def f_mode(self) -> FMode:
        acc = self.f_flags & O_ACCMODE
        mode = FMode(0)
        if acc in (O_RDONLY, O_RDWR):
            mode |= FMode.READ
        if acc in (O_WRONLY, O_RDWR):
            mode |= FMode.WRITE
        return mode

    def get(self) -> "File":
        self.refcnt += 1
        return self

    def put(self) -> None:
        self.refcnt -= 1
        if self.refcnt == 0:
            release = getattr(self.private_data, "file_release", None)
            if release is not None:
                release(self)


@attrs.define(eq=False)
class FdTable:
    """files_struct: fd number -> File, lowest free number first (alloc_fd)."""

    nofile: int = NR_OPEN_DEFAULT
    _fds: dict[int, File] = attrs.field(factory=dict)

    def install(self, file: File, lowest: int = 0) -> int:
        """get_unused_fd_flags + fd_install; the file's reference is consumed."""
        fd = lowest
        while fd in self._fds:
            fd += 1
        if fd >= self.nofile:
            file.put()
            raise KernelError(Errno.EMFILE, "too many open files")
        self._fds[fd] = file
        return fd

    def fdget(self, fd: int) -> File:
        """fdget(): EBADF for a number with no file."""
        f = self._fds.get(fd) if 0 <= fd < (1 << 31) else None
        if f is None:
            raise KernelError(Errno.EBADF, f"fd {fd} is not open")
        return f

    def lookup(self, fd: int) -> File | None:
        return self._fds.get(fd)

    def close(self, fd: int) -> None:
        f = self._fds.pop(fd, None)
        if f is None:
            raise KernelError(Errno.EBADF, f"fd {fd} is not open")
        f.put()

    def dup(self, fd: int) -> int:
        f = self.fdget(fd)
        return self.install(f.get())

    def items(self) -> list[tuple[int, File]]:
        return sorted(self._fds.items())

    def close_all(self) -> None:
        for fd in sorted(self._fds):
            self.close(fd)
