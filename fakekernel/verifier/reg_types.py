"""Helper argument register types — kernel/bpf/verifier.c: compatible_reg_types[], check_reg_type,
process_spin_lock and process_timer_func.
"""
from __future__ import annotations

from fakekernel.helpers.proto import ArgType, TypeFlag, base_type
from fakekernel.verifier.env import GiveUp
from fakekernel.verifier.regs import RegType, reg_type_str
from uapi.errno import Errno
from uapi.insn import s64

__all__ = ["MEM_TYPES", "COMPATIBLE_REG_TYPES", "compatible_reg_types", "check_reg_type", "process_spin_lock",
           "process_timer_func"]

MEM_TYPES = (RegType.PTR_TO_STACK, RegType.PTR_TO_PACKET, RegType.PTR_TO_PACKET_META,
             RegType.PTR_TO_MAP_KEY, RegType.PTR_TO_MAP_VALUE, RegType.PTR_TO_MEM,
             RegType.PTR_TO_MEM | TypeFlag.MEM_RINGBUF, RegType.PTR_TO_BUF,
             RegType.PTR_TO_BTF_ID | TypeFlag.PTR_TRUSTED)
_SOCK_TYPES = (RegType.PTR_TO_SOCK_COMMON, RegType.PTR_TO_SOCKET, RegType.PTR_TO_TCP_SOCK, RegType.PTR_TO_XDP_SOCK)
_SCALAR_TYPES = (RegType.SCALAR_VALUE,)

#: compatible_reg_types[] (the arg types this pass checks)
COMPATIBLE_REG_TYPES = {
    ArgType.PTR_TO_MAP_KEY: MEM_TYPES,
    ArgType.PTR_TO_MAP_VALUE: MEM_TYPES,
    ArgType.CONST_MAP_PTR: (RegType.CONST_PTR_TO_MAP,),
    ArgType.PTR_TO_CTX: (RegType.PTR_TO_CTX,),
    ArgType.PTR_TO_SOCK_COMMON: _SOCK_TYPES,
    ArgType.PTR_TO_BTF_ID_SOCK_COMMON: _SOCK_TYPES + (RegType.PTR_TO_BTF_ID,
                                                      RegType.PTR_TO_BTF_ID | TypeFlag.PTR_TRUSTED),
    ArgType.PTR_TO_SOCKET: (RegType.PTR_TO_SOCKET,),
    ArgType.PTR_TO_RINGBUF_MEM: (RegType.PTR_TO_MEM | TypeFlag.MEM_RINGBUF,),
    ArgType.CONST_ALLOC_SIZE_OR_ZERO: _SCALAR_TYPES,
    ArgType.PTR_TO_FUNC: (RegType.PTR_TO_FUNC,),
    ArgType.PTR_TO_STACK: (RegType.PTR_TO_STACK,),
    ArgType.PTR_TO_CONST_STR: (RegType.PTR_TO_MAP_VALUE,),
}


def compatible_reg_types(arg_type: int):
    return COMPATIBLE_REG_TYPES.get(base_type(arg_type))


def check_reg_type(env, state, regno: int, arg_type: int) -> None:
    """check_reg_type() for the arg types in COMPATIBLE_REG_TYPES."""
    reg = state.regs[regno]
    t = reg.type
    if t == RegType.UNTRACKED:
        raise GiveUp("untracked register passed to a helper")
    if base_type(t) == RegType.PTR_TO_BTF_ID:
        raise GiveUp("BTF pointers as helper arguments are not modelled")
    if arg_type & TypeFlag.MEM_RDONLY:
        t &= ~TypeFlag.MEM_RDONLY
    if arg_type & TypeFlag.PTR_MAYBE_NULL:
        t &= ~TypeFlag.PTR_MAYBE_NULL
    compatible = COMPATIBLE_REG_TYPES[base_type(arg_type)]
    if t in compatible:
        return
    expected = ", ".join(reg_type_str(c) for c in compatible)
    raise env.fail(state, Errno.EACCES, f"R{regno} type={reg_type_str(reg.type)} expected={expected}\n")


def process_timer_func(env, state, regno: int):
    """check_reg_type() for ARG_PTR_TO_TIMER, then process_timer_func(): a map value pointer
    at the constant offset of the value's bpf_timer.  Returns the map (meta->map_ptr)."""
    reg = state.regs[regno]
    if reg.type == RegType.UNTRACKED:
        raise GiveUp("untracked register passed as a bpf_timer")
    if reg.type != RegType.PTR_TO_MAP_VALUE:
        raise env.fail(state, Errno.EACCES, f"R{regno} type={reg_type_str(reg.type)} expected=map_value\n")
    if not reg.var_off.is_const():
        raise env.fail(state, Errno.EINVAL, f"R{regno} doesn't have constant offset. bpf_timer has to be "
                                            f"at the constant offset\n")
    bpf_map = reg.map
    name = bpf_map.name.decode(errors="replace")
    if bpf_map.btf is None:
        raise env.fail(state, Errno.EINVAL, f"map '{name}' has to have BTF in order to use bpf_timer\n")
    record = getattr(bpf_map, "record", None)
    timer_off = None if record is None else record.timer_off
    if timer_off is None:
        raise env.fail(state, Errno.EINVAL, f"map '{name}' has no valid bpf_timer\n")
    off = s64(reg.var_off.value) + reg.off
    if off != timer_off:
        raise env.fail(state, Errno.EINVAL, f"off {off} doesn't point to 'struct bpf_timer' that is "
                                            f"at {timer_off}\n")
    return bpf_map


def process_spin_lock(env, state, regno: int, is_lock: bool) -> None:
    """check_reg_type() for ARG_PTR_TO_SPIN_LOCK, then process_spin_lock(): a map value
    pointer at the constant offset of the value's bpf_spin_lock; one lock held at a time."""
    reg = state.regs[regno]
    if reg.type == RegType.UNTRACKED:
        raise GiveUp("untracked register passed to bpf_spin_lock")
    if reg.type != RegType.PTR_TO_MAP_VALUE:
        raise env.fail(state, Errno.EACCES,
                       f"R{regno} type={reg_type_str(reg.type)} expected=map_value, ptr_\n")
    if not reg.var_off.is_const():
        raise env.fail(state, Errno.EINVAL, f"R{regno} doesn't have constant offset. bpf_spin_lock has "
                                            f"to be at the constant offset\n")
    bpf_map = reg.map
    name = bpf_map.name.decode(errors="replace")
    if bpf_map.btf is None:
        raise env.fail(state, Errno.EINVAL, f"map '{name}' has to have BTF in order to use bpf_spin_lock\n")
    lock_off = getattr(bpf_map, "spin_lock_off", None)
    if lock_off is None:
        raise env.fail(state, Errno.EINVAL, f"map '{name}' has no valid bpf_spin_lock\n")
    off = s64(reg.var_off.value) + reg.off
    if off != lock_off:
        raise env.fail(state, Errno.EINVAL, f"off {off} doesn't point to 'struct bpf_spin_lock' that is "
                                            f"at {lock_off}\n")
    if is_lock:
        if state.active_lock is not None:
            raise env.fail(state, Errno.EINVAL, "Locking two bpf_spin_locks are not allowed\n")
        state.active_lock = (bpf_map, reg.id)
        return
    if state.active_lock is None:
        raise env.fail(state, Errno.EINVAL, "bpf_spin_unlock without taking a lock\n")
    if state.active_lock[0] is not bpf_map or state.active_lock[1] != reg.id:
        raise env.fail(state, Errno.EINVAL, "bpf_spin_unlock of different lock\n")
    state.active_lock = None
