"""BPF helpers — bpf_func_proto tables and runtime functions (kernel/bpf/helpers.c, bpf_trace.c, filter.c).

``PROTOS`` maps every helper id fakekernel knows to its `FuncProto`; the per-prog-type
``get_func_proto`` functions in `fakekernel.progs` decide which of them a type may call.
``HELPERS`` maps ids to runtime functions ``fn(env, r1, r2, r3, r4, r5) -> int``.  A helper
whose prototype exists but whose runtime does not yet is in ``UNIMPLEMENTED_AT_RUNTIME``:
the interpreter must raise `HelperNotImplemented` when a program calls one, never guess.
"""
from __future__ import annotations

from fakekernel.helpers.base import BASE_PROTOS, BASE_RUNTIME, bpf_base_func_proto, neg_errno
from fakekernel.helpers.callbacks import CALLBACKS_RUNTIME
from fakekernel.helpers.cgroup_sock import CGROUP_SOCK_PROTOS, CGROUP_SOCK_RUNTIME
from fakekernel.helpers.sysctl import SYSCTL_HELPERS_RUNTIME, SYSCTL_PROTOS as CG_SYSCTL_PROTOS
from fakekernel.helpers.dynptr import DYNPTR_RUNTIME
from fakekernel.helpers.fib import FIB_RUNTIME
from fakekernel.helpers.sk_lookup_family import SK_LOOKUP_FAMILY_RUNTIME
from fakekernel.helpers.tunnel import TUNNEL_RUNTIME
from fakekernel.helpers.sk_cgroup import SK_CGROUP_RUNTIME
from fakekernel.helpers.syncookies import SYNCOOKIES_RUNTIME
from fakekernel.helpers.local_storage import LOCAL_STORAGE_PROTOS, LOCAL_STORAGE_RUNTIME
from fakekernel.helpers.lwt import LWT_PROTOS, LWT_RUNTIME
from fakekernel.helpers.perf_prog import PERF_PROG_PROTOS, PERF_PROG_RUNTIME
from fakekernel.helpers.reuseport import REUSEPORT_PROTOS, REUSEPORT_RUNTIME
from fakekernel.helpers.map_ops import MAP_OPS_RUNTIME
from fakekernel.helpers.net import NET_PROTOS, NET_RUNTIME
from fakekernel.helpers.ringbuf import RINGBUF_RUNTIME
from fakekernel.helpers.redirect import REDIRECT_RUNTIME
from fakekernel.helpers.perf_output import PERF_OUTPUT_RUNTIME
from fakekernel.helpers.printf import PRINTF_RUNTIME
from fakekernel.helpers.strings import STRINGS_RUNTIME
from fakekernel.helpers.task import TASK_RUNTIME
from fakekernel.helpers.stack import STACK_RUNTIME
from fakekernel.helpers.perf_read import PERF_READ_RUNTIME
from fakekernel.helpers.ringbuf_dynptr import RINGBUF_DYNPTR_RUNTIME
from fakekernel.helpers.func_args import FUNC_ARGS_PROTOS, FUNC_ARGS_RUNTIME, PROBE_WRITE_USER_PROTO
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from fakekernel.helpers.seq import SEQ_PROTOS, SEQ_RUNTIME
from fakekernel.helpers.spin_lock import SPIN_LOCK_RUNTIME
from fakekernel.helpers.timer import TIMER_RUNTIME
from fakekernel.helpers.trace import TRACE_PROTOS, TRACE_RUNTIME, bpf_tracing_func_proto
from fakekernel.helpers.syscall import SYSCALL_PROTOS, SYSCALL_RUNTIME
from fakekernel.helpers.sk_lookup import SK_LOOKUP_RUNTIME
from fakekernel.helpers.sk_storage import SK_STORAGE_RUNTIME
from fakekernel.helpers.sock_cookie import SOCK_COOKIE_RUNTIME
from fakekernel.helpers.sock_map import SOCK_MAP_PROTOS, SOCK_MAP_RUNTIME
from uapi.asm import func_id_name

__all__ = ["PROTOS", "HELPERS", "UNIMPLEMENTED_AT_RUNTIME", "HelperNotImplemented", "FuncProto",
           "ArgType", "RetType", "TypeFlag", "bpf_base_func_proto", "bpf_tracing_func_proto",
           "neg_errno", "func_id_name", "helper_runtime"]

PROTOS: dict[int, FuncProto] = {**FUNC_ARGS_PROTOS, PROBE_WRITE_USER_PROTO.func: PROBE_WRITE_USER_PROTO,
                               **BASE_PROTOS, **TRACE_PROTOS, **NET_PROTOS, **SYSCALL_PROTOS, **SEQ_PROTOS,
                               **LOCAL_STORAGE_PROTOS, **SOCK_MAP_PROTOS, **LWT_PROTOS,
                               **PERF_PROG_PROTOS, **REUSEPORT_PROTOS,
                               **CGROUP_SOCK_PROTOS, **CG_SYSCTL_PROTOS}

HELPERS: dict = {**BASE_RUNTIME, **TRACE_RUNTIME, **SYSCALL_RUNTIME, **SK_LOOKUP_RUNTIME, **MAP_OPS_RUNTIME, **RINGBUF_RUNTIME, **NET_RUNTIME,
                 **PERF_OUTPUT_RUNTIME, **REDIRECT_RUNTIME, **SEQ_RUNTIME,
                 **LOCAL_STORAGE_RUNTIME, **CALLBACKS_RUNTIME, **DYNPTR_RUNTIME, **SPIN_LOCK_RUNTIME,
                 **SK_STORAGE_RUNTIME, **SOCK_MAP_RUNTIME, **SOCK_COOKIE_RUNTIME, **TIMER_RUNTIME, **LWT_RUNTIME, **REUSEPORT_RUNTIME, **PERF_PROG_RUNTIME,
                 **CGROUP_SOCK_RUNTIME, **SYSCTL_HELPERS_RUNTIME, **PRINTF_RUNTIME,
                 **STRINGS_RUNTIME, **TASK_RUNTIME,
                 **STACK_RUNTIME, **FUNC_ARGS_RUNTIME, **PERF_READ_RUNTIME, **RINGBUF_DYNPTR_RUNTIME, **FIB_RUNTIME,
                 **SK_LOOKUP_FAMILY_RUNTIME, **TUNNEL_RUNTIME,
                 **SK_CGROUP_RUNTIME, **SYNCOOKIES_RUNTIME}

#: helpers a program may be verified to call but that have no runtime function yet
UNIMPLEMENTED_AT_RUNTIME: frozenset = frozenset(PROTOS) - frozenset(HELPERS)


class HelperNotImplemented(Exception):
    """A program called a helper whose runtime is not written yet (an emulator gap, not an errno)."""

    def __init__(self, func_id: int):
        super().__init__(f"helper {func_id_name(func_id)}#{func_id} has no runtime implementation yet")
        self.func_id = func_id


def helper_runtime(func_id: int):
    """The runtime function for `func_id`; raises HelperNotImplemented for known-but-unwritten ones."""
    fn = HELPERS.get(func_id)
    if fn is None:
        raise HelperNotImplemented(func_id)
    return fn
