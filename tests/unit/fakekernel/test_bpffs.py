"""fakekernel/bpffs.py + syscall/obj_cmds.py, hermetic: objects are built directly (no
MAP_CREATE / PROG_LOAD needed), then pinned, fetched and inspected through Kernel.bpf."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel.bpf.map import BpfMap
from fakekernel.bpf.prog import BpfProg, prog_tag
from fakekernel.fdtable import O_CLOEXEC, O_RDONLY, O_RDWR, O_WRONLY
from fakekernel.syscall import fdget
from fakekernel.task import NOBODY, Creds
from uapi import calls
from uapi.bpf import BPF_F_PATH_FD, BPF_F_RDONLY, BPF_F_WRONLY, BpfCmd, MapType, ProgType
from uapi.calls import BpfError, raw
from uapi.capability import Cap
from uapi.errno import Errno
from uapi.ffi import ffi

PROG = bytes.fromhex("b700000000000000" "9500000000000000")     # r0 = 0; exit
D = "/sys/fs/bpf/t"


def errno_of(fn, *a, **kw) -> int:
    try:
        fn(*a, **kw)
    except BpfError as e:
        return e.errno
    return 0


def make_map(k: Kernel, name=b"m", task=None) -> int:
    m = BpfMap(kern=k, map_type=MapType.HASH, key_size=4, value_size=8, max_entries=16, name=name)
    m.id = k.map_idr.alloc_cyclic(m)
    return fdget.bpf_map_new_fd(k, task or k.current, m, O_RDWR)


def make_prog(k: Kernel, name=b"p", insns=PROG, task=None) -> int:
    p = BpfProg(kern=k, type=ProgType.SOCKET_FILTER, expected_attach_type=0, insns=insns,
                orig_insns=insns, len=len(insns) // 8, gpl_compatible=True, tag=prog_tag(insns))
    p.aux.name, p.aux.load_time, p.aux.uid = name, 1234, 0
    p.aux.id = k.prog_idr.alloc_cyclic(p)
    return fdget.bpf_prog_new_fd(k, task or k.current, p)


def obj(k: Kernel, fd: int):
    return k.current.files.fdget(fd).private_data


@pytest.fixture
def k(kernel):
    assert kernel.mkdir(D) == 0
    yield kernel
    kernel.bpffs.rm_tree(D)


# ---------------------------------------------------------------- namespace rules

@pytest.mark.parametrize("path,err", [
    ("/tmp/x", Errno.EPERM), ("/sys/fs/cgroup/x", Errno.EPERM), ("relative", Errno.EPERM),
    ("/sys/fs/bpf/../x", Errno.EPERM), ("/nonexistent/x", Errno.ENOENT),
    (D + "/missing/x", Errno.ENOENT), ("", Errno.ENOENT), (D + "/trail/", Errno.ENOENT),
    ("/proc/x", Errno.ENOENT), (D + "/a.b", Errno.EPERM), (D, Errno.EEXIST),
    (D + "/", Errno.EEXIST), ("/", Errno.EEXIST), ("/tmp", Errno.EEXIST), (D + "/.", Errno.EEXIST),
    (D + "/" + "a" * 256, Errno.ENAMETOOLONG), ("/" * 4095 + "x", Errno.ENAMETOOLONG),
])
def test_obj_pin_bad_path(k, path, err):
    fd = make_map(k)
    assert errno_of(calls.obj_pin, k, fd, path) == err
    assert k.bpffs.pinned_objects() == set()
    assert obj(k, fd).refcnt == 1 and obj(k, fd).usercnt == 1
    k.close(fd)


def test_obj_pin_get_roundtrip_refs(k):
    fd = make_map(k)
    m = obj(k, fd)
    calls.obj_pin(k, fd, D + "/m")
    assert (m.refcnt, m.usercnt) == (2, 2)
    assert errno_of(calls.obj_pin, k, fd, D + "/m") == Errno.EEXIST
    assert errno_of(calls.obj_pin, k, fd, D + "/m/x") == Errno.ENOTDIR
    k.close(fd)
    assert not m.freed and k.bpffs.pinned_objects() == {m}
    fd2 = calls.obj_get(k, D + "/m")
    assert obj(k, fd2) is m and (m.refcnt, m.usercnt) == (2, 2)
    k.close(fd2)
    assert k.unlink(D + "/m") == 0
    assert m.freed and k.map_idr.find(m.id) is None
    assert errno_of(calls.obj_get, k, D + "/m") == Errno.ENOENT


def test_obj_get_file_flags_modes(k):
    mfd, pfd = make_map(k), make_prog(k)
    calls.obj_pin(k, mfd, D + "/m")
    calls.obj_pin(k, pfd, D + "/p")
    for flags, acc in ((0, O_RDWR), (BPF_F_RDONLY, O_RDONLY), (BPF_F_WRONLY, O_WRONLY)):
        fd = calls.obj_get(k, D + "/m", flags)
        assert k.current.files.fdget(fd).f_flags == acc | O_CLOEXEC
        k.close(fd)
        fd = calls.obj_get(k, D + "/p", flags)           # progs are always O_RDWR
        assert k.current.files.fdget(fd).f_flags == O_RDWR | O_CLOEXEC
        k.close(fd)
    for flags in (BPF_F_RDONLY | BPF_F_WRONLY, 1, 32):
        assert errno_of(calls.obj_get, k, D + "/m", flags) == Errno.EINVAL
    ret, _ = raw(k, BpfCmd.OBJ_GET, "file_flags", pathname=(D + "/m\0").encode(), bpf_fd=1)
    assert ret == -Errno.EINVAL
    k.close(mfd), k.close(pfd)


@pytest.mark.parametrize("path,err", [
    (D, Errno.EACCES), (D + "/", Errno.EACCES), ("/tmp", Errno.EACCES), ("/", Errno.EACCES),
    ("", Errno.ENOENT), ("rel", Errno.ENOENT), (D + "/none", Errno.ENOENT),
    (D + "/m/", Errno.ENOTDIR), (D + "/m/.", Errno.ENOTDIR), (D + "/a.b", Errno.EPERM),
])
def test_obj_get_bad_path(k, path, err):
    fd = make_map(k)
    calls.obj_pin(k, fd, D + "/m")
    k.close(fd)
    assert errno_of(calls.obj_get, k, path) == err


def test_obj_pin_bad_fd_and_flags_einval(k):
    assert errno_of(calls.obj_pin, k, 0, D + "/tty") == Errno.EINVAL      # a tty
    assert errno_of(calls.obj_pin, k, 999, D + "/x") == Errno.EINVAL
    fd = make_map(k)
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "file_flags", pathname=(D + "/f\0").encode(), bpf_fd=fd,
                 file_flags=BPF_F_RDONLY)
    assert ret == -Errno.EINVAL
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=(D + "/f\0").encode(), bpf_fd=fd, path_fd=3)
    assert ret == -Errno.EINVAL
    assert raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=0, bpf_fd=fd)[0] == -Errno.EFAULT
    k.close(fd)


def test_obj_pin_path_fd(k):
    fd = make_map(k)
    dfd = k.bpffs.open(D, O_RDONLY, k.current)
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=b"rel\0", bpf_fd=fd, path_fd=dfd,
                 file_flags=BPF_F_PATH_FD)
    assert ret == 0 and D + "/rel" in k.bpffs.pins()
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=b"rel2\0", bpf_fd=fd, path_fd=777,
                 file_flags=BPF_F_PATH_FD)
    assert ret == -Errno.EBADF
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=(D + "/abs\0").encode(), bpf_fd=fd,
                 path_fd=777, file_flags=BPF_F_PATH_FD)
    assert ret == 0                                   # absolute paths ignore path_fd
    ret, _ = raw(k, BpfCmd.OBJ_PIN, "path_fd", pathname=b"rel3\0", bpf_fd=fd, path_fd=fd,
                 file_flags=BPF_F_PATH_FD)
    assert ret == -Errno.ENOTDIR
    ret, _ = raw(k, BpfCmd.OBJ_GET, "path_fd", pathname=b"rel\0", path_fd=dfd,
                 file_flags=BPF_F_PATH_FD)
    assert ret >= 0
    k.close(ret), k.close(dfd), k.close(fd)


def test_vfs_mkdir_unlink_rmdir_errnos(k):
    fd = make_map(k)
    calls.obj_pin(k, fd, D + "/p")
    k.close(fd)
    assert k.mkdir(D + "/sub") == 0
    assert k.mkdir(D + "/sub") == -Errno.EEXIST
    assert k.mkdir(D + "/x.y") == -Errno.EPERM
    assert k.mkdir(D + "/nope/sub") == -Errno.ENOENT
    assert k.mkdir(D + "/p/x") == -Errno.ENOTDIR
    assert k.mkdir(D + "/sub2/") == 0
    assert k.mkdir("/") == -Errno.EEXIST
    assert k.unlink(D + "/sub") == -Errno.EISDIR
    assert k.unlink(D + "/sub/") == -Errno.EISDIR
    assert k.unlink(D + "/p/") == -Errno.ENOTDIR
    assert k.unlink(D + "/zz") == -Errno.ENOENT
    assert k.unlink(D + "/zz/") == -Errno.ENOENT
    assert k.unlink(D + "/.") == -Errno.EISDIR
    assert k.rmdir(D + "/p") == -Errno.ENOTDIR
    assert k.rmdir(D + "/zz") == -Errno.ENOENT
    assert k.rmdir(D + "/.") == -Errno.EINVAL
    assert k.rmdir(D + "/sub/..") == -Errno.ENOTEMPTY
    assert k.rmdir("/sys/fs/bpf") == -Errno.EBUSY
    assert k.rmdir("/") == -Errno.EBUSY
    fd = make_prog(k)
    calls.obj_pin(k, fd, D + "/sub/q")
    k.close(fd)
    assert k.rmdir(D + "/sub") == -Errno.ENOTEMPTY
    assert k.unlink(D + "/sub/q") == 0
    assert k.rmdir(D + "/sub") == 0
    assert k.bpffs.pinned_objects() == {k.bpffs.pins()[D + "/p"][1]}


def test_pins_are_shared_between_tasks(k):
    other = k.spawn()
    fd = make_prog(k)
    calls.obj_pin(k, fd, D + "/p")
    k.close(fd)
    ret, _ = raw(k, BpfCmd.OBJ_GET, "file_flags", pathname=(D + "/p\0").encode())
    assert ret >= 0
    k.close(ret)
    fd2 = k.bpf(BpfCmd.OBJ_GET, raw_attr(pathname=(D + "/p\0").encode()), 16, task=other)
    assert fd2 >= 3
    other.files.close(fd2)


def raw_attr(**fields):
    from uapi.attr import make_attr
    a = make_attr(**fields)
    raw_attr.keep.append(a)
    return a.c


raw_attr.keep = []


def test_obj_get_permission_for_other_user(k):
    fd = make_map(k)
    calls.obj_pin(k, fd, D + "/m")          # 0600 root-owned
    k.close(fd)
    # a process with CAP_SYS_ADMIN/CAP_BPF but without the DAC overrides
    caps = frozenset({Cap.SYS_ADMIN, Cap.BPF})
    t = k.spawn(creds=Creds(uid=1000, gid=1000, caps=caps))
    a = raw_attr(pathname=(D + "/m\0").encode())
    assert k.bpf(BpfCmd.OBJ_GET, a, 16, task=t) == -Errno.EACCES
    assert k.bpffs.pins()[D + "/m"][1].usercnt == 1


def test_rm_tree_drops_references(k):
    fds = [make_map(k), make_prog(k)]
    assert k.mkdir(D + "/deep") == 0
    calls.obj_pin(k, fds[0], D + "/deep/m")
    calls.obj_pin(k, fds[1], D + "/p")
    objs = [obj(k, fd) for fd in fds]
    for fd in fds:
        k.close(fd)
    k.bpffs.rm_tree(D)
    assert all(o.freed for o in objs) and k.bpffs.pinned_objects() == set()
    k.bpffs.rm_tree(D)                       # gone already: no error
    assert k.mkdir(D) == 0


# ---------------------------------------------------------------- ids

def test_get_next_id_and_fd_by_id(k):
    a, b = make_map(k), make_map(k)
    ida, idb = obj(k, a).id, obj(k, b).id
    assert calls.map_get_next_id(k, 0) == ida
    assert calls.map_get_next_id(k, ida) == idb
    assert errno_of(calls.map_get_next_id, k, idb) == Errno.ENOENT
    assert raw(k, BpfCmd.MAP_GET_NEXT_ID, "next_id", start_id=2**31 - 1)[0] == -Errno.EINVAL
    fd = calls.map_get_fd_by_id(k, ida, BPF_F_RDONLY)
    assert obj(k, fd) is obj(k, a) and k.current.files.fdget(fd).f_flags == O_RDONLY | O_CLOEXEC
    assert errno_of(calls.map_get_fd_by_id, k, ida, BPF_F_RDONLY | BPF_F_WRONLY) == Errno.EINVAL
    assert errno_of(calls.map_get_fd_by_id, k, ida, 1) == Errno.EINVAL
    k.close(fd), k.close(a)
    assert errno_of(calls.map_get_fd_by_id, k, ida) == Errno.ENOENT
    assert calls.map_get_next_id(k, 0) == idb
    assert errno_of(calls.map_get_fd_by_id, k, 0) == Errno.ENOENT
    p = make_prog(k)
    pid = obj(k, p).aux.id
    assert calls.prog_get_next_id(k, 0) == pid
    fd = calls.prog_get_fd_by_id(k, pid)
    assert obj(k, fd) is obj(k, p)
    assert raw(k, BpfCmd.PROG_GET_FD_BY_ID, "open_flags", prog_id=pid, open_flags=8)[0] == -Errno.EINVAL
    k.close(fd), k.close(p), k.close(b)
    assert errno_of(calls.prog_get_fd_by_id, k, pid) == Errno.ENOENT


def test_ids_need_cap_sys_admin(k):
    t = k.spawn(creds=Creds(caps=frozenset({Cap.BPF})))
    for cmd, fields in ((BpfCmd.MAP_GET_NEXT_ID, {}), (BpfCmd.PROG_GET_NEXT_ID, {}),
                        (BpfCmd.MAP_GET_FD_BY_ID, {"map_id": 1}),
                        (BpfCmd.PROG_GET_FD_BY_ID, {"prog_id": 1})):
        assert k.bpf(cmd, raw_attr(**fields), 20, task=t) == -Errno.EPERM


# ---------------------------------------------------------------- info

def test_map_info_fields_and_lengths(k):
    fd = make_map(k, name=b"hello")
    m = obj(k, fd)
    info, n = calls.obj_get_info_by_fd(k, fd, "map")
    assert n == ffi.sizeof("struct bpf_map_info")
    assert (info.type, info.id, info.key_size, info.value_size, info.max_entries) == \
        (MapType.HASH, m.id, 4, 8, 16)
    assert ffi.string(info.name) == b"hello"
    info, n = calls.obj_get_info_by_fd(k, fd, "map", 8)
    assert n == 8 and info.type == MapType.HASH and info.key_size == 0
    info, n = calls.obj_get_info_by_fd(k, fd, "map", 300)
    assert n == ffi.sizeof("struct bpf_map_info")
    # fields this kernel does not fill keep what the user passed in
    info, _ = calls.obj_get_info_by_fd(k, fd, "map", prefill=dict(ifindex=7, btf_id=11, id=99))
    assert (info.ifindex, info.btf_id, info.id) == (7, 11, m.id)
    assert errno_of(calls.obj_get_info_by_fd, k, fd, "map", prefill=dict(hash_size=32)) == Errno.EINVAL
    assert errno_of(calls.obj_get_info_by_fd, k, fd, "map", prefill=dict(hash=8, hash_size=32)) \
        == Errno.EINVAL                      # no map_get_hash for this type
    k.close(fd)


def test_info_tail_and_fault_rules(k):
    for fd, size in ((make_map(k), 104), (make_prog(k), 232)):
        buf = bytearray(300)
        buf[size] = 1
        ret, _ = raw(k, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd,
                     info__info_len=300, info__info=buf)
        assert ret == -Errno.E2BIG
        for ln, ptr, want in ((40, 8, -Errno.EFAULT), (0, 8, 0), (300, 8, -Errno.EFAULT),
                              (8, 0, -Errno.EFAULT), (4097, bytearray(4097), -Errno.E2BIG)):
            ret, _ = raw(k, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd,
                         info__info_len=ln, info__info=ptr)
            assert ret == want, (fd, ln, ptr)
        k.close(fd)
    ret, _ = raw(k, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=fd, info__info_len=8,
                 info__info=bytearray(8))
    assert ret == -Errno.EBADFD
    ret, _ = raw(k, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=0, info__info_len=8,
                 info__info=bytearray(8))
    assert ret == -Errno.EINVAL


def test_prog_info_two_pass_and_map_ids(k):
    mfd = make_map(k)
    m = obj(k, mfd)
    handle = k.mem.map_object(m)
    lo, hi = handle & 0xFFFFFFFF, handle >> 32
    insns = (bytes([0x18, 0x01, 0, 0]) + lo.to_bytes(4, "little") + bytes(4)
             + hi.to_bytes(4, "little") + PROG)
    pfd = make_prog(k, b"withmap", insns)
    p = obj(k, pfd)
    p.aux.used_maps.append(m.get())
    info, n = calls.obj_get_info_by_fd(k, pfd, "prog")
    assert n == 232 and info.type == ProgType.SOCKET_FILTER and info.id == p.aux.id
    assert bytes(info.tag) == p.tag and ffi.string(info.name) == b"withmap"
    assert (info.xlated_prog_len, info.nr_map_ids, info.gpl_compatible) == (32, 1, 1)
    assert (info.nr_jited_ksyms, info.nr_jited_func_lens, info.nr_prog_tags) == (1, 1, 1)
    assert (info.func_info_rec_size, info.line_info_rec_size, info.jited_line_info_rec_size) == \
        (8, 16, 8)
    xl = bytearray(info.xlated_prog_len)
    ids = ffi.new("uint32_t[4]")
    info, _ = calls.obj_get_info_by_fd(k, pfd, "prog", prefill=dict(
        xlated_prog_len=len(xl), xlated_prog_insns=ffi.cast("uintptr_t", ffi.from_buffer(xl)),
        nr_map_ids=4, map_ids=ffi.cast("uintptr_t", ids), ifindex=5))
    want = bytes([0x18, 0x11, 0, 0]) + m.id.to_bytes(4, "little") + bytes(8) + PROG
    assert bytes(xl) == want and ids[0] == m.id and info.nr_map_ids == 1 and info.ifindex == 5
    for pre in (dict(func_info_rec_size=4), dict(nr_func_info=1), dict(jited_line_info_rec_size=4)):
        assert errno_of(calls.obj_get_info_by_fd, k, pfd, "prog", prefill=pre) == Errno.EINVAL
    for pre in (dict(nr_map_ids=1, map_ids=8), dict(xlated_prog_len=8, xlated_prog_insns=8),
                dict(xlated_prog_len=8), dict(nr_prog_tags=1, prog_tags=8)):
        assert errno_of(calls.obj_get_info_by_fd, k, pfd, "prog", prefill=pre) == Errno.EFAULT
    k.close(pfd), k.close(mfd)


def test_prog_info_unprivileged_hides_lengths(k):
    pfd = make_prog(k)
    k.sysctls["kernel.unprivileged_bpf_disabled"] = 0     # let an unprivileged task call bpf()
    t = k.spawn(creds=NOBODY)
    t.files.install(k.current.files.fdget(pfd).get())
    buf = bytearray(ffi.sizeof("struct bpf_prog_info"))
    a = raw_attr(info__bpf_fd=3, info__info_len=len(buf), info__info=buf)
    assert k.bpf(BpfCmd.OBJ_GET_INFO_BY_FD, a, 16, task=t) == 0
    info = ffi.from_buffer("struct bpf_prog_info *", buf)
    assert info.xlated_prog_len == 0 and info.nr_jited_ksyms == 0 and info.type == ProgType.SOCKET_FILTER
    t.files.close(3)
    k.close(pfd)
