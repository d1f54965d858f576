"""BPF_TOKEN_CREATE — kernel/bpf/token.c: bpf_token_create().

A token delegates bpf() rights from a bpffs instance mounted (with delegate_* options) inside a
user namespace.  The simulated kernel has one user namespace, the initial one, and its bpffs
is mounted there without delegation, so the kernel's checks end where they end for every
process in the init namespace: the fd must be the root of a bpffs mount (EBADF / EINVAL), the
caller needs CAP_BPF (EPERM), and a token in the initial namespace is refused (EOPNOTSUPP).
"""
from __future__ import annotations

from fakekernel.bpffs import DIR_FILE_KIND
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd
from uapi.capability import Cap

__all__ = ["token_create"]


@bpf_command(BpfCmd.TOKEN_CREATE, last_field="token_create.bpffs_fd")
def token_create(kern, task, attr, ctx) -> int:
    tc = attr.token_create
    if tc.flags:
        raise KernelError(Errno.EINVAL, "token_create.flags must be 0")
    f = task.files.fdget(tc.bpffs_fd)
    node = f.private_data if f.kind == DIR_FILE_KIND else None
    if node is None or not (node.is_bpf_dir and node.mountpoint):    # path.dentry != sb->s_root
        raise KernelError(Errno.EINVAL, "not the root of a bpffs mount")
    if not task.capable(Cap.BPF):                                     # ns_capable(sb userns, CAP_BPF)
        raise KernelError(Errno.EPERM, "CAP_BPF needed")
    raise KernelError(Errno.EOPNOTSUPP, "no BPF token in the initial user namespace")
