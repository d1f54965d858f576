"""OBJ_PIN / OBJ_GET / *_GET_NEXT_ID / *_GET_FD_BY_ID / OBJ_GET_INFO_BY_FD on both kernels.

Pins go under `b.pin_dir()`; ids are normalised to the ids this scenario created (the real
kernel has other objects); JIT-dependent, time and id fields are left out of comparisons.
"""
from __future__ import annotations

import os

import pytest

from backends import FakeBackend
from uapi import calls
from uapi.bpf import (BPF_F_PATH_FD, BPF_F_RDONLY, BPF_F_WRONLY, BpfCmd, MapFlags, MapType,
                      ProgType)
from uapi.calls import BpfError, raw
from uapi.ffi import ffi

PROG = bytes.fromhex("b700000000000000" "9500000000000000")     # r0 = 0; exit
INT_MAX = 2**31 - 1
O_ACCMODE, O_CLOEXEC = 0o3, 0o2000000
PROG_INFO, MAP_INFO = "struct bpf_prog_info", "struct bpf_map_info"


def err(fn, *a, **kw):
    """The call's result, or -errno."""
    try:
        return fn(*a, **kw)
    except BpfError as e:
        return -e.errno


def load(b, insns=PROG, name=b"p1", license=b"GPL"):
    ret, _ = raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.SOCKET_FILTER,
                 insns=insns, insn_cnt=len(insns) // 8, license=license + b"\0", prog_name=name)
    return calls.check(ret, "PROG_LOAD")


def ld_map_fd(fd: int) -> bytes:
    """BPF_LD_MAP_FD(r1, fd)."""
    return bytes([0x18, 0x11, 0, 0]) + fd.to_bytes(4, "little") + bytes(8)


def map_id(b, fd):
    return calls.obj_get_info_by_fd(b, fd, "map")[0].id


def prog_id(b, fd):
    return calls.obj_get_info_by_fd(b, fd, "prog")[0].id


def fd_flags(b, fd):
    """(access mode, cloexec) of an fd."""
    if isinstance(b, FakeBackend):
        flags = b.kern.current.files.fdget(fd).f_flags
    else:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            flags = int(next(ln for ln in f if ln.startswith("flags:")).split()[1], 8)
    return flags & O_ACCMODE, bool(flags & O_CLOEXEC)


def open_dir(b, path):
    """An O_RDONLY|O_DIRECTORY fd on a directory (a path_fd)."""
    if isinstance(b, FakeBackend):
        fd = b.kern.bpffs.open(path, os.O_RDONLY | os.O_DIRECTORY, b.kern.current)
        b.fds.append(fd)
        return fd
    return b.open(path, os.O_RDONLY | os.O_DIRECTORY)


def rmdir(b, path):
    if isinstance(b, FakeBackend):
        return b.kern.rmdir(path)
    try:
        os.rmdir(path)
    except OSError as e:
        return -e.errno
    return 0


def get_and_close(b, path, flags=0):
    r = err(calls.obj_get, b, path, flags)
    if r >= 0:
        out = ("fd",) + fd_flags(b, r)
        b.close(r)
        return out
    return r


# ---------------------------------------------------------------- pin / get paths

def pin_paths_scenario(b):
    d = b.pin_dir()
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    out = {}
    for p in ["/tmp/x", "/nonexistent/x", d + "/missingdir/x", "relative", "", d + "/trail/",
              d + "/a.b", d, d + "/", "/", "/tmp", "/sys/fs/cgroup/x", "/proc/x",
              "/sys/fs/bpf/../x", d + "/.", d + "/..", d + "/" + "a" * 256, "/" * 4096 + "x",
              d + "/ok", d + "/ok", d + "/ok/child", d + "/ok/", d + "/./dot", d + "//double",
              d + "/" + "a" * 255]:
        out[f"pin {p.replace(d, 'D')[-60:]!r}"] = err(calls.obj_pin, b, m, p)
    for p in [d + "/ok", d + "/dot", d + "/nope", d, d + "/", "/tmp", "/", "", "rel",
              d + "/ok/", d + "/ok/.", d + "/a.b", "/" * 4096, d + "/../" + os.path.basename(d) + "/ok"]:
        out[f"get {p.replace(d, 'D').replace(os.path.basename(d), 'B')[-60:]!r}"] = get_and_close(b, p)
    out["pin fd 0"] = err(calls.obj_pin, b, 0, d + "/tty")
    out["pin fd 999"] = err(calls.obj_pin, b, 999, d + "/bad")
    out["pin null path"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=0, bpf_fd=m)[0]
    out["pin bad path"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=8, bpf_fd=m)[0]
    out["pin bad fd + bad path"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=8, bpf_fd=999)[0]
    b.close(m)
    return out


