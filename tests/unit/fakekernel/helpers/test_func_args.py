"""bpf_get_func_arg / _ret / _arg_cnt / bpf_get_func_ip from fentry and fexit programs run by
PROG_TEST_RUN (bpf_fentry_test2(2, 3) = 5), and which program types get them — from the source:
the reference kernel refuses these loads (lockdown)."""
from __future__ import annotations

import functools
import os

import pytest

from fakekernel import Kernel
from fakekernel.btf_vmlinux import btf_index
from fakekernel.helpers.func_args import FUNC_ARGS_PROTOS, trampoline_func_proto
from uapi import calls
from uapi.asm import assemble
from uapi.btf import BtfKind
from uapi.bpf import AttachType, FuncId, MapType, ProgType
from uapi.errno import Errno

pytestmark = pytest.mark.skipif(not os.access("/sys/kernel/btf/vmlinux", os.R_OK),
                                reason="no vmlinux BTF")
FENTRY, FEXIT = AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT


@functools.cache
def _fentry_test2() -> int:
    return btf_index(Kernel().btf_vmlinux).find_by_name_kind(b"bpf_fentry_test2", BtfKind.FUNC)


PROG = """
    r6 = r1
    r1 = 0
    *(u32 *)(r10 -4) = r1
    r1 = map[id:{m}]
    r2 = r10
    r2 += -4
    call bpf_map_lookup_elem
    if r0 != 0x0 goto pc+2
    r0 = 0
    exit
    r7 = r0
    r1 = r6
    call bpf_get_func_arg_cnt
    *(u64 *)(r7 +0) = r0
    r1 = r6
    r2 = 1
    r3 = r7
    r3 += 8
    call bpf_get_func_arg
    *(u64 *)(r7 +16) = r0
    r1 = r6
    r2 = 2
    r3 = r7
    r3 += 24
    call bpf_get_func_arg
    *(u64 *)(r7 +32) = r0
    r1 = r6
    r2 = r7
    r2 += 40
    call bpf_get_func_ret
    *(u64 *)(r7 +48) = r0
    r1 = r6
    call bpf_get_func_ip
    *(u64 *)(r7 +56) = r0
    r0 = 0
    exit
"""


def _run(k, eat) -> list[int]:
    m = calls.map_create(k, MapType.ARRAY, 4, 64, 1)
    calls.map_update_elem(k, m, bytes(4), b"\xee" * 64)
    fd = calls.prog_load(k, ProgType.TRACING, assemble(PROG.format(m=m)), expected_attach_type=eat,
                         attach_btf_id=_fentry_test2())
    link = calls.link_create(k, fd, 0, eat)
    assert calls.prog_test_run(k, fd).retval == 0
    v = calls.map_lookup_elem(k, m, bytes(4), 64)
    for f in (link, fd, m):
        k.close(f)
    return [int.from_bytes(v[i:i + 8], "little", signed=True) for i in range(0, 64, 8)]


def test_fentry_args_count_and_no_ret_eopnotsupp(kernel):
    cnt, arg1, ret1, arg2, ret2, fret, rret, ip = _run(kernel, FENTRY)
    assert (cnt, arg1, ret1) == (2, 3, 0)
    assert (arg2, ret2) == (0, -Errno.EINVAL)             # past the count: value zeroed
    assert (fret, rret) == (int.from_bytes(b"\xee" * 8, "little", signed=True), -Errno.EOPNOTSUPP)
    assert ip == kernel.world.trace.kallsyms.lookup_name("bpf_fentry_test2").addr - 2**64


def test_fexit_gets_the_return_value(kernel):
    cnt, arg1, ret1, arg2, ret2, fret, rret, ip = _run(kernel, FEXIT)
    assert (cnt, arg1, fret, rret) == (2, 3, 5, 0)


def test_func_arg_protos_only_for_trampolines():
    class P:
        type, expected_attach_type = ProgType.TRACING, FENTRY
    assert trampoline_func_proto(FuncId.get_func_arg, P) is FUNC_ARGS_PROTOS[FuncId.get_func_arg]
    P.expected_attach_type = AttachType.TRACE_ITER
    assert trampoline_func_proto(FuncId.get_func_arg, P) is None
    P.type, P.expected_attach_type = ProgType.LSM, AttachType.LSM_MAC
    assert trampoline_func_proto(FuncId.get_func_ret, P) is not None
    assert not FUNC_ARGS_PROTOS[FuncId.get_func_arg_cnt].gpl_only


def test_probe_write_user_lockdown_gate_and_runtime(kernel):
    import ctypes
    from fakekernel.helpers.func_args import LOCKDOWN_KEY, PROBE_WRITE_USER_PROTO, bpf_probe_write_user
    from fakekernel.interp.run import RunEnv
    from fakekernel.progs.kprobe import kprobe_prog_func_proto

    from types import SimpleNamespace
    P = SimpleNamespace(type=ProgType.KPROBE, expected_attach_type=0, kern=kernel, aux=SimpleNamespace())
    assert kprobe_prog_func_proto(FuncId.probe_write_user, P) is None        # locked down (measured)
    kernel.sysctls[LOCKDOWN_KEY] = "none"
    assert kprobe_prog_func_proto(FuncId.probe_write_user, P) is PROBE_WRITE_USER_PROTO
    env = RunEnv(mem=kernel.mem, kernel=kernel)
    dst = ctypes.create_string_buffer(8)
    src = kernel.mem.map_region(bytearray(b"written!"), "arg", "src")
    assert bpf_probe_write_user(env, ctypes.addressof(dst), src.base, 8, 0, 0) == 0
    assert dst.raw == b"written!"
    assert bpf_probe_write_user(env, 8, src.base, 8, 0, 0) == 2**64 - Errno.EFAULT
