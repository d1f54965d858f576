"""Unit tests: raw tracepoints in the simulated world (fakekernel/trace/raw_tp.py) and the
syscall-program helpers (fakekernel/helpers/syscall.py) — the parts a real kernel cannot show
(declared tracepoints, firing them, other tasks and credentials)."""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from fakekernel.errors import KernelError
from fakekernel.helpers.syscall import KernelPtrMemory
from fakekernel.task import Creds
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, ProgLoadFlags, ProgType
from uapi.capability import Cap
from uapi.errno import Errno
from uapi.ffi import ffi

RAW_TP = ProgType.RAW_TRACEPOINT


def load(k, text: str, ptype=RAW_TP, flags=0) -> int:
    return calls.prog_load(k, ptype, assemble(text), prog_flags=flags)


def rto(k, prog: int, name: bytes, cookie: int = 0) -> int:
    nm = ffi.new("char[]", name)
    return calls.raw(k, BpfCmd.RAW_TRACEPOINT_OPEN, None, raw_tracepoint__prog_fd=prog,
                     raw_tracepoint__name=nm, raw_tracepoint__cookie=cookie)[0]


def test_raw_tp_declared_tracepoint_arity_checked_einval(kernel):
    trace = kernel.world.trace
    trace.raw_tp.add("fk_one_arg", 1)
    reads_arg1 = load(kernel, "r0 = *(u64 *)(r1 +8)\nexit")
    reads_arg0 = load(kernel, "r0 = *(u64 *)(r1 +0)\nexit")
    assert rto(kernel, reads_arg1, b"fk_one_arg") == -Errno.EINVAL
    lk = rto(kernel, reads_arg0, b"fk_one_arg")
    assert lk >= 0
    assert trace.fire_tracepoint("fk_one_arg", (41,)) == [41]
    kernel.close(lk)
    assert trace.fire_tracepoint("fk_one_arg", (41,)) == []
    kernel.close(reads_arg0)
    kernel.close(reads_arg1)


def test_raw_tp_fire_maps_bytes_args_and_runs_as_task(kernel):
    trace = kernel.world.trace
    reader = load(kernel, """r6 = r1
r1 = r10
r1 += -8
r2 = 8
r3 = *(u64 *)(r6 +8)
call bpf_probe_read_kernel#113
r0 = *(u64 *)(r10 -8)
exit""")
    pid = load(kernel, "call bpf_get_current_pid_tgid#14\nexit")
    l1, l2 = rto(kernel, reader, b"sys_enter"), rto(kernel, pid, b"sys_enter")
    other = kernel.spawn(pid=4242)
    assert sorted(trace.fire_tracepoint("sys_enter", (0, (1234).to_bytes(8, "little")), task=other)) == \
        sorted([1234, (4242 << 32) | 4242])
    assert kernel.current is not other
    for fd in (l1, l2, reader, pid):
        kernel.close(fd)


def test_raw_tp_unknown_tracepoint_fire_keyerror(kernel):
    with pytest.raises(KeyError):
        kernel.world.trace.fire_tracepoint("no_such_tracepoint_fk")


def test_raw_tp_writable_buffer_fits_declared_size(kernel):
    kernel.world.trace.raw_tp.add("fk_writable", 1, writable_size=8)
    writes4 = load(kernel, "r2 = *(u64 *)(r1 +0)\n*(u32 *)(r2 +4) = 1\nr0 = 0\nexit",
                   ProgType.RAW_TRACEPOINT_WRITABLE)
    writes8 = load(kernel, "r2 = *(u64 *)(r1 +0)\n*(u64 *)(r2 +8) = 1\nr0 = 0\nexit",
                   ProgType.RAW_TRACEPOINT_WRITABLE)
    lk = rto(kernel, writes4, b"fk_writable")
    assert lk >= 0
    assert rto(kernel, writes8, b"fk_writable") == -Errno.EINVAL       # reaches byte 16 of 8
    assert kernel.world.trace.fire_tracepoint("fk_writable", (bytes(8),)) == [0]
    for fd in (lk, writes4, writes8):
        kernel.close(fd)


def _syscall_prog(k, text):
    return load(k, text, ProgType.SYSCALL, ProgLoadFlags.SLEEPABLE)


def test_kallsyms_lookup_name_needs_syslog_eperm():
    k = Kernel(creds=Creds(uid=1000, caps=frozenset({Cap.BPF, Cap.PERFMON})), vmlinux_btf=None)
    k.sysctls["kernel.kptr_restrict"] = 1
    fd = _syscall_prog(k, """r1 = 0
*(u64 *)(r10 -16) = r1
r1 = 0x6b63656863
*(u64 *)(r10 -16) = r1
r1 = r10
r1 += -16
r2 = 6
r3 = 0
r4 = r10
r4 += -8
call bpf_kallsyms_lookup_name#179
exit""")
    r = calls.prog_test_run(k, fd, strict=False)
    assert (r.ret, r.retval) == (0, (-Errno.EPERM) & 0xFFFFFFFF)
    k.close(fd)


def test_sys_bpf_unavailable_without_perfmon_einval():
    k = Kernel(creds=Creds(uid=1000, caps=frozenset({Cap.BPF})), vmlinux_btf=None)
    res = calls.prog_load(k, ProgType.SYSCALL, assemble("call bpf_sys_bpf#166\nr0 = 0\nexit"),
                          prog_flags=ProgLoadFlags.SLEEPABLE, log_level=1, log_size=4096, strict=False)
    assert res.ret == -Errno.EINVAL
    assert "program of this type cannot use helper bpf_sys_bpf#166" in res.log


def test_kernel_ptr_memory_bad_address_efault(kernel):
    mem = KernelPtrMemory(kernel.mem)
    with pytest.raises(KernelError) as e:
        mem.copy_from_user(8, 4)
    assert e.value.errno == Errno.EFAULT
    with pytest.raises(KernelError):
        mem.copy_to_user(8, b"x")
    assert mem.copy_from_user(8, 0) == b""
