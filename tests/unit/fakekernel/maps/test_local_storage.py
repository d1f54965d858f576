"""fakekernel/maps/bpf_local_storage.py, task/inode/cgrp storage, fakekernel/pid.py and the
helpers of fakekernel/helpers/local_storage.py that programs cannot reach differentially here
(inode and cgroup owners need BTF pointers the verifier does not walk)."""
from __future__ import annotations

import os

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel import Kernel
from fakekernel.helpers import local_storage as H
from fakekernel.helpers.base import neg_errno
from fakekernel.interp.run import RunEnv
from fakekernel.pid import PIDFD_FILE_KIND
from uapi import calls
from uapi.bpf import BPF_LOCAL_STORAGE_GET_F_CREATE as F_CREATE
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.errno import Errno

from backends import FakeBackend

CG = "/sys/fs/cgroup/unified"


@pytest.fixture
def b():
    be = FakeBackend()
    yield be
    be.cleanup()


def _create(b, mt):
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    v = w.struct("val", 8, [("a", i, 0), ("b", i, 32)])
    btf = btf_load(b, w.blob()).ret
    fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=4, value_size=8,
                   max_entries=0, map_flags=MapFlags.NO_PREALLOC, btf_fd=btf,
                   btf_key_type_id=i, btf_value_type_id=v)[0]
    b.close(btf)
    assert fd >= 0
    return fd, b.kern.current.files.fdget(fd).private_data


def _env(kern):
    return RunEnv(mem=kern.mem, kernel=kern)


def _k(fd):
    return fd.to_bytes(4, "little")


def test_pidfd_open_kind_flags_and_esrch(b):
    kern = b.kern
    fd = kern.pidfd_open(kern.current.pid, os.O_NONBLOCK)
    f = kern.current.files.fdget(fd)
    assert f.kind == PIDFD_FILE_KIND and f.private_data is kern.current
    assert kern.pidfd_open(4242) == -Errno.ESRCH
    assert kern.pidfd_open(kern.current.pid, 1) == -Errno.EINVAL
    kern.close(fd)


def test_task_exit_frees_task_storage_and_pid(b):
    kern = b.kern
    fd, m = _create(b, MapType.TASK_STORAGE)
    child = kern.spawn()
    pfd = kern.pidfd_open(child.pid)
    calls.map_update_elem(b, fd, _k(pfd), b"x" * 8)
    assert m in child.bpf_storage and child in m.selems
    kern.exit_task(child)
    assert not child.bpf_storage and child not in m.selems
    assert kern.pidfd_open(child.pid) == -Errno.ESRCH
    kern.close(pfd)
    b.close(fd)


def test_map_free_drops_every_owner_element(b):
    kern = b.kern
    fd, m = _create(b, MapType.TASK_STORAGE)
    fd2, m2 = _create(b, MapType.TASK_STORAGE)
    pfd = kern.pidfd_open(kern.current.pid)
    calls.map_update_elem(b, fd, _k(pfd), b"1" * 8)
    calls.map_update_elem(b, fd2, _k(pfd), b"2" * 8)
    env = _env(kern)
    addr = H.bpf_task_storage_get(env, kern.mem.map_object(m), kern.mem.map_object(kern.current),
                                  0, 0, 0)
    assert kern.mem.read(addr, 8) == b"1" * 8
    b.close(fd)
    assert list(kern.current.bpf_storage) == [m2]
    assert kern.mem.region_at(addr) is None          # the value was unmapped
    kern.close(pfd)
    b.close(fd2)


