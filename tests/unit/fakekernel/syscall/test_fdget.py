"""fakekernel/syscall/fdget.py — fd -> map lookups and new map fds."""
from __future__ import annotations

import pytest

from fakekernel.errors import KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDONLY, O_RDWR, O_WRONLY, File
from fakekernel.syscall.fdget import MAP_FILE_KIND, bpf_get_file_flag, bpf_map_get, bpf_map_new_fd
from uapi import calls
from uapi.bpf import MapFlags, MapType
from uapi.errno import Errno


@pytest.mark.parametrize("flags,want", [(0, O_RDWR), (MapFlags.RDONLY, O_RDONLY),
                                        (MapFlags.WRONLY, O_WRONLY),
                                        (MapFlags.RDONLY | MapFlags.NUMA_NODE, O_RDONLY)])
def test_bpf_get_file_flag(flags, want):
    assert bpf_get_file_flag(flags) == want


def test_bpf_get_file_flag_both_einval():
    with pytest.raises(KernelError) as e:
        bpf_get_file_flag(MapFlags.RDONLY | MapFlags.WRONLY)
    assert e.value.errno == Errno.EINVAL


def test_bpf_map_get_closed_fd_ebadf_and_tty_einval(kernel):
    task = kernel.current
    with pytest.raises(KernelError) as e:
        bpf_map_get(task, 77)
    assert e.value.errno == Errno.EBADF
    with pytest.raises(KernelError) as e:
        bpf_map_get(task, 0)
    assert e.value.errno == Errno.EINVAL


def test_bpf_map_new_fd_file_holds_the_reference(kernel):
    fd = calls.map_create(kernel, MapType.HASH, 4, 4, 1, map_flags=MapFlags.WRONLY)
    f, m = bpf_map_get(kernel.current, fd)
    assert f.kind == MAP_FILE_KIND and f.f_flags == O_WRONLY | O_CLOEXEC
    m.get(uref=True)
    fd2 = bpf_map_new_fd(kernel, kernel.current, m, O_RDONLY)
    assert isinstance(kernel.current.files.lookup(fd2), File)
    kernel.close(fd)
    assert kernel.map_idr.find(m.id) is m
    kernel.close(fd2)
    assert kernel.map_idr.find(m.id) is None
