"""Symbolic links in bpffs (kernel/bpf/inode.c bpf_symlink + the fs/namei.c walk): creation in
bpffs directories only, following in the middle and at the end of a path (not with lstat's
nofollow), readlink, ELOOP, and unlink removing the link, not its target."""
from __future__ import annotations

import pytest

from fakekernel.bpffs import SYMLINK
from fakekernel.errors import KernelError
from uapi import calls
from uapi.bpf import MapType
from uapi.errno import Errno

M = "/sys/fs/bpf"


def errno_of(fn) -> int:
    with pytest.raises(KernelError) as e:
        fn()
    return e.value.errno


def test_symlink_is_followed_in_paths_and_seen_by_nofollow(kernel):
    fs, t = kernel.bpffs, kernel.current
    assert kernel.mkdir(f"{M}/tc") == 0 and kernel.mkdir(f"{M}/tc/globals") == 0
    fs.symlink(f"{M}/tc/", f"{M}/xdp", t)
    fd = calls.map_create(kernel, MapType.ARRAY, 4, 4, 1)
    calls.obj_pin(kernel, fd, f"{M}/xdp/globals/m")            # through the link
    assert fs.lookup(f"{M}/tc/globals/m", t).kind == "map"
    assert fs.lookup(f"{M}/xdp", t).is_dir
    assert fs.lookup(f"{M}/xdp", t, follow=False).kind == SYMLINK
    assert fs.readlink(f"{M}/xdp", t) == f"{M}/tc/"
    fs.symlink("tc/globals/m", f"{M}/rel", t)                    # relative to the link's directory
    assert fs.lookup(f"{M}/rel", t).kind == "map"
    assert kernel.unlink(f"{M}/xdp") == 0
    assert fs.lookup(f"{M}/tc/globals/m", t).kind == "map"
    for path in (f"{M}/rel", f"{M}/tc/globals/m"):
        assert kernel.unlink(path) == 0
    kernel.close(fd)
    assert kernel.rmdir(f"{M}/tc/globals") == 0 and kernel.rmdir(f"{M}/tc") == 0


def test_symlink_errors(kernel):
    fs, t = kernel.bpffs, kernel.current
    fs.symlink(f"{M}/b", f"{M}/a", t)
    fs.symlink(f"{M}/a", f"{M}/b", t)
    assert errno_of(lambda: fs.lookup(f"{M}/a", t)) == Errno.ELOOP
    assert errno_of(lambda: fs.symlink("x", f"{M}/a", t)) == Errno.EEXIST
    assert errno_of(lambda: fs.symlink("", f"{M}/c", t)) == Errno.ENOENT
    assert errno_of(lambda: fs.readlink(M, t)) == Errno.EINVAL
    fs.symlink(f"{M}/nowhere", f"{M}/dangling", t)
    assert errno_of(lambda: fs.lookup(f"{M}/dangling", t)) == Errno.ENOENT
    for name in ("a", "b", "dangling"):
        assert kernel.unlink(f"{M}/{name}") == 0
