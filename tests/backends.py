"""Two backends with one face: the same scenario runs on fakekernel and on the real kernel.

Both track the fds the scenario gets (so teardown can close leftovers and report them)
and offer the few non-bpf() operations scenarios need (close, dup, pin directories,
cgroup directories, netdevs).  `sym` turns fds into creation-order labels so results
from the two kernels compare equal.
"""
from __future__ import annotations

import os
import socket
import subprocess
import uuid

from fakekernel import Kernel
from uapi.backend import HostKernel
from uapi.bpf import BpfCmd

__all__ = ["FakeBackend", "HostBackend", "host_unavailable_reason", "BPFFS", "unavailable"]


def unavailable(reason: str):
    """Skip a test whose prerequisite is missing — except under CI=true, where it fails:
    CI installs every prerequisite, so a missing one there is a broken CI, not a skip."""
    import pytest
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but a test prerequisite is missing: {reason}")
    pytest.skip(reason)

BPFFS = "/sys/fs/bpf"
CGROUP2 = "/sys/fs/cgroup/unified"

# commands whose non-negative result is a new fd
_FD_CMDS = {BpfCmd.MAP_CREATE, BpfCmd.PROG_LOAD, BpfCmd.OBJ_GET, BpfCmd.PROG_GET_FD_BY_ID,
            BpfCmd.MAP_GET_FD_BY_ID, BpfCmd.BTF_LOAD, BpfCmd.BTF_GET_FD_BY_ID,
            BpfCmd.LINK_CREATE, BpfCmd.LINK_GET_FD_BY_ID, BpfCmd.RAW_TRACEPOINT_OPEN,
            BpfCmd.ITER_CREATE}


class _Base:
    name = "?"

    def __init__(self):
        self.fds: list[int] = []          # creation order
        self.pin_dirs: list[str] = []
        self.calls = 0

    def bpf(self, cmd, attr, size):
        self.calls += 1
        ret = self._bpf(cmd, attr, size)
        if ret >= 0 and cmd in _FD_CMDS:
            self.fds.append(ret)
        return ret

    def sym(self, ret):
        """An fd as 'fdN' (N = creation order), a negative errno as is."""
        if isinstance(ret, int) and ret >= 0 and ret in self.fds:
            return f"fd{self.fds.index(ret)}"
        return ret

    def close(self, fd: int) -> int:
        ret = self._close(fd)
        if ret == 0 and fd in self.fds:
            self.fds.remove(fd)
        return ret

    def cleanup(self) -> list[int]:
        leaked = list(self.fds)
        for fd in leaked:
            self._close(fd)
        self.fds.clear()
        for d in reversed(self.pin_dirs):
            self.rm_tree(d)
        return leaked

    def _track(self, fd):
        if isinstance(fd, int) and fd >= 0:
            self.fds.append(fd)
        return fd

    def pin_dir(self) -> str:
        """A fresh, empty directory in bpffs for this test's pins (removed at teardown)."""
        d = f"{BPFFS}/fk-{uuid.uuid4().hex[:12]}"
        assert self.mkdir(d) == 0
        self.pin_dirs.append(d)
        return d


class FakeBackend(_Base):
    name = "fake"

    def __init__(self, kern: Kernel | None = None):
        super().__init__()
        self.kern = kern or Kernel()

    def _bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size)

    def _close(self, fd):
        return self.kern.close(fd)

    def dup(self, fd):
        return self.kern.dup(fd)

    def mkdir(self, path, mode=0o700):
        return self.kern.mkdir(path, mode)

    def unlink(self, path):
        return self.kern.unlink(path)

    def rm_tree(self, path):
        self.kern.bpffs.rm_tree(path)

    def open(self, path, flags=os.O_RDONLY):
        fd = self.kern.open(path, flags)
        if fd >= 0:
            self.fds.append(fd)
        return fd

    def rmdir(self, path):
        return self.kern.rmdir(path)

    # ---- processes (task storage): the fake's current task is "this process" ----
    def pidfd_open(self, pid=None, flags=0):
        return self._track(self.kern.pidfd_open(self.kern.current.pid if pid is None else pid, flags))

    def spawn(self):
        """A child process that lives until reap(); returns its pid."""
        return self.kern.spawn().pid

    def reap(self, pid):
        from fakekernel.pid import find_task_by_pid
        self.kern.exit_task(find_task_by_pid(self.kern, pid))

    # ---- sockets (fakekernel/net/socket.py) ----
    def socket(self, family, type_, protocol=0):
        return self._track(self.kern.socket(family, type_, protocol))

    def socketpair(self, family, type_, protocol=0):
        ret = self.kern.socketpair(family, type_, protocol)
        if isinstance(ret, tuple):
            self.fds.extend(ret)
        return ret

    def bind(self, fd, addr):
        return self.kern.bind(fd, addr)

    def listen(self, fd, backlog=128):
        return self.kern.listen(fd, backlog)

    def connect(self, fd, addr):
        return self.kern.connect(fd, addr)

    def accept(self, fd):
        return self._track(self.kern.accept(fd))

    def getsockname(self, fd):
        return self.kern.getsockname(fd)

    def setsockopt(self, fd, level, optname, value):
        return self.kern.setsockopt(fd, level, optname, value)

    def getsockopt(self, fd, level, optname, optlen=4):
        return self.kern.getsockopt(fd, level, optname, optlen)


