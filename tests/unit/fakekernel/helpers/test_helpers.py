"""Helper prototypes, per-type helper sets and the runtime functions written so far."""
import pytest

from fakekernel import Kernel
from fakekernel.helpers import (
    HELPERS, PROTOS, UNIMPLEMENTED_AT_RUNTIME, ArgType, HelperNotImplemented, RetType, helper_runtime,
)
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.trace import bstr_printf
from fakekernel.interp.run import RunEnv
from fakekernel.progs import VERIFIER_OPS_BY_TYPE
from fakekernel.task import Creds
from uapi.bpf import FuncId, ProgType
from uapi.errno import Errno


class _Prog:
    def __init__(self, kern, prog_type):
        self.kern, self.type, self.expected_attach_type = kern, prog_type, 0
        self.aux = type("Aux", (), {})()


def test_protos_mirror_the_kernel_for_map_helpers():
    p = PROTOS[FuncId.map_lookup_elem]
    assert not p.gpl_only and p.ret_type == RetType.PTR_TO_MAP_VALUE_OR_NULL
    assert p.arg_types == (ArgType.CONST_MAP_PTR, ArgType.PTR_TO_MAP_KEY)
    assert PROTOS[FuncId.trace_printk].gpl_only


def test_every_runtime_helper_has_a_proto_and_the_rest_are_listed():
    assert set(HELPERS) <= set(PROTOS)
    assert UNIMPLEMENTED_AT_RUNTIME == frozenset(PROTOS) - frozenset(HELPERS)
    if UNIMPLEMENTED_AT_RUNTIME:
        with pytest.raises(HelperNotImplemented):
            helper_runtime(min(UNIMPLEMENTED_AT_RUNTIME))
    assert FuncId.skb_load_bytes not in UNIMPLEMENTED_AT_RUNTIME


@pytest.mark.parametrize("prog_type,func_id,allowed", [
    (ProgType.SOCKET_FILTER, FuncId.ktime_get_coarse_ns, True),     # libbpf's memcg probe
    (ProgType.SOCKET_FILTER, FuncId.xdp_adjust_head, False),
    (ProgType.XDP, FuncId.xdp_adjust_head, True),
    (ProgType.SCHED_CLS, FuncId.redirect, True),
    (ProgType.TRACEPOINT, FuncId.probe_read_kernel, True),          # libbpf's probe_read_kernel probe
    (ProgType.KPROBE, FuncId.ktime_get_coarse_ns, False),
    (ProgType.CGROUP_SKB, FuncId.get_local_storage, True),
])
def test_get_func_proto_sets(prog_type, func_id, allowed):
    k = Kernel()
    ops = VERIFIER_OPS_BY_TYPE[prog_type]
    assert (ops.get_func_proto(func_id, _Prog(k, prog_type)) is not None) == allowed


def test_base_func_proto_needs_perfmon_for_trace_printk():
    k = Kernel(creds=Creds(caps=frozenset()))
    ops = VERIFIER_OPS_BY_TYPE[ProgType.SOCKET_FILTER]
    prog = _Prog(k, ProgType.SOCKET_FILTER)
    assert ops.get_func_proto(FuncId.trace_printk, prog) is None
    assert ops.get_func_proto(FuncId.map_lookup_elem, prog) is not None


def _env(kern):
    return RunEnv(mem=kern.mem, kernel=kern)


def test_trace_printk_appends_the_message():
    k = Kernel()
    env = _env(k)
    fmt = k.mem.map_region(bytearray(b"x=%d s=%s %llx\n\0"), "stack", "fmt")
    s = k.mem.map_region(bytearray(b"hi\0"), "stack", "s")
    n = HELPERS[FuncId.trace_printk](env, fmt.base, fmt.size, (-5) & ((1 << 64) - 1), s.base, 255)
    assert k.trace_lines == ["x=-5 s=hi ff"]
    assert n == len("x=-5 s=hi ff\n")          # bstr_printf()'s length (measured on 6.18)


def test_trace_printk_refuses_bad_formats():
    k = Kernel()
    fmt = k.mem.map_region(bytearray(b"%d %d %d %d\0"), "stack", "fmt")
    assert HELPERS[FuncId.trace_printk](_env(k), fmt.base, fmt.size, 1, 2, 3) == neg_errno(Errno.EINVAL)
    nul = k.mem.map_region(bytearray(b"abc"), "stack", "nonul")
    assert HELPERS[FuncId.trace_printk](_env(k), nul.base, nul.size, 0, 0, 0) == neg_errno(Errno.EINVAL)
    assert k.trace_lines == []


def test_bstr_printf_widths_and_unknown_conversions():
    env = _env(Kernel())
    assert bstr_printf(env, b"[%5u|%-3x]", [7, 10, 0]) == "[    7|a  ]"
    assert bstr_printf(env, b"%q", [1, 2, 3]) is None


def test_probe_read_kernel_faults_give_efault_and_zeroes():
    k = Kernel()
    dst = k.mem.map_region(bytearray(b"\xff" * 8), "stack", "dst")
    src = k.mem.map_region(bytearray(b"abcdefgh"), "stack", "src")
    fn = HELPERS[FuncId.probe_read_kernel]
    assert fn(_env(k), dst.base, 8, src.base, 0, 0) == 0 and bytes(dst.buf) == b"abcdefgh"
    assert fn(_env(k), dst.base, 8, 0x1000, 0, 0) == neg_errno(Errno.ERANGE)     # a user address
    assert bytes(dst.buf) == bytes(8)
    dst.buf[:] = b"\xff" * 8
    assert fn(_env(k), dst.base, 8, 0xFFFF888000000000, 0, 0) == neg_errno(Errno.EFAULT)   # unmapped
    assert bytes(dst.buf) == bytes(8)


def test_current_task_helpers():
    k = Kernel()
    env = _env(k)
    t = k.current
    assert HELPERS[FuncId.get_current_pid_tgid](env, 0, 0, 0, 0, 0) == (t.tgid << 32) | t.pid
    buf = k.mem.map_region(bytearray(16), "stack", "comm")
    assert HELPERS[FuncId.get_current_comm](env, buf.base, 16, 0, 0, 0) == 0
    assert bytes(buf.buf).rstrip(b"\0") == t.comm.encode()
