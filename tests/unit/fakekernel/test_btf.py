"""fakekernel.btf (kernel/bpf/btf.c): BTF_LOAD validation, log, ids, fds, info, vmlinux.

Hermetic: expected log lines and errnos were recorded on Linux 6.18.44 (see
tests/differential/test_btf_load.py, which checks the same behaviours against the real
kernel with hypothesis-built blobs).
"""
from __future__ import annotations

import pytest

from btfutil import LIBBPF_PROBE_ATTR_SIZE, LIBBPF_PROBES, BtfWriter, btf_load, raw_btf
from fakekernel import Kernel
from fakekernel.task import Creds
from uapi import calls
from uapi.btf import BtfKind as K
from uapi.bpf import BpfCmd, MapType
from uapi.capability import Cap
from uapi.errno import Errno
from uapi.ffi import ffi

HDR_LOG = b"magic: 0xeb9f\nversion: 1\nflags: 0x0\nhdr_len: 24\n"


def _load(kernel, blob, **kw):
    kw.setdefault("log_level", 1)
    kw.setdefault("log_size", 4096)
    r = btf_load(kernel, blob, **kw)
    if r.ret >= 0:
        kernel.close(r.ret)
    return r


def _tail(log: bytes) -> bytes:
    """The log after the header dump."""
    return log.split(b"btf_total_size: ", 1)[1].split(b"\n", 1)[1]


@pytest.mark.parametrize("probe", sorted(LIBBPF_PROBES))
def test_btf_load_libbpf_probes_fd(kernel, probe):
    r = btf_load(kernel, LIBBPF_PROBES[probe], size=LIBBPF_PROBE_ATTR_SIZE)
    assert r.ret >= 0
    kernel.close(r.ret)


def test_btf_load_log_int(kernel):
    r = _load(kernel, LIBBPF_PROBES["btf"])
    assert r.ret == 0 or r.ret > 0
    assert r.log.startswith(HDR_LOG)
    assert _tail(r.log) == b"[1] INT int size=4 bits_offset=0 nr_bits=32 encoding=SIGNED\n"
    assert r.log_true_size == len(r.log) + 1 == 176


def test_btf_load_log_func_proto_and_datasec(kernel):
    assert _tail(_load(kernel, LIBBPF_PROBES["btf_func"]).log).splitlines()[1:] == [
        b"[2] FUNC_PROTO (anon) return=0 args=(1 a)", b"[3] FUNC x type_id=2"]
    assert _tail(_load(kernel, LIBBPF_PROBES["btf_datasec"]).log).splitlines()[2:] == [
        b"[3] DATASEC .data size=4 vlen=1", b"\t type_id=2 offset=0 size=4"]


@pytest.mark.parametrize("build,errno,last", [
    (lambda w: w.func("x", w.func_proto(0, []), linkage=2), Errno.EINVAL,
     b"[2] FUNC x type_id=1 Invalid func linkage"),
    (lambda w: w.typedef("a-b", w.int_("int", 4)), Errno.EINVAL,
     b"[2] TYPEDEF a-b type_id=1 Invalid name"),
    (lambda w: w.enum("e", 3, [("A", 1)]), Errno.EINVAL, b"[1] ENUM e size=3 vlen=1 Unexpected size"),
    (lambda w: w.int_("int", 4, encoding=3), Errno.ENOTSUPP,
     b"[1] INT int size=4 bits_offset=0 nr_bits=32 encoding=UNKN Unsupported encoding"),
    (lambda w: w.struct("s", 4, [("a", w.int_("int", 4), 0), ("b", 1, 8)]), Errno.EINVAL,
     b"\tb type_id=1 bits_offset=8 Member exceeds struct_size"),
    (lambda w: (w.int_("int", 4), w.ptr(4), w.typedef("t", 2), w.typedef("u", 2)), Errno.EEXIST,
     b"[2] PTR (anon) type_id=4 Loop detected"),
    (lambda w: (w.int_("int", 4), w.modifier(K.CONST, 3), w.type_tag("tag", 1), w.ptr(2)),
     Errno.EINVAL, b"Type tags don't precede modifiers"),
    (lambda w: w.float_("f", 3), Errno.EINVAL, b"[1] FLOAT f size=3 Invalid type_size"),
    (lambda w: w.var("v", 0), Errno.EINVAL, b"[1] VAR v type_id=0 linkage=0 Invalid type_id"),
    (lambda w: w.decl_tag("t", 1, component_idx=-2), Errno.EINVAL,
     b"[1] DECL_TAG t type=1 component_idx=-2 Invalid component_idx"),
    (lambda w: w.datasec(".d", 0, []), Errno.EINVAL, b"[1] DATASEC .d size=0 vlen=0 size == 0"),
    (lambda w: w.array(0, 1, 1), Errno.EINVAL,
     b"[1] ARRAY (anon) type_id=0 index_type_id=1 nr_elems=1 Invalid elem"),
    (lambda w: w.array(1, 1, 1), Errno.EEXIST,
     b"[1] ARRAY (anon) type_id=1 index_type_id=1 nr_elems=1 Loop detected"),
])
def test_btf_load_kind_rules(kernel, build, errno, last):
    w = BtfWriter()
    build(w)
    r = _load(kernel, w.blob())
    assert r.ret == -errno
    assert r.log.rstrip(b"\n").splitlines()[-1] == last


