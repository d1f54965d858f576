"""The runner's seccomp filter — a classic-BPF program (kernel/seccomp.c runs it per syscall).

Only the syscalls the emulator owns reach the supervisor (SECCOMP_RET_USER_NOTIF);
everything else is ALLOWed inside the kernel at no cost.  On x86_64 the x32 variants
(`nr | __X32_SYSCALL_BIT`) are trapped too; from i386 (compat) processes only bpf() is.
"""
from __future__ import annotations

from uapi.perf_event import NR_ioctl, NR_perf_event_open
from uapi.seccomp import (NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch, Cbpf, SeccompRet, ffi,
                          sock_filter_bytes)

__all__ = ["TRAPPED_X86_64", "TRAPPED_I386", "build_filter"]

# what the supervisor answers (supervisor.py dispatches on the same numbers)
TRAPPED_X86_64 = (NR_X86_64.bpf, NR_X86_64.statfs, NR_X86_64.fstatfs, NR_X86_64.mkdir,
                  NR_X86_64.mkdirat, NR_X86_64.unlink, NR_X86_64.unlinkat, NR_X86_64.rmdir,
                  NR_X86_64.openat, NR_X86_64.open, NR_X86_64.epoll_ctl, NR_perf_event_open)
# ioctl(2) is trapped only for perf event requests (_IOC type '$'): cBPF cannot see what an
# fd is, so the supervisor CONTINUEs those on fds it does not own; other ioctls never stop
_IOCTL_TYPE_MASK = 0xFF00
_PERF_IOC_TYPE = ord("$") << 8
TRAPPED_I386 = (NR_I386.bpf,)

_LD_ABS = Cbpf.LD | Cbpf.W | Cbpf.ABS
_JEQ_K = Cbpf.JMP | Cbpf.JEQ | Cbpf.K
_AND_K = Cbpf.ALU | Cbpf.AND | Cbpf.K
_RET_K = Cbpf.RET | Cbpf.K
_OFF_NR = ffi.offsetof("struct seccomp_data", "nr")
_OFF_ARCH = ffi.offsetof("struct seccomp_data", "arch")
_OFF_ARG1 = ffi.offsetof("struct seccomp_data", "args") + ffi.sizeof("uint64_t")  # low half
_U32 = 0xFFFFFFFF


def build_filter(x86_64: tuple[int, ...] = TRAPPED_X86_64,
                 i386: tuple[int, ...] = TRAPPED_I386, trap_perf_ioctl: bool = True) -> bytes:
    """The filter as `struct sock_filter[]` bytes.

    Layout (jumps are relative, resolved from labels):
        ld [arch]; jeq X86_64 ? fallthrough : L32
        ld [nr]; and ~X32_BIT; jeq nr_i ? NOTIF : next ...
        jeq ioctl ? fallthrough : ALLOW; ld [args[1]]; and 0xff00; jeq '$'<<8 ? NOTIF : ALLOW
        ret ALLOW
    L32: jeq I386 ? fallthrough : ALLOW; ld [nr]; jeq nr_j ? NOTIF : next ...
    ALLOW: ret ALLOW
    NOTIF: ret USER_NOTIF
    """
    prog: list[list] = []          # [code, jt(label|int), jf(label|int), k]
    labels: dict[str, int] = {}

    def emit(code, k=0, jt=0, jf=0):
        prog.append([int(code), jt, jf, int(k) & _U32])

    emit(_LD_ABS, _OFF_ARCH)
    emit(_JEQ_K, AuditArch.X86_64, 0, "L32")
    emit(_LD_ABS, _OFF_NR)
    emit(_AND_K, ~X32_SYSCALL_BIT)
    for nr in x86_64:
        emit(_JEQ_K, nr, "NOTIF", 0)
    if trap_perf_ioctl:
        emit(_JEQ_K, NR_ioctl, 0, "ALLOW")
        emit(_LD_ABS, _OFF_ARG1)
        emit(_AND_K, _IOCTL_TYPE_MASK)
        emit(_JEQ_K, _PERF_IOC_TYPE, "NOTIF", "ALLOW")
    emit(_RET_K, SeccompRet.ALLOW)
    labels["L32"] = len(prog)
    emit(_JEQ_K, AuditArch.I386, 0, "ALLOW")
    emit(_LD_ABS, _OFF_NR)
    for nr in i386:
        emit(_JEQ_K, nr, "NOTIF", 0)
    labels["ALLOW"] = len(prog)
    emit(_RET_K, SeccompRet.ALLOW)
    labels["NOTIF"] = len(prog)
    emit(_RET_K, SeccompRet.USER_NOTIF)

    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        out.append((code, jt, jf, k))
    return sock_filter_bytes(out)
