"""BPF_ITER_CREATE — kernel/bpf/syscall.c: bpf_iter_create() (kernel/bpf/bpf_iter.c
bpf_iter_new_fd): flags must be 0, the link fd must hold an iterator link."""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.iter import bpf_iter_new_fd
from fakekernel.syscall import fdget
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd

__all__ = ["bpf_iter_create"]


@bpf_command(BpfCmd.ITER_CREATE, last_field="iter_create.flags")
def bpf_iter_create(kern, task, attr, ctx) -> int:
    """bpf_iter_create(): returns the new O_RDONLY seq-file fd."""
    if attr.iter_create.flags:
        raise KernelError(Errno.EINVAL, "iter_create.flags must be 0")
    link = fdget.bpf_link_get(task, attr.iter_create.link_fd)     # EBADF / EINVAL
    return bpf_iter_new_fd(kern, task, link)