def test_btf_load_kind_flag_on_tags_accepted(kernel):
    """6.13+ accepts kind_flag on TYPE_TAG and DECL_TAG (6.12 refused it)."""
    w = BtfWriter()
    i = w.int_("int", 4)
    w.type_tag("tag", i, kflag=1)
    w.decl_tag("tag", w.var("x", i), kflag=1)
    assert _load(kernel, w.blob()).ret >= 0


@pytest.mark.parametrize("blob,errno,msg", [
    (b"", Errno.EINVAL, b"hdr_len not found"),
    (raw_btf(b"", b"\0", magic=0xEB9E), Errno.EINVAL, b"Invalid magic"),
    (raw_btf(b"\0" * 12, b"\0", version=2), Errno.ENOTSUPP, b"Unsupported version"),
    (raw_btf(b"\0" * 12, b"\0", flags=1), Errno.ENOTSUPP, b"Unsupported flags"),
    (raw_btf(b"", b""), Errno.EINVAL, b"No data"),
    (raw_btf(b"", b"", hdr_len=32, hdr_tail=b"\1" + bytes(7)), Errno.E2BIG, b"Unsupported btf_header"),
    (raw_btf(LIBBPF_PROBES["btf"][24:40], b"\0int\0", str_off=12), Errno.EINVAL,
     b"Section overlap found"),
    (raw_btf(LIBBPF_PROBES["btf"][24:40], b"\0int\0", str_len=6), Errno.EINVAL,
     b"Total section length too long"),
    (raw_btf(LIBBPF_PROBES["btf"][24:40], b"\0int\0", str_off=100), Errno.EINVAL,
     b"Invalid section offset"),
    (raw_btf(LIBBPF_PROBES["btf"][24:40], b"xint\0"), Errno.EINVAL, b"Invalid string section"),
    (raw_btf(LIBBPF_PROBES["btf"][24:40], b"\0int"), Errno.EINVAL, b"Invalid string section"),
    (raw_btf(b"", b"\0int\0"), Errno.EINVAL, b"No type found"),
])
def test_btf_load_header_and_sections(kernel, blob, errno, msg):
    r = _load(kernel, blob)
    assert r.ret == -errno
    assert r.log.endswith(msg)


def test_btf_load_log_too_small_enospc_true_size(kernel):
    r = _load(kernel, LIBBPF_PROBES["btf"], log_size=16)
    assert r.ret == -Errno.ENOSPC
    assert r.log_true_size == 176 and len(r.log) == 15
    assert r.log == b"encoding=SIGNED\n"[-15:]          # rotating: the last bytes survive


def test_btf_load_needs_cap_bpf_eperm():
    k = Kernel(creds=Creds(uid=1000, gid=1000, caps=frozenset()), vmlinux_btf=None)
    assert btf_load(k, LIBBPF_PROBES["btf"]).ret == -Errno.EPERM
    k2 = Kernel(creds=Creds(uid=1000, gid=1000, caps=frozenset({Cap.BPF})), vmlinux_btf=None)
    r = btf_load(k2, LIBBPF_PROBES["btf"])
    assert r.ret >= 0
    k2.close(r.ret)


def test_btf_load_size_limits(kernel):
    assert btf_load(kernel, LIBBPF_PROBES["btf"], btf_size=16 * 1024 * 1024 + 1).ret == -Errno.E2BIG
    assert btf_load(kernel, LIBBPF_PROBES["btf"], btf_addr=8).ret == -Errno.EFAULT


