"""The runner's seccomp filter — a classic-BPF program (kernel/seccomp.c runs it per syscall).

Only the syscalls the emulator owns reach the supervisor (SECCOMP_RET_USER_NOTIF);
everything else is ALLOWed inside the kernel at no cost.  On x86_64 the x32 variants
(`nr | __X32_SYSCALL_BIT`) are trapped too; from i386 (compat) processes only bpf() is.
"""
from __future__ import annotations

from uapi.perf_event import NR_ioctl, NR_perf_event_open
from uapi.netlink import AF_NETLINK, NETLINK_ROUTE, SOL_NETLINK
from fakekernel.runner.sockopt import SO_GET_FILTER, SOCKET_FILTER_OPTS, SOL_SOCKET
from uapi.vfs import AT_EMPTY_PATH
from uapi.seccomp import (NR_I386, NR_X86_64, X32_SYSCALL_BIT, AuditArch, Cbpf, SeccompRet, ffi,
                          sock_filter_bytes)

__all__ = ["TRAPPED_X86_64", "TRAPPED_I386", "build_filter", "run_filter"]

# what the supervisor answers (supervisor.py dispatches on the same numbers)
TRAPPED_X86_64 = (NR_X86_64.bpf, NR_X86_64.statfs, NR_X86_64.fstatfs, NR_X86_64.mkdir,
                  NR_X86_64.mkdirat, NR_X86_64.unlink, NR_X86_64.unlinkat, NR_X86_64.rmdir,
                  NR_X86_64.openat, NR_X86_64.open, NR_X86_64.epoll_ctl, NR_perf_event_open,
                  NR_X86_64.stat, NR_X86_64.lstat, NR_X86_64.access, NR_X86_64.faccessat,
                  NR_X86_64.faccessat2, NR_X86_64.symlink, NR_X86_64.symlinkat, NR_X86_64.readlink,
                  NR_X86_64.readlinkat)
# ioctl(2) is trapped only for perf event requests (_IOC type '$'): cBPF cannot see what an
# fd is, so the supervisor CONTINUEs those on fds it does not own; other ioctls never stop
_IOCTL_TYPE_MASK = 0xFF00
_PERF_IOC_TYPE = ord("$") << 8
TRAPPED_I386 = (NR_I386.bpf,)
# syscalls trapped only when some arguments (low 32 bits) have given values:
# socket(AF_NETLINK, *, NETLINK_ROUTE) — rtnetlink is emulated (runner/netlink.py) —, and
# setsockopt(fd, SOL_NETLINK, ...) on such sockets; bind/getsockname are trapped whole
# (rare calls) and CONTINUE on sockets that are not ours
TRAPPED_IF_ARGS_X86_64 = [(NR_X86_64.socket, ((0, AF_NETLINK), (2, NETLINK_ROUTE))),
                          (NR_X86_64.setsockopt, ((1, SOL_NETLINK),))]
# ... and setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF etc.): socket filters may be emulated
# programs (runner/sockopt.py)
TRAPPED_IF_ARGS_X86_64 += [(NR_X86_64.setsockopt, ((1, SOL_SOCKET), (2, opt)))
                           for opt in SOCKET_FILTER_OPTS]
TRAPPED_IF_ARGS_X86_64 += [(NR_X86_64.getsockopt, ((1, SOL_SOCKET), (2, SO_GET_FILTER)))]
TRAPPED_X86_64 += (NR_X86_64.bind, NR_X86_64.getsockname)
# epoll waits: level-triggered registrations of emulated fds are re-polled (runner/epoll.py)
TRAPPED_X86_64 += (NR_X86_64.epoll_wait, NR_X86_64.epoll_pwait, NR_X86_64.epoll_pwait2)
# syscalls trapped unless an argument has a flag: fstatat/statx with AT_EMPTY_PATH are
# fstat(2) in disguise (glibc's fstat is one) and name no path -- half of all stat calls
TRAPPED_UNLESS_FLAG_X86_64 = {NR_X86_64.newfstatat: (3, AT_EMPTY_PATH),
                              NR_X86_64.statx: (2, AT_EMPTY_PATH)}

