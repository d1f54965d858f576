"""PROG_ATTACH/DETACH/QUERY — kernel/bpf/syscall.c. PLACEHOLDER: owned by the hooks work."""
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd


def _todo(*a):
    raise KernelError(Errno.EINVAL, "not implemented yet")


bpf_prog_attach = bpf_command(BpfCmd.PROG_ATTACH, "expected_revision")(_todo)
bpf_prog_detach = bpf_command(BpfCmd.PROG_DETACH, "expected_revision")(_todo)
bpf_prog_query = bpf_command(BpfCmd.PROG_QUERY, "query.revision")(_todo)