def test_obj_pin_get_paths(both):
    fake, host = both
    assert pin_paths_scenario(fake) == pin_paths_scenario(host)


def flags_scenario(b):
    d = b.pin_dir()
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    p = load(b)
    calls.obj_pin(b, m, d + "/m")
    calls.obj_pin(b, p, d + "/p")
    out = {}
    for fl in [0, BPF_F_RDONLY, BPF_F_WRONLY, BPF_F_RDONLY | BPF_F_WRONLY, 1, 32, BPF_F_PATH_FD]:
        out[f"get map {fl}"] = get_and_close(b, d + "/m", fl)
        out[f"get prog {fl}"] = get_and_close(b, d + "/p", fl)
    path = (d + "/m\0").encode()
    out["get bpf_fd set"] = raw(b, BpfCmd.OBJ_GET, "file_flags", pathname=path, bpf_fd=1)[0]
    out["get path_fd w/o flag"] = raw(b, BpfCmd.OBJ_GET, "path_fd", pathname=path, path_fd=3)[0]
    out["pin flag RDONLY"] = raw(b, BpfCmd.OBJ_PIN, "file_flags", pathname=(d + "/f\0").encode(),
                                 bpf_fd=m, file_flags=BPF_F_RDONLY)[0]
    out["pin path_fd w/o flag"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=(d + "/f\0").encode(),
                                      bpf_fd=m, path_fd=3)[0]
    dfd = open_dir(b, d)
    for name, fd in (("rel", dfd), ("rel2", 777), ("rel3", m)):
        out[f"pin path_fd {name}"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=name.encode() + b"\0",
                                         bpf_fd=m, path_fd=fd, file_flags=BPF_F_PATH_FD)[0]
    out["pin path_fd abs"] = raw(b, BpfCmd.OBJ_PIN, "path_fd", pathname=(d + "/abs\0").encode(),
                                 bpf_fd=m, path_fd=777, file_flags=BPF_F_PATH_FD)[0]
    r, _ = raw(b, BpfCmd.OBJ_GET, "path_fd", pathname=b"rel\0", path_fd=dfd,
               file_flags=BPF_F_PATH_FD | BPF_F_RDONLY)
    out["get path_fd rel"] = fd_flags(b, r) if r >= 0 else r
    if r >= 0:
        b.close(r)
    b.close(dfd), b.close(m), b.close(p)
    return out


def test_obj_get_file_flags(both):
    fake, host = both
    assert flags_scenario(fake) == flags_scenario(host)


def vfs_scenario(b):
    d = b.pin_dir()
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    calls.obj_pin(b, m, d + "/p")
    out = {}
    for p in [d + "/sub", d + "/sub", d + "/x.y", d + "/nope/sub", d + "/p", d + "/p/x",
              d + "/sub2/", "/", d + "/" + "a" * 256]:
        out[f"mkdir {p.replace(d, 'D')[-40:]}"] = b.mkdir(p)
    out["pin in sub"] = err(calls.obj_pin, b, m, d + "/sub/m")
    for p in [d + "/sub", d + "/sub/", d + "/p/", d + "/zz", d + "/zz/", d + "/.", d + "/..",
              d + "/a.b", "/"]:
        out[f"unlink {p.replace(d, 'D')[-40:]}"] = b.unlink(p)
    for p in [d + "/p", d + "/p/", d + "/zz", d + "/.", d + "/sub/..", "/sys/fs/bpf", "/",
              d + "/a.b", d + "/sub"]:
        out[f"rmdir {p.replace(d, 'D')[-40:]}"] = rmdir(b, p)
    out["unlink pin in sub"] = b.unlink(d + "/sub/m")
    out["rmdir sub"] = rmdir(b, d + "/sub")
    out["get after unlink"] = get_and_close(b, d + "/sub/m")
    b.close(m)
    return out


def test_vfs_mkdir_unlink_rmdir(both):
    fake, host = both
    assert vfs_scenario(fake) == vfs_scenario(host)


