"""fakekernel/btf_vmlinux.py — the type index over a BTF blob, checked against the full decoder
(uapi.btf.decode_btf) on a BtfWriter blob and on the host's vmlinux BTF."""
from __future__ import annotations

import os
import time

import pytest

from btfutil import BtfWriter
from fakekernel import Kernel
from fakekernel.btf_vmlinux import BtfIndex, FuncModel, btf_index
from uapi.btf import BtfKind, decode_btf

VMLINUX = "/sys/kernel/btf/vmlinux"
needs_vmlinux = pytest.mark.skipif(not os.access(VMLINUX, os.R_OK), reason="no vmlinux BTF")


def small_blob():
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    c = w.int_("char", 1)
    s = w.struct("pair", 16, [("a", i, 0), ("b", c, 32), ("p", w.ptr(i), 64)])
    p = w.func_proto(i, [("x", i), ("y", w.ptr(s))])
    f = w.func("f", p)
    w.func("pair", p)                       # same name, another kind
    big = w.func_proto(s, [])
    w.func("ret_struct", big)
    return w.blob(), {"int": i, "pair": s, "proto": p, "f": f, "big": big}


def test_index_matches_decoder_on_every_type():
    blob, _ = small_blob()
    ix = BtfIndex(blob)
    full = decode_btf(blob)
    assert ix.nr_types == len(full)
    for t in full[1:]:
        assert ix.type_by_id(t.id).kind == t.kind
        assert ix.name_of(t.id).decode() == t.name


def test_find_by_name_kind_distinguishes_kinds():
    blob, ids = small_blob()
    ix = BtfIndex(blob)
    assert ix.find_by_name_kind(b"pair", BtfKind.STRUCT) == ids["pair"]
    assert ix.find_by_name_kind(b"pair", BtfKind.FUNC) > ids["f"]
    assert ix.find_by_name_kind(b"pair", BtfKind.TYPEDEF) == -1
    assert ix.find_by_name_kind(b"pai", BtfKind.STRUCT) == -1      # no prefix matches
    assert ix.find_by_name_kind(b"", BtfKind.STRUCT) == -1


def test_type_by_id_out_of_range_is_none():
    blob, _ = small_blob()
    ix = BtfIndex(blob)
    assert ix.type_by_id(0) is None and ix.type_by_id(ix.nr_types) is None


def test_members_and_member_at():
    blob, ids = small_blob()
    ix = BtfIndex(blob)
    assert [m[0] for m in ix.members(ids["pair"])] == [b"a", b"b", b"p"]
    assert ix.member_at(ids["pair"], 2)[0] == b"a"
    assert ix.member_at(ids["pair"], 4)[0] == b"b"
    assert ix.member_at(ids["pair"], 9)[0] == b"p"


def test_distill_func_proto_sizes():
    blob, ids = small_blob()
    ix = BtfIndex(blob)
    m = ix.distill_func_proto(ids["proto"], b"f")
    assert isinstance(m, FuncModel)
    assert (m.ret_size, m.arg_size, m.nr_args) == (4, (4, 8), 2)


def test_distill_func_proto_struct_return_refused():
    blob, ids = small_blob()
    ix = BtfIndex(blob)
    assert ix.distill_func_proto(ids["big"], b"ret_struct") == \
        b"The function ret_struct return type STRUCT is unsupported.\n"


@needs_vmlinux
def test_vmlinux_index_finds_known_types():
    k = Kernel()
    ix = btf_index(k.btf_vmlinux)
    ts = ix.find_by_name_kind(b"task_struct", BtfKind.STRUCT)
    assert ix.name_of(ts) == b"task_struct"
    f = ix.find_by_name_kind(b"bpf_fentry_test1", BtfKind.FUNC)
    model = ix.distill_func_proto(ix.type_by_id(f).type, b"bpf_fentry_test1")
    assert (model.ret_size, model.arg_size) == (4, (4,))
    assert ix.find_by_name_kind(b"btf_trace_sched_switch", BtfKind.TYPEDEF) > 0
    assert btf_index(Kernel().btf_vmlinux) is ix          # one index per blob content
    k.shutdown()


@needs_vmlinux
def test_kernel_boot_does_not_read_vmlinux():
    """Booting stays cheap: the 6 MB blob is read only when something asks for a type."""
    t0 = time.monotonic()
    k = Kernel()
    assert k.btf_vmlinux._data is None
    assert time.monotonic() - t0 < 0.5
    k.shutdown()
