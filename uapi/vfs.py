"""Filesystem ABI bits the runner answers or uses — statfs, fs magics, inotify, AT_* flags.

Hand-written (frozen ABI):
* `struct statfs` as the x86_64 kernel writes it: include/uapi/asm-generic/statfs.h
  (`__statfs_word` is `long` on 64-bit), ST_* flags: include/linux/statfs.h
* *_MAGIC: include/uapi/linux/magic.h
* `struct inotify_event`, IN_*: include/uapi/linux/inotify.h
* AT_FDCWD / AT_REMOVEDIR: include/uapi/linux/fcntl.h
* `struct epoll_event` (packed on x86_64), EPOLL_CTL_*: include/uapi/linux/eventpoll.h
"""
from __future__ import annotations

import enum

import cffi

__all__ = ["ffi", "libc", "EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_MOD", "EPOLLET", "FsMagic", "StFlag", "InMask", "IN_NONBLOCK", "IN_CLOEXEC",
           "AT_FDCWD", "AT_REMOVEDIR", "NAME_MAX", "PATH_MAX"]

_CDEF = """
typedef struct { int val[2]; } __kernel_fsid_t;
struct statfs {
    long f_type;
    long f_bsize;
    long f_blocks;
    long f_bfree;
    long f_bavail;
    long f_files;
    long f_ffree;
    __kernel_fsid_t f_fsid;
    long f_namelen;
    long f_frsize;
    long f_flags;
    long f_spare[4];
};
struct inotify_event {
    int wd;
    uint32_t mask;
    uint32_t cookie;
    uint32_t len;
    char name[];
};
int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
int inotify_rm_watch(int fd, int wd);
"""

# include/uapi/linux/eventpoll.h: packed on x86_64 (EPOLL_PACKED)
_EPOLL_CDEF = """
struct epoll_event {
    uint32_t events;
    uint64_t data;
};
"""

ffi = cffi.FFI()
ffi.cdef(_CDEF)
ffi.cdef(_EPOLL_CDEF, packed=True)
ffi.cdef("""
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
long syscall(long number, ...);
""")
libc = ffi.dlopen(None)

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLET = 1 << 31


class FsMagic(enum.IntEnum):
    BPF_FS_MAGIC = 0xCAFE4A11
    ANON_INODE_FS_MAGIC = 0x09041934
    TMPFS_MAGIC = 0x01021994


class StFlag(enum.IntFlag, boundary=enum.KEEP):
    """statfs.f_flags (the kernel's ST_*; ST_VALID tells f_flags is filled)."""
    RDONLY = 0x0001
    NOSUID = 0x0002
    NODEV = 0x0004
    NOEXEC = 0x0008
    SYNCHRONOUS = 0x0010
    VALID = 0x0020
    MANDLOCK = 0x0040
    NOATIME = 0x0400
    NODIRATIME = 0x0800
    RELATIME = 0x1000
    NOSYMFOLLOW = 0x2000


class InMask(enum.IntFlag, boundary=enum.KEEP):
    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000


IN_NONBLOCK = 0o4000          # = O_NONBLOCK
IN_CLOEXEC = 0o2000000        # = O_CLOEXEC

AT_FDCWD = -100
AT_REMOVEDIR = 0x200

NAME_MAX = 255
PATH_MAX = 4096
