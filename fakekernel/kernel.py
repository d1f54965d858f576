"""The simulated machine — one `Kernel` is one booted Linux 6.18 with its own state.

Everything a real kernel keeps globally (object ids, bpffs, netdevs, cgroups, the trace
buffer, sysctls) hangs off a `Kernel` instance, so a test can boot as many as it likes.
``Kernel.bpf(cmd, attr, size)`` is the syscall: ``>= 0`` or ``-errno``, never an exception.
"""
from __future__ import annotations

import random
import time
import weakref
from typing import Callable

import attrs

from fakekernel.errors import Errno, KernelError
from fakekernel.idr import Idr
from fakekernel.task import ROOT, Creds, Task
from uapi.backend import buffer_address

__all__ = ["Kernel", "DEFAULT_SYSCTLS"]

DEFAULT_SYSCTLS = {
    "kernel.unprivileged_bpf_disabled": 2,
    "net.core.bpf_jit_enable": 1,
    "kernel.bpf_stats_enabled": 0,
}


def _monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@attrs.define(eq=False)
class Kernel:
    """A simulated kernel.  Settings are arguments; nothing is global."""

    nr_cpus: int = 2
    creds: Creds = ROOT
    sysctls: dict = attrs.field(factory=dict)
    # CLOCK_MONOTONIC in ns (ktime_get_ns).  By default the simulated kernel shares the host's
    # clocks, so times it reports (prog load_time, bpf_ktime_get_ns) read right to host tools
    # such as bpftool; an injected clock starts the simulated machine at boot time 0.
    clock: Callable[[], int] = _monotonic_ns
    prandom: random.Random = attrs.field(factory=lambda: random.Random(0))
    version: str = "6.18"
    bpffs_mount: str = "/sys/fs/bpf"
    pid: int = 1000
    vmlinux_btf: object = "/sys/kernel/btf/vmlinux"   # raw BTF bytes, a path (read lazily) or None
    # the memory cgroup's limit on map memory in bytes (memory.max): MAP_CREATE beyond it is
    # ENOMEM; None = unlimited (see fakekernel/bpf/memcg.py)
    memlock_limit: int | None = None
    # net/ipv4/tcp_cong.c tcp_cong_list: the congestion controls registered (a struct_ops map of
    # tcp_congestion_ops adds one); the reference machine boots with these
    tcp_congestion_controls: list = attrs.field(factory=lambda: ["reno", "bbr", "cubic"], init=False)
    # whether the bpf LSM is active (lsm= has "bpf"): inodes then carry a bpf storage blob.
    # The reference kernel has CONFIG_LSM=...,bpf (measured: inode storage works there).
    bpf_lsm_active: bool = True

    # state
    prog_idr: Idr = attrs.field(factory=Idr, init=False)
    map_idr: Idr = attrs.field(factory=Idr, init=False)
    link_idr: Idr = attrs.field(factory=Idr, init=False)
    btf_idr: Idr = attrs.field(factory=Idr, init=False)
    tasks: list[Task] = attrs.field(factory=list, init=False)
    current: Task = attrs.field(default=None, init=False)
    trace_lines: list[str] = attrs.field(factory=list, init=False)
    boot_ns: int = attrs.field(default=0, init=False)
    world: object = attrs.field(default=None, init=False)      # net/cgroup/trace hook points
    bpffs: object = attrs.field(default=None, init=False)
    _mem: object = attrs.field(default=None, init=False)
    syscall_hooks: list = attrs.field(factory=list, init=False)   # (cmd, uattr, size, ret) observers
    cpu: int = attrs.field(default=0, init=False)     # smp_processor_id() of the code running now
    btf_vmlinux: object = attrs.field(default=None, init=False)   # the kernel's own Btf (id 1)
    bpf_stats_enabled_key: int = attrs.field(default=0, init=False)   # open ENABLE_STATS fds
    bpf_iter_session_id: int = attrs.field(default=0, init=False)     # last iterator session id
    perf: object = attrs.field(default=None, init=False)      # perf globals (fakekernel/perf)
    # inode identity -> its bpf LSM blob (fakekernel/maps/inode_storage.py file_inode())
    inode_blobs: object = attrs.field(factory=weakref.WeakKeyDictionary, init=False)

    def __attrs_post_init__(self) -> None:
        self.sysctls = {**DEFAULT_SYSCTLS, **self.sysctls}
        self.boot_ns = 0 if self.clock is _monotonic_ns else self.clock()
        self.current = self.spawn(creds=self.creds, pid=self.pid)
        from fakekernel.btf import btf_vmlinux_init
        self.btf_vmlinux = btf_vmlinux_init(self, self.vmlinux_btf)
        from fakekernel.bpffs import BpfFs
        from fakekernel.world import World
        self.bpffs = BpfFs(self, mountpoint=self.bpffs_mount)
        self.world = World(self)

    # ---- tasks ----
    def spawn(self, *, creds: Creds | None = None, pid: int | None = None,
              comm: str = "python3") -> Task:
        """A new process with fds 0-2 open, sharing this Python process's memory."""
        pid = pid if pid is not None else (max(t.pid for t in self.tasks) + 1 if self.tasks else 1000)
        t = Task(pid=pid, comm=comm, creds=creds or self.creds)
        t.open_std_files()
        self.tasks.append(t)
        return t

    def pidfd_open(self, pid: int, flags: int = 0, *, task: Task | None = None) -> int:
        """pidfd_open(2): a pidfd of the simulated process `pid`, or -errno."""
        from fakekernel.pid import pidfd_open
        try:
            return pidfd_open(self, task or self.current, pid, flags)
        except KernelError as e:
            return -e.errno

    def exit_task(self, task: Task) -> None:
        """The process exits and is reaped: its fds close, its pid stops resolving."""
        from fakekernel.pid import task_exit
        task_exit(self, task)

    def ktime_get_ns(self) -> int:
        return self.clock() - self.boot_ns

    def ktime_get_boottime_ns(self) -> int:
        if self.clock is _monotonic_ns:
            return _boottime_ns()
        return self.clock() - self.boot_ns

    @property
    def mem(self):
        """The kernel address space programs run in (map values live here)."""
        if self._mem is None:
            from fakekernel.interp.memory import AddressSpace
            self._mem = AddressSpace()
        return self._mem

    def sysctl(self, name: str) -> int:
        return self.sysctls[name]

    # ---- syscalls ----
    def bpf(self, cmd: int, attr, size: int, *, task: Task | None = None) -> int:
        """syscall(__NR_bpf, cmd, attr, size)."""
        from fakekernel.syscall import sys_bpf
        try:
            addr = buffer_address(attr) if attr is not None else 0
        except TypeError:
            return -Errno.EFAULT
        return sys_bpf(self, task or self.current, int(cmd), addr, int(size))

    def close(self, fd: int, *, task: Task | None = None) -> int:
        try:
            (task or self.current).files.close(fd)
        except KernelError as e:
            return -e.errno
        return 0

    def read(self, fd: int, n: int, *, task: Task | None = None) -> bytes | int:
        """read(2) of an fd the simulated kernel made readable (ITER_CREATE's seq files):
        the bytes, or -errno (EBADF; EINVAL for a file with no read)."""
        try:
            f = (task or self.current).files.fdget(fd)
            reader = getattr(f.private_data, "read", None)
            if reader is None or f.kind != "bpf_iter":
                raise KernelError(Errno.EINVAL, "this file cannot be read")
            return reader(n)
        except KernelError as e:
            return -e.errno

    def mmap(self, fd: int, length: int, prot: int, flags: int | None = None, offset: int = 0, *,
             task: Task | None = None):
        """mmap(2) of a map fd (flags default MAP_SHARED): a `VmArea` whose ``.mmap`` is a Python
        mmap of the map's memfd; ``.munmap()`` releases it.  Raises KernelError with the errno."""
        from fakekernel.perf.core import PERF_EVENT_FILE_KIND
        from fakekernel.syscall.map_mmap import vm_mmap
        task = task or self.current
        f = task.files.lookup(fd)
        if f is not None and f.kind == PERF_EVENT_FILE_KIND:
            from fakekernel.perf.ring_buffer import sys_perf_mmap
            return sys_perf_mmap(f, length, prot, flags, offset)
        return vm_mmap(self, task, fd, length, prot, flags, offset)

    def perf_event_open(self, attr, pid: int = -1, cpu: int = 0, group_fd: int = -1,
                        flags: int = 0, *, task: Task | None = None) -> int:
        """perf_event_open(2): `attr` is a buffer (or its address); the fd or -errno."""
        from fakekernel.perf.core import sys_perf_event_open
        try:
            addr = buffer_address(attr) if attr is not None else 0
        except TypeError:
            return -Errno.EFAULT
        try:
            return sys_perf_event_open(self, task or self.current, addr, pid, cpu, group_fd, flags)
        except KernelError as e:
            return -e.errno

    def ioctl(self, fd: int, request: int, arg: int = 0, *, task: Task | None = None) -> int:
        """ioctl(2) on an emulated fd (perf events); `arg` is an int or a buffer."""
        from fakekernel.perf.ioctl import sys_ioctl
        if not isinstance(arg, int):
            try:
                arg = buffer_address(arg)
            except TypeError:
                return -Errno.EFAULT
        try:
            return sys_ioctl(self, task or self.current, fd, request, arg)
        except KernelError as e:
            return -e.errno

    def dup(self, fd: int, *, task: Task | None = None) -> int:
        try:
            return (task or self.current).files.dup(fd)
        except KernelError as e:
            return -e.errno

    def open(self, path: str, flags: int = 0, *, task: Task | None = None) -> int:
        """open(2) of a path the simulated kernel owns (cgroup directories, bpffs pins)."""
        try:
            return self.world.open(path, flags, task or self.current)
        except KernelError as e:
            return -e.errno

    def mkdir(self, path: str, mode: int = 0o700, *, task: Task | None = None) -> int:
        try:
            if self.world.cgroup.owns(path):
                self.world.cgroup.mkdir(path)
            else:
                self.bpffs.mkdir(path, mode, task or self.current)
        except KernelError as e:
            return -e.errno
        return 0

    def unlink(self, path: str, *, task: Task | None = None) -> int:
        try:
            self.bpffs.unlink(path, task or self.current)
        except KernelError as e:
            return -e.errno
        return 0

    def rmdir(self, path: str, *, task: Task | None = None) -> int:
        try:
            if self.world.cgroup.owns(path):
                self.world.cgroup.rmdir(path)
            else:
                self.bpffs.rmdir(path, task or self.current)
        except KernelError as e:
            return -e.errno
        return 0

    # ---- sockets (fakekernel/net/socket.py): -errno on failure, as the syscalls ----
    def socket(self, family: int, type: int, protocol: int = 0, *, task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_socket
        return sys_socket(self, task or self.current, family, type, protocol)

    def socketpair(self, family: int, type: int, protocol: int = 0, *, task: Task | None = None):
        """A (fd, fd) tuple, or -errno."""
        from fakekernel.net.socket import sys_socketpair
        return sys_socketpair(self, task or self.current, family, type, protocol)

    def bind(self, fd: int, addr, *, task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_bind
        return sys_bind(self, task or self.current, fd, addr)

    def listen(self, fd: int, backlog: int = 4096, *, task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_listen
        return sys_listen(self, task or self.current, fd, backlog)

    def connect(self, fd: int, addr, *, task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_connect
        return sys_connect(self, task or self.current, fd, addr)

    def accept(self, fd: int, *, task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_accept
        return sys_accept(self, task or self.current, fd)

    def getsockname(self, fd: int, *, task: Task | None = None):
        from fakekernel.net.socket import sys_getsockname
        return sys_getsockname(self, task or self.current, fd)

    def setsockopt(self, fd: int, level: int, optname: int, value, *,
                   task: Task | None = None) -> int:
        from fakekernel.net.socket import sys_setsockopt
        return sys_setsockopt(self, task or self.current, fd, level, optname, value)

    def getsockopt(self, fd: int, level: int, optname: int, optlen: int = 4, *,
                   task: Task | None = None):
        """The option's bytes, or -errno."""
        from fakekernel.net.socket import sys_getsockopt
        return sys_getsockopt(self, task or self.current, fd, level, optname, optlen)

    # ---- introspection for tests ----
    def live_objects(self) -> dict[str, list]:
        """Objects whose id still resolves (the leak check looks at this)."""
        return {"progs": self.prog_idr.values(), "maps": self.map_idr.values(),
                "links": self.link_idr.values(),
                "btfs": [b for b in self.btf_idr.values() if not b.kernel_btf]}

    def shutdown(self) -> None:
        """Every process exits: all fds close (pins and attachments stay, as on Linux)."""
        for t in self.tasks:
            t.files.close_all()