_LD_ABS = Cbpf.LD | Cbpf.W | Cbpf.ABS
_JEQ_K = Cbpf.JMP | Cbpf.JEQ | Cbpf.K
_JSET_K = Cbpf.JMP | Cbpf.JSET | Cbpf.K
_AND_K = Cbpf.ALU | Cbpf.AND | Cbpf.K
_RET_K = Cbpf.RET | Cbpf.K
_OFF_NR = ffi.offsetof("struct seccomp_data", "nr")
_OFF_ARCH = ffi.offsetof("struct seccomp_data", "arch")
_OFF_ARG1 = ffi.offsetof("struct seccomp_data", "args") + ffi.sizeof("uint64_t")  # low half
_OFF_ARGS = ffi.offsetof("struct seccomp_data", "args")
_ARG_SIZE = ffi.sizeof("uint64_t")
_U32 = 0xFFFFFFFF


def build_filter(x86_64: tuple[int, ...] = TRAPPED_X86_64,
                 i386: tuple[int, ...] = TRAPPED_I386, trap_perf_ioctl: bool = True,
                 action: int = SeccompRet.USER_NOTIF) -> bytes:
    """The filter as `struct sock_filter[]` bytes; trapped syscalls return `action`
    (USER_NOTIF for the supervisor's listener, TRACE for the ptrace fallback).

    Layout (jumps are relative, resolved from labels):
        ld [arch]; jeq X86_64 ? fallthrough : L32
        ld [nr]; and ~X32_BIT; jeq nr_i ? NOTIF : next ...
        per TRAPPED_IF_ARGS: jeq nr ? : skip; ld [args[a]]; jeq v ? next : skip ...; ret NOTIF;
            skip: ld [nr]; and ~X32_BIT
        per TRAPPED_UNLESS_FLAG: jeq nr ? : skip; ld [args[a]]; jset flag ? ALLOW : NOTIF
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
    for i, (nr, conds) in enumerate(TRAPPED_IF_ARGS_X86_64):
        skip = f"ARGS{i + 1}"               # the next alternative (several may name one nr)
        emit(_JEQ_K, nr, 0, skip)
        for argno, value in conds:          # little endian: the low half comes first
            emit(_LD_ABS, _OFF_ARGS + argno * _ARG_SIZE)
            emit(_JEQ_K, value, 0, skip)
        emit(_RET_K, action)
        labels[skip] = len(prog)
        emit(_LD_ABS, _OFF_NR)
        emit(_AND_K, ~X32_SYSCALL_BIT)
    for i, (nr, (argno, flag)) in enumerate(TRAPPED_UNLESS_FLAG_X86_64.items()):
        skip = f"FLAG{i + 1}"
        emit(_JEQ_K, nr, 0, skip)
        emit(_LD_ABS, _OFF_ARGS + argno * _ARG_SIZE)
        emit(_JSET_K, flag, "ALLOW", "NOTIF")
        labels[skip] = len(prog)
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
    emit(_RET_K, action)

    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        out.append((code, jt, jf, k))
    return sock_filter_bytes(out)


def run_filter(prog: bytes, nr: int, arch: int, args) -> int:
    """The action `prog` (a filter built above) returns for one syscall: seccomp_run_filters()
    for the few classic-BPF instructions build_filter emits (the ptrace fallback's
    PTRACE_SYSCALL mode decides with it which syscall stops are the emulator's)."""
    data = ffi.new("struct seccomp_data *")
    data.nr, data.arch = nr, arch
    for i, a in enumerate(args):
        data.args[i] = a & (1 << 64) - 1
    raw = ffi.buffer(data)
    insns = ffi.from_buffer("struct sock_filter[]", prog)
    acc, pc = 0, 0
    while True:
        ins = insns[pc]
        code, pc = ins.code, pc + 1
        if code == _LD_ABS:
            acc = int.from_bytes(raw[ins.k:ins.k + 4], "little")
        elif code == _AND_K:
            acc &= ins.k
        elif code == _JEQ_K:
            pc += ins.jt if acc == ins.k else ins.jf
        elif code == _JSET_K:
            pc += ins.jt if acc & ins.k else ins.jf
        elif code == _RET_K:
            return ins.k
        else:
            raise ValueError(f"classic BPF opcode {code:#x} is not one build_filter emits")