class HostBackend(_Base):
    name = "kernel"

    def __init__(self):
        super().__init__()
        self.host = HostKernel()
        self.opened: list[int] = []

    def _bpf(self, cmd, attr, size):
        return self.host.bpf(cmd, attr, size)

    def _close(self, fd):
        return self.host.close(fd)

    def dup(self, fd):
        return self.host.dup(fd)

    def mkdir(self, path, mode=0o700):
        try:
            os.mkdir(path, mode)
        except OSError as e:
            return -e.errno
        return 0

    def unlink(self, path):
        try:
            os.unlink(path)
        except OSError as e:
            return -e.errno
        return 0

    def rmdir(self, path):
        try:
            os.rmdir(path)
        except OSError as e:
            return -e.errno
        return 0

    def rm_tree(self, path):
        for root, dirs, files in os.walk(path, topdown=False):
            for f in files:
                os.unlink(os.path.join(root, f))
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        if os.path.isdir(path):
            os.rmdir(path)

    def open(self, path, flags=os.O_RDONLY):
        try:
            fd = os.open(path, flags)
        except OSError as e:
            return -e.errno
        self.fds.append(fd)
        return fd

    # ---- processes (task storage) ----
    def pidfd_open(self, pid=None, flags=0):
        try:
            return self._track(os.pidfd_open(os.getpid() if pid is None else pid, flags))
        except OSError as e:
            return -e.errno

    def spawn(self):
        """A child process that lives until reap(); returns its pid."""
        self._children = getattr(self, "_children", {})
        p = subprocess.Popen(["sleep", "600"])
        self._children[p.pid] = p
        return p.pid

    def reap(self, pid):
        p = self._children.pop(pid)
        p.kill()
        p.wait()

    def cleanup(self) -> list[int]:
        for pid in list(getattr(self, "_children", {})):       # children a failed test left
            self.reap(pid)
        return super().cleanup()

    # ---- sockets: the socket module, fds handed over with detach() ----
    def socket(self, family, type_, protocol=0):
        try:
            return self._track(socket.socket(family, type_, protocol).detach())
        except OSError as e:
            return -e.errno

    def socketpair(self, family, type_, protocol=0):
        try:
            a, b = socket.socketpair(family, type_, protocol)
        except OSError as e:
            return -e.errno
        ret = (a.detach(), b.detach())
        self.fds.extend(ret)
        return ret

    @staticmethod
    def _on_sock(fd, fn):
        try:
            s = socket.socket(fileno=fd)
        except OSError as e:
            return -e.errno
        try:
            ret = fn(s)
        except OSError as e:
            return -e.errno
        finally:
            s.detach()
        return 0 if ret is None else ret

    def bind(self, fd, addr):
        return self._on_sock(fd, lambda s: s.bind(addr))

    def listen(self, fd, backlog=128):
        return self._on_sock(fd, lambda s: s.listen(backlog))

    def connect(self, fd, addr):
        return self._on_sock(fd, lambda s: s.connect(addr))

    def accept(self, fd):
        def acc(s):
            s.setblocking(False)
            try:
                conn, _ = s.accept()
            finally:
                s.setblocking(True)
            return conn.detach()
        return self._track(self._on_sock(fd, acc))

    def getsockname(self, fd):
        return self._on_sock(fd, lambda s: s.getsockname())

    def setsockopt(self, fd, level, optname, value):
        return self._on_sock(fd, lambda s: s.setsockopt(level, optname, value))

    def getsockopt(self, fd, level, optname, optlen=4):
        return self._on_sock(fd, lambda s: s.getsockopt(level, optname, optlen))


_reason_cache: list[str | None] = []


def host_unavailable_reason() -> str | None:
    """None when the real bpf() works and bpffs is mounted (mounting it if we may)."""
    if _reason_cache:
        return _reason_cache[0]
    reason = None
    try:
        if not HostKernel.available():
            reason = "bpf() is refused to this user (unprivileged_bpf_disabled or no CAP_BPF)"
        elif not _bpffs_mounted():
            if os.geteuid() == 0:
                subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=False,
                               capture_output=True)
            if not _bpffs_mounted():
                reason = f"bpffs is not mounted at {BPFFS}"
    except OSError as e:            # e.g. no such syscall on this platform
        reason = str(e)
    _reason_cache.append(reason)
    return reason


def _bpffs_mounted() -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == BPFFS and line.split()[2] == "bpf" for line in f)
    except OSError:
        return False
