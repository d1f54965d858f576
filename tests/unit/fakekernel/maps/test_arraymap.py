"""fakekernel/maps/arraymap.py — array maps through Kernel.bpf, against a list model."""
from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from fakekernel import Kernel
from fakekernel.errors import KernelError
from fakekernel.maps.common import TOTALRAM
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType, UpdateFlags
from uapi.calls import BpfError, raw
from uapi.errno import Errno

from backends import FakeBackend

A = MapType.ARRAY


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def _map(kern, fd):
    return kern.current.files.fdget(fd).private_data


def test_map_create_array_elem_size_rounded_and_memlock(kernel):
    fd = calls.map_create(kernel, A, 4, 12, 10)
    m = _map(kernel, fd)
    assert m.elem_size == 16
    assert m.memlock == 312 + 10 * 16               # fdinfo memlock on Linux 6.18
    kernel.close(fd)


def test_map_create_mmapable_memlock_page_aligned(kernel):
    fd = calls.map_create(kernel, A, 4, 8, 10, map_flags=MapFlags.MMAPABLE)
    m = _map(kernel, fd)
    assert m.memlock == 8192
    assert m.area.memfd is not None
    kernel.close(fd)


def test_map_create_array_larger_than_ram_enomem(kernel):
    ret, _ = raw(kernel, BpfCmd.MAP_CREATE, "map_extra", map_type=A, key_size=4, value_size=8,
                 max_entries=TOTALRAM // 8 + 1)
    assert ret == -Errno.ENOMEM
    assert not kernel.map_idr.values()


def test_map_create_large_array_is_lazy(kernel):
    fd = calls.map_create(kernel, A, 4, 1 << 20, 1024)        # 1 GiB, backed only when touched
    calls.map_update_elem(kernel, fd, k32(1023), b"\x01" * (1 << 20))
    assert calls.map_lookup_elem(kernel, fd, k32(1023), 1 << 20)[-1] == 1
    kernel.close(fd)


def test_map_lookup_elem_program_side_addresses(kernel):
    fd = calls.map_create(kernel, A, 4, 12, 3)
    m = _map(kernel, fd)
    a0, a2 = m.map_lookup_elem(k32(0)), m.map_lookup_elem(k32(2))
    assert a2 - a0 == 2 * 16
    assert m.map_lookup_elem(k32(3)) == 0
    kernel.mem.write(a2, b"hello world!")
    assert calls.map_lookup_elem(kernel, fd, k32(2), 12) == b"hello world!"
    kernel.close(fd)


def test_map_direct_value_addr(kernel):
    fd = calls.map_create(kernel, A, 4, 16, 1)
    m = _map(kernel, fd)
    assert m.map_direct_value_addr(15) == m.map_lookup_elem(k32(0))
    with pytest.raises(KernelError) as e:
        m.map_direct_value_addr(16)
    assert e.value.errno == Errno.EINVAL
    fd2 = calls.map_create(kernel, A, 4, 16, 2)
    with pytest.raises(KernelError) as e:
        _map(kernel, fd2).map_direct_value_addr(0)
    assert e.value.errno == Errno.ENOTSUPP
    kernel.close(fd)
    kernel.close(fd2)


def test_map_free_unmaps_region(kernel):
    fd = calls.map_create(kernel, A, 4, 8, 2)
    m = _map(kernel, fd)
    addr = m.map_lookup_elem(k32(0))
    kernel.close(fd)
    assert m.freed and m.region is None
    from fakekernel.interp.memory import InterpreterFault
    with pytest.raises(InterpreterFault):
        kernel.mem.read(addr, 8)


def test_map_create_unprivileged_array_rounds_up(kernel):
    k = Kernel(creds=__import__("fakekernel.task", fromlist=["NOBODY"]).NOBODY,
               sysctls={"kernel.unprivileged_bpf_disabled": 0})
    ret, _ = raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=A, key_size=4, value_size=8,
                 max_entries=2**31 + 1)
    assert ret == -Errno.E2BIG        # index_mask + 1 overflows u32 without bypass_spec_v1
    fd = calls.map_create(k, A, 4, 8, 5)
    assert _map(k, fd).index_mask == 7
    k.close(fd)


# ---------------------------------------------------------------- model-based

class ArrayVsList(RuleBasedStateMachine):
    N = 4

    @initialize(value_size=st.integers(min_value=1, max_value=20))
    def setup(self, value_size):
        self.kern = Kernel()
        self.vs = value_size
        self.fd = calls.map_create(self.kern, A, 4, value_size, self.N)
        self.model = [bytes(value_size)] * self.N

    def _errno(self, fn, *a):
        try:
            return fn(*a)
        except BpfError as e:
            return -e.errno

    @rule(i=st.integers(min_value=0, max_value=6), data=st.data(),
          flags=st.sampled_from([UpdateFlags.ANY, UpdateFlags.NOEXIST, UpdateFlags.EXIST, 3]))
    def update(self, i, data, flags):
        v = data.draw(st.binary(min_size=self.vs, max_size=self.vs))
        got = self._errno(calls.map_update_elem, self.kern, self.fd, k32(i), v, flags)
        if flags > UpdateFlags.EXIST:
            want = -Errno.EINVAL
        elif i >= self.N:
            want = -Errno.E2BIG
        elif flags == UpdateFlags.NOEXIST:
            want = -Errno.EEXIST
        else:
            want = None
            self.model[i] = v
        assert got == want

    @rule(i=st.integers(min_value=0, max_value=6))
    def lookup(self, i):
        got = self._errno(calls.map_lookup_elem, self.kern, self.fd, k32(i), self.vs)
        assert got == (self.model[i] if i < self.N else -Errno.ENOENT)

    @rule(i=st.integers(min_value=0, max_value=6))
    def delete(self, i):
        assert self._errno(calls.map_delete_elem, self.kern, self.fd, k32(i)) == -Errno.EINVAL

    @rule(i=st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)))
    def get_next_key(self, i):
        got = self._errno(calls.map_get_next_key, self.kern, self.fd, None if i is None else k32(i), 4)
        if i is None or i >= self.N:
            assert got == k32(0)
        elif i == self.N - 1:
            assert got == -Errno.ENOENT
        else:
            assert got == k32(i + 1)

    def teardown(self):
        if hasattr(self, "kern"):
            assert self.kern.close(self.fd) == 0
            assert not self.kern.map_idr.values()


TestArrayVsList = ArrayVsList.TestCase
TestArrayVsList.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
