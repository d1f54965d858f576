"""Pure-Python compiled tier — a BPF JIT (arch/*/net/bpf_jit_comp.c) whose target is Python bytecode.

The program becomes one generated Python function: registers are its local variables, each basic block
(:mod:`fakekernel.jit.cfg`) is straight-line code, and a binary tree of ``if pc < N`` tests dispatches
between blocks. Constant operands are folded at generation time, ``r10``-relative stack accesses with a
constant offset index typed views of the frame's stack directly, and every other access goes through a
one-region cache that falls back to :meth:`RunState.resolve` (which raises the interpreter's faults).
Instructions are counted per block and corrected at the instruction that ends a block early.
"""
from __future__ import annotations

from fakekernel.interp import InterpreterFault, alu
from fakekernel.interp.run import MAX_BPF_STACK, MAX_CALL_FRAMES
from fakekernel.jit.cfg import Op, Program
from fakekernel.jit.runtime import H_EXIT, NREGS, Engine, RunState
from uapi.bpf import (
    BPF_ADD,
    BPF_AND,
    BPF_ARSH,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_FETCH,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LOAD_ACQ,
    BPF_LSH,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_OR,
    BPF_RSH,
    BPF_STORE_REL,
    BPF_SUB,
    BPF_XCHG,
    BPF_XOR,
)

__all__ = ["PyEngine", "generate"]

GENERATOR_VERSION = 1

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
S64 = 1 << 63
S32 = 1 << 31
_REGS = ", ".join(f"r{i}" for i in range(NREGS))
_SAVED = ", ".join(f"r{i}" for i in range(1, 11))
_VIEW = {1: "stk", 2: "sh", 4: "si", 8: "sq"}
_ZERO_STACK = bytes(MAX_BPF_STACK)
_DEPTH_MSG = f"the call stack of {MAX_CALL_FRAMES} frames is too deep"
_NO_SKB_MSG = "LD_ABS/LD_IND without skb data"

_CMP = {BPF_JEQ: "==", BPF_JNE: "!=", BPF_JGT: ">", BPF_JGE: ">=", BPF_JLT: "<", BPF_JLE: "<=",
        BPF_JSGT: ">", BPF_JSGE: ">=", BPF_JSLT: "<", BPF_JSLE: "<="}
_SIGNED_CMP = (BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE)
_SIGNED_OPS = {(True, BPF_DIV): "_sdiv64", (True, BPF_MOD): "_smod64", (False, BPF_DIV): "_sdiv32",
               (False, BPF_MOD): "_smod32"}
_RMW_PY = {BPF_ADD: "+", BPF_AND: "&", BPF_OR: "|", BPF_XOR: "^"}


def _alu(op: Op) -> list[str]:
    d = f"r{op.dst}"
    mask = M64 if op.is64 else M32
    if op.signed:
        fn = _SIGNED_OPS[(op.is64, op.op)]
        return [f"{d} = {fn}({d}, {f'r{op.src}' if op.src is not None else op.k})"]
    o = op.op
    if op.src is None:
        k = op.k
        if not op.is64:
            k &= M32
        if o == BPF_MOV:
            return [f"{d} = {k}"]
        if o in (BPF_ADD, BPF_SUB, BPF_MUL):
            sym = {BPF_ADD: "+", BPF_SUB: "-", BPF_MUL: "*"}[o]
            return [f"{d} = ({d} {sym} {k}) & {mask}"]
        if o == BPF_DIV:
            return [f"{d} = {'0' if not k else f'({d} & {mask}) // {k}'}"]
        if o == BPF_MOD:
            return [f"{d} = ({d} & {mask}) % {k}" if k else f"{d} = {d} & {mask}"]
        if o == BPF_OR:
            return [f"{d} = ({d} | {k}) & {mask}" if not op.is64 else f"{d} = {d} | {k}"]
        if o == BPF_AND:
            return [f"{d} = {d} & {k}"]
        if o == BPF_XOR:
            return [f"{d} = ({d} ^ {k}) & {mask}" if not op.is64 else f"{d} = {d} ^ {k}"]
        sh = k & (63 if op.is64 else 31)
        if o == BPF_LSH:
            return [f"{d} = ({d} << {sh}) & {mask}"]
        if o == BPF_RSH:
            return [f"{d} = ({d} & {mask}) >> {sh}" if not op.is64 else f"{d} = {d} >> {sh}"]
        if o == BPF_ARSH:
            sign = S64 if op.is64 else S32
            return [f"{d} = (((({d} & {mask}) ^ {sign}) - {sign}) >> {sh}) & {mask}"]
        raise AssertionError(o)
    s = f"r{op.src}"
    if o == BPF_MOV:
        return [f"{d} = {s}" if op.is64 else f"{d} = {s} & {mask}"]
    if o in (BPF_ADD, BPF_SUB, BPF_MUL):
        sym = {BPF_ADD: "+", BPF_SUB: "-", BPF_MUL: "*"}[o]
        return [f"{d} = ({d} {sym} {s}) & {mask}"]
    if o == BPF_DIV:
        if op.is64:
            return [f"{d} = {d} // {s} if {s} else 0"]
        return [f"_b = {s} & {mask}", f"{d} = ({d} & {mask}) // _b if _b else 0"]
    if o == BPF_MOD:
        if op.is64:
            return [f"if {s}: {d} = {d} % {s}"]
        return [f"_b = {s} & {mask}", f"{d} = ({d} & {mask}) % _b if _b else {d} & {mask}"]
    if o == BPF_OR:
        return [f"{d} = {d} | {s}" if op.is64 else f"{d} = ({d} | {s}) & {mask}"]
    if o == BPF_AND:
        return [f"{d} = {d} & {s}" if op.is64 else f"{d} = {d} & {s} & {mask}"]
    if o == BPF_XOR:
        return [f"{d} = {d} ^ {s}" if op.is64 else f"{d} = ({d} ^ {s}) & {mask}"]
    bits = 63 if op.is64 else 31
    if o == BPF_LSH:
        return [f"{d} = ({d} << ({s} & {bits})) & {mask}"]
    if o == BPF_RSH:
        return [f"{d} = ({d} & {mask}) >> ({s} & {bits})"]
    if o == BPF_ARSH:
        sign = S64 if op.is64 else S32
        return [f"{d} = (((({d} & {mask}) ^ {sign}) - {sign}) >> ({s} & {bits})) & {mask}"]
    raise AssertionError(o)


