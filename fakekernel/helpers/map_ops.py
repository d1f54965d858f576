"""Map helpers beyond lookup/update/delete — kernel/bpf/helpers.c (bpf_map_push_elem,
bpf_map_pop_elem, bpf_map_peek_elem) and kernel/bpf/core.c (bpf_tail_call's target pick).

Runtime functions ``fn(env, r1..r5) -> int``; the map comes from ``env.mem.object_at(r1)``.
A failing map op returns ``-errno`` to the program, as the kernel helpers do.
"""
from __future__ import annotations

from fakekernel.errors import KernelError
from fakekernel.helpers.base import neg_errno
from uapi.bpf import FuncId

__all__ = ["MAP_OPS_RUNTIME", "bpf_map_push_elem", "bpf_map_pop_elem", "bpf_map_peek_elem",
           "bpf_tail_call"]

U32_MASK = 0xFFFFFFFF


def bpf_map_push_elem(env, r1, r2, r3, r4, r5) -> int:
    bpf_map = env.mem.object_at(r1)
    value = env.mem.read(r2, bpf_map.value_size)
    try:
        bpf_map.map_push_elem(value, r3)
    except KernelError as e:
        return neg_errno(e.errno)
    return 0


def _pop_or_peek(env, r1, r2, op: str) -> int:
    """The op fills the value in place (a bloom filter's peek only reads it); queue/stack
    maps zero it when empty, so it is always written back."""
    bpf_map = env.mem.object_at(r1)
    value = bytearray(env.mem.read(r2, bpf_map.value_size))
    try:
        getattr(bpf_map, f"map_{op}_elem")(value)
        err = 0
    except KernelError as e:
        err = neg_errno(e.errno)
    env.mem.write(r2, bytes(value))
    return err


def bpf_map_pop_elem(env, r1, r2, r3, r4, r5) -> int:
    return _pop_or_peek(env, r1, r2, "pop")


def bpf_map_peek_elem(env, r1, r2, r3, r4, r5) -> int:
    return _pop_or_peek(env, r1, r2, "peek")


def bpf_tail_call(env, r1, r2, r3, r4, r5):
    """The interpreter's JMP_TAIL_CALL: r2 is the prog array, r3 the (u32) index.

    Returns a `TailCall`; the interpreter enforces MAX_TAIL_CALL_CNT and falls through
    (r0 unchanged) for an out-of-range index or an empty slot."""
    from fakekernel.bpf.core import _engine
    from fakekernel.interp.run import TailCall
    prog_array = env.mem.object_at(r2)
    index = r3 & U32_MASK
    if index >= prog_array.max_entries:
        return TailCall(None, in_range=False)
    prog = prog_array.tail_call_target(index)
    if prog is None:
        return TailCall(None)
    return TailCall(_engine(prog))          # the engine carries its prog (env.prog follows)


MAP_OPS_RUNTIME = {
    FuncId.tail_call: bpf_tail_call,
    FuncId.map_push_elem: bpf_map_push_elem,
    FuncId.map_pop_elem: bpf_map_pop_elem,
    FuncId.map_peek_elem: bpf_map_peek_elem,
}
