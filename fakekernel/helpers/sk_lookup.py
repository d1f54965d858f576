"""The sk_lookup run ctx and bpf_sk_assign for sk_lookup programs — net/core/filter.c
(struct bpf_sk_lookup_kern, bpf_sk_lookup_assign)."""
from __future__ import annotations

import attrs

from fakekernel.helpers.base import neg_errno
from uapi.bpf import BPF_SK_LOOKUP_F_NO_REUSEPORT, BPF_SK_LOOKUP_F_REPLACE, FuncId
from uapi.errno import Errno

__all__ = ["SkLookupKern", "bpf_sk_lookup_assign", "SK_LOOKUP_RUNTIME"]

_ASSIGN_FLAGS = int(BPF_SK_LOOKUP_F_REPLACE | BPF_SK_LOOKUP_F_NO_REUSEPORT)


@attrs.define(eq=False)
class SkLookupKern:
    """struct bpf_sk_lookup_kern: what the helpers see of a lookup."""

    family: int
    protocol: int
    selected_sk: object = None
    no_reuseport: bool = False


def _not_modelled():
    from fakekernel.helpers import HelperNotImplemented
    return HelperNotImplemented(FuncId.sk_assign)


def bpf_sk_lookup_assign(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sk_assign() of sk_lookup programs: select `sk` (NULL: none) for this lookup."""
    ctx = env.ctx
    if not isinstance(ctx, SkLookupKern):
        raise _not_modelled()        # the tc flavour (bpf_sk_assign on an skb) is not written yet
    if r3 & ~_ASSIGN_FLAGS:
        return neg_errno(Errno.EINVAL)
    if ctx.selected_sk is not None and not r3 & BPF_SK_LOOKUP_F_REPLACE:
        return neg_errno(Errno.EEXIST)
    if r2:
        raise _not_modelled()        # a socket needs sockmap/sockhash lookups, not in this kernel yet
    ctx.selected_sk = None
    ctx.no_reuseport = bool(r3 & BPF_SK_LOOKUP_F_NO_REUSEPORT)
    return 0


SK_LOOKUP_RUNTIME = {FuncId.sk_assign: bpf_sk_lookup_assign}
