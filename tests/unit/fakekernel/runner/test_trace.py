"""Trace lines of `fakekernel run --trace`."""
from __future__ import annotations

from fakekernel.runner.trace import format_bpf_args, format_ret
from uapi.bpf import BpfCmd, MapType
from uapi.errno import Errno
from uapi.ffi import ffi


def _attr(**fields) -> bytes:
    a = ffi.new("union bpf_attr *")
    for k, v in fields.items():
        setattr(a, k, v)
    return bytes(ffi.buffer(a))


def test_format_map_create_names_type_and_name():
    raw = _attr(map_type=MapType.HASH, key_size=4, value_size=8, max_entries=16,
                map_name=b"fk_hash")
    s = format_bpf_args(BpfCmd.MAP_CREATE, raw, lambda a: "?")
    assert s.startswith("MAP_CREATE, map_type=HASH key_size=4 value_size=8 max_entries=16")
    assert 'map_name="fk_hash"' in s


def test_format_obj_pin_reads_path_through_callback():
    raw = _attr(pathname=0x1000, bpf_fd=3)
    s = format_bpf_args(BpfCmd.OBJ_PIN, raw, lambda a: f"path@{a:#x}")
    assert s == 'OBJ_PIN, pathname="path@0x1000" bpf_fd=3 file_flags=0x0'


def test_format_short_attr_and_unknown_command():
    assert format_bpf_args(BpfCmd.MAP_FREEZE, b"\x05\0\0\0", lambda a: "") == "MAP_FREEZE, map_fd=5"
    assert format_bpf_args(9999, b"", lambda a: "") == "9999, <0 bytes>"


def test_format_ret():
    assert format_ret(3) == "3"
    assert format_ret(-Errno.ENOENT) == "-1 ENOENT"
    assert format_ret(-4000) == "-1 errno 4000"
