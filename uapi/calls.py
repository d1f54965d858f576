"""libbpf-style userspace wrappers (tools/lib/bpf/bpf.c) over any `bpf()` backend.

Each wrapper builds the attr the way libbpf does (same fields, same size:
``offsetofend`` of the last field libbpf sets), calls ``backend.bpf`` and either returns
the result or raises `BpfError` (an OSError whose ``errno`` is the Linux value).
The same calls drive fakekernel and the real kernel, which is what the differential
tests rely on.
"""
from __future__ import annotations

import attrs

from uapi.attr import Attr
from uapi.bpf import BpfCmd
from uapi.errno import Errno
from uapi.ffi import ffi

__all__ = ["BpfError", "check", "map_create", "map_lookup_elem", "map_update_elem",
           "map_delete_elem", "map_get_next_key", "map_lookup_and_delete_elem", "map_freeze",
           "prog_load", "ProgLoadResult", "prog_test_run", "TestRunResult", "obj_pin", "obj_get",
           "prog_get_next_id", "map_get_next_id", "prog_get_fd_by_id", "map_get_fd_by_id",
           "obj_get_info_by_fd", "prog_attach", "prog_detach", "prog_query", "link_create",
           "raw"]


class BpfError(OSError):
    """A failed bpf() call; ``.errno`` is the Linux errno value."""

    def __init__(self, errno: int, what: str = "", log: str = ""):
        try:
            name = Errno(errno).name
        except ValueError:
            name = str(errno)
        super().__init__(errno, f"{what}: {name}" if what else name)
        self.log = log


def check(ret: int, what: str = "", log: str = "") -> int:
    if ret < 0:
        raise BpfError(-ret, what, log)
    return ret


def raw(b, cmd: int, last_field: str | None = None, size: int | None = None, **fields) -> tuple[int, Attr]:
    """Issue one bpf() with the given attr fields (dotted names written with '__')."""
    a = Attr()
    for k, v in fields.items():
        a.set(k.replace("__", "."), v)
    if size is None:
        size = Attr.size(last_field) if last_field else ffi.sizeof("union bpf_attr")
    return b.bpf(cmd, a.c, size), a


# ---------------------------------------------------------------- maps

def map_create(b, map_type: int, key_size: int, value_size: int, max_entries: int, *,
               map_flags: int = 0, name: bytes | str = b"", inner_map_fd: int = 0,
               numa_node: int = 0, map_extra: int = 0, btf_fd: int = 0,
               btf_key_type_id: int = 0, btf_value_type_id: int = 0,
               btf_vmlinux_value_type_id: int = 0, map_ifindex: int = 0) -> int:
    ret, _ = raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=map_type, key_size=key_size,
                 value_size=value_size, max_entries=max_entries, map_flags=map_flags,
                 map_name=name.encode() if isinstance(name, str) else name,
                 inner_map_fd=inner_map_fd, numa_node=numa_node, map_extra=map_extra,
                 btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
                 btf_value_type_id=btf_value_type_id, map_ifindex=map_ifindex,
                 btf_vmlinux_value_type_id=btf_vmlinux_value_type_id)
    return check(ret, "MAP_CREATE")


def map_lookup_elem(b, fd: int, key: bytes, value_size: int, flags: int = 0) -> bytes:
    out = bytearray(value_size)
    ret, _ = raw(b, BpfCmd.MAP_LOOKUP_ELEM, "flags", map_fd=fd, key=key, value=out, flags=flags)
    check(ret, "MAP_LOOKUP_ELEM")
    return bytes(out)