def test_btf_ids_start_after_vmlinux(kernel):
    r = btf_load(kernel, LIBBPF_PROBES["btf"])
    info, _ = calls.obj_get_info_by_fd(kernel, r.ret, "btf")
    assert info.id == 2 and info.kernel_btf == 0 and info.btf_size == len(LIBBPF_PROBES["btf"])
    kernel.close(r.ret)
    assert kernel.btf_idr.find(2) is None
    r = btf_load(kernel, LIBBPF_PROBES["btf"])
    assert calls.obj_get_info_by_fd(kernel, r.ret, "btf")[0].id == 3       # cyclic: no reuse
    kernel.close(r.ret)


def test_btf_id_1_reserved_without_vmlinux():
    k = Kernel(vmlinux_btf=None)
    assert k.btf_vmlinux is None
    ret, _ = calls.raw(k, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=1)
    assert ret == -Errno.ENOENT
    r = btf_load(k, LIBBPF_PROBES["btf"])
    assert calls.obj_get_info_by_fd(k, r.ret, "btf")[0].id == 2
    k.close(r.ret)


def test_btf_vmlinux_injected_and_lazy(tmp_path):
    blob = LIBBPF_PROBES["btf_float"]
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    k = Kernel(vmlinux_btf=str(path))
    assert k.btf_vmlinux._data is None                         # not read at boot
    fd, _ = calls.raw(k, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=1)
    name = ffi.new("char[]", 16)
    buf = ffi.new("char[]", len(blob))
    info, _ = calls.obj_get_info_by_fd(k, fd, "btf", prefill=dict(
        name=ffi.cast("uintptr_t", name), name_len=16, btf=ffi.cast("uintptr_t", buf),
        btf_size=len(blob)))
    assert (info.id, info.kernel_btf, ffi.string(name), info.btf_size) == (1, 1, b"vmlinux", len(blob))
    assert bytes(ffi.buffer(buf)) == blob
    k.close(fd)
    k2 = Kernel(vmlinux_btf=blob)
    assert k2.btf_vmlinux.data == blob


def test_btf_get_next_id_and_fd_by_id(kernel):
    fds = [btf_load(kernel, LIBBPF_PROBES[p]).ret for p in ("btf", "btf_float")]
    ids = []
    cur = 0
    while True:
        ret, a = calls.raw(kernel, BpfCmd.BTF_GET_NEXT_ID, "next_id", start_id=cur)
        if ret:
            assert ret == -Errno.ENOENT
            break
        cur = a.get("next_id")
        ids.append(cur)
    assert ids == [1, 2, 3]
    ret, _ = calls.raw(kernel, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=3)
    assert ret >= 0 and kernel.current.files.fdget(ret).kind == "btf"
    kernel.close(ret)
    ret, _ = calls.raw(kernel, BpfCmd.BTF_GET_FD_BY_ID, "fd_by_id_token_fd", btf_id=3, open_flags=1)
    assert ret == -Errno.EINVAL
    for fd in fds:
        kernel.close(fd)
    assert calls.raw(kernel, BpfCmd.BTF_GET_FD_BY_ID, "btf_id", btf_id=3)[0] == -Errno.ENOENT


def test_btf_kept_alive_by_map(kernel):
    """A map created with btf_fd holds the BTF: its id still resolves after the fd closes."""
    w = BtfWriter()
    w.int_("int", 4, encoding=1)
    r = btf_load(kernel, w.blob())
    m = calls.map_create(kernel, MapType.ARRAY, 4, 4, 1, btf_fd=r.ret, btf_key_type_id=1,
                         btf_value_type_id=1)
    btf_id = calls.obj_get_info_by_fd(kernel, r.ret, "btf")[0].id
    kernel.close(r.ret)
    assert kernel.btf_idr.find(btf_id) is not None
    assert calls.obj_get_info_by_fd(kernel, m, "map")[0].btf_id == btf_id
    kernel.close(m)
    assert kernel.btf_idr.find(btf_id) is None


def test_obj_get_info_btf_name_short_enospc(kernel):
    r = btf_load(kernel, LIBBPF_PROBES["btf"])
    name = ffi.new("char[]", b"zz")
    info, _ = calls.obj_get_info_by_fd(kernel, r.ret, "btf", prefill=dict(
        name=ffi.cast("uintptr_t", name), name_len=2))
    assert info.name_len == 0 and bytes(ffi.buffer(name)) == b"\0z\0"
    with pytest.raises(calls.BpfError) as e:
        calls.obj_get_info_by_fd(kernel, r.ret, "btf", prefill=dict(name_len=2))
    assert e.value.errno == Errno.EINVAL
    kernel.close(r.ret)
