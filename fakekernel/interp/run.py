"""Reference interpreter — kernel/bpf/core.c ___bpf_prog_run.

The kernel dispatches through a 256-entry jump table indexed by opcode. So does this module:
``_HANDLERS`` is built once at import and maps every opcode to a *binder*. When an
:class:`Interpreter` is built, each instruction goes through its binder once and becomes a small
closure with its operands already decoded. The run loop then only calls ``pc = ops[pc](regs, vm)``.
Opcodes that the kernel does not define, and defined opcodes with an operand encoding it does not
define, bind to a closure that raises :class:`InterpreterFault` if it is ever executed.

All arithmetic comes from :mod:`fakekernel.interp.alu`; all memory goes through
:class:`~fakekernel.interp.memory.AddressSpace`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from fakekernel.interp import alu
from fakekernel.interp.memory import AddressSpace, InterpreterFault, Region
from uapi.bpf import (
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ATOMIC,
    BPF_B,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_H,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JCOND,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LOAD_ACQ,
    BPF_MAY_GOTO,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_REG_0,
    BPF_REG_1,
    BPF_REG_2,
    BPF_REG_3,
    BPF_REG_4,
    BPF_REG_5,
    BPF_REG_6,
    BPF_REG_9,
    BPF_REG_10,
    BPF_ST,
    BPF_STORE_REL,
    BPF_STX,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    MAX_BPF_REG,
)
from uapi.insn import BPF_CLASS, BPF_MODE, BPF_OP, BPF_SIZE, BPF_SIZE_BYTES, BPF_SRC, Insn, s32, u32, u64

__all__ = [
    "Interpreter",
    "RunEnv",
    "SkbData",
    "TailCall",
    "HelperFn",
    "MAX_BPF_STACK",
    "MAX_CALL_FRAMES",
    "MAX_TAIL_CALL_CNT",
    "BPF_MAX_LOOPS",
    "SKF_NET_OFF",
    "SKF_LL_OFF",
]

MAX_BPF_STACK = 512  # include/linux/filter.h
MAX_CALL_FRAMES = 8  # include/linux/bpf_verifier.h
MAX_TAIL_CALL_CNT = 33  # include/linux/bpf.h
#: where a program's helper table keeps the kfunc with BTF id N: KFUNC_KEY_BASE + N (above every
#: helper id; imm is an s32)
KFUNC_KEY_BASE = 1 << 32
BPF_MAX_LOOPS = 8 * 1024 * 1024  # include/linux/bpf.h: may_goto budget per frame
# include/uapi/linux/filter.h (classic-BPF ABI, not part of the generated bpf.h constants)
SKF_NET_OFF = -0x100000
SKF_LL_OFF = -0x200000

def kernel_call(func_id: int):
    """A kernel function an inlined helper calls (map_gen_lookup), by its reserved call imm."""
    from fakekernel.verifier.misc_fixups import KERNEL_CALLS
    entry = KERNEL_CALLS.get(func_id)
    return entry[1] if entry is not None else None


_U64_MAX = alu.U64_MAX
_NREGS = MAX_BPF_REG + 1     # r0-r10 and BPF_REG_AX, the ctx rewrites' scratch register
_OPCODES = 1 << 8
_HALT = -1  # ops return this when the outermost frame exits
_LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW
_BITS_PER_BYTE = 8
_SWITCH = -2  # ... and this when the loop must reload vm.ops / vm.pc (tail call, cross-prog return)


@attrs.define(eq=False)
class RunEnv:
    """What a helper sees of the run (the ``struct bpf_run_ctx`` / current-task analogue)."""

    mem: AddressSpace
    prog: object = None
    kernel: object = None
    ctx: object = None
    insn_count: int = 0
    cpu: int = 0  # smp_processor_id() for the helpers that ask
    _vm: _Vm | None = attrs.field(default=None, init=False, repr=False)

    def call_subprog(self, insn_idx: int, *args: int) -> int:
        """Run the subprogram of the running program that starts at ``insn_idx`` as a callback
        (what bpf_loop, bpf_for_each_map_elem, timers do with a BPF_PSEUDO_FUNC pointer) in a
        new frame, with ``args`` in r1-r5; returns its r0."""
        if self._vm is None:
            raise RuntimeError("call_subprog outside of a program run")
        return self._vm.call_subprog(insn_idx, args)


HelperFn = Callable[[RunEnv, int, int, int, int, int], "int | TailCall"]


@attrs.frozen
class TailCall:
    """Returned by the bpf_tail_call helper instead of an int (the kernel's JMP_TAIL_CALL label).

    ``target`` is the program to continue with: an :class:`Interpreter`, or an object with an
    ``interpreter`` attribute (a BpfProg). ``target=None`` means the prog-array slot is empty;
    ``in_range=False`` means the index was out of range (not counted against MAX_TAIL_CALL_CNT).
    A tail call that does not happen leaves r0 unchanged and continues with the next insn.
    """

    target: object = None
    in_range: bool = True


@attrs.frozen
class SkbData:
    """Packet bytes for the legacy LD_ABS/LD_IND loads (skb->data with skb_headlen() == len)."""

    data: bytes
    network_offset: int = 0
    mac_offset: int | None = None

    def load_be(self, offset: int, size: int) -> int | None:
        """bpf_skb_load_helper_{8,16,32}(): big-endian load, None where the helper returns -EFAULT."""
        off = s32(offset)
        if off < 0:
            if off >= SKF_NET_OFF:
                off = off - SKF_NET_OFF + self.network_offset
            elif off >= SKF_LL_OFF and self.mac_offset is not None:
                off = off - SKF_LL_OFF + self.mac_offset
            else:
                return None
        if off < 0 or len(self.data) - off < size:
            return None
        return int.from_bytes(self.data[off : off + size], "big")


class _Vm:
    """Mutable state of one run, shared by the bound instruction closures."""

    __slots__ = (
        "mem",
        "env",
        "helpers",
        "ops",
        "interp",
        "pc",
        "frames",
        "loops",
        "stack",
        "tail_call_cnt",
        "skb",
        "floor",
        "limit",
    )

    def __init__(self, mem: AddressSpace, env: RunEnv, helpers: Mapping[int, HelperFn], interp: Interpreter):
        self.mem = mem
        self.env = env
        self.helpers = helpers
        self.interp = interp
        self.ops = interp._ops
        self.pc = 0
        self.frames: list[tuple] = []
        self.loops = interp.max_loops
        self.stack: Region | None = None
        self.tail_call_cnt = 0
        self.skb: SkbData | None = None
        self.floor = 0  # exiting the frame at this depth ends the (possibly nested) loop
        self.limit: int | None = None

    def new_stack(self) -> Region:
        return self.mem.map_region(bytearray(MAX_BPF_STACK), "stack", f"stack[{len(self.frames)}]")

    def exit_frame(self, regs: list[int]) -> int:
        """BPF_EXIT: leave the current frame; r0 carries the result, r1-r10 are the caller's again."""
        if len(self.frames) == self.floor:
            return _HALT
        saved, ret_pc, ops, interp, loops, stack = self.frames.pop()
        self.mem.unmap(self.stack)
        r0 = regs[BPF_REG_0]
        regs[:] = saved
        regs[BPF_REG_0] = r0
        self.stack = stack
        self.loops = loops
        if ops is self.ops:
            return ret_pc
        self.ops, self.interp, self.pc = ops, interp, ret_pc
        return _SWITCH

    def call_subprog(self, target: int, args: Sequence[int]) -> int:
        if not 0 <= target < len(self.interp.insns):
            raise InterpreterFault(None, f"callback target {target} is outside the program")
        if len(self.frames) + 1 >= MAX_CALL_FRAMES:
            raise InterpreterFault(None, f"the call stack of {MAX_CALL_FRAMES} frames is too deep")
        if len(args) > BPF_REG_5:
            raise ValueError("a callback takes at most five arguments")
        self.frames.append((None, None, self.ops, self.interp, self.loops, self.stack))
        outer_floor, self.floor = self.floor, len(self.frames)
        self.stack = self.new_stack()
        self.loops = self.interp.max_loops
        regs = [0] * _NREGS
        for reg, value in enumerate(args, start=BPF_REG_1):
            regs[reg] = u64(value)
        regs[BPF_REG_10] = self.stack.end
        try:
            _execute(self, regs, target)
        finally:
            while len(self.frames) > self.floor:  # a fault deeper down: drop the nested frames
                self.mem.unmap(self.stack)
                self.stack = self.frames.pop()[-1]
            self.mem.unmap(self.stack)
            _, _, self.ops, self.interp, self.loops, self.stack = self.frames.pop()
            self.floor = outer_floor
        return regs[BPF_REG_0]

    def tail_call(self, tc: TailCall, nxt: int) -> int:
        if not tc.in_range or self.tail_call_cnt >= MAX_TAIL_CALL_CNT:
            return nxt
        self.tail_call_cnt += 1
        if tc.target is None:
            return nxt
        target = tc.target if isinstance(tc.target, Interpreter) else tc.target.interpreter
        self.env.prog = target.prog if target.prog is not None else tc.target
        self.ops, self.interp, self.pc = target._ops, target, 0
        self.loops = target.max_loops
        return _SWITCH


Op = Callable[[list, _Vm], int]


class Interpreter:
    """One program, decoded once, runnable many times.

    ``insns`` are final: LD_IMM64 pseudo sources have been resolved by the loader, so every
    LD_IMM64 is just a 64-bit constant. ``callx`` enables the uBPF ``call %reg`` extension
    (BPF_JMP | BPF_CALL | BPF_X, helper id in dst_reg), which Linux does not define; it exists for
    the conformance suite.
    """

    def __init__(
        self,
        insns: Sequence[Insn],
        *,
        prog: object = None,
        callx: bool = False,
        max_loops: int = BPF_MAX_LOOPS,
    ) -> None:
        self.insns = list(insns)
        self.prog = prog
        self.callx = callx
        self.max_loops = max_loops
        self._ops: list[Op] = []
        second_half = False
        for idx, insn in enumerate(self.insns):
            binder = _bind_ld_imm64_second_half if second_half else _HANDLERS[insn.code]
            self._ops.append(binder(self, idx, insn))
            second_half = not second_half and insn.code == _LD_IMM64
        # falling off the end is a verifier bug, not an IndexError
        self._ops.append(_fault_op(len(self.insns), "fell off the end of the program"))

    def run(
        self,
        mem: AddressSpace,
        r1: int,
        *,
        helpers: Mapping[int, HelperFn],
        env: RunEnv,
        skb_data: bytes | SkbData | None = None,
        max_insns: int | None = None,
        extra_args: Sequence[int] = (),
        entry: int = 0,
    ) -> int:
        """Run from insn ``entry`` (0: the main program; a subprogram for a timer callback)
        with ``r1`` as the argument; returns r0 (u64).

        ``extra_args`` seed r2.. for entry points that take more than the ctx (the conformance
        suite passes the memory length in r2); all other registers start at 0.

        ``max_insns`` (optional) turns a run longer than that many instructions into a fault.
        Exceptions raised by helpers propagate unchanged (after the run is torn down).
        """
        if env.mem is not mem:
            raise ValueError("env.mem must be the address space the program runs in")
        vm = _Vm(mem, env, helpers, self)
        if skb_data is not None:
            vm.skb = skb_data if isinstance(skb_data, SkbData) else SkbData(bytes(skb_data))
        vm.stack = vm.new_stack()
        regs = [0] * _NREGS
        regs[BPF_REG_1] = u64(r1)
        if len(extra_args) > BPF_REG_5 - BPF_REG_1:
            raise ValueError("at most four extra arguments (r2-r5)")
        for reg, value in enumerate(extra_args, start=BPF_REG_2):
            regs[reg] = u64(value)
        regs[BPF_REG_10] = vm.stack.end
        vm.limit = max_insns
        env._vm, outer_vm = vm, env._vm
        try:
            _execute(vm, regs, entry)
        finally:
            env._vm = outer_vm
            while vm.frames:
                mem.unmap(vm.stack)
                vm.stack = vm.frames.pop()[-1]
            mem.unmap(vm.stack)
        return regs[BPF_REG_0]


def _execute(vm: _Vm, regs: list[int], pc: int) -> None:
    """The fetch/dispatch loop: run until the frame at ``vm.floor`` exits."""
    ops = vm.ops
    limit = vm.limit
    n = 0
    try:
        if limit is None:
            while True:
                pc = ops[pc](regs, vm)
                n += 1
                if pc < 0:
                    if pc == _HALT:
                        return
                    ops, pc = vm.ops, vm.pc
        else:
            while True:
                if n >= limit:
                    raise InterpreterFault(None, f"instruction limit {limit} reached")
                pc = ops[pc](regs, vm)
                n += 1
                if pc < 0:
                    if pc == _HALT:
                        return
                    ops, pc = vm.ops, vm.pc
    except InterpreterFault as fault:
        if fault.insn_idx is None:
            fault.insn_idx = pc
        if fault.registers is None:
            fault.registers = list(regs[:MAX_BPF_REG])      # the program's r0-r10
        raise
    except Exception as exc:
        exc.add_note(f"raised while executing insn {pc}")
        raise
    finally:
        vm.env.insn_count += n


# --- binders: (interp, idx, insn) -> op ---------------------------------------------------------------


def _fault_op(idx: int, message: str) -> Op:
    def op(regs: list, vm: _Vm) -> int:
        raise InterpreterFault(idx, message)

    return op


def _bind_invalid(interp: Interpreter, idx: int, insn: Insn) -> Op:
    """The kernel's default_label: an opcode ___bpf_prog_run does not know."""
    return _fault_op(idx, f"unknown opcode 0x{insn.code:02x}")


def _bad_encoding(idx: int, insn: Insn, why: str) -> Op:
    return _fault_op(idx, f"invalid encoding of opcode 0x{insn.code:02x}: {why}")


def _jump_target(interp: Interpreter, idx: int, disp: int) -> int | None:
    target = idx + disp + 1
    return target if 0 <= target < len(interp.insns) else None


def _bind_alu(interp: Interpreter, idx: int, insn: Insn) -> Op:
    is64 = BPF_CLASS(insn.code) == BPF_ALU64
    opcode = BPF_OP(insn.code)
    dst, src, off, nxt = insn.dst_reg, insn.src_reg, insn.off, idx + 1
    use_reg = BPF_SRC(insn.code) == BPF_X
    if opcode == BPF_MOV and off != 0:
        widths = alu.MOVSX64_WIDTHS if is64 else alu.MOVSX32_WIDTHS
        if not use_reg or off not in widths:
            return _bad_encoding(idx, insn, f"mov with off={off}")
        movsx = alu.movsx64 if is64 else alu.movsx32

        def op(regs: list, vm: _Vm) -> int:
            regs[dst] = movsx(regs[src], off)
            return nxt

        return op
    if off == 0:
        f = (alu.ALU64_OPS if is64 else alu.ALU32_OPS)[opcode]
    elif off == 1 and opcode in (BPF_DIV, BPF_MOD):
        f = (alu.ALU64_SIGNED_OPS if is64 else alu.ALU32_SIGNED_OPS)[opcode]
    else:
        return _bad_encoding(idx, insn, f"off={off}")
    if use_reg:

        def op(regs: list, vm: _Vm) -> int:
            regs[dst] = f(regs[dst], regs[src])
            return nxt

        return op
    k = u64(insn.imm)  # imm is sign-extended to 64 bits; 32-bit ops only look at the low half

    def op(regs: list, vm: _Vm) -> int:
        regs[dst] = f(regs[dst], k)
        return nxt

    return op


def _bind_neg(interp: Interpreter, idx: int, insn: Insn) -> Op:
    neg = alu.neg64 if BPF_CLASS(insn.code) == BPF_ALU64 else alu.neg32
    dst, nxt = insn.dst_reg, idx + 1

    def op(regs: list, vm: _Vm) -> int:
        regs[dst] = neg(regs[dst])
        return nxt

    return op


def _bind_end(interp: Interpreter, idx: int, insn: Insn) -> Op:
    bits = insn.imm
    if bits not in alu.ENDIAN_WIDTHS:
        return _bad_encoding(idx, insn, f"byte-order width {bits}")
    if BPF_CLASS(insn.code) == BPF_ALU64:
        conv = alu.bswap  # only BPF_TO_LE is bound for ALU64 (see _build_table)
    else:
        conv = alu.to_be if BPF_SRC(insn.code) == BPF_TO_BE else alu.to_le
    dst, nxt = insn.dst_reg, idx + 1

    def op(regs: list, vm: _Vm) -> int:
        regs[dst] = conv(regs[dst], bits)
        return nxt

    return op


def _bind_jmp(interp: Interpreter, idx: int, insn: Insn) -> Op:
    conds = alu.JMP64_CONDS if BPF_CLASS(insn.code) == BPF_JMP else alu.JMP32_CONDS
    cond = conds[BPF_OP(insn.code)]
    tgt = _jump_target(interp, idx, insn.off)
    if tgt is None:
        return _bad_encoding(idx, insn, f"jump out of range (off={insn.off})")
    dst, src, nxt = insn.dst_reg, insn.src_reg, idx + 1
    if BPF_SRC(insn.code) == BPF_X:

        def op(regs: list, vm: _Vm) -> int:
            return tgt if cond(regs[dst], regs[src]) else nxt

        return op
    k = u64(insn.imm)

    def op(regs: list, vm: _Vm) -> int:
        return tgt if cond(regs[dst], k) else nxt

    return op


def _bind_ja(interp: Interpreter, idx: int, insn: Insn) -> Op:
    # BPF_JMP | BPF_JA uses off; BPF_JMP32 | BPF_JA ("gotol") uses the 32-bit imm
    disp = insn.off if BPF_CLASS(insn.code) == BPF_JMP else insn.imm
    tgt = _jump_target(interp, idx, disp)
    if tgt is None:
        return _bad_encoding(idx, insn, f"jump out of range ({disp:+d})")

    def op(regs: list, vm: _Vm) -> int:
        return tgt

    return op


def _bind_jcond(interp: Interpreter, idx: int, insn: Insn) -> Op:
    if insn.src_reg != BPF_MAY_GOTO:
        return _bad_encoding(idx, insn, f"conditional pseudo-jump {insn.src_reg}")
    tgt = _jump_target(interp, idx, insn.off)
    if tgt is None:
        return _bad_encoding(idx, insn, f"jump out of range (off={insn.off})")
    nxt = idx + 1

    def op(regs: list, vm: _Vm) -> int:
        # the verifier's rewrite: if (counter == 0) goto target; counter--
        left = vm.loops
        if not left:
            return tgt
        vm.loops = left - 1
        return nxt

    return op


def _bind_exit(interp: Interpreter, idx: int, insn: Insn) -> Op:
    def op(regs: list, vm: _Vm) -> int:
        return vm.exit_frame(regs)

    return op


def _helper_result(vm: _Vm, regs: list, ret: object, nxt: int, what: str) -> int:
    if isinstance(ret, int):
        regs[BPF_REG_0] = ret & _U64_MAX
        return nxt
    if isinstance(ret, TailCall):
        return vm.tail_call(ret, nxt)
    raise InterpreterFault(None, f"{what} returned {type(ret).__name__}, not int")


def _bind_call(interp: Interpreter, idx: int, insn: Insn) -> Op:
    nxt = idx + 1
    if BPF_SRC(insn.code) == BPF_X:
        if not interp.callx:
            return _bad_encoding(idx, insn, "callx is not part of the Linux ISA")
        dst = insn.dst_reg

        def op(regs: list, vm: _Vm) -> int:
            func_id = regs[dst]
            fn = vm.helpers.get(func_id)
            if fn is None:
                raise InterpreterFault(None, f"callx to unknown helper #{func_id}")
            ret = fn(vm.env, regs[BPF_REG_1], regs[BPF_REG_2], regs[BPF_REG_3], regs[BPF_REG_4], regs[BPF_REG_5])
            return _helper_result(vm, regs, ret, nxt, f"helper #{func_id}")

        return op
    if insn.src_reg == BPF_PSEUDO_CALL:
        return _bind_pseudo_call(interp, idx, insn)
    if insn.src_reg == BPF_PSEUDO_KFUNC_CALL:       # the helper table holds kfuncs by kfunc_key
        func_id, what = KFUNC_KEY_BASE + insn.imm, f"kernel function btf_id {insn.imm}"
    elif insn.src_reg != 0:
        return _bad_encoding(idx, insn, f"call with src_reg={insn.src_reg}")
    else:
        func_id, what = insn.imm, f"helper #{insn.imm}"

    def op(regs: list, vm: _Vm) -> int:
        fn = vm.helpers.get(func_id) or kernel_call(func_id)
        if fn is None:
            raise InterpreterFault(None, f"call to {what}, which is not in the helper table")
        ret = fn(vm.env, regs[BPF_REG_1], regs[BPF_REG_2], regs[BPF_REG_3], regs[BPF_REG_4], regs[BPF_REG_5])
        return _helper_result(vm, regs, ret, nxt, what)

    return op


def _bind_pseudo_call(interp: Interpreter, idx: int, insn: Insn) -> Op:
    tgt = _jump_target(interp, idx, insn.imm)
    if tgt is None:
        return _bad_encoding(idx, insn, f"call target out of range ({insn.imm:+d})")
    nxt = idx + 1
    callee_saved = range(BPF_REG_6, BPF_REG_9 + 1)

    def op(regs: list, vm: _Vm) -> int:
        if len(vm.frames) + 1 >= MAX_CALL_FRAMES:
            raise InterpreterFault(None, f"the call stack of {MAX_CALL_FRAMES} frames is too deep")
        vm.frames.append((regs[:], nxt, vm.ops, vm.interp, vm.loops, vm.stack))
        vm.stack = stack = vm.new_stack()
        vm.loops = vm.interp.max_loops
        for r in callee_saved:  # the callee's own r6-r9 start out undefined; make them 0
            regs[r] = 0
        regs[BPF_REG_10] = stack.end
        return tgt

    return op


def _bind_ld_imm64(interp: Interpreter, idx: int, insn: Insn) -> Op:
    if idx + 1 >= len(interp.insns):
        return _bad_encoding(idx, insn, "ld_imm64 without its second half")
    value = u32(insn.imm) | (u32(interp.insns[idx + 1].imm) << 32)
    if insn.src_reg == BPF_PSEUDO_FUNC:     # a callback: its insn index (what env.call_subprog takes)
        value = idx + 1 + s32(insn.imm)
    dst, nxt = insn.dst_reg, idx + 2

    def op(regs: list, vm: _Vm) -> int:
        regs[dst] = value
        return nxt

    return op


def _bind_ld_pkt(interp: Interpreter, idx: int, insn: Insn) -> Op:
    """LD_ABS / LD_IND as the verifier's bpf_gen_ld_abs() rewrite executes them."""
    size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
    indirect = BPF_MODE(insn.code) == BPF_IND
    src, k, nxt = insn.src_reg, u64(insn.imm), idx + 1
    add = alu.ALU64_OPS[BPF_ADD]

    def op(regs: list, vm: _Vm) -> int:
        skb = vm.skb
        if skb is None:
            raise InterpreterFault(None, "LD_ABS/LD_IND without skb data")
        offset = add(regs[src], k) if indirect else k
        regs[BPF_REG_1] = regs[BPF_REG_6]  # the rewrite passes the ctx (r6) and offset (r2)
        regs[BPF_REG_2] = offset
        value = skb.load_be(offset, size)
        if value is None:  # out of bounds: the program returns 0 from this frame
            regs[BPF_REG_0] = 0
            return vm.exit_frame(regs)
        regs[BPF_REG_0] = value
        return nxt

    return op


def _bind_ldx(interp: Interpreter, idx: int, insn: Insn) -> Op:
    size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
    dst, src, off, nxt = insn.dst_reg, insn.src_reg, u64(insn.off), idx + 1
    add = alu.ALU64_OPS[BPF_ADD]
    if BPF_MODE(insn.code) == BPF_MEMSX:
        bits = size * _BITS_PER_BYTE
        movsx = alu.movsx64

        def op(regs: list, vm: _Vm) -> int:
            regs[dst] = movsx(vm.mem.load(add(regs[src], off), size), bits)
            return nxt

        return op

    def op(regs: list, vm: _Vm) -> int:
        regs[dst] = vm.mem.load(add(regs[src], off), size)
        return nxt

    return op


def _bind_st(interp: Interpreter, idx: int, insn: Insn) -> Op:
    size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
    dst, off, k, nxt = insn.dst_reg, u64(insn.off), u64(insn.imm), idx + 1
    add = alu.ALU64_OPS[BPF_ADD]

    def op(regs: list, vm: _Vm) -> int:
        vm.mem.store(add(regs[dst], off), size, k)
        return nxt

    return op


def _bind_stx(interp: Interpreter, idx: int, insn: Insn) -> Op:
    size = BPF_SIZE_BYTES[BPF_SIZE(insn.code)]
    dst, src, off, nxt = insn.dst_reg, insn.src_reg, u64(insn.off), idx + 1
    add = alu.ALU64_OPS[BPF_ADD]

    def op(regs: list, vm: _Vm) -> int:
        vm.mem.store(add(regs[dst], off), size, regs[src])
        return nxt

    return op


_ATOMIC_RMW = (BPF_ADD, BPF_AND, BPF_OR, BPF_XOR)


def _bind_atomic(interp: Interpreter, idx: int, insn: Insn) -> Op:
    size_code = BPF_SIZE(insn.code)
    size = BPF_SIZE_BYTES[size_code]
    dst, src, off, nxt, imm = insn.dst_reg, insn.src_reg, u64(insn.off), idx + 1, insn.imm
    add = alu.ALU64_OPS[BPF_ADD]

    if imm == BPF_LOAD_ACQ:  # dst = *(size *)(src + off), zero-extended

        def op(regs: list, vm: _Vm) -> int:
            regs[dst] = vm.mem.load(add(regs[src], off), size)
            return nxt

        return op
    if imm == BPF_STORE_REL:  # *(size *)(dst + off) = src

        def op(regs: list, vm: _Vm) -> int:
            vm.mem.store(add(regs[dst], off), size, regs[src])
            return nxt

        return op
    if size_code not in (BPF_W, BPF_DW):
        return _bad_encoding(idx, insn, "read-modify-write atomics are 32 or 64 bit only")
    ops = alu.ALU64_OPS if size_code == BPF_DW else alu.ALU32_OPS
    narrow = alu.ALU32_OPS[BPF_MOV] if size_code == BPF_W else alu.ALU64_OPS[BPF_MOV]

    if imm == BPF_XCHG:

        def op(regs: list, vm: _Vm) -> int:
            addr = add(regs[dst], off)
            old = vm.mem.load(addr, size)
            vm.mem.store(addr, size, regs[src])
            regs[src] = old
            return nxt

        return op
    if imm == BPF_CMPXCHG:

        def op(regs: list, vm: _Vm) -> int:
            addr = add(regs[dst], off)
            old = vm.mem.load(addr, size)
            if old == narrow(0, regs[BPF_REG_0]):
                vm.mem.store(addr, size, regs[src])
            regs[BPF_REG_0] = old
            return nxt

        return op
    rmw = imm & ~BPF_FETCH
    if rmw not in _ATOMIC_RMW or imm & ~(rmw | BPF_FETCH):
        return _bad_encoding(idx, insn, f"atomic op imm=0x{u32(imm):x}")
    f = ops[rmw]
    if imm & BPF_FETCH:

        def op(regs: list, vm: _Vm) -> int:
            addr = add(regs[dst], off)
            old = vm.mem.load(addr, size)
            vm.mem.store(addr, size, f(old, regs[src]))
            regs[src] = old
            return nxt

        return op

    def op(regs: list, vm: _Vm) -> int:
        addr = add(regs[dst], off)
        vm.mem.store(addr, size, f(vm.mem.load(addr, size), regs[src]))
        return nxt

    return op


def _bind_ld_imm64_second_half(interp: Interpreter, idx: int, insn: Insn) -> Op:
    return _fault_op(idx, "executed the second half of an ld_imm64")


def _build_table() -> list[Callable[[Interpreter, int, Insn], Op]]:
    """The 256-slot opcode table (the kernel's ``jumptable``), built once at import."""
    table: list[Callable[[Interpreter, int, Insn], Op]] = [_bind_invalid] * _OPCODES
    sizes = (BPF_B, BPF_H, BPF_W, BPF_DW)
    for cls in (BPF_ALU, BPF_ALU64):
        for opcode in alu.ALU64_OPS:
            table[cls | opcode | BPF_K] = _bind_alu
            table[cls | opcode | BPF_X] = _bind_alu
        table[cls | BPF_NEG | BPF_K] = _bind_neg
    table[BPF_ALU | BPF_END | BPF_TO_LE] = _bind_end
    table[BPF_ALU | BPF_END | BPF_TO_BE] = _bind_end
    table[BPF_ALU64 | BPF_END | BPF_TO_LE] = _bind_end
    for cls in (BPF_JMP, BPF_JMP32):
        for opcode in alu.JMP64_CONDS:
            table[cls | opcode | BPF_K] = _bind_jmp
            table[cls | opcode | BPF_X] = _bind_jmp
        table[cls | BPF_JA] = _bind_ja
    table[BPF_JMP | BPF_JCOND] = _bind_jcond
    table[BPF_JMP | BPF_CALL] = _bind_call
    table[BPF_JMP | BPF_CALL | BPF_X] = _bind_call  # faults unless Interpreter(callx=True)
    table[BPF_JMP | BPF_EXIT] = _bind_exit
    table[BPF_LD | BPF_IMM | BPF_DW] = _bind_ld_imm64
    for size in sizes:
        table[BPF_LDX | BPF_MEM | size] = _bind_ldx
        table[BPF_ST | BPF_MEM | size] = _bind_st
        table[BPF_STX | BPF_MEM | size] = _bind_stx
        table[BPF_STX | BPF_ATOMIC | size] = _bind_atomic
    for size in (BPF_B, BPF_H, BPF_W):
        table[BPF_LDX | BPF_MEMSX | size] = _bind_ldx
        table[BPF_LD | BPF_ABS | size] = _bind_ld_pkt
        table[BPF_LD | BPF_IND | size] = _bind_ld_pkt
    return table


_HANDLERS = _build_table()
