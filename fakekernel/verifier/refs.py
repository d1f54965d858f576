"""Reference tracking — kernel/bpf/verifier.c: acquire_reference, release_reference,
is_acquire_function, is_ptr_cast_function, check_reference_leak and check_resource_leak.

Linux 6.18 keeps the acquired references in the verifier state (not per frame): every state
print of every frame shows ``refs=``, and only an exit of frame 0 checks for leaks.  A pointer
that carries a reference has ``ref_obj_id``; releasing it invalidates every copy of it.
"""
from __future__ import annotations

from fakekernel.helpers.proto import ArgType, RetType, TypeFlag, base_type, type_flags
from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.regs import Reg, RegType
from uapi.asm import func_id_name
from uapi.bpf import FuncId, MapType
from uapi.errno import Errno

__all__ = ["acquire_reference", "release_reference", "is_acquire_function", "is_ptr_cast_function",
           "check_resource_leak", "ref_ids", "CallArgMeta", "check_release_arg_off", "ret_ptr_reg", "set_ret_ref"]

_ACQUIRE_FUNCS = frozenset({FuncId.sk_lookup_tcp, FuncId.sk_lookup_udp, FuncId.skc_lookup_tcp,
                            FuncId.ringbuf_reserve, FuncId.kptr_xchg})
_SOCK_MAPS = frozenset({MapType.SOCKMAP, MapType.SOCKHASH})
#: is_ptr_cast_function(): the result carries the argument's reference
_PTR_CAST_FUNCS = frozenset({FuncId.tcp_sock, FuncId.sk_fullsock, FuncId.skc_to_tcp_sock,
                             FuncId.skc_to_tcp6_sock, FuncId.skc_to_udp6_sock, FuncId.skc_to_mptcp_sock,
                             FuncId.skc_to_tcp_timewait_sock, FuncId.skc_to_tcp_request_sock})


def is_acquire_function(func_id: int, bpf_map) -> bool:
    if func_id in _ACQUIRE_FUNCS:
        return True
    return func_id == FuncId.map_lookup_elem and bpf_map is not None and bpf_map.map_type in _SOCK_MAPS


def is_ptr_cast_function(func_id: int) -> bool:
    return func_id in _PTR_CAST_FUNCS


def ref_ids(state) -> list[int]:
    return [r[0] for r in state.refs]


def acquire_reference(env, state, insn_idx: int) -> int:
    """acquire_reference(): a new id remembered with the insn that took it."""
    ref_id = env.new_id()
    state.refs.append((ref_id, insn_idx))
    return ref_id


def release_reference_nomark(state, ref_obj_id: int) -> bool:
    for i, (ref_id, _) in enumerate(state.refs):
        if ref_id == ref_obj_id:
            del state.refs[i]
            return True
    return False


def release_reference(env, state, ref_obj_id: int, func_id: int) -> None:
    """release_reference(): drop the reference and invalidate every pointer carrying it."""
    if not release_reference_nomark(state, ref_obj_id):
        raise env.fail(state, Errno.EINVAL, f"func {func_id_name(func_id)}#{func_id} reference has not been "
                                            f"acquired before\n")
    for f in state.frame:               # mark_reg_invalid()
        for i, r in enumerate(f.regs):
            if r.ref_obj_id == ref_obj_id:
                f.regs[i] = Reg.unknown() if env.allow_ptr_leaks else Reg(RegType.NOT_INIT)
        for slot in f.stack.values():
            if slot.spilled is not None and slot.spilled.ref_obj_id == ref_obj_id:
                slot.spilled = Reg.unknown() if env.allow_ptr_leaks else Reg(RegType.NOT_INIT)


def check_resource_leak(env, state, check_lock: bool, prefix: str) -> None:
    """check_resource_leak() (6.18): a held lock, then unreleased references of frame 0."""
    if check_lock and state.active_lock is not None:
        raise env.fail(state, Errno.EINVAL, f"{prefix} cannot be used inside bpf_spin_lock-ed region\n")
    if state.curframe or not state.refs:
        return
    if not state.sure:
        raise env.fail(state, Errno.EINVAL, "")
    for ref_id, insn_idx in state.refs:
        env.verbose(f"Unreleased reference id={ref_id} alloc_insn={insn_idx}\n")
    raise env.fail(state, Errno.EINVAL, f"{prefix} would lead to reference leak\n")


