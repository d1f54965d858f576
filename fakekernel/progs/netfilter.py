"""BPF_PROG_TYPE_NETFILTER — net/netfilter/nf_bpf_link.c (netfilter_verifier_ops, bpf_nf_func_proto,
nf_is_valid_access) and kernel/bpf/verifier.c (its [NF_DROP, NF_ACCEPT] return range).

The ctx is ``struct bpf_nf_ctx``: two read-only u64 fields, ``state`` (a trusted BTF pointer to
``struct nf_hook_state``) and ``skb`` (to ``struct sk_buff``).  Both need vmlinux BTF.  At run
time fakekernel maps a real nf_hook_state (hook, pf; the devices as opaque non-NULL handles);
the kernel's ``struct sk_buff`` layout is not modelled, so the skb pointer is an opaque handle
too: reading through it faults loudly instead of inventing values.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers.base import bpf_base_func_proto
from fakekernel.helpers.proto import TypeFlag
from fakekernel.progs.ctx import BPF_WRITE, ctx_range
from fakekernel.verifier.regs import RegType
from uapi.bpf import FuncId
from uapi.ffi import ffi
from uapi.netfilter import NfVerdict

__all__ = ["VERIFIER_OPS", "NF_CTX", "NF_CTX_SIZE"]

NF_CTX = "struct bpf_nf_ctx"
NF_CTX_SIZE = ffi.sizeof(NF_CTX)
_SKB = ctx_range(NF_CTX, "skb")
_STATE = ctx_range(NF_CTX, "state")
_PTR = ffi.sizeof("void *")


def bpf_nf_func_proto(func_id: int, prog):
    if func_id == FuncId.perf_event_output:
        return None         # measured on 6.18: not in bpf_base_func_proto (fakekernel's base lists it)
    return bpf_base_func_proto(func_id, prog)


def _nf_ptr_to_btf_id(prog, info) -> bool:
    """nf_ptr_to_btf_id(): a trusted BTF pointer, if the kernel has BTF at all."""
    if prog.kern.btf_vmlinux is None:
        return False
    info.reg_type = RegType.PTR_TO_BTF_ID | TypeFlag.PTR_TRUSTED
    return True


def nf_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    if off < 0 or off >= NF_CTX_SIZE:
        return False
    if off % size != 0:
        return False
    if access == BPF_WRITE:
        return False
    if off in _SKB or off in _STATE:
        return size == _PTR and _nf_ptr_to_btf_id(prog, info)
    return False


def nf_ret_range(prog) -> tuple[int, int]:
    return NfVerdict.DROP, NfVerdict.ACCEPT


VERIFIER_OPS = VerifierOps(get_func_proto=bpf_nf_func_proto, is_valid_access=nf_is_valid_access,
                           ctx_size=NF_CTX_SIZE, kctx_size=NF_CTX_SIZE, get_ret_range=nf_ret_range)
