"""Golden ABI: the cffi layouts in uapi/ against the recorded Linux 6.18 layout, and (where
the running kernel exposes BTF) against that kernel's own BTF."""
from __future__ import annotations

import json
import os
import pathlib

import pytest

from uapi import bpf
from uapi.btf import BtfKind, decode_btf
from uapi.ffi import ffi

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden_layout.json").read_text())
VMLINUX = "/sys/kernel/btf/vmlinux"


def _check(golden: dict) -> list[str]:
    bad = []
    for ctype, rec in golden.items():
        if rec["size"] and ffi.sizeof(ctype) != rec["size"]:
            bad.append(f"sizeof({ctype}) = {ffi.sizeof(ctype)}, want {rec['size']}")
        for field, d in rec["fields"].items():
            if "offset" not in d:
                continue        # bitfields: checked by the codec tests
            got = ffi.offsetof(ctype, *field.split("."))
            if got != d["offset"]:
                bad.append(f"offsetof({ctype}, {field}) = {got}, want {d['offset']}")
    return bad


def test_layouts_match_golden():
    assert _check(GOLDEN) == []


@pytest.mark.skipif(not os.access(VMLINUX, os.R_OK), reason="no kernel BTF on this machine")
def test_layouts_match_running_kernel_btf():
    """Differential: the running kernel's own BTF (the oracle when it is 6.18)."""
    from tools.abi_golden import golden
    live = golden(VMLINUX)
    # only structs whose size the running kernel agrees on are comparable across versions
    comparable = {k: v for k, v in live.items() if v["size"] == GOLDEN[k]["size"]}
    assert "union bpf_attr" in comparable
    assert _check(comparable) == []


def test_bitfields_of_bpf_insn():
    insn = ffi.new("struct bpf_insn *")
    insn.dst_reg = 3
    insn.src_reg = 10
    assert bytes(ffi.buffer(insn))[1] == 0xA3      # dst in the low nibble


@pytest.mark.skipif(not os.access(VMLINUX, os.R_OK), reason="no kernel BTF on this machine")
@pytest.mark.parametrize("enum_name,cls", [("bpf_cmd", bpf.BpfCmd), ("bpf_map_type", bpf.MapType),
                                           ("bpf_prog_type", bpf.ProgType),
                                           ("bpf_attach_type", bpf.AttachType),
                                           ("bpf_link_type", bpf.LinkType),
                                           ("bpf_func_id", bpf.FuncId)])
def test_enums_match_running_kernel(enum_name, cls):
    types = _vmlinux_types()
    ty = next(t for t in types if t.kind == BtfKind.ENUM and t.name == enum_name)
    live = {v.name: v.value for v in ty.enum_values if not v.name.startswith("__")}
    ours = {n: getattr(bpf, n) for n in live if hasattr(bpf, n)}
    assert ours == live


def _vmlinux_types():
    global _TYPES
    if _TYPES is None:
        _TYPES = decode_btf(pathlib.Path(VMLINUX).read_bytes())
    return _TYPES


_TYPES = None


def test_generated_header_and_version():
    assert bpf.UAPI_VERSION["kernel"] == "6.18"
    assert len(bpf.UAPI_VERSION["btf_sha256"]) == 64
    assert bpf.BPF_PSEUDO_MAP_FD == 1 and bpf.BPF_PSEUDO_MAP_VALUE == 2
    assert int(bpf.BpfCmd.PROG_STREAM_READ_BY_FD) == 37
