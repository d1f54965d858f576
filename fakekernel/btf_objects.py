"""Kernel objects as BPF programs see them through BTF pointers — the struct layouts of the
vmlinux BTF (struct bpf_map, bpf_prog, bpf_prog_aux, bpf_link, task_struct, cgroup, bpf_iter_meta)
filled with what the simulated kernel knows about an object.

BTF-typed pointers (PTR_TO_BTF_ID: iterator objects, tracing arguments) point at real
memory: an `ObjectImages` maps one image per object for the duration of a program run,
zero everywhere except the fields listed in `_FIELDS`, then unmaps them all.
"""
from __future__ import annotations

import functools

from fakekernel.btf_vmlinux import BtfIndex
from uapi.btf import BtfKind

__all__ = ["ObjectImages", "struct_layout"]

_U64 = 8


@functools.lru_cache(maxsize=64)
def struct_layout(ix: BtfIndex, struct: str) -> tuple[int, dict]:
    """(sizeof, {member name: (byte offset, size)}) of a vmlinux struct, anonymous members
    flattened."""
    sid = ix.find_by_name_kind(struct.encode(), BtfKind.STRUCT)
    if sid < 0:
        raise KeyError(struct)
    fields: dict = {}

    def walk(type_id: int, base: int) -> None:
        for name, tid, bit_off in ix.members(type_id):
            off = base + bit_off // 8
            inner, inner_id = ix.skip_modifiers(tid)
            if not name and inner is not None and inner.kind in (BtfKind.STRUCT, BtfKind.UNION):
                walk(inner_id, off)
            elif name:
                fields.setdefault(name.decode(), (off, ix.type_size(tid) or 0))
    walk(sid, 0)
    return ix.type_by_id(sid).size, fields


def _name16(name) -> bytes:
    raw = name if isinstance(name, bytes) else str(name).encode()
    return raw[:15]


class ObjectImages:
    """The images mapped for one program run (unmap() releases them)."""

    def __init__(self, kern, ix: BtfIndex):
        self.kern = kern
        self.ix = ix
        self.regions: list = []

    def _map(self, buf: bytearray, name: str) -> int:
        region = self.kern.mem.map_region(buf, "btf_obj", name)
        self.regions.append(region)
        return region.base

    def image(self, struct: str, values: dict) -> int:
        """A `struct` image with `values` ({field: int or bytes}) set; returns its address."""
        size, fields = struct_layout(self.ix, struct)
        buf = bytearray(size)
        for field, value in values.items():
            if field not in fields:           # not in this kernel's layout
                continue
            off, fsize = fields[field]
            data = value if isinstance(value, bytes) else \
                (int(value) & ((1 << (8 * fsize)) - 1)).to_bytes(fsize, "little")
            buf[off:off + len(data[:fsize])] = data[:fsize]
        return self._map(buf, struct)

    def buffer(self, buf: bytearray, name: str, writable: bool = True) -> int:
        """A plain buffer mapped for the run (an iterator's key copy, a per-CPU value copy)."""
        region = self.kern.mem.map_region(buf, "btf_obj", name, writable=writable)
        self.regions.append(region)
        return region.base

    def ctx(self, args: list[int]) -> int:
        """The u64 argument array tracing programs get as ctx."""
        buf = bytearray(b"".join((a & ((1 << 64) - 1)).to_bytes(_U64, "little") for a in args))
        return self._map(buf, "ctx")

    def object_image(self, kind: str, obj) -> int:
        return getattr(self, "_" + kind)(obj)

    def _bpf_map(self, m) -> int:
        return self.image("bpf_map", {
            "map_type": m.map_type, "key_size": m.key_size, "value_size": m.value_size,
            "max_entries": m.max_entries, "map_flags": m.map_flags, "id": m.id,
            "name": _name16(getattr(m, "name", b""))})

    def _bpf_prog(self, p) -> int:
        aux = self.image("bpf_prog_aux", {"id": p.aux.id, "name": _name16(p.aux.name),
                                          "verified_insns": p.aux.verified_insns,
                                          "sleepable": int(p.aux.sleepable)})
        return self.image("bpf_prog", {"type": p.type, "expected_attach_type": p.expected_attach_type,
                                       "len": p.len, "tag": bytes(p.tag or b"")[:8], "aux": aux})

    def _bpf_link(self, link) -> int:
        prog = self._bpf_prog(link.prog) if link.prog is not None else 0
        return self.image("bpf_link", {"id": link.id, "type": link.type, "prog": prog})

    def _task_struct(self, t) -> int:
        """pid, tgid, comm; allowed on every CPU (cpus_mask full, cpus_ptr pointing at it)."""
        nr = self.kern.nr_cpus
        addr = self.image("task_struct", {"pid": t.pid, "tgid": getattr(t, "tgid", t.pid),
                                          "comm": _name16(t.comm), "nr_cpus_allowed": nr,
                                          "cpus_mask": (1 << nr) - 1})
        fields = struct_layout(self.ix, "task_struct")[1]
        if "cpus_ptr" in fields and "cpus_mask" in fields:
            self.kern.mem.store(addr + fields["cpus_ptr"][0], _U64, addr + fields["cpus_mask"][0])
        return addr

    def _cgroup(self, c) -> int:
        """struct cgroup: its level and kn (a kernfs_node image holding the cgroup id)."""
        kn = self.image("kernfs_node", {"id": c.id})
        return self.image("cgroup", {"level": sum(1 for _ in c.ancestors()) - 1, "kn": kn})

    def unmap(self) -> None:
        for region in self.regions:
            self.kern.mem.unmap(region)
        self.regions.clear()