class CallArgMeta:
    """The reference part of struct bpf_call_arg_meta."""

    __slots__ = ("release_regno", "ref_obj_id", "mem_size")

    def __init__(self):
        self.release_regno = 0
        self.ref_obj_id = 0
        self.mem_size = 0

    def note_arg(self, env, state, regno: int, arg_type: int, is_null: bool) -> None:
        """check_func_arg() after the type check: release argument, carried reference, alloc size."""
        reg = state.regs[regno]
        if arg_type & TypeFlag.OBJ_RELEASE and base_type(arg_type) != ArgType.PTR_TO_DYNPTR:
            if not reg.ref_obj_id and not is_null:
                raise env.fail(state, Errno.EINVAL, f"R{regno} must be referenced when passed to release "
                                                    f"function\n")
            self.release_regno = regno
        if reg.ref_obj_id and base_type(arg_type) != ArgType.KPTR_XCHG_DEST:
            if self.ref_obj_id:
                raise env.fail(state, Errno.EFAULT, f"verifier internal error: more than one arg with ref_obj_id "
                                                    f"R{regno} {reg.ref_obj_id} {self.ref_obj_id}\n")
            self.ref_obj_id = reg.ref_obj_id
        if base_type(arg_type) == ArgType.CONST_ALLOC_SIZE_OR_ZERO:
            if reg.type != RegType.SCALAR_VALUE or not reg.exact:
                raise GiveUp("allocation size not modelled")
            if not reg.var_off.is_const():
                raise env.fail(state, Errno.EACCES, f"R{regno} is not a known constant'\n")
            self.mem_size = reg.const_value

    def release(self, env, state, func_id: int) -> None:
        """check_helper_call(): release the reference the release argument carries."""
        if base_type(state.regs[self.release_regno].type) == RegType.PTR_TO_BTF_ID:
            raise GiveUp("releasing BTF pointers is not modelled")
        if self.ref_obj_id:
            release_reference(env, state, self.ref_obj_id, func_id)
            return
        reg = state.regs[self.release_regno]
        if not (reg.is_const() and reg.const_value == 0):
            raise env.fail(state, Errno.EINVAL, f"func {func_id_name(func_id)}#{func_id} reference has not been "
                                                f"acquired before\n")


def check_release_arg_off(env, state, regno: int) -> None:
    """check_func_arg_reg_off() for a release argument: the pointer as it was acquired."""
    reg = state.regs[regno]
    if not reg.var_off.is_const():
        raise GiveUp("variable offset of a released pointer")
    if reg.off:
        raise env.fail(state, Errno.EINVAL, f"R{regno} must have zero offset when passed to release func or "
                                            f"trusted arg to kfunc\n")


_RET_PTR_TYPES = {
    RetType.PTR_TO_SOCKET: RegType.PTR_TO_SOCKET,
    RetType.PTR_TO_SOCK_COMMON: RegType.PTR_TO_SOCK_COMMON,
    RetType.PTR_TO_TCP_SOCK: RegType.PTR_TO_TCP_SOCK,
    RetType.PTR_TO_MEM: RegType.PTR_TO_MEM,
}


def ret_ptr_reg(env, ret: int, meta: CallArgMeta) -> Reg:
    """check_helper_call()'s R0 for the socket and memory return types (others: untracked)."""
    base = _RET_PTR_TYPES.get(base_type(ret))
    flags = type_flags(ret)
    if base is None or (base == RegType.PTR_TO_MEM and flags & ~(TypeFlag.MEM_RINGBUF | TypeFlag.PTR_MAYBE_NULL)) \
            or (base == RegType.PTR_TO_MEM and not flags & TypeFlag.MEM_RINGBUF):
        return Reg(RegType.UNTRACKED)
    r0 = Reg.ptr(base | flags)
    if base == RegType.PTR_TO_MEM:
        r0.mem_size = meta.mem_size
    if flags & TypeFlag.PTR_MAYBE_NULL:
        r0.id = env.new_id()
    return r0


def set_ret_ref(env, state, func_id: int, bpf_map, meta: CallArgMeta) -> None:
    """The reference R0 carries: a cast keeps the argument's, an acquire takes a new one."""
    r0 = state.regs[0]
    if is_ptr_cast_function(func_id):
        r0.ref_obj_id = meta.ref_obj_id
    elif is_acquire_function(func_id, bpf_map):
        if r0.type == RegType.UNTRACKED or func_id == FuncId.map_lookup_elem:
            raise GiveUp("acquired pointer not modelled")
        ref_id = acquire_reference(env, state, env.insn_idx)
        r0.id = ref_id
        r0.ref_obj_id = ref_id
