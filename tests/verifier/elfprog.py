"""Just enough ELF64 to load a clang ``-target bpf`` object in tests: one program section, its
R_BPF_64_64 map relocations (patched to BPF_PSEUDO_MAP_FD + fd) and the legacy "maps" section
definitions.  Test-only: real loaders go through libbpf.
"""
from __future__ import annotations

import struct

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
_MAP_DEF = struct.Struct("<IIIII")
_INSN = 8
_PSEUDO_MAP_FD = 1


def _sections(data: bytes) -> dict[str, tuple]:
    e = _EHDR.unpack_from(data, 0)
    shoff, shentsize, shnum, shstrndx = e[6], e[11], e[12], e[13]
    hdrs = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdrs[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]

    def name(off):
        return names[off:names.index(b"\0", off)].decode()
    return {name(h[0]): (i, h) for i, h in enumerate(hdrs)}, hdrs


def load_object(path: str, section: str) -> tuple[bytes, dict[str, tuple], list[tuple[int, str]], bytes]:
    """(insns, {map name: (type, key, value, max_entries, flags)}, [(insn index, map name)], license)."""
    data = open(path, "rb").read()
    secs, hdrs = _sections(data)
    _, sh = secs[section]
    insns = data[sh[4]:sh[4] + sh[5]]
    symtab_idx, symtab = secs[".symtab"]
    strtab = hdrs[symtab[6]]
    syms = []
    for i in range(symtab[5] // _SYM.size):
        st_name, _, _, shndx, value, _ = _SYM.unpack_from(data, symtab[4] + i * _SYM.size)
        raw = data[strtab[4] + st_name:]
        syms.append((raw[:raw.index(b"\0")].decode(), shndx, value))
    maps = {}
    if "maps" in secs:
        midx, mh = secs["maps"]
        for nm, shndx, value in syms:
            if shndx == midx and nm:
                maps[nm] = _MAP_DEF.unpack_from(data, mh[4] + value)
    relocs = []
    if ".rel" + section in secs:
        _, rh = secs[".rel" + section]
        for i in range(rh[5] // _REL.size):
            off, info = _REL.unpack_from(data, rh[4] + i * _REL.size)
            relocs.append((off // _INSN, syms[info >> 32][0]))
    lic = b"GPL"
    if "license" in secs:
        _, lh = secs["license"]
        lic = data[lh[4]:lh[4] + lh[5]].split(b"\0")[0]
    return insns, maps, relocs, lic


def patch_maps(insns: bytes, relocs: list[tuple[int, str]], fds: dict[str, int]) -> bytes:
    out = bytearray(insns)
    for idx, name in relocs:
        base = idx * _INSN
        out[base + 1] = (out[base + 1] & 0x0F) | (_PSEUDO_MAP_FD << 4)
        out[base + 4:base + 8] = struct.pack("<i", fds[name])
    return bytes(out)
