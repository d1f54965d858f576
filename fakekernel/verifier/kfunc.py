"""Kernel function calls at load time — kernel/bpf/verifier.c: add_kfunc_call(),
find_kfunc_desc_btf(), fetch_kfunc_meta() (the kfunc id set check).

add_subprog_and_kfunc() hands every ``call`` with src_reg BPF_PSEUDO_KFUNC_CALL to
`add_kfunc_call`, which resolves imm (a BTF id) and off (0: vmlinux, >0: an fd_array slot naming a
module BTF) to a FUNC of that BTF and records it in the prog's kfunc table
(``prog.aux.kfunc_tab``: btf id -> name).  `check_kfunc_allowed` is the first thing do_check asks
of such a call: whether the program's (resolved) type may call it at all.
"""
from __future__ import annotations

from uapi.btf import BtfKind
from uapi.errno import Errno
from uapi.bpf import BPF_CALL, BPF_JMP, BPF_PSEUDO_KFUNC_CALL, ProgType

__all__ = ["add_kfunc_call", "check_kfunc_allowed", "MAX_KFUNC_DESCS"]

MAX_KFUNC_DESCS = 256            # include/linux/bpf.h


def _find_kfunc_desc_btf(env, offset: int):
    if offset < 0:
        raise env.reject(Errno.EINVAL, "negative offset disallowed for kernel module function call\n"
                                       "failed to find BTF for kernel function\n")
    if offset:
        # the emulated kernel has no modules: any fd_array slot names vmlinux or a program BTF
        if not getattr(env, "fd_array", 0):
            raise env.reject(Errno.EPROTO, "kfunc offset > 0 without fd_array is invalid\n"
                                           "failed to find BTF for kernel function\n")
        raise env.reject(Errno.EINVAL, "BTF fd for kfunc is not a module BTF\n"
                                       "failed to find BTF for kernel function\n")
    return env.kern.btf_vmlinux


def add_kfunc_call(env, func_id: int, offset: int) -> None:
    prog = env.prog
    tab = prog.aux.kfunc_tab
    if not tab and not prog.gpl_compatible:
        raise env.reject(Errno.EINVAL, "cannot call kernel function from non-GPL compatible program\n")
    if not func_id and not offset:
        return                        # refused later, unless dead code elimination drops it
    btf = _find_kfunc_desc_btf(env, offset)
    if func_id in tab:
        return
    if len(tab) == MAX_KFUNC_DESCS:
        raise env.reject(Errno.E2BIG, "too many different kernel function calls\n")
    from fakekernel.btf_vmlinux import btf_index      # (btf_env imports the verifier's log)
    idx = btf_index(btf)
    func = idx.type_by_id(func_id) if func_id >= 0 else None
    if func is None or func.kind != BtfKind.FUNC:
        raise env.reject(Errno.EINVAL, f"kernel btf_id {func_id & 0xFFFFFFFF} is not a function\n")
    proto = idx.type_by_id(func.type)
    if proto is None or proto.kind != BtfKind.FUNC_PROTO:
        raise env.reject(Errno.EINVAL, f"kernel function btf_id {func_id} does not have a valid func_proto\n")
    tab[func_id] = idx.name_of(func_id).decode()


def check_kfunc_allowed(env, state, insn) -> str:
    """fetch_kfunc_meta()'s set check; the kfunc's name for the caller."""
    name = env.prog.aux.kfunc_tab.get(insn.imm)
    if name is None:
        raise env.fail(state, Errno.EFAULT, "verifier internal error: kernel function descriptor not found\n")
    prog = env.prog
    ptype = prog.type
    if ptype == ProgType.EXT and prog.aux.dst_prog is not None:      # resolve_prog_type()
        ptype = prog.aux.dst_prog.type
    from fakekernel.kfuncs import kfunc_allowed
    if not kfunc_allowed(ptype, name):
        raise env.fail(state, Errno.EACCES, f"calling kernel function {name} is not allowed\n")
    return name


def fixup_kfunc_calls(env) -> int:
    """fixup_kfunc_call() for a call the walk left in place with imm 0: 0 or -EINVAL's errno."""
    for insn, aux in zip(env.insns, env.aux):
        if insn.code == BPF_JMP | BPF_CALL and insn.src_reg == BPF_PSEUDO_KFUNC_CALL and not insn.imm and aux.seen:
            env.verbose("invalid kernel function call not eliminated in verifier pass\n")
            return Errno.EINVAL
    return 0
