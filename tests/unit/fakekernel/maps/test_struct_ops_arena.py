"""fakekernel/maps/struct_ops.py and arena.py — the vmlinux struct_ops table, memlock, the
arena's user range bookkeeping, without the real kernel."""
from __future__ import annotations

import mmap
import os

import pytest

from fakekernel import Kernel
from fakekernel.errors import KernelError
from fakekernel.maps.struct_ops import struct_ops_table
from uapi import calls
from uapi.bpf import BpfCmd, MapFlags, MapType
from uapi.errno import Errno

P = mmap.PAGESIZE
VMLINUX = "/sys/kernel/btf/vmlinux"
needs_vmlinux = pytest.mark.skipif(not os.access(VMLINUX, os.R_OK), reason="no vmlinux BTF")


def _table():
    with open(VMLINUX, "rb") as f:
        return {d.name: d for d in struct_ops_table(f.read()).values()}


@needs_vmlinux
def test_struct_ops_table_has_the_registered_ops():
    t = _table()
    assert {"tcp_congestion_ops", "bpf_dummy_ops"} <= set(t)
    tcp = t["tcp_congestion_ops"]
    assert tcp.value_size == 256 and tcp.data_off == 64 and tcp.common_size == 8
    assert tcp.funcs_cnt == 13                               # ssthresh ... release
    kinds = {m.name: m.kind for m in tcp.members}
    assert kinds["ssthresh"] == "func" and kinds["owner"] == "module" and kinds["name"] == "data"
    assert t["bpf_dummy_ops"].funcs_cnt == 3


def _btf(k):
    from btfutil import BtfWriter, btf_load
    w = BtfWriter()
    w.int_("int", 4)
    return btf_load(k, w.blob()).ret


@needs_vmlinux
@pytest.mark.parametrize("name,memlock", [("tcp_congestion_ops", 5264), ("bpf_dummy_ops", 4848)])
def test_struct_ops_memlock_measured(kernel, name, memlock):
    d = _table()[name]
    btf = _btf(kernel)
    fd = calls.map_create(kernel, MapType.STRUCT_OPS, 4, d.value_size, 1, btf_fd=btf,
                          btf_vmlinux_value_type_id=d.value_id)
    assert kernel.current.files.fdget(fd).private_data.memlock == memlock   # fdinfo on 6.18
    kernel.close(fd)
    kernel.close(btf)


def test_struct_ops_without_vmlinux_btf_enotsupp():
    k = Kernel(vmlinux_btf=None)
    btf = _btf(k)
    ret, _ = calls.raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.STRUCT_OPS, key_size=4,
                       value_size=256, max_entries=1, btf_fd=btf, btf_vmlinux_value_type_id=1)
    assert ret == -Errno.ENOTSUPP
    k.close(btf)


def _arena(k, pages=4, **kw):
    ret, _ = calls.raw(k, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.ARENA, max_entries=pages,
                       map_flags=MapFlags.MMAPABLE, **kw)
    return ret


def test_arena_first_mapping_fixes_user_range(kernel):
    fd = _arena(kernel)
    m = kernel.current.files.fdget(fd).private_data
    assert (m.user_vm_start, m.user_vm_end, m.memlock) == (0, 0, 0)
    area = kernel.mmap(fd, 4 * P, mmap.PROT_READ | mmap.PROT_WRITE)
    assert m.user_vm_start != 0 and m.user_vm_end - m.user_vm_start == 4 * P
    area.mmap[0:3] = b"abc"
    area.munmap()
    with pytest.raises(KernelError) as e:
        kernel.mmap(fd, 4 * P, mmap.PROT_READ)
    assert e.value.errno == Errno.EINVAL
    assert m.writecnt == 1                                  # never dropped: freeze is EBUSY
    assert calls.raw(kernel, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)[0] == -Errno.EBUSY
    kernel.close(fd)


def test_arena_pages_shared_between_mappings_of_the_memfd(kernel):
    fd = _arena(kernel)
    m = kernel.current.files.fdget(fd).private_data
    with kernel.mmap(fd, 4 * P, mmap.PROT_READ | mmap.PROT_WRITE) as area:
        area.mmap[P:P + 4] = b"page"
        other = mmap.mmap(m.memfd, 4 * P, mmap.MAP_SHARED, mmap.PROT_READ)
        assert other[P:P + 4] == b"page"                    # what the runner hands a target
        other.close()
    kernel.close(fd)


def test_arena_map_extra_kept_as_user_range(kernel):
    fd = _arena(kernel, map_extra=1 << 32)
    m = kernel.current.files.fdget(fd).private_data
    assert (m.user_vm_start, m.user_vm_end) == (1 << 32, (1 << 32) + 4 * P)
    with pytest.raises(KernelError) as e:
        kernel.mmap(fd, 4 * P, mmap.PROT_READ)
    assert e.value.errno == Errno.EINVAL
    kernel.close(fd)


@needs_vmlinux
def test_struct_ops_tcp_ca_register_and_unregister(kernel):
    from uapi.asm import assemble
    from uapi.bpf import ProgType
    d = _table()["tcp_congestion_ops"]
    idx = {m.name: i for i, m in enumerate(d.members)}
    off = {m.name: m.off for m in d.members}
    progs = {m: calls.prog_load(kernel, ProgType.STRUCT_OPS, assemble("r0 = 0\nexit"),
                                expected_attach_type=idx[m], attach_btf_id=d.type_id)
             for m in ("ssthresh", "cong_avoid", "undo_cwnd")}
    btf = _btf(kernel)
    fd = calls.map_create(kernel, MapType.STRUCT_OPS, 4, d.value_size, 1, btf_fd=btf,
                          btf_vmlinux_value_type_id=d.value_id)
    m = kernel.current.files.fdget(fd).private_data
    value = bytearray(d.value_size)
    value[d.data_off + off["name"]:d.data_off + off["name"] + 5] = b"unit1"
    for name, pfd in progs.items():
        value[d.data_off + off[name]:d.data_off + off[name] + 8] = pfd.to_bytes(8, "little")
    calls.map_update_elem(kernel, fd, bytes(4), bytes(value))
    assert "unit1" in kernel.tcp_congestion_controls
    assert m.state == 1 and m.refcnt == 2
    got = calls.map_lookup_elem(kernel, fd, bytes(4), d.value_size)
    assert got[4:8] == (1).to_bytes(4, "little")            # INUSE
    prog_id = calls.obj_get_info_by_fd(kernel, progs["ssthresh"], "prog")[0].id
    assert int.from_bytes(got[d.data_off + off["ssthresh"]:][:8], "little") == prog_id
    for pfd in progs.values():                              # the map keeps the programs
        kernel.close(pfd)
    calls.map_delete_elem(kernel, fd, bytes(4))
    assert "unit1" not in kernel.tcp_congestion_controls
    kernel.close(fd)
    kernel.close(btf)
    assert not kernel.live_objects()["progs"] and not kernel.live_objects()["maps"]
