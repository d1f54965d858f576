"""Verifier environment and state — struct bpf_verifier_env, bpf_verifier_state, bpf_insn_aux_data.

`GiveUp` is this first pass's safety valve: raised where the kernel may know more than we do
(an imprecise scalar decides a branch, an untracked pointer is used, a budget runs out).
`bpf_check` then accepts the program and leaves safety to the run-time bounds checks, because a
false rejection is worse than a missed one.
"""
from __future__ import annotations

import attrs

from fakekernel.verifier.regs import Reg, RegType
from uapi.errno import Errno

__all__ = ["GiveUp", "VerifierError", "InsnAux", "StackSlot", "FuncState", "VerifierState", "Checkpoint", "VerifierEnv",
           "MAX_BPF_REG", "BPF_REG_FP", "BPF_REG_SIZE", "MAX_BPF_STACK", "BPF_COMPLEXITY_LIMIT_INSNS",
           "STACK_INVALID", "STACK_SPILL", "STACK_MISC", "STACK_ZERO"]

MAX_BPF_REG = 11
BPF_REG_FP = 10
BPF_REG_SIZE = 8
MAX_BPF_STACK = 512
BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000

# enum bpf_stack_slot_type, as print_verifier_state spells them
STACK_INVALID = "?"
STACK_SPILL = "r"
STACK_MISC = "m"
STACK_ZERO = "0"


class GiveUp(Exception):
    """This pass cannot decide as the kernel would: accept and rely on run-time checks."""


class VerifierError(Exception):
    """A rejection: errno plus the message already written to the log."""

    def __init__(self, errno: int, msg: str = ""):
        super().__init__(errno, msg)
        self.errno = errno
        self.msg = msg


@attrs.define
class InsnAux:
    """struct bpf_insn_aux_data (what this pass records per insn)."""

    seen: bool = False
    prune_point: bool = False
    jmp_point: bool = False
    ptr_type: int = 0                # the pointer type a load/store went through (PTR_TO_CTX ...)
    seen_ptr_type: int = 0           # the base register's type at the first walk (save_aux_ptr_type)
    ctx_field_size: int = 0
    map_index: int = -1
    map_off: int = 0
    calls_callback: bool = False     # a helper call that runs a callback (verified as a loop)
    force_checkpoint: bool = False
    states: list = attrs.field(factory=list)    # explored Checkpoints at this insn
    miss_cnt: int = 0


class StackSlot:
    """struct bpf_stack_state: eight slot types plus the spilled register."""

    __slots__ = ("slot_type", "spilled")

    def __init__(self):
        self.slot_type = [STACK_INVALID] * BPF_REG_SIZE
        self.spilled: Reg | None = None

    def copy(self) -> "StackSlot":
        s = StackSlot.__new__(StackSlot)
        s.slot_type = list(self.slot_type)
        s.spilled = self.spilled.copy() if self.spilled is not None else None
        return s


class FuncState:
    """struct bpf_func_state: one call frame's registers and stack."""

    __slots__ = ("regs", "stack", "allocated_stack", "frameno", "callsite", "subprogno", "in_callback_fn",
                 "callback_ret_range", "in_async_callback_fn", "callback_depth")

    def __init__(self, frameno: int = 0, callsite: int = -1, subprogno: int = 0):
        self.regs = [Reg() for _ in range(MAX_BPF_REG)]
        self.stack: dict[int, StackSlot] = {}
        self.allocated_stack = 0
        self.frameno = frameno
        self.callsite = callsite            # the call insn this frame returns to (+1)
        self.subprogno = subprogno
        self.in_callback_fn = False
        self.callback_ret_range = (0, 0)
        self.in_async_callback_fn = False
        self.callback_depth = 0

    def copy(self) -> "FuncState":
        f = FuncState.__new__(FuncState)
        f.regs = [r.copy() for r in self.regs]
        f.stack = {k: v.copy() for k, v in self.stack.items()}
        for k in ("allocated_stack", "frameno", "callsite", "subprogno", "in_callback_fn", "callback_ret_range",
                  "in_async_callback_fn", "callback_depth"):
            setattr(f, k, getattr(self, k))
        return f