def _cond(op: Op) -> str:
    d = f"r{op.dst}"
    mask = M64 if op.is64 else M32
    signed = op.op in _SIGNED_CMP
    sign = S64 if op.is64 else S32
    if op.src is None:
        k = op.k & mask
        if signed:
            k ^= sign
        rhs = str(k)
    else:
        s = f"r{op.src}" if op.is64 else f"(r{op.src} & {mask})"
        rhs = f"({s} ^ {sign})" if signed else s
    lhs = d if op.is64 else f"({d} & {mask})"
    if op.op == BPF_JSET:
        return f"{lhs} & {rhs}"
    if signed:
        lhs = f"({lhs} ^ {sign})"
    return f"{lhs} {_CMP[op.op]} {rhs}"


class _Gen:
    def __init__(self, prog: Program, max_loops: int) -> None:
        self.p = prog
        self.max_loops = max_loops
        self.static_stack = not prog.writes_r10

    def exit_code(self) -> list[str]:
        return [
            "if not frames:",
            "    _env.insn_count += n",
            "    return r0",
            f"{_SAVED}, loops, pc, stk, sh, si, sq = frames.pop()",
            "depth -= 1",
            "lz = 0",
            "continue",
        ]

    def mem_check(self, op: Op, base_reg: int, write: bool) -> list[str]:
        size = op.size
        lines = [f"ip = {op.idx}", f"_a = (r{base_reg} + {op.off}) & {M64}", "_o = _a - lb"]
        cond = f"_o < 0 or _o > lz - {size}" + (" or not lw" if write else "")
        lines.append(f"if {cond}:")
        lines.append(f"    lb, lz, lm, lw = _res(_a, {size}, {write}, depth)")
        lines.append("    _o = _a - lb")
        return lines

    @staticmethod
    def load_expr(view: str, o: str, size: int) -> str:
        return f"{view}[{o}]" if size == 1 else f"_fb({view}[{o}:{o} + {size}], 'little')"

    @staticmethod
    def store_stmt(view: str, o: str, size: int, value: str) -> str:
        mask = (1 << (8 * size)) - 1
        if size == 1:
            return f"{view}[{o}] = {value} & 255"
        return f"{view}[{o}:{o} + {size}] = ({value} & {mask}).to_bytes({size}, 'little')"

    def stack_slot(self, op: Op, reg: int) -> int | None:
        if self.static_stack and reg == 10 and -MAX_BPF_STACK <= op.off and op.off + op.size <= 0:
            return MAX_BPF_STACK + op.off
        return None

    def op_lines(self, op: Op) -> list[str]:
        k = op.kind
        d = f"r{op.dst}"
        if k == "alu":
            return _alu(op)
        if k == "neg":
            return [f"{d} = -{d} & {M64 if op.is64 else M32}"]
        if k == "end":
            bits = op.off
            mask = (1 << bits) - 1
            if not op.signed:
                return [f"{d} = {d} & {mask}"]
            return [f"{d} = _fb(({d} & {mask}).to_bytes({bits // 8}, 'little'), 'big')"]
        if k == "movsx":
            sign = 1 << (op.off - 1)
            return [f"{d} = (((r{op.src} & {(1 << op.off) - 1}) ^ {sign}) - {sign}) & {M64 if op.is64 else M32}"]
        if k == "ld_imm64":
            return [f"{d} = {op.k}"]
        if k == "ldx":
            slot = self.stack_slot(op, op.src)
            sign = 1 << (8 * op.size - 1)
            if slot is not None:
                if slot % op.size == 0:
                    expr = f"{_VIEW[op.size]}[{slot // op.size}]"
                else:
                    expr = self.load_expr("stk", str(slot), op.size)
                lines = [f"{d} = {expr}"]
            else:
                lines = self.mem_check(op, op.src, False) + [f"{d} = {self.load_expr('lm', '_o', op.size)}"]
            if op.signed:
                lines.append(f"{d} = (({d} ^ {sign}) - {sign}) & {M64}")
            return lines
        if k in ("st", "stx"):
            value = str(op.k) if k == "st" else f"r{op.src}"
            slot = self.stack_slot(op, op.dst)
            if slot is not None:
                if slot % op.size == 0:
                    mask = (1 << (8 * op.size)) - 1
                    v = str(op.k & mask) if k == "st" else (value if op.size == 8 else f"{value} & {mask}")
                    return [f"{_VIEW[op.size]}[{slot // op.size}] = {v}"]
                return [self.store_stmt("stk", str(slot), op.size, value)]
            return self.mem_check(op, op.dst, True) + [self.store_stmt("lm", "_o", op.size, value)]
        if k == "atomic":
            return self.atomic(op)
        if k == "ld_pkt":
            lines = [f"ip = {op.idx}", "if _skb is None:", f"    raise _IF(None, {_NO_SKB_MSG!r})"]
            lines.append(f"_t = (r{op.src} + {op.k}) & {M64}" if op.src is not None else f"_t = {op.k}")
            lines += ["r1 = r6", "r2 = _t", f"_v = _skb.load_be(_t, {op.size})", "if _v is None:", "    r0 = 0"]
            back = self.p.rem[op.idx] - 1
            if back:
                lines.append(f"    n -= {back}")
            lines += ["    " + s for s in self.exit_code()]
            lines.append("r0 = _v")
            return lines
        raise AssertionError(k)

    def atomic(self, op: Op) -> list[str]:
        imm, size = op.op, op.size
        d, s = op.dst, f"r{op.src}"
        if imm == BPF_LOAD_ACQ:
            return self.mem_check(op, op.src, False) + [f"r{d} = {self.load_expr('lm', '_o', size)}"]
        if imm == BPF_STORE_REL:
            return self.mem_check(op, d, True) + [self.store_stmt("lm", "_o", size, s)]
        mask = M64 if size == 8 else M32
        lines = self.mem_check(op, d, False)
        lines += ["if not lw:", f"    lb, lz, lm, lw = _res(_a, {size}, True, depth)"]
        lines.append(f"_old = {self.load_expr('lm', '_o', size)}")
        if imm == BPF_XCHG:
            lines += [self.store_stmt("lm", "_o", size, s), f"{s} = _old"]
        elif imm == BPF_CMPXCHG:
            lines += [f"if _old == r0 & {mask}:", "    " + self.store_stmt("lm", "_o", size, s), "r0 = _old"]
        else:
            sym = _RMW_PY[imm & ~BPF_FETCH]
            lines.append(self.store_stmt("lm", "_o", size, f"(_old {sym} {s})"))
            if imm & BPF_FETCH:
                lines.append(f"{s} = _old")
        return lines

    def terminator(self, op: Op) -> list[str]:
        k = op.kind
        if k == "ja":
            return [f"pc = {op.tgt}"]
        if k == "jmp":
            return [f"pc = {op.tgt} if {_cond(op)} else {op.nxt}"]
        if k == "may_goto":
            return ["if loops:", "    loops -= 1", f"    pc = {op.nxt}", "else:", f"    pc = {op.tgt}"]
        if k == "exit":
            return self.exit_code()
        if k in ("call", "callx"):
            fid = str(op.k) if k == "call" else f"r{op.dst}"
            lines = [f"ip = {op.idx}", f"_v = _helper({fid}, {k == 'callx'}, depth, r1, r2, r3, r4, r5)", "lz = 0",
                     "if _v.__class__ is int:", "    r0 = _v", "else:",
                     f"    _h, _v = _st.tail_call(_v, ({_REGS}), depth)", f"    if _h == {H_EXIT}:", "        r0 = _v"]
            lines += ["        " + s for s in self.exit_code()]
            return lines + [f"pc = {op.nxt}"]
        if k == "pcall":
            return [
                f"ip = {op.idx}",
                f"if depth + 1 >= {MAX_CALL_FRAMES}:",
                f"    raise _IF(None, {_DEPTH_MSG!r})",
                f"frames.append(({_SAVED}, loops, {op.nxt}, stk, sh, si, sq))",
                "depth += 1",
                "stk, sh, si, sq, r10 = _views(_st, depth)",
                "stk[:] = _ZERO",
                "r6 = r7 = r8 = r9 = 0",
                f"loops = {self.max_loops}",
                f"pc = {op.tgt}",
            ]
        if k == "fault":
            return [f"ip = {op.idx}", f"raise _IF(None, {op.message!r})"]
        raise AssertionError(k)

    def block(self, start: int) -> list[str]:
        p = self.p
        lines = [f"# block {start}", f"n += {p.block_len[start]}"]
        idx = start
        for _ in range(p.block_len[start]):
            op = p.ops[idx]
            if op.kind in ("ja", "jmp", "may_goto", "exit", "call", "callx", "pcall", "fault"):
                return lines + self.terminator(op)
            lines += self.op_lines(op)
            idx = op.nxt
        return lines + [f"pc = {idx}"]

    def tree(self, leaders: list[int], indent: str) -> list[str]:
        if len(leaders) == 1:
            return [indent + line for line in self.block(leaders[0])]
        mid = len(leaders) // 2
        return ([f"{indent}if pc < {leaders[mid]}:"] + self.tree(leaders[:mid], indent + "    ")
                + [f"{indent}else:"] + self.tree(leaders[mid:], indent + "    "))

    def source(self) -> str:
        head = [
            "def _prog(_st, _R, pc, depth):",
            f"    {_REGS} = _R",
            "    _env = _st.env",
            "    _helper = _st.call_helper",
            "    _res = _st.pyres",
            "    _skb = _st.skb",
            "    stk, sh, si, sq, _end = _views(_st, depth)",
            "    lb = lz = 0",
            "    lm = None",
            "    lw = False",
            f"    loops = {self.max_loops}",
            "    n = 0",
            "    ip = pc",
            "    frames = []",
            "    try:",
            "        while True:",
        ]
        tail = [
            "    except BaseException as e:",
            "        n -= _rem[ip] - _st.tail_counted",
            "        _st.tail_counted = 0",
            "        _env.insn_count += n",
            "        if isinstance(e, _IF):",
            "            if e.insn_idx is None:",
            "                e.insn_idx = ip",
            "            if e.registers is None:",
            f"                e.registers = [{_REGS}][:{NREGS - 1}]",
            "        else:",
            "            e.add_note(f'raised while executing insn {ip}')",
            "        raise",
        ]
        return "\n".join(head + self.tree(self.p.leaders, " " * 12) + tail) + "\n"


