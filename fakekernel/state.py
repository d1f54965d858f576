"""Pins that outlive a run — what a bpffs mount keeps while the processes come and go (kernel/bpf/inode.c).

On Linux a pinned map or program stays alive after every process that used it has exited,
and the next process finds it by path; everything not reachable from a pin is freed.
``fakekernel run --state DIR`` gives the simulated kernel the same life: at the end of a
run the bpffs tree and the objects reachable from it are written to ``DIR/state.json``,
and the next run with that DIR starts from them (same ids, contents, names, flags).

The file format (versioned JSON, never pickle; bytes are lower-case hex strings)::

    {"format": "fakekernel-state", "version": 2, "kernel": "6.18", "nr_cpus": 2,
     "id_cursors": {"map": 7, "prog": 3, "link": 1, "btf": 1},
     "btfs":  [{"id", "data" (the raw BTF as loaded)}],
     "maps":  [{"id", "map_type", "key_size", "value_size", "max_entries", "map_flags",
                "map_extra", "numa_node", "name", "frozen", "hashrnd" (hash maps),
                "btf_id", "btf_key_type_id", "btf_value_type_id", "btf_vmlinux_value_type_id",
                "elements": [[key, value], ...] | null (contents not saved for this type)}],
     "progs": [{"id", "prog_type", "expected_attach_type", "prog_flags", "name", "license",
                "insns" (as the loader passed them), "map_refs": [[insn_index, map_id]...],
                "btf_id", "func_info", "line_info" (kernel-size records), "attach_btf_id"
                (a vmlinux target), "run_cnt", "run_time_ns"}],
     "bpffs": {"mode", "uid", "gid", "children": {name: node}}}
        node = a directory {"mode", "uid", "gid", "children"}
             | a pin {"pin": "map" | "prog", "id", "mode", "uid", "gid"}

Array elements whose value is all zeroes are left out (absent reads as zero).  Per-CPU
values are saved for every CPU.  Programs are loaded again through PROG_LOAD (the
verifier runs again) with their map references pointing at the restored maps, and with their
BTF, func_info/line_info and vmlinux attach target.  The BTF objects those maps and programs
use are saved with them (loaded again first, under their saved ids).  Version 1 files (no BTF)
still load.  Not saved: links (a pinned link is reported and skipped), attachments to the
simulated world, programs attached to another program (EXT / fentry on a prog), load times,
LRU recency.
"""
from __future__ import annotations

import fcntl
import json
import os

from fakekernel.bpffs import BPF_TYPE_LINK, BPF_TYPE_MAP, BPF_TYPE_PROG, Inode
from fakekernel.errors import Errno, KernelError
from fakekernel.task import ROOT, Task
from uapi import calls
from uapi.bpf import (BPF_DW, BPF_IMM, BPF_LD, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BpfCmd,
                      MapType)
from uapi.ffi import ffi
from uapi.insn import Insn, decode_prog, encode_prog

__all__ = ["save", "load", "save_dir", "load_dir", "StateError", "StateLock", "FORMAT",
           "VERSION", "STATE_FILE"]

FORMAT = "fakekernel-state"
VERSION = 2
_READABLE_VERSIONS = (1, 2)
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
_LD_IMM64 = BPF_LD | BPF_DW | BPF_IMM
_ZERO_ABSENT = (MapType.ARRAY, MapType.PERCPU_ARRAY)
_GPL = b"GPL"
_NOT_GPL = b"Proprietary"


class StateError(Exception):
    """The state file cannot be used (unknown format or version, inconsistent content)."""


# ---------------------------------------------------------------- save

def save(kern) -> tuple[dict, list[str]]:
    """(the state document, warnings about what could not be saved)."""
    warnings: list[str] = []
    maps: dict[int, object] = {}
    progs: dict[int, object] = {}
    root = kern.bpffs.lookup(kern.bpffs_mount, kern.current)
    tree = _save_dir(root, kern.bpffs_mount, maps, progs, warnings)
    for p in list(progs.values()):
        for m in p.aux.used_maps:
            maps.setdefault(m.id, m)
    doc = {
        "format": FORMAT, "version": VERSION, "kernel": kern.version, "nr_cpus": kern.nr_cpus,
        "id_cursors": {"map": kern.map_idr.cursor, "prog": kern.prog_idr.cursor,
                       "link": kern.link_idr.cursor, "btf": kern.btf_idr.cursor},
        "btfs": [{"id": b.id, "data": bytes(b.data).hex()} for _, b in sorted(_btfs(maps, progs).items())],
        "maps": [_save_map(m, warnings) for _, m in sorted(maps.items())],
        "progs": [_save_prog(kern, p, warnings) for _, p in sorted(progs.items())],
        "bpffs": tree,
    }
    return doc, warnings