class VerifierState:
    """struct bpf_verifier_state: the call frames (``frame[-1]`` is the current one, whose
    registers and stack ``regs``/``stack``/``allocated_stack`` give) and, as 6.18 keeps them
    here, the acquired references (``refs``: list of (id, alloc insn, callback frame))."""

    __slots__ = ("frame", "sure", "parent", "speculative", "active_lock", "refs", "callback_unroll_depth")

    def __init__(self):
        self.frame: list[FuncState] = [FuncState()]
        self.sure = True                # every branch decision so far matches the kernel's
        self.parent: Checkpoint | None = None
        self.speculative = False
        self.active_lock: tuple | None = None   # (map, reg id) of the held bpf_spin_lock
        self.refs: list[tuple] = []
        self.callback_unroll_depth = 0

    @property
    def curframe(self) -> int:
        return len(self.frame) - 1

    @property
    def cur(self) -> FuncState:
        return self.frame[-1]

    @property
    def regs(self) -> list:
        return self.frame[-1].regs

    @regs.setter
    def regs(self, value: list) -> None:
        self.frame[-1].regs = value

    @property
    def stack(self) -> dict:
        return self.frame[-1].stack

    @property
    def allocated_stack(self) -> int:
        return self.frame[-1].allocated_stack

    @allocated_stack.setter
    def allocated_stack(self, value: int) -> None:
        self.frame[-1].allocated_stack = value

    def all_regs(self):
        """bpf_for_each_reg_in_vstate(): every register and spilled register of every frame."""
        for f in self.frame:
            yield from f.regs
            for slot in f.stack.values():
                if slot.spilled is not None:
                    yield slot.spilled

    def copy(self) -> "VerifierState":
        s = VerifierState.__new__(VerifierState)
        s.frame = [f.copy() for f in self.frame]
        s.sure = self.sure
        s.parent = self.parent
        s.speculative = self.speculative
        s.active_lock = self.active_lock
        s.refs = list(self.refs)
        s.callback_unroll_depth = self.callback_unroll_depth
        return s


class Checkpoint:
    """An explored state at a prune point (struct bpf_verifier_state_list entry)."""

    __slots__ = ("state", "branches", "parent")

    def __init__(self, state: VerifierState, parent: "Checkpoint | None"):
        self.state = state
        self.branches = 1
        self.parent = parent


@attrs.define(eq=False)
class VerifierEnv:
    """struct bpf_verifier_env."""

    kern: object
    task: object
    prog: object
    log: object
    ops: object
    insns: list
    aux: list = attrs.field(factory=list)
    used_maps: list = attrs.field(factory=list)
    bpf_capable: bool = True
    allow_ptr_leaks: bool = True
    allow_uninit_stack: bool = True
    id_gen: int = 0
    insn_processed: int = 0
    jmps_processed: int = 0
    prev_jmps_processed: int = 0
    prev_insn_processed: int = 0
    prev_log_pos: int = 0
    prev_insn_print_pos: int = 0
    scratched_regs: set = attrs.field(factory=set)
    scratched_stack: set = attrs.field(factory=set)
    all_scratched: bool = True
    head: list = attrs.field(factory=list)      # the branch stack: (state, insn_idx, prev_idx, log_pos)
    total_states: int = 0
    peak_states: int = 0
    cur_states: int = 0
    max_states_per_insn: int = 0
    insn_idx: int = 0
    prev_insn_idx: int = -1
    live_in: list = attrs.field(factory=list)   # per insn: registers read before written
    stack_live_in: list = attrs.field(factory=list)   # per insn: may the stack be read later
    has_subprogs: bool = False
    stack_depth: int = 0                       # deepest stack byte used by the main program
    subprogs: list = attrs.field(factory=list)  # struct bpf_subprog_info (verifier.func_call.SubprogInfo)
    budget: int = 200_000                       # processed insns before this pass gives up

    def update_stack_depth(self, state, frameno: int, depth: int) -> None:
        """update_stack_depth(): the deepest byte a frame's subprog touches."""
        if state.frame[frameno].subprogno == 0:
            self.stack_depth = max(self.stack_depth, depth)
        if self.subprogs:
            sub = self.subprogs[state.frame[frameno].subprogno]
            sub.stack_depth = max(sub.stack_depth, depth)

    def verbose(self, text: str) -> None:
        self.log.write(text)

    def new_id(self) -> int:
        self.id_gen += 1
        return self.id_gen

    def mark_reg_scratched(self, regno: int) -> None:
        self.scratched_regs.add(regno)

    def mark_stack_slot_scratched(self, spi: int) -> None:
        self.scratched_stack.add(spi)

    def mark_all_scratched(self) -> None:
        self.all_scratched = True

    def state_scratched(self) -> bool:
        return self.all_scratched or bool(self.scratched_regs) or bool(self.scratched_stack)

    def clean(self) -> None:
        self.all_scratched = False
        self.scratched_regs.clear()
        self.scratched_stack.clear()

    def reject(self, errno: int, msg: str) -> VerifierError:
        """verbose(env, msg) and the error to raise (checks made before any path is walked)."""
        self.verbose(msg)
        return VerifierError(errno, msg)

    def fail(self, state, errno: int, msg: str) -> VerifierError:
        """A rejection found while walking ``state``'s path; gives up if the kernel may not walk it."""
        if not state.sure:
            raise GiveUp("error on a path the kernel may not explore")
        return self.reject(errno, msg)

    def check_reg_arg(self, state, regno: int, src: bool) -> None:
        """check_reg_arg(): SRC_OP needs an initialised register, DST_OP refuses the frame pointer."""
        if regno >= MAX_BPF_REG:
            raise self.fail(state, Errno.EINVAL, f"R{regno} is invalid\n")
        self.mark_reg_scratched(regno)
        if src:
            if state.regs[regno].type == RegType.NOT_INIT:
                raise self.fail(state, Errno.EACCES, f"R{regno} !read_ok\n")
            return
        if regno == BPF_REG_FP:
            raise self.fail(state, Errno.EACCES, "frame pointer is read only\n")
