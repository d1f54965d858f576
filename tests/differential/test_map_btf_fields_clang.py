"""Map values with special fields as clang emits them: tests/data/btf_fields/fields.bpf.c is
compiled with clang (-target bpf -g), its .BTF section loaded with BTF_LOAD on fakekernel and
the real kernel (struct metas of node / root structs, ``contains:`` decl tags), and each map
value type is tried in the map types libbpf would create, then updated and read back."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from btfutil import btf_load, elf_sections, fixup_datasec_sizes
from differential.test_map_btf_fields import _mask_kernel_pointers
from uapi import calls
from uapi.bpf import BpfCmd, MapType
from uapi.btf import BtfKind, decode_btf, decode_header

pytestmark = pytest.mark.differential

SRC = pathlib.Path(__file__).resolve().parent.parent / "data" / "btf_fields" / "fields.bpf.c"
# trailing u32 words per kind: fixed, and per vlen record (include/uapi/linux/btf.h)
_FIXED = {BtfKind.INT: 1, BtfKind.ARRAY: 3, BtfKind.VAR: 1, BtfKind.DECL_TAG: 1}
_PER_VLEN = {BtfKind.STRUCT: 3, BtfKind.UNION: 3, BtfKind.ENUM: 2, BtfKind.ENUM64: 3,
             BtfKind.FUNC_PROTO: 2, BtfKind.DATASEC: 3}
_WORD = 4
_TYPE_WORDS = 3


@pytest.fixture(scope="module")
def btf_blob():
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None or not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        pytest.skip("needs clang and libbpf-dev")
    with tempfile.TemporaryDirectory() as d:
        obj = pathlib.Path(d) / "fields.bpf.o"
        subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        "-c", str(SRC), "-o", str(obj)], check=True)
        data = obj.read_bytes()
    secs = elf_sections(data)
    blob = bytearray(fixup_datasec_sizes(secs[".BTF"], secs))
    types = decode_btf(bytes(blob))
    hdr = decode_header(bytes(blob))
    off = hdr.hdr_len + hdr.type_off
    for t in types[1:]:                     # .maps variables side by side, as libbpf lays them out
        at = off + _TYPE_WORDS * _WORD
        if t.kind == BtfKind.DATASEC and t.name == ".maps":
            pos = 0
            for i in range(t.vlen):
                rec = at + i * 3 * _WORD
                size = int.from_bytes(blob[rec + 2 * _WORD:rec + 3 * _WORD], "little")
                blob[rec + _WORD:rec + 2 * _WORD] = pos.to_bytes(_WORD, "little")
                pos += size
        off = at + _WORD * (_FIXED.get(t.kind, 0) + _PER_VLEN.get(t.kind, 0) * t.vlen)
    ids = {t.name: t.id for t in types if t.kind in (BtfKind.STRUCT, BtfKind.INT)}
    return bytes(blob), ids


CASES = [("val", MapType.ARRAY), ("val", MapType.HASH), ("val", MapType.LRU_HASH),
         ("lval", MapType.HASH), ("lval", MapType.PERCPU_HASH), ("lval", MapType.ARRAY),
         ("rval", MapType.ARRAY), ("rval", MapType.PERCPU_ARRAY), ("uval", MapType.PERCPU_ARRAY),
         ("node_data", MapType.ARRAY), ("rnode", MapType.HASH)]
_SIZES = {"val": 32, "lval": 24, "rval": 24, "uval": 16, "node_data": 32, "rnode": 48}
_PERCPU = (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH)


def scenario(b, blob, ids, name, mt):
    r = btf_load(b, blob)
    if r.ret < 0:
        return ("btf_load", r.ret)
    vs = _SIZES[name]
    fd = calls.raw(b, BpfCmd.MAP_CREATE, None, map_type=mt, key_size=4, value_size=vs, max_entries=1,
                   btf_fd=r.ret, btf_key_type_id=ids["int"], btf_value_type_id=ids[name])[0]
    out = [fd if fd < 0 else "ok"]
    if fd >= 0:
        slots = os.cpu_count() if mt in _PERCPU else 1
        stride = (vs + 7) // 8 * 8 if mt in _PERCPU else vs
        value = bytes(i & 0xFF for i in range(stride * slots))
        out.append(calls.raw(b, BpfCmd.MAP_UPDATE_ELEM, None, map_fd=fd, key=bytes(4), value=value)[0])
        v = bytearray(stride * slots)
        out.append(calls.raw(b, BpfCmd.MAP_LOOKUP_ELEM, None, map_fd=fd, key=bytes(4), value=v)[0])
        out.append(_mask_kernel_pointers(bytes(v)))
        b.close(fd)
    b.close(r.ret)
    return out


@pytest.mark.parametrize("name,mt", CASES)
def test_clang_map_values_match_kernel(both, btf_blob, name, mt):
    fake, host = both
    blob, ids = btf_blob
    got = scenario(fake, blob, ids, name, mt)
    assert got == scenario(host, blob, ids, name, mt)
