"""Object commands — kernel/bpf/syscall.c: bpf_obj_pin(), bpf_obj_get(), bpf_obj_get_next_id(),
bpf_{prog,map}_get_fd_by_id(), bpf_obj_get_info_by_fd(); pinning itself is kernel/bpf/inode.c
(`fakekernel.bpffs`).
"""
from __future__ import annotations

from fakekernel.bpffs import BPF_TYPE_LINK, BPF_TYPE_MAP, BPF_TYPE_PROG, PATH_MAX
from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_RDWR
from fakekernel.idr import INT_MAX
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.obj_info import INFO_BY_FILE_KIND
from uapi.bpf import BpfCmd, MapFlags
from uapi.capability import Cap

__all__ = ["bpf_obj_pin", "bpf_obj_get", "bpf_prog_get_next_id", "bpf_map_get_next_id",
           "bpf_prog_get_fd_by_id", "bpf_map_get_fd_by_id", "bpf_obj_get_info_by_fd",
           "BPF_OBJ_FLAG_MASK"]

BPF_OBJ_FLAG_MASK = MapFlags.RDONLY | MapFlags.WRONLY


# ---------------------------------------------------------------- pin / get (inode.c)

def _getname(task, uptr: int) -> str:
    """getname(): the user's path string (EFAULT, ENAMETOOLONG, ENOENT for "")."""
    raw = task.mm.strncpy_from_user(uptr, PATH_MAX)
    if len(raw) >= PATH_MAX:
        raise KernelError(Errno.ENAMETOOLONG, "path longer than PATH_MAX")
    if not raw:
        raise KernelError(Errno.ENOENT, "empty path")
    return raw.decode(errors="surrogateescape")


def _path_fd(attr) -> int | None:
    """The dirfd a relative path starts from: attr.path_fd with BPF_F_PATH_FD, else AT_FDCWD."""
    if not (attr.file_flags & MapFlags.PATH_FD) and attr.path_fd:
        raise KernelError(Errno.EINVAL, "path_fd without BPF_F_PATH_FD")
    return attr.path_fd if attr.file_flags & MapFlags.PATH_FD else None


def _fd_probe_obj(task, fd: int) -> tuple[str, object]:
    """bpf_fd_probe_obj(): a map, else a prog, else a link behind `fd`; anything else EINVAL."""
    f = task.files.lookup(fd)
    kinds = {fdget.MAP_FILE_KIND: BPF_TYPE_MAP, fdget.PROG_FILE_KIND: BPF_TYPE_PROG,
             fdget.LINK_FILE_KIND: BPF_TYPE_LINK}
    if f is None or f.kind not in kinds:
        raise KernelError(Errno.EINVAL, f"fd {fd} is no bpf map, prog or link")
    return kinds[f.kind], f.private_data


@bpf_command(BpfCmd.OBJ_PIN, last_field="path_fd")
def bpf_obj_pin(kern, task, attr, ctx) -> int:
    """bpf_obj_pin() -> bpf_obj_pin_user() -> bpf_obj_do_pin()."""
    if attr.file_flags & ~int(MapFlags.PATH_FD):
        raise KernelError(Errno.EINVAL, "unknown file_flags")
    dirfd = _path_fd(attr)
    kind, obj = _fd_probe_obj(task, attr.bpf_fd)
    path = _getname(task, attr.pathname)
    kern.bpffs.pin(obj, kind, path, task, dirfd=dirfd)
    return 0


@bpf_command(BpfCmd.OBJ_GET, last_field="path_fd")
def bpf_obj_get(kern, task, attr, ctx) -> int:
    """bpf_obj_get() -> bpf_obj_get_user(): a new fd on the pinned object."""
    if attr.bpf_fd != 0 or attr.file_flags & ~int(BPF_OBJ_FLAG_MASK | MapFlags.PATH_FD):
        raise KernelError(Errno.EINVAL, "bpf_fd set or unknown file_flags")
    dirfd = _path_fd(attr)
    f_flags = fdget.bpf_get_file_flag(attr.file_flags)
    path = _getname(task, attr.pathname)
    kind, obj = kern.bpffs.get(path, task, f_flags, dirfd=dirfd)     # holds a new reference
    if kind == BPF_TYPE_PROG:
        return fdget.bpf_prog_new_fd(kern, task, obj)
    if kind == BPF_TYPE_MAP:
        return fdget.bpf_map_new_fd(kern, task, obj, f_flags)
    if f_flags != O_RDWR:
        obj.put()
        raise KernelError(Errno.EINVAL, "links open read-write only")
    return fdget.bpf_link_new_fd(kern, task, obj)


