"""stat(2)/statx(2)/access(2) of paths under the emulated bpffs — fs/stat.c, fs/open.c
(do_faccessat), kernel/bpf/inode.c (bpf_get_inode: what a bpffs inode carries).

cBPF cannot see paths, so the runner traps the stat family and answers the calls that
name something under the emulated bpffs mount (pins and directories, from
`kern.bpffs`); every other path CONTINUEs to the real kernel.  What `ls -l`, `stat`,
`test -e`, `find` and libbpf/bpftool's existence checks read: mode, uid/gid, link count,
an inode number stable for the inode's life, size 0 (symlinks too: bpf_symlink sets no i_size), block size one page, and the
time the emulator first saw the inode (bpffs stamps creation time; we do not keep it).
"""
from __future__ import annotations

import itertools
import os
import stat as st
import time
import weakref

from uapi.vfs import STATX_BASIC_STATS, ffi

__all__ = ["BpffsStat"]

_PAGE_SIZE = 4096
_R_OK, _W_OK, _X_OK = 4, 2, 1
_MAY = {_R_OK: 0o4, _W_OK: 0o2, _X_OK: 0o1}


class BpffsStat:
    """Inode numbers and the stat/statx records of bpffs inodes."""

    def __init__(self, kern):
        self.kern = kern
        self._ino: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._next = itertools.count(2)           # 1 is the mount root on bpffs too
        try:
            self.dev = os.stat(kern.bpffs_mount).st_dev
        except OSError:
            self.dev = 0

    def _meta(self, node) -> tuple[int, float]:
        m = self._ino.get(node)
        if m is None:
            m = (1 if getattr(node, "mountpoint", False) else next(self._next), time.time())
            self._ino[node] = m
        return m

    @staticmethod
    def _nlink(node) -> int:
        if not node.is_dir:
            return 1
        return 2 + sum(1 for c in node.children.values() if c.is_dir)

    def stat(self, node) -> bytes:
        ino, t = self._meta(node)
        s = ffi.new("struct stat *")
        s.st_dev, s.st_ino, s.st_nlink = self.dev, ino, self._nlink(node)
        s.st_mode, s.st_uid, s.st_gid = node.mode, node.uid, node.gid
        s.st_blksize = _PAGE_SIZE
        sec, nsec = int(t), int((t % 1) * 1e9)
        for f in ("st_atime", "st_mtime", "st_ctime"):
            setattr(s, f, sec)
            setattr(s, f + "_nsec", nsec)
        return bytes(ffi.buffer(s))

    def statx(self, node) -> bytes:
        ino, t = self._meta(node)
        s = ffi.new("struct statx *")
        s.stx_mask = STATX_BASIC_STATS
        s.stx_blksize = _PAGE_SIZE
        s.stx_nlink, s.stx_uid, s.stx_gid = self._nlink(node), node.uid, node.gid
        s.stx_mode, s.stx_ino = node.mode, ino
        for ts in (s.stx_atime, s.stx_ctime, s.stx_mtime):
            ts.tv_sec, ts.tv_nsec = int(t), int((t % 1) * 1e9)
        s.stx_dev_major, s.stx_dev_minor = os.major(self.dev), os.minor(self.dev)
        return bytes(ffi.buffer(s))

    @staticmethod
    def may_access(task, node, mode: int) -> bool:
        """do_faccessat() on the real ids: F_OK (0) is existence; root passes R/W, and X
        when some x bit is set or the inode is a directory."""
        if mode == 0:
            return True
        creds = task.creds
        if creds.uid == 0:
            return not mode & _X_OK or node.is_dir or bool(node.mode & 0o111)
        if creds.uid == node.uid:
            bits = (node.mode >> 6) & 0o7
        elif creds.gid == node.gid:
            bits = (node.mode >> 3) & 0o7
        else:
            bits = node.mode & 0o7
        return all(bits & _MAY[m] for m in _MAY if mode & m)


def is_dir_mode(mode: int) -> bool:
    return st.S_ISDIR(mode)