def generate(prog: Program, max_loops: int) -> str:
    return _Gen(prog, max_loops).source()


def _views(st: RunState, depth: int):
    cache = st.__dict__.setdefault("_pyviews", {})
    v = cache.get(depth)
    if v is None:
        region = st.stack(depth)
        buf = region.buf
        v = cache[depth] = (buf, buf.cast("H"), buf.cast("I"), buf.cast("Q"), region.end)
    return v


def _pyres(st: RunState):
    def res(addr: int, size: int, write: bool, depth: int):
        r = st.resolve(addr, size, write, depth)
        return r.base, r.size, r.buf, r.writable

    return res


_GLOBALS = {
    "_fb": int.from_bytes,
    "_IF": InterpreterFault,
    "_views": _views,
    "_ZERO": _ZERO_STACK,
    "_sdiv64": alu.ALU64_SIGNED_OPS[BPF_DIV],
    "_smod64": alu.ALU64_SIGNED_OPS[BPF_MOD],
    "_sdiv32": alu.ALU32_SIGNED_OPS[BPF_DIV],
    "_smod32": alu.ALU32_SIGNED_OPS[BPF_MOD],
}


class PyEngine(Engine):
    """The program as one generated Python function (no C compiler needed)."""

    tier = "python"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source = generate(self.program, self.max_loops)
        namespace = dict(_GLOBALS, _rem=self.program.rem)
        exec(compile(self.source, f"<bpf-jit {len(self.insns)} insns>", "exec"), namespace)
        self._fn = namespace["_prog"]

    def invoke(self, st: RunState, regs: list[int], entry: int, depth: int) -> int:
        if not hasattr(st, "pyres"):
            st.pyres = _pyres(st)
        return self._fn(st, regs, entry, depth)