# ---------------------------------------------------------------- ids

def _get_next_id(task, attr, ctx, idr) -> int:
    """bpf_obj_get_next_id(): the first live id above start_id, written to attr.next_id."""
    if attr.start_id >= INT_MAX:
        raise KernelError(Errno.EINVAL, "start_id >= INT_MAX")
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "GET_NEXT_ID needs CAP_SYS_ADMIN")
    nxt = idr.get_next(attr.start_id)
    if nxt is None:
        raise KernelError(Errno.ENOENT, "no id above start_id")
    ctx.put_attr_field("next_id", nxt[0])
    return 0


@bpf_command(BpfCmd.PROG_GET_NEXT_ID, last_field="next_id")
def bpf_prog_get_next_id(kern, task, attr, ctx) -> int:
    return _get_next_id(task, attr, ctx, kern.prog_idr)


@bpf_command(BpfCmd.MAP_GET_NEXT_ID, last_field="next_id")
def bpf_map_get_next_id(kern, task, attr, ctx) -> int:
    return _get_next_id(task, attr, ctx, kern.map_idr)


@bpf_command(BpfCmd.PROG_GET_FD_BY_ID, last_field="prog_id")
def bpf_prog_get_fd_by_id(kern, task, attr, ctx) -> int:
    """bpf_prog_get_fd_by_id() -> bpf_prog_by_id()."""
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "GET_FD_BY_ID needs CAP_SYS_ADMIN")
    prog = kern.prog_idr.find(attr.prog_id) if attr.prog_id else None
    if prog is None or prog.refcnt == 0:
        raise KernelError(Errno.ENOENT, f"no prog with id {attr.prog_id}")
    return fdget.bpf_prog_new_fd(kern, task, prog.get())


@bpf_command(BpfCmd.MAP_GET_FD_BY_ID, last_field="open_flags")
def bpf_map_get_fd_by_id(kern, task, attr, ctx) -> int:
    """bpf_map_get_fd_by_id(): open_flags chooses the new fd's mode."""
    if attr.open_flags & ~int(BPF_OBJ_FLAG_MASK):
        raise KernelError(Errno.EINVAL, "unknown open_flags")
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "GET_FD_BY_ID needs CAP_SYS_ADMIN")
    f_flags = fdget.bpf_get_file_flag(attr.open_flags)
    bpf_map = kern.map_idr.find(attr.map_id)
    if bpf_map is None or bpf_map.refcnt == 0:
        raise KernelError(Errno.ENOENT, f"no map with id {attr.map_id}")
    return fdget.bpf_map_new_fd(kern, task, bpf_map.get(uref=True), f_flags)


# ---------------------------------------------------------------- info

@bpf_command(BpfCmd.OBJ_GET_INFO_BY_FD, last_field="info.info")
def bpf_obj_get_info_by_fd(kern, task, attr, ctx) -> int:
    """bpf_obj_get_info_by_fd(): dispatch on the kind of file behind info.bpf_fd.

    A closed fd is EBADFD here (not EBADF), a file of another kind EINVAL.
    """
    f = task.files.lookup(attr.info.bpf_fd)
    if f is None:
        raise KernelError(Errno.EBADFD, f"fd {attr.info.bpf_fd} is not open")
    fill = INFO_BY_FILE_KIND.get(f.kind)
    if fill is None:
        raise KernelError(Errno.EINVAL, f"no info for a {f.kind} file")
    return fill(kern, task, f, f.private_data, attr, ctx)
