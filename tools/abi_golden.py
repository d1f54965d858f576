#!/usr/bin/env python3
"""Record the golden ABI layout (sizeof / offsetof of every member, recursively) of the
structures in uapi/, read from a kernel's BTF.  tests/abi/ compares uapi.ffi against it.

Usage: python tools/abi_golden.py [--btf /sys/kernel/btf/vmlinux] > tests/abi/golden_layout.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uapi.btf import BtfKind, decode_btf  # noqa: E402
from tools.gen_uapi import STRUCTS, Gen  # noqa: E402


def layout(g: Gen, tid: int, prefix: str, base_bits: int, out: dict) -> None:
    ty = g.strip(tid)
    while ty.kind == BtfKind.TYPEDEF:
        ty = g.strip(ty.type)
    if ty.kind not in (BtfKind.STRUCT, BtfKind.UNION):
        return
    for m in ty.members:
        bits = base_bits + m.bit_offset
        if m.name:
            name = f"{prefix}{m.name}"
            if m.bitfield_size:
                out[name] = {"bit_offset": bits, "bits": m.bitfield_size}
            else:
                out[name] = {"offset": bits // 8, "size": g.sizeof(m.type)}
            layout(g, m.type, name + ".", bits, out)
        else:   # anonymous member: its fields are reachable directly
            layout(g, m.type, prefix, bits, out)


def golden(btf_path: str) -> dict:
    g = Gen(decode_btf(pathlib.Path(btf_path).read_bytes()))
    res = {}
    for kind, name in STRUCTS:
        ty = g.find(kind, name)
        fields: dict = {}
        layout(g, ty.id, "", 0, fields)
        res[f"{kind} {name}"] = {"size": ty.size, "fields": fields}
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--btf", default="/sys/kernel/btf/vmlinux")
    json.dump(golden(ap.parse_args().btf), sys.stdout, indent=1, sort_keys=True)
    print()