def map_update_elem(b, fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    ret, _ = raw(b, BpfCmd.MAP_UPDATE_ELEM, "flags", map_fd=fd, key=key, value=value, flags=flags)
    check(ret, "MAP_UPDATE_ELEM")


def map_delete_elem(b, fd: int, key: bytes) -> None:
    ret, _ = raw(b, BpfCmd.MAP_DELETE_ELEM, "flags", map_fd=fd, key=key)
    check(ret, "MAP_DELETE_ELEM")


def map_get_next_key(b, fd: int, key: bytes | None, key_size: int) -> bytes:
    out = bytearray(key_size)
    ret, _ = raw(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=key, next_key=out)
    check(ret, "MAP_GET_NEXT_KEY")
    return bytes(out)


def map_lookup_and_delete_elem(b, fd: int, key: bytes | None, value_size: int, flags: int = 0) -> bytes:
    out = bytearray(value_size)
    ret, _ = raw(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, "flags", map_fd=fd, key=key, value=out,
                 flags=flags)
    check(ret, "MAP_LOOKUP_AND_DELETE_ELEM")
    return bytes(out)


def map_freeze(b, fd: int) -> None:
    ret, _ = raw(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd)
    check(ret, "MAP_FREEZE")


# ---------------------------------------------------------------- programs

@attrs.frozen
class ProgLoadResult:
    ret: int            # fd or -errno
    log: str            # the verifier log (log_level > 0)
    log_true_size: int


def prog_load(b, prog_type: int, insns: bytes, license: bytes | str = b"GPL", *,
              name: bytes | str = b"", log_level: int = 0, log_size: int = 0,
              expected_attach_type: int = 0, prog_flags: int = 0, kern_version: int = 0,
              prog_ifindex: int = 0, attach_btf_id: int = 0, size: int | None = None,
              strict: bool = True) -> ProgLoadResult | int:
    """BPF_PROG_LOAD.  With strict=True returns the fd or raises BpfError carrying the log;
    with strict=False returns a `ProgLoadResult` whatever happened."""
    log = bytearray(log_size) if log_size else None
    lic = license.encode() if isinstance(license, str) else license
    ret, a = raw(b, BpfCmd.PROG_LOAD, "log_true_size" if size is None else None, size=size,
                 prog_type=prog_type, insns=bytes(insns), insn_cnt=len(insns) // 8,
                 license=lic + b"\0", log_level=log_level, log_size=log_size, log_buf=log,
                 expected_attach_type=expected_attach_type, prog_flags=prog_flags,
                 kern_version=kern_version,
                 prog_name=name.encode() if isinstance(name, str) else name,
                 prog_ifindex=prog_ifindex, attach_btf_id=attach_btf_id)
    text = bytes(log).split(b"\0", 1)[0].decode(errors="replace") if log is not None else ""
    if not strict:
        return ProgLoadResult(ret, text, a.get("log_true_size"))
    return check(ret, "PROG_LOAD", text)


@attrs.frozen
class TestRunResult:
    ret: int
    retval: int
    duration: int
    data_out: bytes
    data_size_out: int
    ctx_out: bytes
    ctx_size_out: int


def prog_test_run(b, prog_fd: int, data_in: bytes | None = None, *, data_size_out: int = 0,
                  ctx_in: bytes | None = None, ctx_size_out: int = 0, repeat: int = 0,
                  flags: int = 0, cpu: int = 0, batch_size: int = 0,
                  strict: bool = True) -> TestRunResult:
    dout = bytearray(data_size_out) if data_size_out else None
    cout = bytearray(ctx_size_out) if ctx_size_out else None
    ret, a = raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=prog_fd,
                 test__data_in=data_in, test__data_size_in=len(data_in) if data_in else 0,
                 test__data_out=dout, test__data_size_out=data_size_out,
                 test__ctx_in=ctx_in, test__ctx_size_in=len(ctx_in) if ctx_in else 0,
                 test__ctx_out=cout, test__ctx_size_out=ctx_size_out, test__repeat=repeat,
                 test__flags=flags, test__cpu=cpu, test__batch_size=batch_size)
    if strict:
        check(ret, "PROG_TEST_RUN")
    return TestRunResult(ret, a.get("test.retval"), a.get("test.duration"),
                         bytes(dout) if dout is not None else b"", a.get("test.data_size_out"),
                         bytes(cout) if cout is not None else b"", a.get("test.ctx_size_out"))


# ---------------------------------------------------------------- objects

def _path(p: str | bytes) -> bytes:
    return (p.encode() if isinstance(p, str) else p) + b"\0"


def obj_pin(b, fd: int, path: str | bytes, file_flags: int = 0) -> None:
    ret, _ = raw(b, BpfCmd.OBJ_PIN, "file_flags", pathname=_path(path), bpf_fd=fd,
                 file_flags=file_flags)
    check(ret, "OBJ_PIN")