def lifetime_scenario(b):
    """A pinned object survives its last fd and dies when the pin is unlinked."""
    d = b.pin_dir()
    out = {}
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    p = load(b)
    mid, pid = map_id(b, m), prog_id(b, p)
    calls.obj_pin(b, m, d + "/m")
    calls.obj_pin(b, p, d + "/p")
    b.close(m), b.close(p)
    fd = calls.obj_get(b, d + "/m")
    out["map same id"] = map_id(b, fd) == mid
    b.close(fd)
    fd = calls.obj_get(b, d + "/p")
    out["prog same id"] = prog_id(b, fd) == pid
    b.close(fd)
    fd = calls.map_get_fd_by_id(b, mid)
    out["map by id while pinned"] = map_id(b, fd) == mid
    b.close(fd)
    out["unlink map"] = b.unlink(d + "/m")
    out["unlink prog"] = b.unlink(d + "/p")
    out["map by id after unlink"] = err(calls.map_get_fd_by_id, b, mid)
    out["prog by id after unlink"] = err(calls.prog_get_fd_by_id, b, pid)
    out["get after unlink"] = get_and_close(b, d + "/m")
    # an fd keeps the object alive after the pin is gone
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    mid = map_id(b, m)
    calls.obj_pin(b, m, d + "/m2")
    out["unlink with fd open"] = b.unlink(d + "/m2")
    fd = err(calls.map_get_fd_by_id, b, mid)
    out["by id with fd open"] = fd >= 0
    b.close(fd), b.close(m)
    out["by id after close"] = err(calls.map_get_fd_by_id, b, mid)
    return out


def test_obj_pin_lifetime(both):
    fake, host = both
    assert lifetime_scenario(fake) == lifetime_scenario(host)


# ---------------------------------------------------------------- ids

def ids_scenario(b):
    out = {}
    maps = [calls.map_create(b, MapType.HASH, 4, 8, 16) for _ in range(3)]
    progs = [load(b) for _ in range(3)]
    mids, pids = [map_id(b, fd) for fd in maps], [prog_id(b, fd) for fd in progs]
    b.close(maps[1]), b.close(progs[1])

    def walk(getter, mine, start):
        seen, cur = [], start
        while True:
            nxt = err(getter, b, cur)
            if nxt < 0 or nxt > max(mine):
                return seen
            if nxt in mine:
                seen.append(mine.index(nxt))
            cur = nxt

    out["map walk"] = walk(calls.map_get_next_id, mids, mids[0] - 1)
    out["prog walk"] = walk(calls.prog_get_next_id, pids, pids[0] - 1)
    for cmd in (BpfCmd.MAP_GET_NEXT_ID, BpfCmd.PROG_GET_NEXT_ID):
        out[f"{cmd.name} INT_MAX"] = raw(b, cmd, "next_id", start_id=INT_MAX)[0]
        out[f"{cmd.name} INT_MAX-1"] = raw(b, cmd, "next_id", start_id=INT_MAX - 1)[0]
        out[f"{cmd.name} u32max"] = raw(b, cmd, "next_id", start_id=2**32 - 1)[0]
        out[f"{cmd.name} open_flags"] = raw(b, cmd, "open_flags", start_id=0, open_flags=1)[0]
    out["map by id closed"] = err(calls.map_get_fd_by_id, b, mids[1])
    out["prog by id closed"] = err(calls.prog_get_fd_by_id, b, pids[1])
    out["map by id 0"] = err(calls.map_get_fd_by_id, b, 0)
    out["prog by id 0"] = err(calls.prog_get_fd_by_id, b, 0)
    for fl in (0, BPF_F_RDONLY, BPF_F_WRONLY, BPF_F_RDONLY | BPF_F_WRONLY, 1, 1 << 16):
        r = err(calls.map_get_fd_by_id, b, mids[0], fl)
        out[f"map by id flags {fl}"] = fd_flags(b, r) if r >= 0 else r
        if r >= 0:
            b.close(r)
        r, _ = raw(b, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=pids[0], open_flags=fl)
        out[f"prog by id flags {fl}"] = fd_flags(b, r) if r >= 0 else r
        if r >= 0:
            b.close(r)
    for fd in maps[::2] + progs[::2]:
        b.close(fd)
    return out


def test_get_next_id_and_fd_by_id(both):
    fake, host = both
    assert ids_scenario(fake) == ids_scenario(host)


# ---------------------------------------------------------------- info

def _fields(c, ctype, skip=()):
    out = {}
    for name, _ in ffi.typeof(ctype).fields:
        if name in skip or name.startswith("__pad"):
            continue
        v = getattr(c, name)
        out[name] = bytes(ffi.buffer(v)) if isinstance(v, ffi.CData) else v
    return out


