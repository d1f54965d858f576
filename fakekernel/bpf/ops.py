"""The per-type operation records — struct bpf_verifier_ops, struct bpf_prog_ops and the
BPF_PROG_TYPE() entry of include/linux/bpf_types.h."""
from __future__ import annotations

from typing import Callable

import attrs

__all__ = ["VerifierOps", "ProgOps", "ProgTypeDef"]


@attrs.frozen
class VerifierOps:
    """struct bpf_verifier_ops."""

    get_func_proto: Callable            # (func_id, prog) -> FuncProto | None
    is_valid_access: Callable           # (off, size, access_type, prog, info) -> bool
    convert_ctx_access: Callable | None = None   # rewrites ctx loads/stores (uapi -> kernel ctx)
    ctx_size: int = 0                   # sizeof the uapi ctx struct
    kctx_size: int = 0                  # sizeof the kernel-side ctx region the program runs on
    get_ret_range: Callable | None = None        # (prog) -> (lo, hi) or None


@attrs.frozen
class ProgOps:
    """struct bpf_prog_ops."""

    test_run: Callable | None = None    # (kern, task, prog, attr, ctx) -> int


@attrs.frozen
class ProgTypeDef:
    """BPF_PROG_TYPE(type, name, uapi ctx, kernel ctx)."""

    verifier_ops: VerifierOps
    prog_ops: ProgOps
    uapi_ctx: str
    kern_ctx: str
