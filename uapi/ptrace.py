"""ptrace(2) ABI for the runner's tracer — include/uapi/linux/ptrace.h, arch/x86/include/asm/user_64.h.

Hand-written (frozen ABI): the requests, options and events the runner's ptrace fallback
uses, `struct user_regs_struct` (x86_64 PTRACE_GETREGS/SETREGS), `struct
ptrace_syscall_info` (PTRACE_GET_SYSCALL_INFO, 5.3) and the socket structures the tracer
writes into a tracee to receive an fd (include/linux/socket.h, include/uapi/linux/un.h).
The wait(2) flags Python's os module lacks come from include/uapi/linux/wait.h.
"""
from __future__ import annotations

import enum
import signal

import cffi

__all__ = ["ffi", "libc", "Ptrace", "PtraceOpt", "PtraceEvent", "SyscallInfoOp", "WALL",
           "WNOTHREAD", "SYSCALL_TRAP", "NR_ptrace", "NR_socket", "NR_bind", "NR_recvmsg",
           "NR_dup3", "NR_close", "NR_getpid", "NR_mmap", "NR_tgkill", "SCM_RIGHTS",
           "MSG_DONTWAIT", "MSG_CMSG_CLOEXEC"]

_CDEF = """
struct user_regs_struct {
    unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
    unsigned long fs_base, gs_base, ds, es, fs, gs;
};
struct ptrace_syscall_info {
    uint8_t op;
    uint8_t pad[3];
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t stack_pointer;
    union {
        struct { uint64_t nr; uint64_t args[6]; } entry;
        struct { int64_t rval; uint8_t is_error; } exit;
        struct { uint64_t nr; uint64_t args[6]; uint32_t ret_data; } seccomp;
    };
};
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name;
    int msg_namelen;
    struct iovec *msg_iov;
    size_t msg_iovlen;
    void *msg_control;
    size_t msg_controllen;
    int msg_flags;
};
struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; };
struct sockaddr_un { unsigned short sun_family; char sun_path[108]; };
long syscall(long number, ...);
"""
ffi = cffi.FFI()
ffi.cdef(_CDEF)
libc = ffi.dlopen(None)


class Ptrace(enum.IntEnum):
    """PTRACE_* requests."""
    CONT = 7
    KILL = 8
    GETREGS = 12
    SETREGS = 13
    DETACH = 17
    SYSCALL = 24
    SETOPTIONS = 0x4200
    GETEVENTMSG = 0x4201
    GETSIGINFO = 0x4202
    SEIZE = 0x4206
    INTERRUPT = 0x4207
    LISTEN = 0x4208
    GET_SYSCALL_INFO = 0x420E


class PtraceOpt(enum.IntFlag, boundary=enum.KEEP):
    """PTRACE_O_* options."""
    TRACESYSGOOD = 1
    TRACEFORK = 1 << 1
    TRACEVFORK = 1 << 2
    TRACECLONE = 1 << 3
    TRACEEXEC = 1 << 4
    TRACESECCOMP = 1 << 7
    EXITKILL = 1 << 20


class PtraceEvent(enum.IntEnum):
    """PTRACE_EVENT_* (status >> 16 of a ptrace event stop)."""
    FORK = 1
    VFORK = 2
    CLONE = 3
    EXEC = 4
    VFORK_DONE = 5
    EXIT = 6
    SECCOMP = 7
    STOP = 128


class SyscallInfoOp(enum.IntEnum):
    """PTRACE_SYSCALL_INFO_*: which kind of syscall stop."""
    NONE = 0
    ENTRY = 1
    EXIT = 2
    SECCOMP = 3


WALL = 0x40000000           # __WALL: wait for clone children (threads) too
WNOTHREAD = 0x20000000      # __WNOTHREAD: only this thread's children and tracees
SYSCALL_TRAP = signal.SIGTRAP | 0x80   # SIGTRAP | 0x80: a syscall stop under PTRACE_O_TRACESYSGOOD

# arch/x86/entry/syscalls/syscall_64.tbl
NR_mmap = 9
NR_getpid = 39
NR_socket = 41
NR_bind = 49
NR_recvmsg = 47
NR_ptrace = 101
NR_tgkill = 234
NR_dup3 = 292
NR_close = 3

SCM_RIGHTS = 1              # include/linux/socket.h
MSG_DONTWAIT = 0x40
MSG_CMSG_CLOEXEC = 0x40000000
