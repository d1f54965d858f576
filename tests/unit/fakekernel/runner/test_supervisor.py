"""The supervisor's dispatch, with this test process standing in for the target.

Notifications are built by hand (struct seccomp_notif); the listener records replies and
installs fds into our own fd table, so sys_bpf really runs against "remote" memory and fds.
"""
from __future__ import annotations

import ctypes
import fcntl
import os

import pytest

from fakekernel import Kernel
from fakekernel.runner.paths import _statfs_bytes
from fakekernel.runner.supervisor import Supervisor
from uapi.attr import ATTR_SIZE, Attr
from uapi.bpf import BpfCmd, MapType
from uapi.errno import Errno
from uapi.seccomp import NR_X86_64, X32_SYSCALL_BIT, AuditArch, ffi
from uapi.vfs import AT_FDCWD, FsMagic, StFlag, ffi as vfs_ffi


class RecordingListener:
    fd = -1

    def __init__(self):
        self.valid = True
        self.replies: list[tuple[int, object]] = []

    def id_valid(self, notif_id):
        return self.valid

    def send(self, notif_id, ret):
        self.replies.append((notif_id, ret))
        return True

    def send_continue(self, notif_id):
        self.replies.append((notif_id, "continue"))
        return True

    def addfd(self, notif_id, srcfd, *, send, cloexec=True):
        fd = fcntl.fcntl(srcfd, fcntl.F_DUPFD_CLOEXEC, 0)
        self.replies.append((notif_id, ("addfd", fd)))
        return fd


@pytest.fixture
def sup():
    s = Supervisor(Kernel(), RecordingListener())
    yield s
    s.close()


_ids = iter(range(1, 1 << 30))


def notif(nr, *args, arch=AuditArch.X86_64):
    n = ffi.new("struct seccomp_notif *")
    n.id = next(_ids)
    n.pid = os.getpid()
    n.data.arch = arch
    n.data.nr = nr
    for i, a in enumerate(args):
        n.data.args[i] = a & 0xFFFFFFFFFFFFFFFF
    return n


def bpf_notif(cmd, attr: Attr, nr=NR_X86_64.bpf):
    return notif(nr, cmd, attr.addr, ATTR_SIZE)


def last_reply(sup):
    return sup.listener.replies[-1][1]


def test_bpf_map_create_installs_fd_and_replies_with_it(sup):
    a = Attr()
    a.set("map_type", MapType.ARRAY)
    a.set("key_size", 4)
    a.set("value_size", 4)
    a.set("max_entries", 1)
    sup.handle(bpf_notif(BpfCmd.MAP_CREATE, a))
    kind, fd = last_reply(sup)
    assert kind == "addfd"
    assert "bpf-map" in os.readlink(f"/proc/self/fd/{fd}")
    # the fd works for the next call, through the x32 syscall number too
    key, value = ctypes.c_uint32(0), ctypes.c_uint32(0)
    b = Attr()
    b.set("map_fd", fd)
    b.set("key", ctypes.addressof(key))
    b.set("value", ctypes.addressof(value))
    value.value = 77
    sup.handle(bpf_notif(BpfCmd.MAP_UPDATE_ELEM, b, nr=NR_X86_64.bpf | X32_SYSCALL_BIT))
    assert last_reply(sup) == 0
    value.value = 0
    sup.handle(bpf_notif(BpfCmd.MAP_LOOKUP_ELEM, b))
    assert last_reply(sup) == 0 and value.value == 77
    os.close(fd)
    sup.files.process_events()
    assert sup.kern.live_objects()["maps"] == []


def test_bpf_errno_is_replied(sup):
    a = Attr()
    a.set("map_fd", 0x7FFF)
    sup.handle(bpf_notif(BpfCmd.MAP_LOOKUP_ELEM, a))
    assert last_reply(sup) == -Errno.EBADF


def test_invalid_notification_gets_no_reply(sup):
    sup.listener.valid = False
    sup.handle(bpf_notif(BpfCmd.MAP_CREATE, Attr()))
    assert sup.listener.replies == []
    assert sup.kern.live_objects()["maps"] == []


