"""BPF_PROG_TYPE_EXT (freplace) — kernel/bpf/verifier.c (check_attach_btf_id: an extension
verifies with its target program's bpf_verifier_ops and expected_attach_type) and
kernel/trace/bpf_trace.c / kernel/bpf/trampoline.c (bpf_extension_verifier_ops).

The registered ops are only the placeholders bpf_types.h has for EXT: every EXT load needs
attach_prog_fd, and check_attach_btf_id replaces them with the target's before the program
is walked.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps

__all__ = ["VERIFIER_OPS"]


def _no_func_proto(func_id: int, prog):
    return None


def _no_ctx_access(off: int, size: int, access: int, prog, info) -> bool:
    return False


VERIFIER_OPS = VerifierOps(get_func_proto=_no_func_proto, is_valid_access=_no_ctx_access)