def _info_raw(b, fd, ln, ptr):
    r, a = raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd, info__info_len=ln,
               info__info=ptr)
    return r, a.get("info.info_len")


def _len_rules(b, fd, size):
    out = {}
    for ln in (0, 4, 8, 40, size - 4, size, size + 8, 300, 4096):
        buf = bytearray(max(ln, 1))
        r, n = _info_raw(b, fd, ln, buf)
        out[f"len {ln}"] = (r, n, bytes(buf[:4]))          # the type (ids differ)
    for pos in (size, size + 7, 299):
        buf = bytearray(300)
        buf[pos] = 1
        out[f"tail byte {pos}"] = _info_raw(b, fd, 300, buf)
    out["len 4097"] = _info_raw(b, fd, 4097, bytearray(4097))
    for ln in (0, 8, 40, 300):
        out[f"bad ptr len {ln}"] = _info_raw(b, fd, ln, 8)
    out["null ptr len 8"] = _info_raw(b, fd, 8, 0)
    return out


MAP_SKIP = ("id",)


def map_info_scenario(b):
    out = {}
    m = calls.map_create(b, MapType.HASH, 4, 8, 16, name="hello")
    a = calls.map_create(b, MapType.ARRAY, 4, 12, 4, name="arr",
                         map_flags=MapFlags.MMAPABLE)
    size = ffi.sizeof(MAP_INFO)
    for name, fd in (("hash", m), ("array", a)):
        info, n = calls.obj_get_info_by_fd(b, fd, "map")
        out[f"{name} full"] = (n, _fields(info, MAP_INFO, MAP_SKIP))
        for ln in (8, 40, size - 4):
            info, n = calls.obj_get_info_by_fd(b, fd, "map", ln)
            out[f"{name} len {ln}"] = (n, _fields(info, MAP_INFO, MAP_SKIP))
    info, n = calls.obj_get_info_by_fd(b, m, "map", prefill=dict(ifindex=7, netns_dev=9,
                                       btf_id=11, btf_vmlinux_id=13, id=0xdead, key_size=77))
    out["prefilled"] = (n, _fields(info, MAP_INFO, MAP_SKIP), info.id != 0xdead)
    out["len rules"] = _len_rules(b, m, size)
    # exclusive-map hashes: only array maps, hash_size must be 32, the map must be frozen
    hb = bytearray(32)
    hp = int(ffi.cast("uintptr_t", ffi.from_buffer(hb)))
    for pre in (dict(hash_size=32), dict(hash=hp, hash_size=32), dict(hash=hp, hash_size=20)):
        out[f"hash {sorted(pre)} {pre.get('hash_size')}"] = (
            err(calls.obj_get_info_by_fd, b, m, "map", prefill=pre),
            err(calls.obj_get_info_by_fd, b, a, "map", prefill=pre))
    calls.map_update_elem(b, a, (1).to_bytes(4, "little"), b"\x01" * 12)
    calls.map_freeze(b, a)
    r = err(calls.obj_get_info_by_fd, b, a, "map", prefill=dict(hash=hp, hash_size=32))
    out["frozen hash"] = (r[1] if isinstance(r, tuple) else r, bytes(hb))
    out["frozen hash bad ptr"] = err(calls.obj_get_info_by_fd, b, a, "map",
                                     prefill=dict(hash=8, hash_size=32))
    b.close(m), b.close(a)
    return _normalise_errs(out)


def _normalise_errs(out):
    """cdata results of successful calls are not comparable: keep only the errno/len part."""
    def norm(v):
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], ffi.CData):
            return ("ok", v[1])
        if isinstance(v, tuple):
            return tuple(norm(x) for x in v)
        return v
    return {k: norm(v) for k, v in out.items()}


def test_obj_get_info_by_fd_map(both):
    fake, host = both
    assert map_info_scenario(fake) == map_info_scenario(host)


PROG_SKIP = ("id", "load_time", "jited_prog_len", "jited_prog_insns", "jited_ksyms",
             "jited_func_lens", "xlated_prog_insns", "map_ids", "run_time_ns")


