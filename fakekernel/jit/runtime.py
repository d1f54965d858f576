"""What compiled code calls back into — the runtime half of a BPF JIT (kernel/bpf/core.c's
bpf_prog_run glue, the tail-call and bpf-to-bpf frame rules of ___bpf_prog_run).

An :class:`Engine` is one program compiled for one tier. A run creates a :class:`RunState` that owns
what the kernel would keep per invocation: the stack frames (real regions of the run's
:class:`~fakekernel.interp.memory.AddressSpace`, one per call depth, mapped for the duration of the run),
the tail-call counter, the pending exception of a callback into Python, and the ``RunEnv._vm`` hook
that helpers use for ``env.call_subprog``. Helpers, their ``RunEnv`` and every fault message are the
reference interpreter's, so a program behaves the same whichever engine runs it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from fakekernel.interp import AddressSpace, Interpreter, InterpreterFault, Region, RunEnv, SkbData, TailCall
from fakekernel.interp.run import MAX_BPF_STACK, MAX_CALL_FRAMES, MAX_TAIL_CALL_CNT, BPF_MAX_LOOPS, kernel_call
from fakekernel.jit.cfg import Program, analyze
from uapi.bpf import BPF_REG_1, BPF_REG_2, BPF_REG_5, BPF_REG_10
from uapi.insn import Insn, u64

__all__ = ["Engine", "RunState", "H_SET", "H_KEEP", "H_EXIT", "H_ERROR", "NREGS"]

NREGS = BPF_REG_10 + 2      # r0-r10 and BPF_REG_AX (include/linux/filter.h)
_U64_MAX = (1 << 64) - 1

# how a helper call ends (what the compiled code does next)
H_SET = 0  # r0 = value, continue (what the compiled code assumes unless told otherwise)
H_KEEP = 1  # a tail call that did not happen: r0 unchanged, continue
H_EXIT = 2  # a tail call that happened: its r0 is this frame's result
H_ERROR = 3  # an exception is pending in the RunState


class Engine:
    """A program compiled once and run many times; ``run`` has :meth:`Interpreter.run`'s signature."""

    tier = "abstract"

    def __init__(self, insns: Sequence[Insn], *, prog: object = None, callx: bool = False,
                 max_loops: int = BPF_MAX_LOOPS, extra_entries: Sequence[int] = ()) -> None:
        self.insns = list(insns)
        self.prog = prog
        self.callx = callx
        self.max_loops = max_loops
        self.program: Program = analyze(self.insns, extra_entries, callx=callx)
        self._interpreter: Interpreter | None = None
        self._entry_variants: dict[int, Engine] = {}

    @property
    def interpreter(self) -> Interpreter:
        """The reference interpreter for the same instructions (tail-call compatibility, max_insns)."""
        if self._interpreter is None:
            self._interpreter = Interpreter(self.insns, prog=self.prog, callx=self.callx, max_loops=self.max_loops)
        return self._interpreter

    # --- tier interface ----------------------------------------------------------------------------

    def invoke(self, st: RunState, regs: list[int], entry: int, depth: int) -> int:
        """Run from ``entry`` in frame ``depth`` with ``regs``; return r0 or raise."""
        raise NotImplementedError

    def invoke_repeat(self, st: RunState, regs: list[int], n: int) -> int:
        r0 = 0
        for _ in range(n):
            st.reset_for_repeat()
            r0 = self.invoke(st, list(regs), 0, 0)
        return r0

    def with_entry(self, entry: int) -> Engine:
        """The same program compiled with one more entry point (a callback target)."""
        eng = self._entry_variants.get(entry)
        if eng is None:
            eng = type(self)(self.insns, prog=self.prog, callx=self.callx, max_loops=self.max_loops,
                             extra_entries=[*self.program.entries, entry])
            self._entry_variants[entry] = eng
        return eng

    def for_tail_call(self, target: object) -> tuple[Engine, object]:
        """(engine of this tier, env.prog) for a TailCall target: an Engine, an Interpreter, or an
        object (a BpfProg) with an ``engine`` or ``interpreter`` attribute. Compiled on first use."""
        obj = target
        if not isinstance(obj, (Interpreter, Engine)):
            eng = getattr(target, "engine", None)
            obj = eng if isinstance(eng, (Interpreter, Engine)) else getattr(target, "interpreter", None)
        if not isinstance(obj, (Interpreter, Engine)):
            raise InterpreterFault(None, f"tail call target {target!r} has no program")
        prog = obj.prog if obj.prog is not None else target
        if type(obj) is type(self):
            return obj, prog
        cache = _tail_cache(obj)
        eng = cache.get(type(self))
        if eng is None:
            eng = cache[type(self)] = type(self)(obj.insns, prog=obj.prog, callx=obj.callx, max_loops=obj.max_loops)
        return eng, prog

    # --- public ------------------------------------------------------------------------------------

    def run(self, mem: AddressSpace, r1: int, *, helpers: Mapping, env: RunEnv,
            skb_data: bytes | SkbData | None = None, max_insns: int | None = None,
            extra_args: Sequence[int] = (), entry: int = 0) -> int:
        """Run from insn 0 with ``r1`` as the argument; returns r0 (u64). See :meth:`Interpreter.run`.

        A run with ``max_insns`` goes to the reference interpreter, which counts every instruction."""
        if max_insns is not None:
            return self.interpreter.run(mem, r1, helpers=helpers, env=env, skb_data=skb_data,
                                        max_insns=max_insns, extra_args=extra_args, entry=entry)
        return self.run_repeat(1, mem, r1, helpers=helpers, env=env, skb_data=skb_data, extra_args=extra_args,
                               entry=entry)

    def run_repeat(self, n: int, mem: AddressSpace, r1: int, *, helpers: Mapping, env: RunEnv,
                   skb_data: bytes | SkbData | None = None, extra_args: Sequence[int] = (),
                   entry: int = 0) -> int:
        """``n`` back-to-back runs on the same input (PROG_TEST_RUN's repeat); returns the last r0.

        Every run starts from a zeroed stack and the same registers, as ``n`` calls of :meth:`run`
        would; ``env.insn_count`` accumulates over all of them."""
        if env.mem is not mem:
            raise ValueError("env.mem must be the address space the program runs in")
        if len(extra_args) > BPF_REG_5 - BPF_REG_1:
            raise ValueError("at most four extra arguments (r2-r5)")
        if n < 1:
            raise ValueError("repeat count must be positive")
        if entry not in self.program.entries:   # a callback run from outside (a timer firing)
            return self.with_entry(entry).run_repeat(n, mem, r1, helpers=helpers, env=env, skb_data=skb_data,
                                                     extra_args=extra_args, entry=entry)
        st = RunState(self, mem, env, helpers, skb_data)
        regs = [0] * NREGS
        regs[BPF_REG_1] = u64(r1)
        for reg, value in enumerate(extra_args, start=BPF_REG_2):
            regs[reg] = u64(value)
        env._vm, outer_vm = st, env._vm
        try:
            regs[BPF_REG_10] = st.stack(0).end
            if n == 1:
                return self.invoke(st, regs, entry, 0)
            if entry:
                raise ValueError("a callback entry runs once per call")
            return self.invoke_repeat(st, regs, n)
        finally:
            env._vm = outer_vm
            st.teardown()


