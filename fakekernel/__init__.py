"""fakekernel — a simulated Linux kernel answering bpf() like Linux 6.18."""
from fakekernel.errors import KernelError
from fakekernel.kernel import Kernel
from fakekernel.shim import syscall_shim
from fakekernel.task import Creds, NOBODY, ROOT

__all__ = ["Kernel", "KernelError", "Creds", "ROOT", "NOBODY", "syscall_shim"]
