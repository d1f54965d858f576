"""BPF_PROG_TYPE_STRUCT_OPS — kernel/bpf/verifier.c check_struct_ops_btf_id(), kernel/bpf/bpf_struct_ops.c
(bpf_struct_ops_verifier_ops, bpf_struct_ops_supported) and the verifier ops of the registered
struct_ops (net/ipv4/bpf_tcp_ca.c bpf_tcp_ca_verifier_ops, net/bpf/bpf_dummy_struct_ops.c).

A struct_ops program implements one function-pointer member of a registered struct_ops type:
``attach_btf_id`` names the ops struct in the kernel's BTF (``struct tcp_congestion_ops``) and
``expected_attach_type`` is the member's index.  Load checks, in the kernel's order: a GPL
compatible licence, a registered struct, a member index in range, a function-pointer member,
one the type supports (has a CFI stub for) and accepts (check_member).  The program then sees
its ctx as the member's arguments (an u64 array, as fentry programs: btf_ctx_access()) and
the helper set of its struct_ops type.  Running struct_ops programs is not modelled.
"""
from __future__ import annotations

from fakekernel.bpf.ops import VerifierOps
from fakekernel.helpers import bpf_base_func_proto
from fakekernel.progs.tracing import TRACING_CTX_SIZE, bpf_tracing_ctx_access, btf_ctx_access
from uapi.btf import BtfKind
from uapi.bpf import FuncId
from uapi.errno import Errno

__all__ = ["VERIFIER_OPS", "check_struct_ops_btf_id", "bpf_struct_ops_test_run", "ST_OPS_VERIFIER_OPS", "UNSUPPORTED_MEMBERS"]

#: members without a CFI stub (bpf_struct_ops_supported(): ENOTSUPP), per struct_ops type
UNSUPPORTED_MEMBERS = {"tcp_congestion_ops": frozenset({b"get_info"})}
#: bpf_dummy_ops: only this member may be implemented by a sleepable program
_DUMMY_SLEEPABLE = b"test_sleepable"


def _tcp_ca_get_func_proto(func_id: int, prog):
    """bpf_tcp_ca_get_func_proto() for the helpers fakekernel knows; the base set otherwise."""
    from fakekernel.helpers import PROTOS
    if func_id in (FuncId.tcp_send_ack, FuncId.sk_storage_get, FuncId.sk_storage_delete,
                   FuncId.ktime_get_coarse_ns):
        return PROTOS.get(func_id)
    if func_id in (FuncId.setsockopt, FuncId.getsockopt):
        return None                         # bpf_sk_{set,get}sockopt protos are not modelled
    return bpf_base_func_proto(func_id, prog)


def _struct_ops_is_valid_access(off: int, size: int, access: int, prog, info) -> bool:
    """bpf_tracing_btf_ctx_access(): the member's arguments, read-only."""
    if not bpf_tracing_ctx_access(off, size, access):
        return False
    return btf_ctx_access(off, size, access, prog, info)


def _no_helpers(func_id: int, prog):
    return None


# st_ops->verifier_ops by struct name
ST_OPS_VERIFIER_OPS = {
    "tcp_congestion_ops": VerifierOps(get_func_proto=_tcp_ca_get_func_proto,
                                      is_valid_access=_struct_ops_is_valid_access,
                                      ctx_size=TRACING_CTX_SIZE, kctx_size=TRACING_CTX_SIZE),
    "bpf_dummy_ops": VerifierOps(get_func_proto=_no_helpers, is_valid_access=_struct_ops_is_valid_access,
                                 ctx_size=TRACING_CTX_SIZE, kctx_size=TRACING_CTX_SIZE),
}
# bpf_struct_ops_verifier_ops: empty until check_struct_ops_btf_id() installs the type's
VERIFIER_OPS = VerifierOps(get_func_proto=_no_helpers, is_valid_access=lambda *a: False)


def bpf_struct_ops_test_run(kern, task, prog, attr, ctx) -> int:
    """bpf_struct_ops_test_run(): only bpf_dummy_ops programs can be test-run (EOPNOTSUPP for
    the others); running them is not modelled (ENOTSUPP)."""
    from fakekernel.errors import KernelError
    tgt = prog.aux.attach_target
    if tgt is None or tgt.btf.name_of(tgt.btf_id) != b"bpf_dummy_ops":
        raise KernelError(Errno.EOPNOTSUPP, "only bpf_dummy_ops programs can be test-run")
    raise KernelError(Errno.ENOTSUPP, "running bpf_dummy_ops programs is not modelled")


def _fail(env, errno: int, line: str):
    from fakekernel.verifier.attach_btf import _fail as fail
    return fail(env, errno, line)


def check_struct_ops_btf_id(env) -> None:
    """check_struct_ops_btf_id(): resolve the member, set the ctx model and the type's ops."""
    from fakekernel.btf_vmlinux import btf_index
    from fakekernel.maps.struct_ops import struct_ops_table
    from fakekernel.verifier.attach_btf import AttachTarget
    prog = env.prog
    if not prog.gpl_compatible:
        raise _fail(env, Errno.EINVAL, "struct ops programs must have a GPL compatible license\n")
    btf_id = prog.aux.attach_btf_id
    btf = prog.aux.attach_btf
    if not btf_id or btf is None:
        raise _fail(env, Errno.ENOTSUPP, "")
    desc = next((d for d in struct_ops_table(btf.data).values() if d.type_id == btf_id), None)
    if desc is None:
        raise _fail(env, Errno.ENOTSUPP, f"attach_btf_id {btf_id} is not a supported struct\n")
    idx = prog.expected_attach_type
    ix = btf_index(btf)
    members = ix.members(desc.type_id)
    if idx >= len(members):
        raise _fail(env, Errno.EINVAL, f"attach to invalid member idx {idx} of struct {desc.name}\n")
    mname, mtype, _bit_off = members[idx]
    ptr, _ = ix.skip_modifiers(mtype)
    proto, proto_id = ix.skip_modifiers(ptr.type) if ptr is not None and ptr.kind == BtfKind.PTR \
        else (None, 0)
    name = mname.decode(errors="replace")
    if proto is None or proto.kind != BtfKind.FUNC_PROTO:
        raise _fail(env, Errno.EINVAL, f"attach to invalid member {name}(@idx {idx}) of struct {desc.name}\n")
    if mname in UNSUPPORTED_MEMBERS.get(desc.name, ()):
        raise _fail(env, Errno.ENOTSUPP, f"attach to unsupported member {name} of struct {desc.name}\n")
    if desc.name == "bpf_dummy_ops" and prog.aux.sleepable and mname != _DUMMY_SLEEPABLE:
        raise _fail(env, Errno.EINVAL, f"attach to unsupported member {name} of struct {desc.name}\n")
    model = ix.distill_func_proto(proto_id, mname)
    prog.aux.attach_target = AttachTarget(btf=ix, btf_id=btf_id, name=mname, proto_id=proto_id,
                                          fmodel=None if isinstance(model, bytes) else model)
    ops = ST_OPS_VERIFIER_OPS.get(desc.name)
    if ops is not None:
        env.ops = ops
