"""cgroup2 directories a target opens natively — kernel/cgroup/cgroup.c (cgroup_get_from_fd).

Under the runner, open(2) of a cgroup directory is not emulated: the target gets a real
fd of the host's cgroup2 filesystem, and `bpftool cgroup attach <dir>` passes it to
bpf(PROG_ATTACH / PROG_QUERY / LINK_CREATE).  The emulated kernel then needs the cgroup
behind it: the host directory's path relative to its cgroup2 mount names the cgroup in
`kern.world.cgroup`, created there (with its ancestors) on first use, so the emulated
hierarchy mirrors the part of the host's that targets touch.  Other directories and
files stay foreign ("other" files: EBADF where a cgroup is expected, as in the kernel).
"""
from __future__ import annotations

import os

from fakekernel.cgroup import CGROUP_FILE_KIND
from fakekernel.errors import KernelError
from fakekernel.fdtable import File

__all__ = ["HostCgroups", "cgroup2_mounts"]


def cgroup2_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of cgroup2 filesystems (proc_pid_mountinfo: fstype after the " - ")."""
    out = []
    try:
        with open(mountinfo) as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    out.append(left.split()[4].replace("\\040", " "))
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


class HostCgroups:
    """(st_dev, st_ino) of a host cgroup2 directory -> the File of the emulated cgroup."""

    def __init__(self, kern):
        self.kern = kern
        self._mounts: list[str] | None = None
        self._files: dict[tuple[int, int], File] = {}

    def file_for(self, dev: int, ino: int, path: str) -> File | None:
        f = self._files.get((dev, ino))
        if f is not None and f.private_data.online:
            return f
        rel = self._relative(path)
        if rel is None:
            return None
        cgroups = self.kern.world.cgroup
        cg = cgroups.root
        try:
            for name in rel:
                child = cg.children.get(name)
                cg = child if child is not None else cgroups.mkdir(f"{cgroups.mountpoint}{cg.path.rstrip('/')}/{name}")
        except KernelError:
            return None
        f = File(kind=CGROUP_FILE_KIND, private_data=cg, f_flags=os.O_RDONLY | os.O_DIRECTORY)
        self._files[(dev, ino)] = f
        return f

    def _relative(self, path: str) -> list[str] | None:
        if self._mounts is None:
            self._mounts = cgroup2_mounts()
        for m in self._mounts:
            if path == m or path.startswith(m.rstrip("/") + "/"):
                return [c for c in path[len(m):].split("/") if c]
        return None
