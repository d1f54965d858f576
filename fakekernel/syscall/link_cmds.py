"""LINK_CREATE — kernel/bpf/syscall.c. PLACEHOLDER: owned by the hooks work."""
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd


def _todo(*a):
    raise KernelError(Errno.EINVAL, "not implemented yet")


link_create = bpf_command(BpfCmd.LINK_CREATE, "link_create.uprobe_multi.pid")(_todo)
