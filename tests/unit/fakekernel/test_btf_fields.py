"""fakekernel/btf_fields.py: records found in BTF, the value copies that skip special
fields, the verifier's access rule, and what map_check_btf does without CAP_BPF."""
from __future__ import annotations

from btfutil import BtfWriter, btf_load
from fakekernel.btf_fields import (BtfFieldType as F, copy_map_value, copy_value_out,
                                   map_value_field_access, zero_special_fields)
from fakekernel.task import Creds
from uapi import calls
from uapi.bpf import BpfCmd, MapType
from uapi.errno import Errno


def _lock_timer_map(k, map_type=MapType.ARRAY, task=None):
    w = BtfWriter()
    u32 = w.int_("unsigned int", 4)
    u64 = w.int_("long long unsigned int", 8)
    lock = w.struct("bpf_spin_lock", 4, [("val", u32, 0)])
    timer = w.struct("bpf_timer", 16, [("a", u64, 0), ("b", u64, 64)])
    refc = w.struct("bpf_refcount", 4, [("r", u32, 0)])
    val = w.struct("val", 32, [("x", u32, 0), ("l", lock, 32), ("t", timer, 64), ("y", u32, 192),
                               ("r", refc, 224)])
    bfd = btf_load(k, w.blob()).ret
    assert bfd >= 0
    if task is None:
        fd = calls.raw(k, BpfCmd.MAP_CREATE, None, map_type=map_type, key_size=4, value_size=32,
                       max_entries=1, btf_fd=bfd, btf_key_type_id=u32, btf_value_type_id=val)[0]
    else:           # the BTF fd handed to an unprivileged process, which creates the map
        from uapi.attr import Attr
        f = k.current.files.fdget(bfd)
        f.get()
        ufd = task.files.install(f)
        a = Attr()
        for name, v in dict(map_type=map_type, key_size=4, value_size=32, max_entries=1, btf_fd=ufd,
                            btf_key_type_id=u32, btf_value_type_id=val).items():
            a.set(name, v)
        fd = k.bpf(BpfCmd.MAP_CREATE, a.c, Attr.size("map_extra"), task=task)
        task.files.close(ufd)
    k.close(bfd)
    return fd


def test_record_offsets_and_sorted_fields(kernel):
    fd = _lock_timer_map(kernel)
    m = kernel.current.files.fdget(fd).private_data
    rec = m.record
    assert [(f.type, f.offset, f.size) for f in rec.fields] == [
        (F.SPIN_LOCK, 4, 4), (F.TIMER, 8, 16), (F.REFCOUNT, 28, 4)]
    assert (m.spin_lock_off, rec.timer_off) == (4, 8)
    kernel.close(fd)


def test_copy_map_value_keeps_destination_fields(kernel):
    fd = _lock_timer_map(kernel)
    rec = kernel.current.files.fdget(fd).private_data.record
    dst = bytearray(b"\xaa" * 32)
    copy_map_value(rec, dst, bytes(range(32)))
    assert dst[:4] == bytes(range(4)) and dst[4:8] == b"\xaa" * 4
    assert dst[8:24] == b"\xaa" * 16 and dst[24:28] == bytes(range(24, 28)) and dst[28:] == b"\xaa" * 4
    out = copy_value_out(rec, dst)
    assert out[4:24] == bytes(20) and out[28:] == (1).to_bytes(4, "little")   # refcount reads 1
    zero_special_fields(rec, dst)
    assert dst[4:8] == bytes(4)
    kernel.close(fd)


def test_map_value_field_access_rule(kernel):
    fd = _lock_timer_map(kernel)
    rec = kernel.current.files.fdget(fd).private_data.record
    assert map_value_field_access(rec, 0, 4, direct=True) is None
    assert map_value_field_access(rec, 2, 4, direct=True) == \
        "bpf_spin_lock cannot be accessed directly by load/store\n"
    assert map_value_field_access(rec, 24, 4, direct=False) is None
    assert map_value_field_access(rec, 20, 8, direct=False) == \
        "bpf_timer cannot be accessed directly by load/store\n"
    kernel.close(fd)


def test_special_fields_without_cap_bpf_eperm(kernel):
    kernel.sysctls["kernel.unprivileged_bpf_disabled"] = 0
    task = kernel.spawn(creds=Creds(uid=1000, gid=1000, caps=frozenset()))
    assert _lock_timer_map(kernel, task=task) == -Errno.EPERM


def test_f_lock_update_keeps_lock_word_and_plain_update_frees_timer(kernel):
    fd = _lock_timer_map(kernel)
    m = kernel.current.files.fdget(fd).private_data
    m.area.buf[4:8] = b"\x01\x00\x00\x00"           # as if a program held the lock
    m.area.buf[8:24] = b"\x07" * 16                  # and a timer had been set up
    calls.raw(kernel, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=bytes(4), value=b"\x55" * 32,
              flags=4)
    assert m.area.buf[4:8] == b"\x01\x00\x00\x00" and m.area.buf[8:24] == b"\x07" * 16
    calls.raw(kernel, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=bytes(4), value=b"\x66" * 32,
              flags=0)
    assert m.area.buf[4:8] == b"\x01\x00\x00\x00"    # the lock stays, the timer is freed
    assert m.area.buf[8:24] == bytes(16) and m.area.buf[:4] == b"\x66" * 4
    kernel.close(fd)