def _btfs(maps: dict, progs: dict) -> dict:
    """id -> the user BTF objects the saved maps and programs hold."""
    out = {}
    for btf in [m.btf for m in maps.values()] + [p.aux.btf for p in progs.values()]:
        if btf is not None and not btf.kernel_btf:
            out[btf.id] = btf
    return out


def _btf_id(btf) -> int:
    return 0 if btf is None or btf.kernel_btf else btf.id


def _inode_meta(node: Inode) -> dict:
    return {"mode": node.mode, "uid": node.uid, "gid": node.gid}


def _save_dir(node: Inode, path: str, maps: dict, progs: dict, warnings: list[str]) -> dict:
    children = {}
    for name, child in node.children.items():
        cpath = f"{path}/{name}"
        if child.is_dir:
            children[name] = _save_dir(child, cpath, maps, progs, warnings)
        elif child.kind == BPF_TYPE_MAP:
            maps[child.obj.id] = child.obj
            children[name] = {"pin": BPF_TYPE_MAP, "id": child.obj.id, **_inode_meta(child)}
        elif child.kind == BPF_TYPE_PROG:
            progs[child.obj.aux.id] = child.obj
            children[name] = {"pin": BPF_TYPE_PROG, "id": child.obj.aux.id, **_inode_meta(child)}
        else:
            warnings.append(f"{cpath}: pinned {child.kind}s are not saved")
    return {**_inode_meta(node), "children": children}


def _name(raw: bytes) -> str:
    return raw.decode("latin-1")


def _save_map(m, warnings: list[str]) -> dict:
    doc = {"id": m.id, "map_type": m.map_type, "key_size": m.key_size,
           "value_size": m.value_size, "max_entries": m.max_entries, "map_flags": m.map_flags,
           "map_extra": m.map_extra, "numa_node": m.numa_node, "name": _name(m.name),
           "frozen": m.frozen, "btf_id": _btf_id(m.btf), "btf_key_type_id": m.btf_key_type_id,
           "btf_value_type_id": m.btf_value_type_id,
           "btf_vmlinux_value_type_id": m.btf_vmlinux_value_type_id}
    if hasattr(m, "hashrnd"):
        doc["hashrnd"] = m.hashrnd
    doc["elements"] = _map_elements(m, warnings)
    return doc


def _map_elements(m, warnings: list[str]) -> list | None:
    """Every (key, value) in GET_NEXT_KEY order, as the syscall side reads them."""
    out = []
    key = None
    skip_zero = m.map_type in _ZERO_ABSENT
    try:
        while True:
            try:
                key = m.map_get_next_key(key)
            except KernelError as e:
                if e.errno == Errno.ENOENT:         # past the last key
                    return out
                raise
            value = m.sys_lookup(key, 0)
            if skip_zero and not any(value):
                continue
            out.append([bytes(key).hex(), bytes(value).hex()])
    except (KernelError, NotImplementedError) as e:
        warnings.append(f"map {m.id} ({_name(m.name)}): contents not saved ({e})")
        return None


def _insn_pairs(insns) -> list[int]:
    """Indexes of the first halves of the LD_IMM64 instructions."""
    out, i = [], 0
    while i < len(insns):
        if insns[i].code == _LD_IMM64:
            out.append(i)
            i += 2
        else:
            i += 1
    return out


def _prog_map_refs(kern, prog) -> list[list[int]]:
    """[[insn index, map id]] for every map reference in the loader's instructions.

    The verifier rewrote each reference into an address in the kernel's address space;
    the loader's n-th LD_IMM64 is the rewritten program's n-th one.
    """
    orig = decode_prog(prog.orig_insns)
    xl = prog.xlated if prog.xlated is not None else decode_prog(prog.insns)
    o_ld, x_ld = _insn_pairs(orig), _insn_pairs(xl)
    if len(o_ld) != len(x_ld):
        raise StateError(f"prog {prog.aux.id}: cannot match its map references")
    refs = []
    for oi, xi in zip(o_ld, x_ld):
        src = orig[oi].src_reg
        if src not in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
            continue
        addr = (xl[xi].imm & 0xFFFFFFFF) | ((xl[xi + 1].imm & 0xFFFFFFFF) << 32)
        off = orig[oi + 1].imm & 0xFFFFFFFF
        for m in prog.aux.used_maps:
            if src == BPF_PSEUDO_MAP_FD and kern.mem.map_object(m) == addr:
                break
            if src == BPF_PSEUDO_MAP_VALUE and _value_addr(m, off) == addr:
                break
        else:
            raise StateError(f"prog {prog.aux.id}: insn {oi} names no map it uses")
        refs.append([oi, m.id])
    return refs


