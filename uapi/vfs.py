"""Filesystem ABI bits the runner answers or uses — statfs, fs magics, inotify, AT_* flags.

Hand-written (frozen ABI):
* `struct statfs` as the x86_64 kernel writes it: include/uapi/asm-generic/statfs.h
  (`__statfs_word` is `long` on 64-bit), ST_* flags: include/linux/statfs.h
* *_MAGIC: include/uapi/linux/magic.h
* `struct inotify_event`, IN_*: include/uapi/linux/inotify.h
* AT_FDCWD / AT_REMOVEDIR: include/uapi/linux/fcntl.h
* `struct stat` (x86_64) and `struct statx`: arch/x86/include/uapi/asm/stat.h, include/uapi/linux/stat.h
* `struct flock`: include/uapi/asm-generic/fcntl.h (x86_64)
* `struct epoll_event` (packed on x86_64), EPOLL_CTL_*: include/uapi/linux/eventpoll.h
"""
from __future__ import annotations

import enum

import cffi

__all__ = ["ffi", "libc", "EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_MOD", "EPOLLET", "FsMagic", "StFlag", "InMask", "IN_NONBLOCK", "IN_CLOEXEC",
           "AT_FDCWD", "AT_REMOVEDIR", "AT_EMPTY_PATH", "AT_SYMLINK_NOFOLLOW", "STATX_BASIC_STATS", "NAME_MAX", "PATH_MAX"]

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
struct stat {
    unsigned long st_dev;
    unsigned long st_ino;
    unsigned long st_nlink;
    unsigned int st_mode;
    unsigned int st_uid;
    unsigned int st_gid;
    int __pad0;
    unsigned long st_rdev;
    long st_size;
    long st_blksize;
    long st_blocks;
    unsigned long st_atime;
    unsigned long st_atime_nsec;
    unsigned long st_mtime;
    unsigned long st_mtime_nsec;
    unsigned long st_ctime;
    unsigned long st_ctime_nsec;
    long __unused[3];
};
struct statx_timestamp {
    int64_t tv_sec;
    uint32_t tv_nsec;
    int32_t __reserved;
};
struct statx {
    uint32_t stx_mask;
    uint32_t stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink;
    uint32_t stx_uid;
    uint32_t stx_gid;
    uint16_t stx_mode;
    uint16_t __spare0[1];
    uint64_t stx_ino;
    uint64_t stx_size;
    uint64_t stx_blocks;
    uint64_t stx_attributes_mask;
    struct statx_timestamp stx_atime;
    struct statx_timestamp stx_btime;
    struct statx_timestamp stx_ctime;
    struct statx_timestamp stx_mtime;
    uint32_t stx_rdev_major;
    uint32_t stx_rdev_minor;
    uint32_t stx_dev_major;
    uint32_t stx_dev_minor;
    uint64_t stx_mnt_id;
    uint32_t stx_dio_mem_align;
    uint32_t stx_dio_offset_align;
    uint64_t __spare3[12];
};
struct flock {
    short l_type;
    short l_whence;
    long l_start;
    long l_len;
    int l_pid;
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

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BASIC_STATS = 0x7FF
AT_FDCWD = -100
AT_REMOVEDIR = 0x200

NAME_MAX = 255
PATH_MAX = 4096
