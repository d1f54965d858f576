"""Unit tests: MAP_CREATE BTF checks (fakekernel/bpf/map_btf.py) and PROG_LOAD func_info /
line_info (fakekernel/verifier/btf_info.py) on a fresh Kernel."""
from __future__ import annotations

import struct

from btfutil import BtfWriter, btf_load
from fakekernel.errors import Errno
from uapi import calls
from uapi.bpf import BpfCmd, MapType, ProgType
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns


def _btf(kernel):
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    u64 = w.int_("u64", 8)
    v = w.var("x", i)
    sec = w.datasec(".data", 4, [(v, 0, 4)])
    func = w.func("main", w.func_proto(i, []))
    fd = btf_load(kernel, w.blob()).ret
    assert fd >= 0
    return fd, dict(int=i, u64=u64, sec=sec, func=func)


def _map(kernel, mt, ks, vs, n, btf, kid, vid):
    return calls.raw(kernel, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=ks, value_size=vs,
                     max_entries=n, btf_fd=btf, btf_key_type_id=kid, btf_value_type_id=vid)[0]


def test_map_create_btf_size_mismatch_einval(kernel):
    btf, t = _btf(kernel)
    assert _map(kernel, MapType.HASH, 4, 4, 1, btf, t["u64"], t["int"]) == -Errno.EINVAL
    assert _map(kernel, MapType.HASH, 4, 8, 1, btf, t["int"], t["int"]) == -Errno.EINVAL
    assert _map(kernel, MapType.HASH, 4, 4, 1, btf, 0, t["int"]) == -Errno.EINVAL
    fd = _map(kernel, MapType.ARRAY, 4, 4, 1, btf, 0, t["sec"])
    assert fd >= 0
    info = calls.obj_get_info_by_fd(kernel, fd, "map")[0]
    assert (info.btf_key_type_id, info.btf_value_type_id) == (0, t["sec"])
    kernel.close(btf)
    bpf_map = kernel.current.files.fdget(fd).private_data
    assert bpf_map.btf.refcnt == 1           # the map's reference keeps the BTF alive
    kernel.close(fd)
    assert len(kernel.btf_idr.values()) == 1    # only vmlinux remains


def test_prog_load_func_info_bad_rec_size_einval_with_log(kernel):
    btf, t = _btf(kernel)
    log = bytearray(512)
    rec = struct.pack("<II", 0, t["func"])
    insns = assemble_insns([BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()])
    common = dict(prog_type=ProgType.SOCKET_FILTER, insns=insns, insn_cnt=2, license=b"GPL\0",
                  log_level=1, log_size=len(log), log_buf=log, prog_btf_fd=btf,
                  func_info=rec, func_info_cnt=1)
    ret, _ = calls.raw(kernel, BpfCmd.PROG_LOAD, None, func_info_rec_size=4, **common)
    assert ret == -Errno.EINVAL
    assert bytes(log).startswith(b"invalid func info rec size 4\n")
    assert kernel.current.files.fdget(btf).private_data.refcnt == 1   # failed load dropped its ref
    ret, _ = calls.raw(kernel, BpfCmd.PROG_LOAD, None, func_info_rec_size=8, **common)
    assert ret >= 0
    info = calls.obj_get_info_by_fd(kernel, ret, "prog")[0]
    assert (info.nr_func_info, info.func_info_rec_size) == (1, 8)
    kernel.close(ret)
    kernel.close(btf)
