"""BTF commands — kernel/bpf/syscall.c: bpf_btf_load(), bpf_btf_get_fd_by_id(),
bpf_obj_get_next_id() for BTF ids; the work is in `fakekernel.btf` (≈ kernel/bpf/btf.c).
OBJ_GET_INFO_BY_FD of a BTF fd is the "btf" entry of `obj_info.INFO_BY_FILE_KIND`.
"""
from __future__ import annotations

from fakekernel.btf import btf_get_fd_by_id, btf_new_fd
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from fakekernel.syscall.obj_cmds import _get_next_id
from uapi.bpf import BpfCmd, MapFlags
from uapi.capability import Cap

__all__ = ["bpf_btf_load", "bpf_btf_get_fd_by_id", "bpf_btf_get_next_id"]


def _token(task, fd: int) -> None:
    """bpf_token_get_from_fd(): BPF tokens are not emulated, so any fd is the wrong kind."""
    f = task.files.fdget(fd)                                  # EBADF
    if f.kind != "bpf-token":
        raise KernelError(Errno.EINVAL, "not a BPF token")


@bpf_command(BpfCmd.BTF_LOAD, last_field="btf_token_fd")
def bpf_btf_load(kern, task, attr, ctx) -> int:
    if attr.btf_flags & ~int(MapFlags.TOKEN_FD):
        raise KernelError(Errno.EINVAL, "unknown btf_flags")
    if attr.btf_flags & MapFlags.TOKEN_FD:
        _token(task, attr.btf_token_fd)
    if not task.bpf_capable():
        raise KernelError(Errno.EPERM, "BTF_LOAD needs CAP_BPF")
    return btf_new_fd(kern, task, attr, ctx)


@bpf_command(BpfCmd.BTF_GET_FD_BY_ID, last_field="fd_by_id_token_fd")
def bpf_btf_get_fd_by_id(kern, task, attr, ctx) -> int:
    if attr.open_flags & ~int(MapFlags.TOKEN_FD):
        raise KernelError(Errno.EINVAL, "unknown open_flags")
    if attr.open_flags & MapFlags.TOKEN_FD:
        _token(task, attr.fd_by_id_token_fd)
    if not task.capable(Cap.SYS_ADMIN):
        raise KernelError(Errno.EPERM, "BTF_GET_FD_BY_ID needs CAP_SYS_ADMIN")
    return btf_get_fd_by_id(kern, task, attr.btf_id)


@bpf_command(BpfCmd.BTF_GET_NEXT_ID, last_field="next_id")
def bpf_btf_get_next_id(kern, task, attr, ctx) -> int:
    return _get_next_id(task, attr, ctx, kern.btf_idr)

