"""Virtual files a loader opens — fs/proc/fd.c (fdinfo), kernel/bpf/syscall.c (bpf_*_show_fdinfo),
drivers/base/cpu.c (cpu/possible), kernel/bpf/inode.c (opening bpffs paths).

The supervisor traps open/openat (cBPF cannot look at paths, so every open reaches it)
and answers only these; everything else is CONTINUEd to the real kernel:

* ``/proc/{self,thread-self,PID}[/task/TID]/fdinfo/N`` where N is an emulated bpf object:
  the kernel's text (pos/flags/mnt_id/ino, then the map or prog lines).  ``mnt_id`` and
  ``ino`` are those of this machine's anon-inode mount (every bpf object is an anon inode
  file there; an eventfd shows the same two numbers), ``flags`` are the target's real
  ones for that fd;
* ``/sys/devices/system/cpu/{possible,online}``: ``0-N`` from ``kern.nr_cpus``;
* tracefs ``events/<system>/<name>/{id,format}`` (under /sys/kernel/tracing and
  /sys/kernel/debug/tracing) for the simulated kernel's trace events, and
  ``/sys/bus/event_source/devices/<pmu>/{type,format/retprobe,format/ref_ctr_offset}`` for
  its perf PMUs (software, tracepoint, kprobe, uprobe);
* paths under the emulated bpffs mount: a pin cannot be opened (EIO, ``bpffs_obj_open``);
  a directory opens as a *snapshot*: a real directory mirroring its entries at open time
  (dirs as dirs, pins as empty files), so getdents works (``ls``); path calls relative to
  that fd (unlinkat, mkdirat) are mapped back to the bpffs path.  stat() of entries by
  absolute path is not emulated.

The answer is a new memfd holding the content (or the snapshot directory), opened
read-only and installed with SECCOMP_IOCTL_NOTIF_ADDFD (+SEND).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

from fakekernel.errors import Errno, KernelError

__all__ = ["VirtualFiles", "map_fdinfo", "prog_fdinfo", "cpu_range"]

O_LARGEFILE = 0o100000          # asm-generic/fcntl.h: set on memfds, never on bpf anon files
O_CREAT = 0o100
O_ACCMODE = 0o3
O_DIRECTORY = 0o200000
PAGE_SIZE = 4096
BPF_PROG_HDR = 96               # offsetof(struct bpf_prog, insns) on x86_64

_FDINFO = re.compile(r"^/proc/(self|thread-self|\d+)(?:/task/(\d+))?/fdinfo/(\d+)$")
_TRACEFS_EVENT = re.compile(r"^/sys/kernel(?:/debug)?/tracing/events/([^/]+)/([^/]+)/(id|format)$")
_PMU_FILE = re.compile(r"^/sys/bus/event_source/devices/([^/]+)/(type|format/retprobe|"
                       r"format/ref_ctr_offset)$")
_PMU_FORMAT = {("kprobe", "format/retprobe"): "config:0\n",
               ("uprobe", "format/retprobe"): "config:0\n",
               ("uprobe", "format/ref_ctr_offset"): "config:32-63\n"}
_CPU_FILES = ("/sys/devices/system/cpu/possible", "/sys/devices/system/cpu/online")


def cpu_range(n: int) -> str:
    """cpumap_print_to_pagebuf(list=true) of CPUs 0..n-1."""
    return "0\n" if n == 1 else f"0-{n - 1}\n"


def _anon_inode_ids() -> tuple[int, int]:
    """(mnt_id, ino) of the anon inode every anon_inode_getfile() file shares."""
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return int(fields["mnt_id"]), int(fields["ino"])
    finally:
        os.close(fd)


def _header(flags: int, ids: tuple[int, int]) -> str:
    """seq_show() of fs/proc/fd.c."""
    return f"pos:\t0\nflags:\t0{flags & ~O_LARGEFILE:o}\nmnt_id:\t{ids[0]}\nino:\t{ids[1]}\n"


def map_fdinfo(m) -> str:
    """bpf_map_show_fdinfo()."""
    return (f"map_type:\t{m.map_type}\nkey_size:\t{m.key_size}\nvalue_size:\t{m.value_size}\n"
            f"max_entries:\t{m.max_entries}\nmap_flags:\t{m.map_flags:#x}\n"
            f"map_extra:\t{m.map_extra:#x}\nmemlock:\t{m.memlock}\nmap_id:\t{m.id}\n"
            f"frozen:\t{int(bool(m.frozen))}\n")


def prog_memlock(prog) -> int:
    """prog->pages * PAGE_SIZE: the bpf_prog allocation with its (xlated) insns."""
    n = len(prog.insns) // 8 if prog.insns else prog.len
    return (BPF_PROG_HDR + 8 * n + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def prog_fdinfo(p) -> str:
    """bpf_prog_show_fdinfo(); fakekernel does not JIT (prog_jited 0, as GET_INFO says)."""
    jited = int(bool(getattr(p, "jited_len", 0)))
    return (f"prog_type:\t{p.type}\nprog_jited:\t{jited}\nprog_tag:\t{bytes(p.tag).hex()}\n"
            f"memlock:\t{prog_memlock(p)}\nprog_id:\t{p.aux.id}\n"
            f"run_time_ns:\t{p.aux.run_time_ns}\nrun_cnt:\t{p.aux.run_cnt}\n"
            f"recursion_misses:\t{p.aux.recursion_misses}\n"
            f"verified_insns:\t{p.aux.verified_insns}\n")


_SHOW = {"bpf-map": map_fdinfo, "bpf-prog": prog_fdinfo}


class VirtualFiles:
    """What the supervisor answers opens of virtual paths with."""

    def __init__(self, kern, task_for):
        self.kern = kern
        self.task_for = task_for            # tid -> Task (the supervisor's cache)
        self._anon_ids: tuple[int, int] | None = None
        self._snapdir: str | None = None
        self.snapshots: dict[str, str] = {}     # real snapshot dir -> bpffs path

    # ---- content: None = not ours (CONTINUE); bytes = a file; str = a directory; int = -errno
    def lookup(self, task, path: str, flags: int):
        if path.startswith("/proc/"):
            return self._fdinfo(task, path, flags)
        if path.startswith(("/sys/kernel/tracing/", "/sys/kernel/debug/tracing/",
                            "/sys/bus/event_source/")):
            return None if flags & O_ACCMODE else self._tracing_file(path)
        if path in _CPU_FILES:
            if flags & O_ACCMODE:
                return None                 # the real file refuses writers itself
            return cpu_range(self.kern.nr_cpus).encode()
        return None

    def _tracing_file(self, path: str):
        """tracefs events/<system>/<name>/{id,format} of the simulated kernel's trace events
        (kernel/trace/trace_events.c) and the PMU type/format files of the perf PMUs it
        registers (kernel/events/core.c type_show, the PMUs' format attributes)."""
        m = _TRACEFS_EVENT.match(path)
        if m is not None:
            ev = self.kern.world.trace.events.lookup(m.group(1), m.group(2))
            if ev is None:
                return None
            return (f"{ev.id}\n" if m.group(3) == "id" else ev.format()).encode()
        m = _PMU_FILE.match(path)
        if m is None:
            return None
        from fakekernel.perf.pmu import PMU_NAMES
        pmu, what = m.group(1), m.group(2)
        if pmu not in PMU_NAMES:
            return None
        if what == "type":
            return f"{int(PMU_NAMES[pmu])}\n".encode()
        text = _PMU_FORMAT.get((pmu, what))
        return text.encode() if text is not None else None

    def _fdinfo(self, task, path: str, flags: int):
        m = _FDINFO.match(path)
        if m is None or flags & O_ACCMODE:
            return None
        who, tid, fd = m.group(1), m.group(2), int(m.group(3))
        if tid is not None:
            owner = int(tid)
        elif who == "self":
            owner = task.tgid
        elif who == "thread-self":
            owner = task.pid
        else:
            owner = int(who)
        f = self.task_for(owner).files.lookup(fd)
        show = _SHOW.get(f.kind) if f is not None else None
        if show is None:
            return None
        if self._anon_ids is None:
            self._anon_ids = _anon_inode_ids()
        return (_header(_real_flags(owner, fd), self._anon_ids) + show(f.private_data)).encode()

    def bpffs_open(self, task, path: str, flags: int):
        """open(2) of a path under the emulated bpffs mount: -errno or a snapshot directory."""
        try:
            node = self.kern.bpffs.lookup(path, task)
        except KernelError as e:
            if e.errno == Errno.ENOENT and flags & O_CREAT:
                return -Errno.EACCES        # bpffs directories have no ->create
            return -e.errno
        if not node.is_dir:
            return -Errno.EIO               # bpffs_obj_open()
        if flags & O_ACCMODE:
            return -Errno.EISDIR
        return self._snapshot(node, os.path.normpath(path))

    def use_snapshot_root(self, path: str) -> None:
        """Put snapshots under `path` (an existing empty directory, removed at close)."""
        self._snapdir = path

    def _snapshot(self, node, bpffs_path: str) -> str:
        if self._snapdir is None:
            self._snapdir = tempfile.mkdtemp(prefix="fakekernel-bpffs-")
        root = tempfile.mkdtemp(dir=self._snapdir)
        stack = [(node, root)]
        while stack:
            n, d = stack.pop()
            for name, child in n.children.items():
                p = os.path.join(d, name)
                if child.is_dir:
                    os.mkdir(p, 0o700)
                    stack.append((child, p))
                else:
                    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
        self.snapshots[root] = bpffs_path
        return root

    def translate(self, real: str) -> str:
        """A path inside a snapshot -> the bpffs path it mirrors (else unchanged)."""
        if self._snapdir is None or not real.startswith(self._snapdir + "/"):
            return real
        for root, bpath in self.snapshots.items():
            if real == root or real.startswith(root + "/"):
                return bpath + real[len(root):]
        return real

    def close(self) -> None:
        if self._snapdir is not None:
            shutil.rmtree(self._snapdir, ignore_errors=True)
            self._snapdir = None


def _real_flags(tid: int, fd: int) -> int:
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as fh:
            for line in fh:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return os.O_RDWR | os.O_CLOEXEC


def memfd_with(content: bytes) -> int:
    """A read-only description of a new memfd holding `content`, at position 0."""
    memfd = os.memfd_create("fakekernel-vfile", os.MFD_CLOEXEC)
    try:
        os.write(memfd, content)
        return os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(memfd)
