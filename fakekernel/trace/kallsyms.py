"""The kernel's function symbols — kernel/kallsyms.c (+ the ftrace records of kernel/trace/ftrace.c).

A small catalog of traceable kernel functions with /proc/kallsyms-like addresses (x86_64
text starts at 0xffffffff81000000), their argument counts (for building ``pt_regs``) and
whether ftrace can hook them.  kprobe_multi resolves names here (``ftrace_lookup_symbols``).
"""
from __future__ import annotations

import attrs

__all__ = ["KernelFunc", "Kallsyms", "DEFAULT_FUNCS", "KERNEL_TEXT_BASE"]

KERNEL_TEXT_BASE = 0xFFFFFFFF81000000
_FUNC_ALIGN = 0x40            # functions are 16-byte aligned; spread them out a little more


@attrs.frozen
class KernelFunc:
    name: str
    nargs: int
    addr: int
    traceable: bool = True     # has an ftrace (fentry) location; notrace functions do not


# (name, number of C arguments); __x64_sys_* wrappers take one: the user's struct pt_regs
DEFAULT_FUNCS = (
    ("do_sys_openat2", 3), ("__x64_sys_openat", 1), ("__x64_sys_open", 1),
    ("__x64_sys_execve", 1), ("__x64_sys_read", 1), ("__x64_sys_write", 1),
    ("__x64_sys_close", 1), ("vfs_read", 4), ("vfs_write", 4), ("vfs_open", 2),
    ("do_unlinkat", 2), ("tcp_v4_connect", 3), ("tcp_sendmsg", 3), ("tcp_recvmsg", 5),
    ("udp_sendmsg", 3), ("inet_csk_accept", 2), ("kernel_clone", 1), ("do_exit", 1),
    ("security_file_open", 1), ("bpf_check", 4),
)
_NOTRACE = (("__rcu_read_lock", 0), ("do_int3", 1))    # present in kallsyms, not traceable


class Kallsyms:
    """Name <-> address for the simulated kernel's functions."""

    def __init__(self, funcs=DEFAULT_FUNCS):
        self.by_name: dict[str, KernelFunc] = {}
        self.by_addr: dict[int, KernelFunc] = {}
        addr = KERNEL_TEXT_BASE
        for name, nargs in funcs:
            self._add(KernelFunc(name, nargs, addr))
            addr += _FUNC_ALIGN
        for name, nargs in _NOTRACE:
            self._add(KernelFunc(name, nargs, addr, traceable=False))
            addr += _FUNC_ALIGN
        self._next = addr

    def _add(self, f: KernelFunc) -> None:
        self.by_name[f.name] = f
        self.by_addr[f.addr] = f

    def add(self, name: str, nargs: int, *, traceable: bool = True) -> KernelFunc:
        """Declare another kernel function (tests may extend the catalog)."""
        if name in self.by_name:
            return self.by_name[name]
        f = KernelFunc(name, nargs, self._next, traceable)
        self._next += _FUNC_ALIGN
        self._add(f)
        return f

    def lookup_name(self, name: str) -> KernelFunc | None:
        return self.by_name.get(name)

    def ftrace_location(self, addr: int) -> KernelFunc | None:
        """The traceable function starting at `addr`, or None."""
        f = self.by_addr.get(addr)
        return f if f is not None and f.traceable else None

    def lines(self) -> list[str]:
        """/proc/kallsyms text for the catalog."""
        return [f"{f.addr:016x} T {f.name}" for f in sorted(self.by_addr.values(), key=lambda f: f.addr)]
