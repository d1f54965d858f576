"""fd -> object lookups and new object fds — kernel/bpf/syscall.c (__bpf_map_get, bpf_map_new_fd, bpf_get_file_flag).

Shared by every command family: an fd with no file is EBADF (fdget), a file that is not
of the wanted kind is EINVAL (__bpf_map_get), and new fds always carry O_CLOEXEC as
anon_inode_getfd gives them.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.fdtable import O_CLOEXEC, O_RDONLY, O_RDWR, O_WRONLY, File
from uapi.bpf import MapFlags

__all__ = ["MAP_FILE_KIND", "bpf_map_get", "bpf_map_new_fd", "bpf_get_file_flag"]

MAP_FILE_KIND = "bpf-map"       # the anon inode name, as /proc/self/fd/N shows "anon_inode:bpf-map"


def bpf_map_get(task, fd: int) -> tuple[File, object]:
    """fdget() + __bpf_map_get(): the file and the map behind `fd` (no reference taken)."""
    f = task.files.fdget(fd)
    if f.kind != MAP_FILE_KIND:
        raise KernelError(Errno.EINVAL, f"fd {fd} is not a map")
    return f, f.private_data


def bpf_map_new_fd(kern, task, bpf_map, f_flags: int) -> int:
    """bpf_map_new_fd(): a new "bpf-map" file holding the caller's reference (ref + uref).

    On failure (EMFILE) the reference passed in is dropped, as bpf_map_put_with_uref()
    after a failed anon_inode_getfd.
    """
    return task.files.install(File(kind=MAP_FILE_KIND, private_data=bpf_map,
                                   f_flags=f_flags | O_CLOEXEC))


def bpf_get_file_flag(flags: int) -> int:
    """bpf_get_file_flag(): BPF_F_RDONLY / BPF_F_WRONLY -> the open mode of the new file."""
    if flags & MapFlags.RDONLY and flags & MapFlags.WRONLY:
        raise KernelError(Errno.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY together")
    if flags & MapFlags.RDONLY:
        return O_RDONLY
    if flags & MapFlags.WRONLY:
        return O_WRONLY
    return O_RDWR


# ---- programs and links (bpf_prog_get, bpf_prog_new_fd, bpf_link_get_from_fd, bpf_link_new_fd) ----

PROG_FILE_KIND = "bpf-prog"     # anon_inode:bpf-prog
LINK_FILE_KIND = "bpf-link"     # anon_inode:bpf-link
__all__ += ["PROG_FILE_KIND", "LINK_FILE_KIND", "bpf_prog_get", "bpf_prog_new_fd",
            "bpf_link_get", "bpf_link_new_fd"]


def bpf_prog_get(task, fd: int):
    """fdget() + ____bpf_prog_get(): the prog behind `fd` (EBADF / EINVAL); no reference taken.

    Callers that keep the prog beyond the syscall take their own reference (`prog.get()`).
    """
    f = task.files.fdget(fd)
    if f.kind != PROG_FILE_KIND:
        raise KernelError(Errno.EINVAL, f"fd {fd} is not a program")
    return f.private_data


def bpf_prog_new_fd(kern, task, prog) -> int:
    """bpf_prog_new_fd(): a new read-write "bpf-prog" file that owns the caller's reference.

    Programs ignore the open mode asked for (OBJ_GET with BPF_F_RDONLY still gives O_RDWR).
    On EMFILE the reference is dropped with the file.
    """
    return task.files.install(File(kind=PROG_FILE_KIND, private_data=prog,
                                   f_flags=O_RDWR | O_CLOEXEC))


def bpf_link_get(task, fd: int):
    """fdget() + bpf_link_get_from_fd() without the reference: EBADF / EINVAL."""
    f = task.files.fdget(fd)
    if f.kind != LINK_FILE_KIND:
        raise KernelError(Errno.EINVAL, f"fd {fd} is not a link")
    return f.private_data


def bpf_link_new_fd(kern, task, link) -> int:
    """bpf_link_new_fd(): a new read-write "bpf-link" file owning the caller's reference."""
    return task.files.install(File(kind=LINK_FILE_KIND, private_data=link,
                                   f_flags=O_RDWR | O_CLOEXEC))
