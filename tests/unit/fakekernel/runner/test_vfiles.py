"""Virtual files (fakekernel/runner/vfiles.py) through the supervisor's open/openat, with this
test process standing in for the target (as in test_supervisor.py)."""
from __future__ import annotations

import ctypes
import importlib.util
import os
import pathlib

import pytest

from fakekernel import Kernel
from fakekernel.runner.supervisor import Supervisor
from fakekernel.runner.vfiles import cpu_range, map_fdinfo, prog_memlock
from uapi.attr import Attr
from uapi.bpf import BpfCmd, MapType
from uapi.errno import Errno
from uapi.seccomp import NR_X86_64
from uapi.vfs import AT_FDCWD

# the stand-in listener and notification builders of test_supervisor.py (--import-mode=importlib
# gives test modules no package to import each other through)
_spec = importlib.util.spec_from_file_location(
    "_fk_runner_test_supervisor", pathlib.Path(__file__).with_name("test_supervisor.py"))
_ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ts)
RecordingListener, bpf_notif, last_reply, notif = (_ts.RecordingListener, _ts.bpf_notif,
                                                   _ts.last_reply, _ts.notif)


@pytest.fixture
def sup():
    s = Supervisor(Kernel(nr_cpus=4), RecordingListener())
    yield s
    s.close()


def open_notif(path: str, flags: int = os.O_RDONLY, nr=NR_X86_64.openat):
    buf = ctypes.create_string_buffer(path.encode())
    open_notif.keep.append(buf)
    addr = ctypes.addressof(buf)
    if nr == NR_X86_64.open:
        return notif(nr, addr, flags)
    return notif(nr, AT_FDCWD & 0xFFFFFFFF, addr, flags)


open_notif.keep = []


def read_reply(sup) -> str:
    kind, fd = last_reply(sup)
    assert kind == "addfd"
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def make_map(sup) -> int:
    a = Attr()
    for k, v in (("map_type", MapType.HASH), ("key_size", 4), ("value_size", 8),
                 ("max_entries", 8), ("map_flags", 64)):
        a.set(k, v)
    sup.handle(bpf_notif(BpfCmd.MAP_CREATE, a))
    return last_reply(sup)[1]


def test_fdinfo_of_emulated_map(sup):
    fd = make_map(sup)
    m = sup.files.lookup_key((os.fstat(fd).st_dev, os.fstat(fd).st_ino))
    for path in (f"/proc/self/fdinfo/{fd}", f"/proc/{os.getpid()}/fdinfo/{fd}",
                 f"/proc/thread-self/fdinfo/{fd}", f"/proc/self/task/{os.getpid()}/fdinfo/{fd}"):
        sup.handle(open_notif(path))
        text = read_reply(sup)
        head, _, tail = text.partition("map_type:")
        assert head.startswith("pos:\t0\nflags:\t02000002\nmnt_id:\t")   # O_RDWR|O_CLOEXEC
        assert "map_type:" + tail == map_fdinfo(m.private_data)
        assert "map_flags:\t0x40\n" in tail and tail.endswith("frozen:\t0\n")
    os.close(fd)


def test_fdinfo_of_other_fds_and_writers_continue(sup):
    fd = make_map(sup)
    for path, flags in ((f"/proc/self/fdinfo/0", os.O_RDONLY), ("/proc/self/fdinfo/99999", 0),
                        (f"/proc/self/fdinfo/{fd}", os.O_WRONLY), ("/etc/hostname", 0),
                        ("/proc/self/status", 0)):
        sup.handle(open_notif(path, flags))
        assert last_reply(sup) == "continue", path
    os.close(fd)


def test_cpu_possible_from_nr_cpus(sup):
    sup.handle(open_notif("/sys/devices/system/cpu/possible", nr=NR_X86_64.open))
    assert read_reply(sup) == "0-3\n"
    sup.handle(open_notif("/sys/devices/system/cpu/../cpu/online"))
    assert read_reply(sup) == "0-3\n"
    assert cpu_range(1) == "0\n"


def test_bpffs_pin_open_is_eio_missing_enoent(sup):
    fd = make_map(sup)
    m = sup.files.lookup_key((os.fstat(fd).st_dev, os.fstat(fd).st_ino)).private_data
    sup.kern.bpffs.pin(m.get(uref=True) and m, "map", "/sys/fs/bpf/m", sup.kern.current)
    m.put(uref=True)
    sup.handle(open_notif("/sys/fs/bpf/m"))
    assert last_reply(sup) == -Errno.EIO
    sup.handle(open_notif("/sys/fs/bpf/nope"))
    assert last_reply(sup) == -Errno.ENOENT
    sup.handle(open_notif("/sys/fs/bpf/nope", os.O_CREAT | os.O_WRONLY))
    assert last_reply(sup) == -Errno.EACCES
    sup.handle(open_notif("/sys/fs/bpf", os.O_WRONLY))
    assert last_reply(sup) == -Errno.EISDIR
    os.close(fd)
    sup.kern.bpffs.rm_tree("/sys/fs/bpf/m")


def test_bpffs_dir_opens_as_listable_snapshot_and_maps_back(sup):
    k = sup.kern
    assert k.mkdir("/sys/fs/bpf/d") == 0 and k.mkdir("/sys/fs/bpf/d/sub") == 0
    sup.handle(open_notif("/sys/fs/bpf/d", os.O_RDONLY | os.O_DIRECTORY))
    kind, dfd = last_reply(sup)
    assert kind == "addfd" and os.listdir(dfd) == ["sub"]
    # rmdir relative to that fd reaches the emulated bpffs
    name = ctypes.create_string_buffer(b"sub")
    sup.handle(notif(NR_X86_64.unlinkat, dfd, ctypes.addressof(name), 0x200))
    assert last_reply(sup) == 0
    assert "sub" not in k.bpffs.lookup("/sys/fs/bpf/d", k.current).children
    os.close(dfd)
    k.rmdir("/sys/fs/bpf/d")


def test_prog_memlock_pages():
    class P:
        insns, len = b"\0" * 8 * 2, 2
    assert prog_memlock(P) == 4096
    P.insns = b"\0" * 8 * 600
    assert prog_memlock(P) == 8192
