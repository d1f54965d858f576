"""THE registry of map, prog and link types — include/linux/bpf_types.h.

What is supported is readable here and only here.  A map or prog type that is absent
behaves as in a kernel built without it: MAP_CREATE / PROG_LOAD answer EINVAL.
Entries are added with explicit imports; nothing registers itself.
"""
from __future__ import annotations

from typing import Callable

import attrs

from fakekernel.maps import arraymap, hashtab
from uapi.bpf import MapType

__all__ = ["MAP_TYPES", "PROG_TYPES", "ProgTypeDef", "VerifierOps", "ProgOps",
           "NOT_IMPLEMENTED_MAP_TYPES", "NOT_IMPLEMENTED_PROG_TYPES"]


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


# Filled in below with explicit imports as types are implemented.
MAP_TYPES: dict = {
    MapType.ARRAY: arraymap.ArrayMap,
    MapType.HASH: hashtab.HtabMap,
}
PROG_TYPES: dict = {}
NOT_IMPLEMENTED_MAP_TYPES: frozenset = frozenset()
NOT_IMPLEMENTED_PROG_TYPES: frozenset = frozenset()