def prog_info_scenario(b):
    out = {}
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    mid = map_id(b, m)
    p = load(b, name=b"simple")
    q = load(b, ld_map_fd(m) + PROG, name=b"withmap")
    r = load(b, name=b"", license=b"Proprietary")
    size = ffi.sizeof(PROG_INFO)
    for name, fd in (("simple", p), ("withmap", q), ("proprietary", r)):
        info, n = calls.obj_get_info_by_fd(b, fd, "prog")
        out[f"{name} full"] = (n, _fields(info, PROG_INFO, PROG_SKIP))
        for ln in (8, 40, 64):
            info, n = calls.obj_get_info_by_fd(b, fd, "prog", ln)
            out[f"{name} len {ln}"] = (n, _fields(info, PROG_INFO, PROG_SKIP))
    # second pass: xlated insns, map ids, tags
    info, _ = calls.obj_get_info_by_fd(b, q, "prog")
    xl = bytearray(info.xlated_prog_len)
    ids = ffi.new("uint32_t[4]", [0xaaaa] * 4)
    tags = bytearray(16)
    pre = dict(xlated_prog_len=len(xl), xlated_prog_insns=ffi.cast("uintptr_t", ffi.from_buffer(xl)),
               nr_map_ids=4, map_ids=ffi.cast("uintptr_t", ids), nr_prog_tags=2,
               prog_tags=ffi.cast("uintptr_t", ffi.from_buffer(tags)), ifindex=5, netns_dev=6)
    info2, _ = calls.obj_get_info_by_fd(b, q, "prog", prefill=pre)
    xl_norm = bytearray(xl)
    xl_norm[4:8] = (int.from_bytes(xl[4:8], "little") - mid).to_bytes(4, "little", signed=True)
    out["xlated"] = bytes(xl_norm)
    out["map ids"] = [ids[0] - mid] + [ids[i] for i in range(1, 4)]
    out["tags"] = (bytes(tags[:8]) == bytes(info.tag), bytes(tags[8:]))
    out["prefilled kept"] = (info2.ifindex, info2.netns_dev, info2.nr_map_ids, info2.nr_prog_tags)
    short = bytearray(len(xl))
    info3, _ = calls.obj_get_info_by_fd(b, q, "prog", prefill=dict(
        xlated_prog_len=8, xlated_prog_insns=ffi.cast("uintptr_t", ffi.from_buffer(short))))
    out["short xlated"] = (info3.xlated_prog_len, bytes(short[8:]) == bytes(len(short) - 8))
    for pre in (dict(func_info_rec_size=4), dict(nr_func_info=1), dict(func_info_rec_size=8),
                dict(nr_line_info=1, line_info_rec_size=16), dict(jited_line_info_rec_size=4),
                dict(nr_map_ids=1, map_ids=8), dict(xlated_prog_len=8, xlated_prog_insns=8),
                dict(xlated_prog_len=8), dict(nr_prog_tags=1, prog_tags=8),
                dict(nr_func_info=1, func_info_rec_size=8, func_info=8)):
        res = err(calls.obj_get_info_by_fd, b, q, "prog", prefill=pre)
        out[f"prefill {sorted(pre.items())}"] = res if isinstance(res, int) else "ok"
    out["len rules"] = _len_rules(b, p, size)
    for fd in (m, p, q, r):
        b.close(fd)
    return out


def test_obj_get_info_by_fd_prog(both):
    fake, host = both
    assert prog_info_scenario(fake) == prog_info_scenario(host)


def bad_fd_scenario(b):
    out = {}
    m = calls.map_create(b, MapType.HASH, 4, 8, 16)
    b.close(m)
    out["closed"] = _info_raw(b, m, 8, bytearray(8))
    out["tty"] = _info_raw(b, 0, 8, bytearray(8))
    out["huge fd"] = _info_raw(b, 2**31, 8, bytearray(8))
    d = b.pin_dir()
    dfd = open_dir(b, d)
    out["dir"] = _info_raw(b, dfd, 8, bytearray(8))
    b.close(dfd)
    return out


def test_obj_get_info_by_fd_bad_fd(both):
    fake, host = both
    assert bad_fd_scenario(fake) == bad_fd_scenario(host)


@pytest.mark.parametrize("kind", ["map", "prog"])
def test_obj_get_info_by_fd_values_host_sanity(host, kind):
    """The scenarios above are not vacuous: on the real kernel they see real values."""
    out = map_info_scenario(host) if kind == "map" else prog_info_scenario(host)
    if kind == "map":
        assert out["hash full"][1]["key_size"] == 4 and out["len rules"]["tail byte 104"][0] == -7
    else:
        assert out["simple full"][1]["xlated_prog_len"] == 16 and out["map ids"][0] == 0