def obj_get(b, path: str | bytes, file_flags: int = 0) -> int:
    ret, _ = raw(b, BpfCmd.OBJ_GET, "file_flags", pathname=_path(path), file_flags=file_flags)
    return check(ret, "OBJ_GET")


def _get_next_id(b, cmd: int, start: int) -> int:
    ret, a = raw(b, cmd, "next_id", start_id=start)
    check(ret, cmd.name)
    return a.get("next_id")


def prog_get_next_id(b, start: int) -> int:
    return _get_next_id(b, BpfCmd.PROG_GET_NEXT_ID, start)


def map_get_next_id(b, start: int) -> int:
    return _get_next_id(b, BpfCmd.MAP_GET_NEXT_ID, start)


def prog_get_fd_by_id(b, id_: int, open_flags: int = 0) -> int:
    ret, _ = raw(b, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=id_, open_flags=open_flags)
    return check(ret, "PROG_GET_FD_BY_ID")


def map_get_fd_by_id(b, id_: int, open_flags: int = 0) -> int:
    ret, _ = raw(b, BpfCmd.MAP_GET_FD_BY_ID, "open_flags", map_id=id_, open_flags=open_flags)
    return check(ret, "MAP_GET_FD_BY_ID")


_INFO_TYPES = {"prog": "struct bpf_prog_info", "map": "struct bpf_map_info",
               "link": "struct bpf_link_info", "btf": "struct bpf_btf_info"}


def obj_get_info_by_fd(b, fd: int, kind: str, info_len: int | None = None, *,
                       prefill: dict | None = None):
    """Returns (cdata of the info struct, info_len written back by the kernel)."""
    ctype = _INFO_TYPES[kind]
    info = ffi.new(ctype + " *")
    for k, v in (prefill or {}).items():
        setattr(info, k, v)
    n = ffi.sizeof(ctype) if info_len is None else info_len
    buf = ffi.new("char[]", max(n, ffi.sizeof(ctype)))
    ffi.memmove(buf, info, ffi.sizeof(ctype))
    ret, a = raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd, info__info_len=n,
                 info__info=buf)
    check(ret, "OBJ_GET_INFO_BY_FD")
    out = ffi.new(ctype + " *")
    ffi.memmove(out, buf, ffi.sizeof(ctype))
    return out, a.get("info.info_len")


# ---------------------------------------------------------------- attach

def prog_attach(b, prog_fd: int, target_fd: int, attach_type: int, flags: int = 0,
                replace_fd: int = 0) -> None:
    ret, _ = raw(b, BpfCmd.PROG_ATTACH, "replace_bpf_fd", target_fd=target_fd,
                 attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags,
                 replace_bpf_fd=replace_fd)
    check(ret, "PROG_ATTACH")


def prog_detach(b, prog_fd: int, target_fd: int, attach_type: int) -> None:
    ret, _ = raw(b, BpfCmd.PROG_DETACH, "replace_bpf_fd", target_fd=target_fd,
                 attach_bpf_fd=prog_fd, attach_type=attach_type)
    check(ret, "PROG_DETACH")


def prog_query(b, target_fd: int, attach_type: int, query_flags: int = 0, prog_cnt: int = 64):
    """Returns (attach_flags, [prog ids], prog_cnt written back)."""
    ids = ffi.new("uint32_t[]", max(prog_cnt, 1))
    ret, a = raw(b, BpfCmd.PROG_QUERY, "query.prog_cnt", query__target_fd=target_fd,
                 query__attach_type=attach_type, query__query_flags=query_flags,
                 query__prog_ids=ids if prog_cnt else 0, query__prog_cnt=prog_cnt)
    check(ret, "PROG_QUERY")
    cnt = a.get("query.prog_cnt")
    return a.get("query.attach_flags"), [ids[i] for i in range(min(cnt, prog_cnt))], cnt


def link_create(b, prog_fd: int, target: int, attach_type: int, flags: int = 0, **extra) -> int:
    """target is target_fd or target_ifindex (same slot).  extra: link_create__... fields."""
    fields = {f"link_create__{k}": v for k, v in extra.items()}
    ret, _ = raw(b, BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=prog_fd,
                 link_create__target_fd=target, link_create__attach_type=attach_type,
                 link_create__flags=flags, **fields)
    return check(ret, "LINK_CREATE")