def _value_addr(m, off: int) -> int | None:
    """Where a BPF_PSEUDO_MAP_VALUE reference to `m` at `off` points (None: it cannot)."""
    direct = getattr(m, "map_direct_value_addr", None)
    if direct is None:
        return None
    try:
        return direct(off) + off
    except KernelError:
        return None


def _save_prog(kern, p, warnings: list[str]) -> dict:
    aux = p.aux
    attach_btf_id = aux.attach_btf_id if aux.attach_btf is not None and aux.attach_btf.kernel_btf else 0
    if aux.attach_btf_id and not attach_btf_id:
        warnings.append(f"prog {aux.id} ({_name(aux.name)}): its attach target is another program, "
                        "which is not saved")
    return {"id": aux.id, "prog_type": p.type, "expected_attach_type": p.expected_attach_type,
            "prog_flags": p.prog_flags, "name": _name(aux.name),
            "license": (_GPL if p.gpl_compatible else _NOT_GPL).decode(),
            "insns": bytes(p.orig_insns).hex(), "map_refs": _prog_map_refs(kern, p),
            "btf_id": _btf_id(aux.btf), "func_info": bytes(aux.orig_func_info).hex(),
            "line_info": bytes(aux.orig_line_info).hex(), "attach_btf_id": attach_btf_id,
            "run_cnt": aux.run_cnt, "run_time_ns": aux.run_time_ns}


# ---------------------------------------------------------------- load

class _Loader:
    """bpf() calls of a root task private to the restore (its fds are closed at the end)."""

    def __init__(self, kern):
        self.kern = kern
        self.task = Task(pid=kern.pid, comm="fakekernel", creds=ROOT)

    def bpf(self, cmd, attr, size):
        return self.kern.bpf(cmd, attr, size, task=self.task)