def test_task_storage_helpers_flags_null_task_and_delete(b):
    kern = b.kern
    fd, m = _create(b, MapType.TASK_STORAGE)
    env, mh, th = _env(kern), kern.mem.map_object(m), kern.mem.map_object(kern.current)
    assert H.bpf_task_storage_get(env, mh, th, 0, 0, 0) == 0
    assert H.bpf_task_storage_get(env, mh, 0, 0, F_CREATE, 0) == 0
    assert H.bpf_task_storage_get(env, mh, th, 0, F_CREATE | 2, 0) == 0
    addr = H.bpf_task_storage_get(env, mh, th, 0, F_CREATE, 0)
    assert addr and kern.mem.read(addr, 8) == bytes(8)
    kern.mem.write(addr, b"prog-set")
    pfd = kern.pidfd_open(kern.current.pid)
    assert calls.map_lookup_elem(b, fd, _k(pfd), 8) == b"prog-set"
    assert H.bpf_task_storage_delete(env, mh, 0, 0, 0, 0) == neg_errno(Errno.EINVAL)
    assert H.bpf_task_storage_delete(env, mh, th, 0, 0, 0) == 0
    assert H.bpf_task_storage_delete(env, mh, th, 0, 0, 0) == neg_errno(Errno.ENOENT)
    kern.close(pfd)
    b.close(fd)


def test_inode_storage_helpers_share_the_anon_inode(b):
    kern = b.kern
    fd, m = _create(b, MapType.INODE_STORAGE)
    env, mh = _env(kern), kern.mem.map_object(m)
    map_file = kern.current.files.fdget(fd)
    addr = H.bpf_inode_storage_get(env, mh, kern.mem.map_object(map_file), 0, F_CREATE, 0)
    kern.mem.write(addr, b"anon-ino")
    other = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
    assert calls.map_lookup_elem(b, fd, _k(other), 8) == b"anon-ino"
    assert H.bpf_inode_storage_get(env, mh, 0, 0, F_CREATE, 0) == 0
    assert H.bpf_inode_storage_delete(env, mh, 0, 0, 0, 0) == neg_errno(Errno.EINVAL)
    assert H.bpf_inode_storage_delete(env, mh, kern.mem.map_object(map_file), 0, 0, 0) == 0
    kern.bpf_lsm_active = False
    assert H.bpf_inode_storage_get(env, mh, kern.mem.map_object(map_file), 0, F_CREATE, 0) == 0
    assert H.bpf_inode_storage_delete(env, mh, kern.mem.map_object(map_file), 0, 0, 0) == neg_errno(Errno.ENOENT)
    b.close(other)
    b.close(fd)


def test_cgrp_storage_helpers_and_rmdir_frees(b):
    kern = b.kern
    fd, m = _create(b, MapType.CGRP_STORAGE)
    cg = kern.world.cgroup.mkdir(f"{CG}/x")
    env, mh, ch = _env(kern), kern.mem.map_object(m), kern.mem.map_object(cg)
    init = kern.mem.map_region(bytearray(b"initval!"), "stack", "init")
    addr = H.bpf_cgrp_storage_get(env, mh, ch, init.base, F_CREATE, 0)
    assert kern.mem.read(addr, 8) == b"initval!"
    assert H.bpf_cgrp_storage_get(env, mh, ch, 0, F_CREATE, 0) == addr
    cfd = b.open(f"{CG}/x", os.O_RDONLY | os.O_DIRECTORY)
    assert calls.map_lookup_elem(b, fd, _k(cfd), 8) == b"initval!"
    kern.world.cgroup.rmdir(f"{CG}/x")
    assert not cg.bpf_storage and not m.selems
    assert calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=_k(cfd),
                     value=bytearray(8))[0] == -Errno.ENOENT
    assert H.bpf_cgrp_storage_delete(env, mh, 0, 0, 0, 0) == neg_errno(Errno.EINVAL)
    kern.mem.unmap(init)
    b.close(cfd)
    b.close(fd)


def test_get_next_key_and_lookup_and_delete_enotsupp(b):
    fd, m = _create(b, MapType.TASK_STORAGE)
    assert calls.raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=None,
                     next_key=bytearray(4))[0] == -Errno.ENOTSUPP
    b.close(fd)


def test_kernel_defaults_bpf_lsm_active():
    assert Kernel().bpf_lsm_active is True
