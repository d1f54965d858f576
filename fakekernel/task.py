"""Tasks and credentials — include/linux/sched.h, include/linux/cred.h, kernel/capability.c.

A `Task` is the caller of a syscall: its credentials decide the privilege checks, its
fd table holds the files it opened, its `mm` is the user memory attr pointers refer to.
"""
from __future__ import annotations

import attrs

from fakekernel.fdtable import FdTable, File, O_RDWR
from fakekernel.uaccess import ProcessMemory, UserMemory
from uapi.capability import Cap

__all__ = ["Creds", "Task", "ALL_CAPS", "ROOT", "NOBODY"]

ALL_CAPS = frozenset(Cap)


@attrs.frozen
class Creds:
    """struct cred, reduced to what bpf() looks at: ids and the effective capability set."""

    uid: int = 0
    gid: int = 0
    caps: frozenset[Cap] = ALL_CAPS

    def capable(self, cap: Cap) -> bool:
        return cap in self.caps


ROOT = Creds()
NOBODY = Creds(uid=65534, gid=65534, caps=frozenset())


@attrs.define(eq=False)
class Task:
    pid: int
    comm: str = "python3"
    creds: Creds = ROOT
    files: FdTable = attrs.field(factory=FdTable)
    mm: UserMemory = attrs.field(factory=ProcessMemory)
    tgid: int = 0
    cgroup: object = None              # the task's cgroup (fakekernel.cgroup.Cgroup)
    bpf_storage: dict = attrs.field(factory=dict)   # task->bpf_storage: map -> local storage elem
    bpf_ctx: object = None             # task->bpf_ctx: the running program's bpf_run_ctx
    pending_signals: list = attrs.field(factory=list)   # (sig, pid type) sent by bpf_send_signal*

    def __attrs_post_init__(self) -> None:
        if not self.tgid:
            self.tgid = self.pid

    def capable(self, cap: Cap) -> bool:
        return self.creds.capable(cap)

    # kernel/bpf/token.c + include/linux/bpf.h capability shorthands (no tokens yet)
    def bpf_capable(self) -> bool:
        return self.capable(Cap.BPF) or self.capable(Cap.SYS_ADMIN)

    def perfmon_capable(self) -> bool:
        return self.capable(Cap.PERFMON) or self.capable(Cap.SYS_ADMIN)

    def net_admin_capable(self) -> bool:
        return self.capable(Cap.NET_ADMIN) or self.capable(Cap.SYS_ADMIN)

    def open_std_files(self) -> None:
        """fds 0, 1, 2 as a shell leaves them: a terminal, not BPF objects."""
        for _ in range(3):
            self.files.install(File(kind="tty", f_flags=O_RDWR))
