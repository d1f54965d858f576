"""fakekernel/helpers/dynptr.py — LOCAL dynptrs: from_mem, read, write, data, their errors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.dynptr import (BPF_DYNPTR_SIZE, BPF_DYNPTR_TYPE_LOCAL, DYNPTR_RDONLY_BIT,
                                       bpf_dynptr_data, bpf_dynptr_from_mem, bpf_dynptr_read,
                                       bpf_dynptr_write, dynptr_encode)
from fakekernel.interp.run import RunEnv
from uapi.errno import Errno


@pytest.fixture
def env(kernel):
    regions = []

    def region(size, writable=True):
        r = kernel.mem.map_region(bytearray(size), "stack", f"t{len(regions)}", writable=writable)
        regions.append(r)
        return r.base
    # the helpers only touch env.mem (a RunEnv has no room for the test's region factory)
    yield SimpleNamespace(mem=RunEnv(mem=kernel.mem, kernel=kernel).mem, region=region)
    for r in regions:
        kernel.mem.unmap(r)


def test_dynptr_from_mem_then_read_write_data(env):
    data, ptr, dst = env.region(16), env.region(BPF_DYNPTR_SIZE), env.region(8)
    env.mem.write(data, bytes(range(16)))
    assert bpf_dynptr_from_mem(env, data, 16, 0, ptr, 0) == 0
    assert env.mem.read(ptr, BPF_DYNPTR_SIZE) == dynptr_encode(data, 16, BPF_DYNPTR_TYPE_LOCAL)
    assert bpf_dynptr_read(env, dst, 4, ptr, 10, 0) == 0
    assert env.mem.read(dst, 4) == bytes([10, 11, 12, 13])
    assert bpf_dynptr_write(env, ptr, 14, dst, 2, 0) == 0
    assert env.mem.read(data + 14, 2) == bytes([10, 11])
    assert bpf_dynptr_data(env, ptr, 8, 8, 0, 0) == data + 8


def test_dynptr_from_mem_flags_einval_nulls_ptr(env):
    data, ptr = env.region(16), env.region(BPF_DYNPTR_SIZE)
    env.mem.write(ptr, b"\xff" * BPF_DYNPTR_SIZE)
    assert bpf_dynptr_from_mem(env, data, 16, 1, ptr, 0) == neg_errno(Errno.EINVAL)
    assert env.mem.read(ptr, BPF_DYNPTR_SIZE) == bytes(BPF_DYNPTR_SIZE)
    assert bpf_dynptr_from_mem(env, data, 1 << 24, 0, ptr, 0) == neg_errno(Errno.E2BIG)
    # a null dynptr: read/write EINVAL, data NULL
    dst = env.region(8)
    assert bpf_dynptr_read(env, dst, 1, ptr, 0, 0) == neg_errno(Errno.EINVAL)
    assert bpf_dynptr_write(env, ptr, 0, dst, 1, 0) == neg_errno(Errno.EINVAL)
    assert bpf_dynptr_data(env, ptr, 0, 1, 0, 0) == 0


@pytest.mark.parametrize("offset,length", [(0, 17), (16, 1), (17, 0), (0xFFFFFFFF, 2)])
def test_dynptr_out_of_bounds_e2big(env, offset, length):
    data, ptr, dst = env.region(16), env.region(BPF_DYNPTR_SIZE), env.region(32)
    assert bpf_dynptr_from_mem(env, data, 16, 0, ptr, 0) == 0
    assert bpf_dynptr_read(env, dst, length, ptr, offset, 0) == neg_errno(Errno.E2BIG)
    assert bpf_dynptr_write(env, ptr, offset, dst, length, 0) == neg_errno(Errno.E2BIG)
    assert bpf_dynptr_data(env, ptr, offset, length, 0, 0) == 0


def test_dynptr_flags_and_rdonly(env):
    data, ptr, dst = env.region(16), env.region(BPF_DYNPTR_SIZE), env.region(8)
    assert bpf_dynptr_from_mem(env, data, 16, 0, ptr, 0) == 0
    assert bpf_dynptr_read(env, dst, 1, ptr, 0, 1) == neg_errno(Errno.EINVAL)
    assert bpf_dynptr_write(env, ptr, 0, dst, 1, 1) == neg_errno(Errno.EINVAL)
    env.mem.write(ptr, dynptr_encode(data, 16, BPF_DYNPTR_TYPE_LOCAL, rdonly=True))
    assert int.from_bytes(env.mem.read(ptr + 8, 4), "little") & DYNPTR_RDONLY_BIT
    assert bpf_dynptr_read(env, dst, 1, ptr, 0, 0) == 0
    assert bpf_dynptr_write(env, ptr, 0, dst, 1, 0) == neg_errno(Errno.EINVAL)
    assert bpf_dynptr_data(env, ptr, 0, 1, 0, 0) == 0


def test_dynptr_with_offset_field(env):
    data, ptr, dst = env.region(16), env.region(BPF_DYNPTR_SIZE), env.region(8)
    env.mem.write(data, bytes(range(16)))
    env.mem.write(ptr, dynptr_encode(data, 8, BPF_DYNPTR_TYPE_LOCAL, offset=4))
    assert bpf_dynptr_read(env, dst, 8, ptr, 0, 0) == 0
    assert env.mem.read(dst, 8) == bytes(range(4, 12))
    assert bpf_dynptr_read(env, dst, 8, ptr, 1, 0) == neg_errno(Errno.E2BIG)
