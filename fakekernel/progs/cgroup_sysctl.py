"""BPF_PROG_TYPE_CGROUP_SYSCTL — kernel/bpf/cgroup.c (cg_sysctl_verifier_ops: sysctl_func_proto,
sysctl_is_valid_access).

The program reads a ``struct bpf_sysctl`` (``write``: read-only; ``file_pos``: readable, and
writable with a 4-byte store) and reaches the name and the values through the sysctl helpers
(`fakekernel.helpers.sysctl`).  Runs on the uapi struct, filled by `fakekernel.cgroup_sysctl`.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import EVENT_OUTPUT_DATA, cgroup_base_func_proto
from fakekernel.helpers.sysctl import SYSCTL_PROTOS
from fakekernel.progs.ctx import BPF_READ, ctx_range, narrow_access_ok
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "SYSCTL", "SYSCTL_SIZE"]

SYSCTL = "struct bpf_sysctl"
SYSCTL_SIZE = ffi.sizeof(SYSCTL)
_U32 = ffi.sizeof("__u32")
_WRITE = ctx_range(SYSCTL, "write")
_FILE_POS = ctx_range(SYSCTL, "file_pos")


def sysctl_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off + size > SYSCTL_SIZE or off % size:
        return False
    if off in _WRITE:
        if access != BPF_READ:
            return False
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    if off in _FILE_POS:
        if access == BPF_READ:
            info.ctx_field_size = _U32
            return narrow_access_ok(off, size, _U32)
        return size == _U32
    return False


def _any(func_id: int):
    from fakekernel.helpers import PROTOS
    return PROTOS[func_id]


_OWN = {**{fid: (lambda p, fid=fid: SYSCTL_PROTOS[fid]) for fid in SYSCTL_PROTOS},
        FuncId.ktime_get_coarse_ns: lambda p: _any(FuncId.ktime_get_coarse_ns),
        FuncId.perf_event_output: lambda p: EVENT_OUTPUT_DATA}


def sysctl_func_proto(func_id: int, prog):
    """sysctl_func_proto()."""
    return cgroup_base_func_proto(func_id, prog, _OWN)


def _ret_range(prog) -> tuple[int, int]:
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=sysctl_func_proto, is_valid_access=sysctl_is_valid_access,
                           ctx_size=SYSCTL_SIZE, kctx_size=SYSCTL_SIZE, get_ret_range=_ret_range)