def load(kern, doc: dict) -> None:
    """Recreate the saved pins and their objects in a freshly booted `kern`."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError("not a fakekernel state file")
    if doc.get("version") not in _READABLE_VERSIONS:
        raise StateError(f"state format version {doc.get('version')} (this fakekernel reads "
                         f"version {VERSION})")
    if doc["nr_cpus"] != kern.nr_cpus:
        raise StateError(f"saved with nr_cpus={doc['nr_cpus']}, this kernel has {kern.nr_cpus}")
    ld = _Loader(kern)
    try:
        btfs = {b["id"]: _load_btf(ld, b) for b in doc.get("btfs", ())}
        maps = {m["id"]: _load_map(ld, m, btfs) for m in doc["maps"]}
        progs = {p["id"]: _load_prog(ld, p, maps, btfs) for p in doc["progs"]}
        # the objects got fresh ids from the restore; give them their saved ones
        for saved_id, b in btfs.items():
            kern.btf_idr.remove(b.id)
        for saved_id, b in btfs.items():
            kern.btf_idr.alloc_at(b, saved_id)
            b.id = saved_id
        for saved_id, m in maps.items():
            kern.map_idr.remove(m.id)
        for saved_id, p in progs.items():
            kern.prog_idr.remove(p.aux.id)
        for saved_id, m in maps.items():
            kern.map_idr.alloc_at(m, saved_id)
            m.id = saved_id
        for saved_id, p in progs.items():
            kern.prog_idr.alloc_at(p, saved_id)
            p.aux.id = saved_id
        cur = doc["id_cursors"]
        kern.map_idr.cursor, kern.prog_idr.cursor = cur["map"], cur["prog"]
        kern.link_idr.cursor, kern.btf_idr.cursor = cur["link"], cur["btf"]
        root = kern.bpffs.lookup(kern.bpffs_mount, ld.task)
        _load_dir(kern, ld.task, root, kern.bpffs_mount, doc["bpffs"], maps, progs)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StateError(f"malformed state file: {e!r}") from None
    except (calls.BpfError, KernelError) as e:
        raise StateError(f"the saved objects cannot be recreated: {e}") from None
    finally:
        ld.task.files.close_all()


def _load_btf(ld: _Loader, b: dict):
    data = bytes.fromhex(b["data"])
    ret, _ = calls.raw(ld, BpfCmd.BTF_LOAD, "btf_size", btf=data, btf_size=len(data))
    if ret < 0:
        raise StateError(f"BTF {b['id']} does not load again: errno {-ret}")
    return ld.task.files.fdget(ret).private_data


def _btf_fd(ld: _Loader, btfs: dict, btf_id: int) -> int:
    """An fd of the restored BTF a saved object named (0: none)."""
    if not btf_id:
        return 0
    for fd, f in ld.task.files.items():
        if f.private_data is btfs[btf_id]:
            return fd
    raise StateError(f"BTF {btf_id} was not restored")


def _load_map(ld: _Loader, m: dict, btfs: dict):
    try:
        fd = calls.map_create(ld, m["map_type"], m["key_size"], m["value_size"],
                              m["max_entries"], map_flags=m["map_flags"],
                              name=m["name"].encode("latin-1"), numa_node=max(m["numa_node"], 0),
                              map_extra=m["map_extra"], btf_fd=_btf_fd(ld, btfs, m.get("btf_id", 0)),
                              btf_key_type_id=m.get("btf_key_type_id", 0),
                              btf_value_type_id=m.get("btf_value_type_id", 0),
                              btf_vmlinux_value_type_id=m.get("btf_vmlinux_value_type_id", 0))
    except calls.BpfError as e:
        raise StateError(f"map {m['id']} cannot be created again: {e}") from None
    obj = ld.task.files.fdget(fd).private_data
    if "hashrnd" in m:
        obj.hashrnd = m["hashrnd"]
    if m["elements"] is not None:
        # hash buckets are lists the kernel inserts at the head of: insert in reverse to
        # keep each bucket's order, hence the GET_NEXT_KEY order
        for k, v in reversed(m["elements"]):
            obj.sys_update(bytes.fromhex(k), bytes.fromhex(v), 0)
    obj.frozen = bool(m["frozen"])
    return obj


def _load_prog(ld: _Loader, p: dict, maps: dict, btfs: dict):
    insns = decode_prog(bytes.fromhex(p["insns"]))
    fds: dict[int, int] = {}
    for idx, map_id in p["map_refs"]:
        m = maps[map_id]
        if map_id not in fds:
            fds[map_id] = calls.map_get_fd_by_id(ld, m.id)
        old = insns[idx]
        insns[idx] = Insn(old.code, old.dst_reg, old.src_reg, old.off, fds[map_id])
    finfo, linfo = bytes.fromhex(p.get("func_info", "")), bytes.fromhex(p.get("line_info", ""))
    log = bytearray(1 << 16)
    fsize, lsize = ffi.sizeof("struct bpf_func_info"), ffi.sizeof("struct bpf_line_info")
    ret, _ = calls.raw(ld, BpfCmd.PROG_LOAD, "log_true_size", prog_type=p["prog_type"],
                       insns=encode_prog(insns), insn_cnt=len(insns),
                       license=p["license"].encode() + b"\0",
                       prog_name=p["name"].encode("latin-1"),
                       expected_attach_type=p["expected_attach_type"],
                       prog_flags=p["prog_flags"], prog_btf_fd=_btf_fd(ld, btfs, p.get("btf_id", 0)),
                       func_info=finfo or None, func_info_cnt=len(finfo) // fsize,
                       func_info_rec_size=fsize if finfo else 0,
                       line_info=linfo or None, line_info_cnt=len(linfo) // lsize,
                       line_info_rec_size=lsize if linfo else 0,
                       attach_btf_id=p.get("attach_btf_id", 0), log_level=1, log_size=len(log),
                       log_buf=log)
    if ret < 0:
        last = bytes(log).split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()[-2:]
        raise StateError(f"prog {p['id']} ({p['name']}) does not load again: errno {-ret}"
                         + (f" ({' / '.join(last)})" if last else ""))
    prog = ld.task.files.fdget(ret).private_data
    prog.aux.run_cnt, prog.aux.run_time_ns = p["run_cnt"], p["run_time_ns"]
    return prog


def _load_dir(kern, task, node: Inode, path: str, doc: dict, maps: dict, progs: dict) -> None:
    bpffs = kern.bpffs
    for name, child in doc["children"].items():
        cpath = f"{path}/{name}"
        if "pin" in child:
            obj = maps[child["id"]] if child["pin"] == BPF_TYPE_MAP else progs[child["id"]]
            bpffs.pin(obj, child["pin"], cpath, task)
        else:
            bpffs.mkdir(cpath, child["mode"], task)
        new = node.children[name]
        new.mode, new.uid, new.gid = child["mode"], child["uid"], child["gid"]
        if "pin" not in child:
            _load_dir(kern, task, new, cpath, child, maps, progs)


# ---------------------------------------------------------------- files

def save_dir(kern, directory: str) -> list[str]:
    """Write DIR/state.json atomically; the warnings of `save`."""
    doc, warnings = save(kern)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, STATE_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return warnings


def load_dir(kern, directory: str) -> bool:
    """Load DIR/state.json into `kern` if it exists; True if it did."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return False
    except json.JSONDecodeError as e:
        raise StateError(f"{path}: not JSON ({e})") from None
    load(kern, doc)
    return True


class StateLock:
    """An exclusive flock on DIR/.lock: runs sharing a state directory take turns."""

    def __init__(self, directory: str):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o600)

    def __enter__(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