def test_unowned_syscall_continues(sup):
    sup.handle(notif(0, 0, 0, 0))                 # read(2)
    assert last_reply(sup) == "continue"


def test_statfs_outside_bpffs_continues(sup):
    path = ctypes.create_string_buffer(b"/proc")
    buf = ctypes.create_string_buffer(vfs_ffi.sizeof("struct statfs"))
    sup.handle(notif(NR_X86_64.statfs, ctypes.addressof(path), ctypes.addressof(buf)))
    assert last_reply(sup) == "continue"


def test_statfs_on_bpffs_writes_bpf_fs_magic(sup):
    path = ctypes.create_string_buffer(sup.kern.bpffs_mount.encode())
    buf = ctypes.create_string_buffer(vfs_ffi.sizeof("struct statfs"))
    sup.handle(notif(NR_X86_64.statfs, ctypes.addressof(path), ctypes.addressof(buf)))
    assert last_reply(sup) == 0
    st = vfs_ffi.cast("struct statfs *", vfs_ffi.from_buffer(buf.raw))
    assert st.f_type == FsMagic.BPF_FS_MAGIC and st.f_namelen == 255


def test_statfs_missing_bpffs_path_enoent(sup):
    path = ctypes.create_string_buffer(sup.kern.bpffs_mount.encode() + b"/nope")
    buf = ctypes.create_string_buffer(vfs_ffi.sizeof("struct statfs"))
    sup.handle(notif(NR_X86_64.statfs, ctypes.addressof(path), ctypes.addressof(buf)))
    assert last_reply(sup) == -Errno.ENOENT


def test_mkdirat_relative_to_cwd_under_bpffs(sup, monkeypatch):
    monkeypatch.chdir("/sys")
    rel = ctypes.create_string_buffer(b"fs/bpf/fk-unit-dir")
    sup.handle(notif(NR_X86_64.mkdirat, AT_FDCWD, ctypes.addressof(rel), 0o700))
    assert last_reply(sup) == 0
    assert "fk-unit-dir" in sup.kern.bpffs.lookup(sup.kern.bpffs_mount, sup.kern.current).children
    sup.handle(notif(NR_X86_64.unlinkat, AT_FDCWD, ctypes.addressof(rel), 0x200))   # AT_REMOVEDIR
    assert last_reply(sup) == 0
    sup.handle(notif(NR_X86_64.mkdir, ctypes.addressof(ctypes.create_string_buffer(b"/tmp/x")),
                     0o700))
    assert last_reply(sup) == "continue"


def test_handler_bug_replies_enotsupp_and_counts(sup, monkeypatch):
    def boom(task, n):
        raise RuntimeError("emulator bug")
    sup.syscalls[(AuditArch.X86_64, NR_X86_64.bpf)] = boom
    sup.handle(bpf_notif(BpfCmd.MAP_CREATE, Attr()))
    assert last_reply(sup) == -Errno.ENOTSUPP
    assert sup.internal_errors == 1


def test_statfs_bytes_match_real_bpffs():
    libc = ctypes.CDLL(None, use_errno=True)
    real = ctypes.create_string_buffer(vfs_ffi.sizeof("struct statfs"))
    if libc.statfs(b"/sys/fs/bpf", real) != 0:
        pytest.skip("no /sys/fs/bpf")
    r = vfs_ffi.cast("struct statfs *", vfs_ffi.from_buffer(real.raw))
    if r.f_type != FsMagic.BPF_FS_MAGIC:
        pytest.skip("/sys/fs/bpf is not a bpffs here")
    ours = vfs_ffi.cast("struct statfs *", vfs_ffi.from_buffer(
        _statfs_bytes(FsMagic.BPF_FS_MAGIC, StFlag.VALID | StFlag.RELATIME)))
    for f in ("f_type", "f_bsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
              "f_namelen", "f_frsize"):
        assert getattr(ours, f) == getattr(r, f), f
    assert ours.f_flags == r.f_flags & ~StFlag.RDONLY      # a rw,relatime mount
