"""`fakekernel run --trace`: one line per intercepted syscall, strace-like.

    [pid 4242] bpf(MAP_CREATE, map_type=HASH key_size=4 value_size=4 max_entries=8 map_name="m") = 3
    [pid 4242] bpf(MAP_LOOKUP_ELEM, map_fd=3 key=0x7ffd.. value=0x7ffd.. flags=0) = -1 ENOENT
    [pid 4242] statfs("/sys/fs/bpf") = 0 (f_type=BPF_FS_MAGIC)
    [pid 4242] statfs("/tmp") -> continue

The attr is decoded from the bytes the handler saw (the supervisor copies it once more
from the target only when tracing).
"""
from __future__ import annotations

from typing import Callable, TextIO

from uapi.bpf import AttachType, BpfCmd, MapType, ProgType
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["Tracer", "format_bpf_args", "format_ret"]

_ATTR_SIZE = ffi.sizeof("union bpf_attr")

# per command: the attr fields worth a trace line; "name:kind" decodes the value
_ELEM = ("map_fd", "key:ptr", "value:ptr", "flags")
_FIELDS: dict[int, tuple[str, ...]] = {
    BpfCmd.MAP_CREATE: ("map_type:MapType", "key_size", "value_size", "max_entries",
                        "map_flags:hex", "inner_map_fd", "map_name:name", "btf_fd", "map_extra"),
    BpfCmd.MAP_LOOKUP_ELEM: _ELEM,
    BpfCmd.MAP_UPDATE_ELEM: _ELEM,
    BpfCmd.MAP_DELETE_ELEM: ("map_fd", "key:ptr", "flags"),
    BpfCmd.MAP_GET_NEXT_KEY: ("map_fd", "key:ptr", "next_key:ptr"),
    BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM: _ELEM,
    BpfCmd.MAP_FREEZE: ("map_fd",),
    BpfCmd.PROG_LOAD: ("prog_type:ProgType", "insn_cnt", "license:str", "log_level", "log_size",
                       "prog_flags:hex", "prog_name:name",
                       "expected_attach_type:AttachType", "prog_btf_fd", "attach_btf_id"),
    BpfCmd.OBJ_PIN: ("pathname:str", "bpf_fd", "file_flags:hex"),
    BpfCmd.OBJ_GET: ("pathname:str", "bpf_fd", "file_flags:hex"),
    BpfCmd.PROG_ATTACH: ("target_fd", "attach_bpf_fd", "attach_type:AttachType",
                         "attach_flags:hex"),
    BpfCmd.PROG_DETACH: ("target_fd", "attach_bpf_fd", "attach_type:AttachType"),
    BpfCmd.PROG_TEST_RUN: ("test.prog_fd", "test.data_size_in", "test.data_size_out",
                           "test.ctx_size_in", "test.repeat", "test.flags:hex"),
    BpfCmd.PROG_GET_NEXT_ID: ("start_id",),
    BpfCmd.MAP_GET_NEXT_ID: ("start_id",),
    BpfCmd.BTF_GET_NEXT_ID: ("start_id",),
    BpfCmd.LINK_GET_NEXT_ID: ("start_id",),
    BpfCmd.PROG_GET_FD_BY_ID: ("prog_id", "open_flags:hex"),
    BpfCmd.MAP_GET_FD_BY_ID: ("map_id", "open_flags:hex"),
    BpfCmd.BTF_GET_FD_BY_ID: ("btf_id", "open_flags:hex"),
    BpfCmd.LINK_GET_FD_BY_ID: ("link_id", "open_flags:hex"),
    BpfCmd.OBJ_GET_INFO_BY_FD: ("info.bpf_fd", "info.info_len", "info.info:ptr"),
    BpfCmd.PROG_QUERY: ("query.target_fd", "query.attach_type:AttachType",
                        "query.query_flags:hex", "query.prog_cnt"),
    BpfCmd.BTF_LOAD: ("btf:ptr", "btf_size", "btf_log_level"),
    BpfCmd.LINK_CREATE: ("link_create.prog_fd", "link_create.target_fd",
                         "link_create.attach_type:AttachType", "link_create.flags:hex"),
    BpfCmd.PROG_BIND_MAP: ("prog_bind_map.prog_fd", "prog_bind_map.map_fd"),
}

_ENUMS = {"MapType": MapType, "ProgType": ProgType, "AttachType": AttachType}


def _enum_name(enum_cls, v: int) -> str:
    try:
        return enum_cls(v).name
    except ValueError:
        return str(v)


def format_bpf_args(cmd: int, raw: bytes, read_str: Callable[[int], str]) -> str:
    """`MAP_CREATE, map_type=HASH key_size=4 ...` from the attr bytes."""
    try:
        name = BpfCmd(cmd).name
    except ValueError:
        return f"{cmd}, <{len(raw)} bytes>"
    attr = ffi.new("union bpf_attr *")
    ffi.memmove(attr, raw[:_ATTR_SIZE], min(len(raw), _ATTR_SIZE))
    parts = []
    for spec in _FIELDS.get(cmd, ()):
        field, _, kind = spec.partition(":")
        v = attr
        for part in field.split("."):
            v = getattr(v, part)
        if kind == "name":
            parts.append(f'{field}="{ffi.string(v).decode(errors="replace")}"')
            continue
        if kind in _ENUMS:
            parts.append(f"{field}={_enum_name(_ENUMS[kind], v)}")
        elif kind == "hex":
            parts.append(f"{field}={v:#x}")
        elif kind == "ptr":
            parts.append(f"{field}={v:#x}" if v else f"{field}=NULL")
        elif kind == "str":
            parts.append(f'{field}="{read_str(v)}"' if v else f"{field}=NULL")
        else:
            parts.append(f"{field}={v}")
    return ", ".join([name, " ".join(parts)]) if parts else name


def format_ret(ret: int) -> str:
    if ret >= 0:
        return str(ret)
    try:
        return f"-1 {Errno(-ret).name}"
    except ValueError:
        return f"-1 errno {-ret}"


class Tracer:
    """Writes trace lines to a text stream (flushed per line: the target may be killed)."""

    def __init__(self, out: TextIO):
        self.out = out

    def line(self, tid: int, text: str) -> None:
        self.out.write(f"[pid {tid}] {text}\n")
        self.out.flush()