def _tail_cache(interp: object) -> dict:
    cache = getattr(interp, "_fk_jit_tail_engines", None)
    if cache is None:
        cache = {}
        try:
            interp._fk_jit_tail_engines = cache
        except AttributeError:
            pass
    return cache


class RunState:
    """Per-run state shared by every (nested) invocation of compiled code in one run."""

    def __init__(self, engine: Engine, mem: AddressSpace, env: RunEnv, helpers: Mapping,
                 skb_data: bytes | SkbData | None) -> None:
        self.engine = engine  # the program currently running in the innermost invocation
        self.mem = mem
        self.env = env
        self.helpers = helpers
        if skb_data is not None and not isinstance(skb_data, SkbData):
            skb_data = SkbData(bytes(skb_data))
        self.skb: SkbData | None = skb_data
        self.stacks: list[Region] = []  # one per call depth, mapped on first use
        self._stack_depth: dict[int, int] = {}  # region base -> depth
        self.tail_call_cnt = 0
        self.depth = 0  # frame depth of the helper call in progress
        self.pending: BaseException | None = None
        self.tail_counted = 0  # 1 when the pending exception escaped a tail-called program
        self.native = None  # the C tier's struct fk_run, created on first use
        self.native_stacks = 0  # how many of ``stacks`` the native struct knows
        self.keepalive: list = []  # cdata buffers the native struct points into
        self.release_hooks: list = []

    # --- stacks ------------------------------------------------------------------------------------

    def stack(self, depth: int) -> Region:
        """The stack region of frame ``depth`` (zeroed on every frame entry by the compiled code)."""
        while len(self.stacks) <= depth:
            d = len(self.stacks)
            region = self.mem.map_region(bytearray(MAX_BPF_STACK), "stack", f"stack[{d}]")
            self.stacks.append(region)
            self._stack_depth[region.base] = d
        return self.stacks[depth]

    def reset_for_repeat(self) -> None:
        self.tail_call_cnt = 0
        if self.stacks:
            self.stacks[0].buf[:] = bytes(MAX_BPF_STACK)

    def teardown(self) -> None:
        for hook in self.release_hooks:
            hook(self)
        self.release_hooks.clear()
        self.keepalive.clear()
        for region in reversed(self.stacks):
            self.mem.unmap(region)
        self.stacks.clear()

    # --- memory ------------------------------------------------------------------------------------

    def resolve(self, addr: int, size: int, write: bool, depth: int) -> Region:
        """The region a compiled access misses into; raises the interpreter's fault if there is none.

        Stacks of frames deeper than ``depth`` stay mapped for the run (they are reused by the next call
        at that depth) but are not reachable, as the interpreter unmaps them on return."""
        region = self.mem.region_at(addr)
        if region is None or addr + size > region.end or (write and not region.writable):
            self.mem.view(addr, size, write=write)  # raises exactly AddressSpace.load/store's fault
        d = self._stack_depth.get(region.base)
        if d is not None and d > depth:
            access = "write" if write else "read"
            raise InterpreterFault(None, f"invalid {access} of {size} bytes at 0x{addr:x}: no region mapped there")
        return region

    # --- helpers -----------------------------------------------------------------------------------

    def call_helper(self, func_id: int, callx: bool, depth: int, r1: int, r2: int, r3: int, r4: int,
                    r5: int) -> int | TailCall:
        """A helper call from compiled code: r0 (u64), or the TailCall the helper asked for (the tier
        then calls :meth:`tail_call` with its full register file). Exceptions propagate."""
        fn = self.helpers.get(func_id) or (None if callx else kernel_call(func_id))
        if fn is None:
            what = f"callx to unknown helper #{func_id}" if callx else \
                f"call to helper #{func_id}, which is not in the helper table"
            raise InterpreterFault(None, what)
        self.depth = depth
        ret = fn(self.env, r1, r2, r3, r4, r5)
        if isinstance(ret, int):
            return ret & _U64_MAX
        if isinstance(ret, TailCall):
            return ret
        raise InterpreterFault(None, f"helper #{func_id} returned {type(ret).__name__}, not int")

    def tail_call(self, tc: TailCall, regs: Sequence[int], depth: int) -> tuple[int, int]:
        """The kernel's JMP_TAIL_CALL: the target replaces the rest of the current frame."""
        if not tc.in_range or self.tail_call_cnt >= MAX_TAIL_CALL_CNT:
            return H_KEEP, 0
        self.tail_call_cnt += 1
        if tc.target is None:
            return H_KEEP, 0
        target, prog = self.engine.for_tail_call(tc.target)
        self.env.prog = prog
        outer, self.engine = self.engine, target
        try:
            r0 = target.invoke(self, list(regs), 0, depth)
        except BaseException:
            self.tail_counted = 1
            raise
        finally:
            self.engine = outer
        return H_EXIT, r0

    def call_subprog(self, target: int, args: Sequence[int]) -> int:
        """``env.call_subprog`` during a compiled run: a callback in a new frame."""
        eng = self.engine
        if not 0 <= target < len(eng.insns):
            raise InterpreterFault(None, f"callback target {target} is outside the program")
        depth = self.depth + 1
        if depth >= MAX_CALL_FRAMES:
            raise InterpreterFault(None, f"the call stack of {MAX_CALL_FRAMES} frames is too deep")
        if len(args) > BPF_REG_5:
            raise ValueError("a callback takes at most five arguments")
        if target not in eng.program.entries:
            eng = eng.with_entry(target)
        regs = [0] * NREGS
        for reg, value in enumerate(args, start=BPF_REG_1):
            regs[reg] = u64(value)
        stack = self.stack(depth)
        stack.buf[:] = bytes(MAX_BPF_STACK)
        regs[BPF_REG_10] = stack.end
        saved_depth, outer = self.depth, self.engine
        self.engine = eng
        try:
            return eng.invoke(self, regs, target, depth)
        finally:
            self.depth, self.engine = saved_depth, outer
