"""PROG_LOAD / PROG_TEST_RUN — kernel/bpf/syscall.c. PLACEHOLDER: owned by the lead."""
from fakekernel.errors import Errno, KernelError
from fakekernel.syscall.command import bpf_command
from uapi.bpf import BpfCmd


def _todo(*a):
    raise KernelError(Errno.EINVAL, "not implemented yet")


bpf_prog_load = bpf_command(BpfCmd.PROG_LOAD, "keyring_id")(_todo)
bpf_prog_test_run = bpf_command(BpfCmd.PROG_TEST_RUN, "test.batch_size")(_todo)
