"""BPF execution engine — kernel/bpf/core.c (___bpf_prog_run) over a simulated address space."""
from fakekernel.interp.memory import AddressSpace, InterpreterFault, Region
from fakekernel.interp.run import Interpreter, RunEnv, SkbData, TailCall

__all__ = ["AddressSpace", "InterpreterFault", "Interpreter", "Region", "RunEnv", "SkbData", "TailCall"]
