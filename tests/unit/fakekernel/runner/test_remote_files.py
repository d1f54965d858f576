"""RemoteFdTable / RemoteFiles with this test process as the "target".

ADDFD is replaced by a dup into our own fd table (what the kernel does to the target's),
so lookups through /proc/<our pid>/fd and close events from inotify are the real ones.
"""
from __future__ import annotations

import fcntl
import os

import pytest

from fakekernel.errors import KernelError
from fakekernel.fdtable import O_RDONLY, O_RDWR, File
from fakekernel.runner.notify import NotifError
from fakekernel.runner.remote_files import OTHER_FILE_KIND, RemoteFdTable, RemoteFiles
from uapi.errno import Errno


class SelfListener:
    def __init__(self):
        self.fail = 0

    def addfd(self, notif_id, srcfd, *, send, cloexec=True):
        if self.fail:
            raise NotifError(self.fail, os.strerror(self.fail))
        return fcntl.fcntl(srcfd, fcntl.F_DUPFD_CLOEXEC, 0)


class Obj:
    def __init__(self):
        self.released = 0

    def file_release(self, file):
        self.released += 1


@pytest.fixture
def table():
    files = RemoteFiles()
    t = RemoteFdTable(files, SelfListener(), os.getpid(), notif_id=1)
    yield t
    files.close()


def _install(t: RemoteFdTable, obj, kind="bpf-map", f_flags=O_RDWR) -> int:
    t.replied = False
    return t.install(File(kind=kind, private_data=obj, f_flags=f_flags))


def test_install_gives_real_fd_named_like_the_anon_inode(table):
    obj = Obj()
    fd = _install(table, obj)
    assert "bpf-map" in os.readlink(f"/proc/self/fd/{fd}")
    assert table.fdget(fd).private_data is obj
    assert table.replied
    os.close(fd)
    table.files.process_events()
    assert obj.released == 1


def test_close_of_dups_releases_only_after_last(table):
    obj = Obj()
    fd = _install(table, obj)
    fd2 = os.dup(fd)
    assert table.fdget(fd2).private_data is obj
    os.close(fd)
    table.files.process_events()
    assert obj.released == 0
    os.close(fd2)
    table.files.process_events()
    assert obj.released == 1


def test_two_descriptions_closed_between_reads_both_release(table):
    """inotify merges identical consecutive events of one watch: one inode per File."""
    obj = Obj()
    fds = [_install(table, obj), _install(table, obj)]
    for fd in fds:
        os.close(fd)
    table.files.process_events()
    assert obj.released == 2
    assert table.files.live_files() == []


def test_access_mode_follows_file_flags(table):
    obj = Obj()
    fd = _install(table, obj, f_flags=O_RDONLY)
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert table.fdget(fd).f_flags & os.O_ACCMODE == O_RDONLY
    os.close(fd)


def test_non_emulated_fd_is_other_kind(table):
    r, w = os.pipe()
    try:
        assert table.fdget(r).kind == OTHER_FILE_KIND
    finally:
        os.close(r)
        os.close(w)


def test_fdget_closed_or_negative_fd_ebadf(table):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    for fd in (r, -1, 1 << 31):
        with pytest.raises(KernelError) as e:
            table.fdget(fd)
        assert e.value.errno == Errno.EBADF
        assert table.lookup(fd) is None


def test_install_emfile_drops_the_reference(table):
    obj = Obj()
    table.listener.fail = Errno.EMFILE
    with pytest.raises(KernelError) as e:
        _install(table, obj)
    assert e.value.errno == Errno.EMFILE
    assert obj.released == 1
    table.files.process_events()
    assert obj.released == 1
    assert table.files.live_files() == []


def test_second_install_in_one_reply_einval(table):
    obj = Obj()
    fd = _install(table, obj)
    with pytest.raises(KernelError) as e:
        table.install(File(kind="bpf-map", private_data=obj))
    assert e.value.errno == Errno.EINVAL
    assert obj.released == 1          # the refused File's reference was dropped
    os.close(fd)


def test_items_lists_emulated_fds(table):
    obj = Obj()
    fd = _install(table, obj)
    items = dict(table.items())
    assert items[fd].private_data is obj
    os.close(fd)


def test_close_and_dup_of_target_fd_eopnotsupp(table):
    for op in (table.close, table.dup):
        with pytest.raises(KernelError) as e:
            op(0)
        assert e.value.errno == Errno.EOPNOTSUPP


def test_registry_close_releases_what_is_left():
    files = RemoteFiles()
    t = RemoteFdTable(files, SelfListener(), os.getpid(), notif_id=1)
    obj = Obj()
    fd = _install(t, obj)
    files.close()
    assert obj.released == 1
    os.close(fd)
