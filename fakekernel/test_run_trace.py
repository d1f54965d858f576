"""BPF_PROG_TEST_RUN for non-packet programs — net/bpf/test_run.c: bpf_prog_test_run_raw_tp(),
bpf_prog_test_run_syscall().

Both run the program once on a ctx copied from ctx_in; neither takes packet data, repeat or
(for raw_tp) a ctx_out.  Plugged into ``bpf_prog_ops.test_run`` by `fakekernel.bpf_types`.
"""
from __future__ import annotations

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.errors import Errno, KernelError
from fakekernel.progs.raw_tp import RAW_TP_CTX_MAX
from fakekernel.trace.raw_tp import RawTpRunCtx
from uapi.bpf import TestRunFlags

__all__ = ["bpf_prog_test_run_raw_tp", "bpf_prog_test_run_syscall", "U16_MAX"]

_U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF


def _run_on(kern, prog, addr: int, cpu: int, run_ctx) -> int:
    return bpf_prog_run(kern, prog, addr, ctx=run_ctx, cpu=cpu)


def bpf_prog_test_run_raw_tp(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_raw_tp(): the args from ctx_in, on this CPU or the one asked for."""
    t = attr.test
    if t.data_in or t.data_out or t.ctx_out or t.duration or t.repeat or t.batch_size:
        raise KernelError(Errno.EINVAL, "raw_tp test runs take ctx_in only")
    if t.ctx_size_in < prog.aux.max_ctx_offset or t.ctx_size_in > RAW_TP_CTX_MAX:
        raise KernelError(Errno.EINVAL, "ctx_size_in shorter than the args the prog reads")
    on_cpu = bool(t.flags & TestRunFlags.TEST_RUN_ON_CPU)
    if not on_cpu and t.cpu != 0:
        raise KernelError(Errno.EINVAL, "cpu without BPF_F_TEST_RUN_ON_CPU")
    args = task.mm.copy_from_user(t.ctx_in, t.ctx_size_in) if t.ctx_size_in else None
    cpu = kern.cpu
    if on_cpu and t.cpu != cpu:
        if t.cpu >= kern.nr_cpus:
            raise KernelError(Errno.ENXIO, f"cpu {t.cpu} is not online")
        cpu = t.cpu
    if args is None:
        retval = _run_on(kern, prog, 0, cpu, RawTpRunCtx())
    else:
        region = kern.mem.map_region(bytearray(args), "ctx", "raw_tp args", writable=False)
        try:
            retval = _run_on(kern, prog, region.base, cpu, RawTpRunCtx())
        finally:
            kern.mem.unmap(region)
    ctx.put_attr_field("test.retval", retval & _U32_MAX)
    return 0


def bpf_prog_test_run_syscall(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_syscall(): the program runs on a copy of ctx_in (at most a u16 of
    bytes) in the calling task's context; the ctx is copied back to ctx_in afterwards."""
    t = attr.test
    ctx_size_in = t.ctx_size_in
    if t.data_in or t.data_out or t.ctx_out or t.duration or t.repeat or t.flags or t.batch_size:
        raise KernelError(Errno.EINVAL, "syscall test runs take ctx_in only")
    if ctx_size_in < prog.aux.max_ctx_offset or ctx_size_in > U16_MAX:
        raise KernelError(Errno.EINVAL, "ctx_size_in out of range")
    buf = None
    if ctx_size_in:
        buf = bytearray(task.mm.copy_from_user(t.ctx_in, ctx_size_in))
    saved = kern.current
    kern.current = task
    try:
        if buf is None:
            retval = bpf_prog_run(kern, prog, 0)
        else:
            region = kern.mem.map_region(buf, "ctx", "syscall ctx")
            try:
                retval = bpf_prog_run(kern, prog, region.base)
            finally:
                kern.mem.unmap(region)
    finally:
        kern.current = saved
    ctx.put_attr_field("test.retval", retval & _U32_MAX)
    if buf is not None:
        task.mm.copy_to_user(t.ctx_in, bytes(buf))
    return 0
