"""Seccomp user notification ABI — include/uapi/linux/seccomp.h, filter.h, bpf_common.h, audit.h.

Hand-written (the structs are frozen ABI; the values below are checked against the
system's <linux/seccomp.h> by tests/unit/uapi/test_seccomp.py when a C compiler exists):

* `struct seccomp_data`, `seccomp_notif`, `seccomp_notif_resp`, `seccomp_notif_addfd`,
  `seccomp_notif_sizes` and the SECCOMP_* constants: include/uapi/linux/seccomp.h
* `struct sock_filter` / `sock_fprog`: include/uapi/linux/filter.h; classic-BPF opcode
  parts: include/uapi/linux/bpf_common.h
* AUDIT_ARCH_*: include/uapi/linux/audit.h (+ elf-em.h)
* syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl
* PR_SET_NO_NEW_PRIVS: include/uapi/linux/prctl.h

`ffi` also declares the few libc entry points the runner needs (ABI mode, dlopen(None)).
"""
from __future__ import annotations

import enum

import cffi

__all__ = ["ffi", "libc", "SeccompOp", "FilterFlag", "SeccompRet", "NotifFlag", "AddfdFlag",
           "NOTIF_FD_SYNC_WAKE_UP", "Ioctl", "Cbpf", "AuditArch", "X32_SYSCALL_BIT",
           "NR_X86_64", "NR_I386", "PR_SET_NO_NEW_PRIVS", "sock_filter_bytes"]

_CDEF = """
struct seccomp_data {
    int nr;
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t args[6];
};
struct seccomp_notif_sizes {
    uint16_t seccomp_notif;
    uint16_t seccomp_notif_resp;
    uint16_t seccomp_data;
};
struct seccomp_notif {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    struct seccomp_data data;
};
struct seccomp_notif_resp {
    uint64_t id;
    int64_t val;
    int32_t error;
    uint32_t flags;
};
struct seccomp_notif_addfd {
    uint64_t id;
    uint32_t flags;
    uint32_t srcfd;
    uint32_t newfd;
    uint32_t newfd_flags;
};
struct sock_filter {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};
struct sock_fprog {
    unsigned short len;
    struct sock_filter *filter;
};

int ioctl(int fd, unsigned long request, ...);
long syscall(long number, ...);
int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
          unsigned long arg5);
"""

ffi = cffi.FFI()
ffi.cdef(_CDEF)
libc = ffi.dlopen(None)


class SeccompOp(enum.IntEnum):
    """seccomp(2) operations."""
    SET_MODE_STRICT = 0
    SET_MODE_FILTER = 1
    GET_ACTION_AVAIL = 2
    GET_NOTIF_SIZES = 3


class FilterFlag(enum.IntFlag, boundary=enum.KEEP):
    """SECCOMP_FILTER_FLAG_*."""
    TSYNC = 1 << 0
    LOG = 1 << 1
    SPEC_ALLOW = 1 << 2
    NEW_LISTENER = 1 << 3
    TSYNC_ESRCH = 1 << 4
    WAIT_KILLABLE_RECV = 1 << 5         # Linux 5.19


class SeccompRet(enum.IntEnum):
    """SECCOMP_RET_* filter return actions (the low 16 bits carry data, e.g. an errno)."""
    KILL_PROCESS = 0x80000000
    KILL_THREAD = 0x00000000
    TRAP = 0x00030000
    ERRNO = 0x00050000
    USER_NOTIF = 0x7FC00000
    TRACE = 0x7FF00000
    LOG = 0x7FFC0000
    ALLOW = 0x7FFF0000


class NotifFlag(enum.IntFlag, boundary=enum.KEEP):
    """seccomp_notif_resp.flags."""
    CONTINUE = 1 << 0                   # SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5)


class AddfdFlag(enum.IntFlag, boundary=enum.KEEP):
    """seccomp_notif_addfd.flags."""
    SETFD = 1 << 0
    SEND = 1 << 1                       # 5.14: install + reply atomically


NOTIF_FD_SYNC_WAKE_UP = 1 << 0          # SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6)

# include/uapi/asm-generic/ioctl.h: _IOC(dir, type, nr, size)
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
_IOC_WRITE, _IOC_READ = 1, 2
SECCOMP_IOC_MAGIC = ord("!")


def _ioc(direction: int, nr: int, ctype: str) -> int:
    return ((direction << _IOC_DIRSHIFT) | (SECCOMP_IOC_MAGIC << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (ffi.sizeof(ctype) << _IOC_SIZESHIFT))


class Ioctl(enum.IntEnum):
    """SECCOMP_IOCTL_NOTIF_* on the listener fd."""
    NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, "struct seccomp_notif")
    NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, "struct seccomp_notif_resp")
    NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, "uint64_t")
    NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, "struct seccomp_notif_addfd")
    NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, 4, "uint64_t")


class Cbpf(enum.IntEnum):
    """Classic BPF opcode parts (bpf_common.h) used to build seccomp filters."""
    LD = 0x00
    ALU = 0x04
    JMP = 0x05
    RET = 0x06
    W = 0x00
    ABS = 0x20
    AND = 0x50
    JEQ = 0x10
    JSET = 0x40
    K = 0x00


class AuditArch(enum.IntEnum):
    """AUDIT_ARCH_* values seen in seccomp_data.arch."""
    X86_64 = 0xC000003E                 # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    I386 = 0x40000003                   # EM_386 | __AUDIT_ARCH_LE


X32_SYSCALL_BIT = 0x40000000            # arch/x86/include/uapi/asm/unistd.h: __X32_SYSCALL_BIT


class NR_X86_64(enum.IntEnum):
    """The x86_64 syscall numbers the runner traps or issues (syscall_64.tbl)."""
    open = 2
    close = 3
    stat = 4
    lstat = 6
    access = 21
    dup = 32
    socket = 41
    bind = 49
    getsockname = 51
    setsockopt = 54
    getsockopt = 55
    statfs = 137
    fstatfs = 138
    mkdir = 83
    rmdir = 84
    unlink = 87
    symlink = 88
    readlink = 89
    openat = 257
    mkdirat = 258
    epoll_wait = 232
    epoll_ctl = 233
    epoll_pwait = 281
    epoll_pwait2 = 441
    kcmp = 312
    unlinkat = 263
    newfstatat = 262
    symlinkat = 266
    readlinkat = 267
    faccessat = 269
    dup3 = 292
    seccomp = 317
    bpf = 321
    statx = 332
    pidfd_open = 434
    pidfd_getfd = 438
    faccessat2 = 439


class NR_I386(enum.IntEnum):
    """The i386 (compat) syscall numbers the runner traps (syscall_32.tbl)."""
    bpf = 357


PR_SET_NO_NEW_PRIVS = 38


def sock_filter_bytes(insns: list[tuple[int, int, int, int]]) -> bytes:
    """(code, jt, jf, k) tuples as the bytes of a `struct sock_filter[]`."""
    arr = ffi.new("struct sock_filter[]", len(insns))
    for i, (code, jt, jf, k) in enumerate(insns):
        arr[i].code, arr[i].jt, arr[i].jf, arr[i].k = code, jt, jf, k
    return bytes(ffi.buffer(arr))
