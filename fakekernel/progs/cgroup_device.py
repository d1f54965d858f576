"""BPF_PROG_TYPE_CGROUP_DEVICE — kernel/bpf/cgroup.c (cg_dev_verifier_ops: cgroup_dev_func_proto,
cgroup_dev_is_valid_access).

The program reads a ``struct bpf_cgroup_dev_ctx`` (``access_type`` = access << 16 | device
type, narrow loads allowed; ``major``, ``minor``), read-only.  1 allows the access, 0 refuses
it (EPERM).  Runs on the uapi struct, filled by `fakekernel.cgroup_dev`.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.cgroup_sock import EVENT_OUTPUT_DATA, cgroup_base_func_proto
from fakekernel.progs.ctx import BPF_WRITE, ctx_range, narrow_access_ok
from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["VERIFIER_OPS", "DEV_CTX", "DEV_CTX_SIZE"]

DEV_CTX = "struct bpf_cgroup_dev_ctx"
DEV_CTX_SIZE = ffi.sizeof(DEV_CTX)
_U32 = ffi.sizeof("__u32")
_ACCESS_TYPE = ctx_range(DEV_CTX, "access_type")


def cgroup_dev_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if access == BPF_WRITE:
        return False
    if off < 0 or off + size > DEV_CTX_SIZE or off % size:
        return False
    if off in _ACCESS_TYPE:
        info.ctx_field_size = _U32
        return narrow_access_ok(off, size, _U32)
    return size == _U32


_OWN = {FuncId.perf_event_output: lambda p: EVENT_OUTPUT_DATA}


def cgroup_dev_func_proto(func_id: int, prog):
    """cgroup_dev_func_proto()."""
    return cgroup_base_func_proto(func_id, prog, _OWN)


def _ret_range(prog) -> tuple[int, int]:
    return 0, 1


VERIFIER_OPS = VerifierOps(get_func_proto=cgroup_dev_func_proto, is_valid_access=cgroup_dev_is_valid_access,
                           ctx_size=DEV_CTX_SIZE, kctx_size=DEV_CTX_SIZE, get_ret_range=_ret_range)
