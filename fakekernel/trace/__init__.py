"""Tracing hook points — kernel/trace/bpf_trace.c, kernel/kallsyms.c."""
from fakekernel.trace.kallsyms import Kallsyms, KernelFunc
from fakekernel.trace.kprobe import KprobeMultiLink, KprobeMultiRunCtx, Tracing

__all__ = ["Kallsyms", "KernelFunc", "KprobeMultiLink", "KprobeMultiRunCtx", "Tracing"]
