"""Hypothesis strategies for random, verifier-friendly BPF programs (differential execution tests).

Each strategy draws a *recipe* and returns plain data the test turns into instructions; programs that
need a map fd are returned as ``build(map_fd) -> list[Insn]`` so each kernel gets its own fd.
The shapes are chosen so the real verifier accepts them (initialised registers, in-range shift
immediates, non-zero division immediates, forward-only jumps, initialised stack slots, bounds-checked
packet access, NULL-checked map values); ``broken`` variants inject one instruction the verifier
rejects, so the errno comparison is exercised too, at a low rate.
"""
from __future__ import annotations

from hypothesis import strategies as st

from uapi.bpf import (BPF_ADD, BPF_ALU64, BPF_AND, BPF_ARSH, BPF_B, BPF_CMPXCHG, BPF_DIV,
                      BPF_DW, BPF_FETCH, BPF_H, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT,
                      BPF_JNE, BPF_JSET, BPF_JSGE, BPF_JSGT, BPF_JSLE, BPF_JSLT, BPF_K, BPF_LSH, BPF_MOD,
                      BPF_MOV, BPF_MUL, BPF_NEG, BPF_OR, BPF_RSH, BPF_SUB, BPF_TO_BE, BPF_TO_LE, BPF_W,
                      BPF_X, BPF_XCHG, BPF_XOR, FuncId)
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU32_IMM, BPF_ALU32_IMM_OFF, BPF_ALU32_REG, BPF_ALU32_REG_OFF, BPF_ALU64_IMM,
                       BPF_ALU64_IMM_OFF, BPF_ALU64_REG, BPF_ALU64_REG_OFF, BPF_ATOMIC_OP, BPF_BSWAP,
                       BPF_CALL_HELPER, BPF_CALL_REL, BPF_ENDIAN, BPF_EXIT_INSN, BPF_JMP32_IMM, BPF_JMP32_REG, BPF_JMP_IMM,
                       BPF_JMP_REG, BPF_LD_IMM64, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_LDX_MEMSX, BPF_MOV32_REG,
                       BPF_MOV64_REG, BPF_MOVSX32_REG, BPF_MOVSX64_REG, BPF_ST_MEM, BPF_STX_MEM, Insn)

FP = 10                                  # the frame pointer
SIZES = (BPF_B, BPF_H, BPF_W, BPF_DW)
NBYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
SLOT = 8
STACK_SLOTS = 512 // SLOT                # offsets -8 .. -512
ALU_BIN = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR,
           BPF_MOV, BPF_ARSH)
SHIFTS = (BPF_LSH, BPF_RSH, BPF_ARSH)
DIVS = (BPF_DIV, BPF_MOD)
JCONDS = (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT,
          BPF_JSLE)
ATOMIC_OPS = (BPF_ADD, BPF_AND, BPF_OR, BPF_XOR, BPF_ADD | BPF_FETCH, BPF_AND | BPF_FETCH,
              BPF_OR | BPF_FETCH, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG)
MIX = 0x01000193                         # FNV prime: r0 = r0 * MIX ^ next, so positions matter
SIGNED = 1                               # off=1 selects sdiv/smod

_EDGE = (0, 1, 2, 3, 7, 31, 32, 63, 64, 0xFF, 0x7F, 0x80, 0xFFFF, 0x8000, 0x7FFFFFFF, 0x80000000,
         0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF,
         0xFFFFFFFF80000000, 0x123456789ABCDEF0)
u64s = st.one_of(st.sampled_from(_EDGE), st.integers(0, 2**64 - 1), st.integers(0, 70))
imm32 = st.one_of(st.sampled_from((0, 1, -1, 2, 31, 32, 63, 0x7FFFFFFF, -0x80000000, 0xFF, -2)),
                  st.integers(-2**31, 2**31 - 1))
nonzero_imm32 = imm32.filter(bool)


def init_regs(regs, values):
    return [BPF_LD_IMM64(r, v) for r, v in zip(regs, values)]


@st.composite
def alu_insn(draw, regs=tuple(range(10))):
    """One ALU/ALU64 instruction over scalar registers `regs` that the verifier accepts."""
    reg = st.sampled_from(regs)
    dst = draw(reg)
    is64 = draw(st.booleans())
    kind = draw(st.sampled_from(("bin", "bin", "bin", "bin", "sdiv", "neg", "movsx", "end", "bswap")))
    if kind == "bin":
        op = draw(st.sampled_from(ALU_BIN))
        if draw(st.booleans()):
            src = draw(reg)
            if op == BPF_MOV and not is64:
                return BPF_MOV32_REG(dst, src)
            return (BPF_ALU64_REG if is64 else BPF_ALU32_REG)(op, dst, src)
        if op in SHIFTS:
            imm = draw(st.integers(0, 63 if is64 else 31))
        elif op in DIVS:
            imm = draw(nonzero_imm32)
        else:
            imm = draw(imm32)
        return (BPF_ALU64_IMM if is64 else BPF_ALU32_IMM)(op, dst, imm)
    if kind == "sdiv":
        op = draw(st.sampled_from(DIVS))
        if draw(st.booleans()):
            return (BPF_ALU64_REG_OFF if is64 else BPF_ALU32_REG_OFF)(op, dst, draw(reg), SIGNED)
        return (BPF_ALU64_IMM_OFF if is64 else BPF_ALU32_IMM_OFF)(op, dst, draw(nonzero_imm32), SIGNED)
    if kind == "neg":
        return (BPF_ALU64_IMM if is64 else BPF_ALU32_IMM)(BPF_NEG, dst, 0)
    if kind == "movsx":
        src = draw(reg)
        if is64:
            return BPF_MOVSX64_REG(dst, src, draw(st.sampled_from((8, 16, 32))))
        return BPF_MOVSX32_REG(dst, src, draw(st.sampled_from((8, 16))))
    if kind == "end":
        return BPF_ENDIAN(draw(st.sampled_from((BPF_TO_LE, BPF_TO_BE))), dst, draw(st.sampled_from((16, 32, 64))))
    return BPF_BSWAP(dst, draw(st.sampled_from((16, 32, 64))))


# One instruction the verifier refuses (EINVAL in 6.18), injected into a small share of programs.
BROKEN = {
    "div_imm_zero": BPF_ALU64_IMM(BPF_DIV, 3, 0),
    "smod32_imm_zero": BPF_ALU32_IMM_OFF(BPF_MOD, 3, 0, SIGNED),
    "lsh64_imm_64": BPF_ALU64_IMM(BPF_LSH, 3, 64),
    "arsh32_imm_32": BPF_ALU32_IMM(BPF_ARSH, 3, 32),
    "end_imm_8": BPF_ENDIAN(BPF_TO_BE, 3, 8),
    "bswap_imm_8": BPF_BSWAP(3, 8),
    "neg_with_src": Insn(BPF_ALU64 | BPF_NEG | BPF_X, 3, 4, 0, 0),
    "movsx64_off_4": BPF_MOVSX64_REG(3, 4, 4),
    "movsx32_off_32": BPF_MOVSX32_REG(3, 4, 32),
    "sdiv_off_2": BPF_ALU64_IMM_OFF(BPF_DIV, 3, 7, 2),
    "alu_dst_r11": Insn(BPF_ALU64 | BPF_ADD | BPF_K, 11, 0, 0, 1),
    "ldx_src_r11": BPF_LDX_MEM(BPF_DW, 3, 11, 0),
    "jmp_src_r12": BPF_JMP_REG(BPF_JEQ, 3, 12, 0),
    "write_r10": BPF_ALU64_IMM(BPF_ADD, FP, 8),
    "reserved_imm_add": Insn(BPF_ALU64 | BPF_ADD | BPF_X, 3, 4, 0, 1),
}
BROKEN_PERCENT = 5
maybe_broken = st.sampled_from(range(100)).flatmap(
    lambda p: st.sampled_from(sorted(BROKEN)) if p >= 100 - BROKEN_PERCENT else st.none())


def fold_regs(regs, acc=0, tmp=None):
    """acc = mix of every register in `regs` (then the high half xor-ed into the low one)."""
    out = []
    for r in regs:
        if r != acc:
            out += [BPF_ALU64_IMM(BPF_MUL, acc, MIX), BPF_ALU64_REG(BPF_XOR, acc, r)]
    return out


def finish(acc=0, tmp=2):
    """r0 = low32(acc ^ acc >> 32): the 32-bit retval depends on all 64 bits."""
    out = [] if acc == 0 else [BPF_MOV64_REG(0, acc)]
    return out + [BPF_MOV64_REG(tmp, 0), BPF_ALU64_IMM(BPF_RSH, tmp, 32), BPF_ALU64_REG(BPF_XOR, 0, tmp),
                  BPF_MOV32_REG(0, 0), BPF_EXIT_INSN()]


@st.composite
def jump_insn(draw, regs, off):
    """A conditional JMP/JMP32 (imm or reg form) `off` instructions forward."""
    cond = draw(st.sampled_from(JCONDS))
    is32 = draw(st.booleans())
    dst = draw(st.sampled_from(regs))
    if draw(st.booleans()):
        return (BPF_JMP32_REG if is32 else BPF_JMP_REG)(cond, dst, draw(st.sampled_from(regs)), off)
    return (BPF_JMP32_IMM if is32 else BPF_JMP_IMM)(cond, dst, draw(imm32), off)


@st.composite
def with_jumps(draw, body, regs, rate):
    """Interleave forward conditional jumps (targets inside `body` or just past it) into `body`."""
    items = []
    for insn in body:
        if draw(st.integers(0, 99)) < rate:
            items.append(("jmp", draw(st.floats(0, 1))))
        items.append(insn)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            # target position among items i+1 .. len(items); item indexes == insn indexes (all one slot)
            span = len(items) - i - 1
            off = round(item[1] * span)
            out.append(draw(jump_insn(regs, off)))
        else:
            out.append(item)
    return out


@st.composite
def alu_programs(draw, jumps=False):
    """Straight-line (or forward-jumping) ALU mixes over r0..r9; returns (insns, broken_name)."""
    regs = tuple(range(10))
    body = draw(st.lists(alu_insn(regs), min_size=1, max_size=40))
    if jumps:
        body = draw(with_jumps(body, regs, 30))
    broken = draw(maybe_broken)
    if broken:
        body.insert(draw(st.integers(0, len(body))), BROKEN[broken])
    insns = init_regs(regs, draw(st.lists(u64s, min_size=10, max_size=10))) + body
    return insns + fold_regs(range(1, 10)) + finish(), broken


@st.composite
def stack_op(draw, slots, regs):
    slot = draw(st.sampled_from(slots))
    kind = draw(st.sampled_from(("st", "stx", "ldx", "ldx", "ldsx", "atomic", "atomic", "alu")))
    if kind == "alu":
        return draw(alu_insn(regs))
    if kind == "atomic":
        size = draw(st.sampled_from((BPF_W, BPF_DW)))
        op = draw(st.sampled_from(ATOMIC_OPS))
        src = draw(st.sampled_from(regs[1:] if op == BPF_CMPXCHG else regs))
    elif kind == "ldsx":
        size = draw(st.sampled_from((BPF_B, BPF_H, BPF_W)))
    else:
        size = draw(st.sampled_from(SIZES))
    n = NBYTES[size]
    off = -SLOT * slot + n * draw(st.integers(0, SLOT // n - 1))
    reg = draw(st.sampled_from(regs))
    if kind == "st":
        return BPF_ST_MEM(size, FP, off, draw(imm32))
    if kind == "stx":
        return BPF_STX_MEM(size, FP, reg, off)
    if kind == "ldx":
        return BPF_LDX_MEM(size, reg, FP, off)
    if kind == "ldsx":
        return BPF_LDX_MEMSX(size, reg, FP, off)
    return BPF_ATOMIC_OP(size, op, FP, src, off)


@st.composite
def stack_programs(draw, jumps=False):
    """Stack stores/loads/atomics over initialised 8-byte slots in [-512, -8]; returns (insns, broken)."""
    regs = tuple(range(10))
    slots = draw(st.lists(st.integers(1, STACK_SLOTS), min_size=1, max_size=6, unique=True))
    init = []
    for s in slots:
        if draw(st.booleans()):
            init.append(BPF_ST_MEM(BPF_DW, FP, -SLOT * s, draw(imm32)))
        else:
            init.append(BPF_STX_MEM(BPF_DW, FP, draw(st.sampled_from(regs)), -SLOT * s))
    body = draw(st.lists(stack_op(slots, regs), min_size=1, max_size=30))
    if jumps:
        body = draw(with_jumps(body, regs, 20))
    broken = draw(maybe_broken)
    if broken:
        body.insert(draw(st.integers(0, len(body))), BROKEN[broken])
    out = init_regs(regs, draw(st.lists(u64s, min_size=10, max_size=10))) + init + body
    out += fold_regs(range(1, 10))
    for s in slots:
        out += [BPF_LDX_MEM(BPF_DW, 1, FP, -SLOT * s), BPF_ALU64_IMM(BPF_MUL, 0, MIX), BPF_ALU64_REG(BPF_XOR, 0, 1)]
    return out + finish(), broken


SKB = "struct __sk_buff"
PKT_SCALARS = (0, 5, 6, 7, 8, 9)


@st.composite
def packet_programs(draw):
    """SCHED_CLS direct packet access behind `r4 = data + N; if r4 > data_end goto out`; returns
    (insns, packet)."""
    packet = draw(st.integers(14, 256).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    regs = PKT_SCALARS
    out = [BPF_LDX_MEM(BPF_W, 2, 1, ffi.offsetof(SKB, "data")),
           BPF_LDX_MEM(BPF_W, 3, 1, ffi.offsetof(SKB, "data_end"))]
    out += init_regs(regs, draw(st.lists(u64s, min_size=len(regs), max_size=len(regs))))
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.one_of(st.integers(1, 64), st.integers(1, 270)))
        ops = []
        for _ in range(draw(st.integers(1, 12))):
            kind = draw(st.sampled_from(("ldx", "ldx", "st", "stx", "alu")))
            if kind == "alu":
                ops.append(draw(alu_insn(regs)))
                continue
            size = draw(st.sampled_from([s for s in SIZES if NBYTES[s] <= n]))
            off = draw(st.integers(0, n - NBYTES[size]))
            reg = draw(st.sampled_from(regs))
            if kind == "ldx":
                ops.append(BPF_LDX_MEM(size, reg, 2, off))
            elif kind == "st":
                ops.append(BPF_ST_MEM(size, 2, off, draw(imm32)))
            else:
                ops.append(BPF_STX_MEM(size, 2, reg, off))
        out += [BPF_MOV64_REG(4, 2), BPF_ALU64_IMM(BPF_ADD, 4, n), BPF_JMP_REG(BPF_JGT, 4, 3, len(ops))] + ops
    return out + fold_regs(regs[1:]) + finish(), packet


MAP_SCALARS = (7, 8, 9)


@st.composite
def value_op(draw, value_size):
    """One access to the map value at r1 (scalars r7..r9; r0 is free for cmpxchg)."""
    kind = draw(st.sampled_from(("ldx", "ldx", "st", "stx", "atomic", "atomic", "alu")))
    if kind == "alu":
        return draw(alu_insn(MAP_SCALARS))
    size = draw(st.sampled_from((BPF_W, BPF_DW) if kind == "atomic" else SIZES))
    n = NBYTES[size]
    off = n * draw(st.integers(0, value_size // n - 1))
    reg = draw(st.sampled_from(MAP_SCALARS))
    if kind == "ldx":
        return BPF_LDX_MEM(size, reg, 1, off)
    if kind == "st":
        return BPF_ST_MEM(size, 1, off, draw(imm32))
    if kind == "stx":
        return BPF_STX_MEM(size, 1, reg, off)
    return BPF_ATOMIC_OP(size, draw(st.sampled_from(ATOMIC_OPS)), 1, reg, off)


@st.composite
def map_programs(draw):
    """ARRAY map lookups (NULL-checked) with in-place value updates; returns
    (value_size, max_entries, initial values, build(map_fd) -> insns)."""
    value_size = draw(st.sampled_from((8, 16, 32, 64)))
    max_entries = draw(st.integers(1, 4))
    values = draw(st.lists(st.binary(min_size=value_size, max_size=value_size),
                           min_size=max_entries, max_size=max_entries))
    inits = draw(st.lists(u64s, min_size=3, max_size=3))
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.integers(0, max_entries))          # == max_entries: out of range, NULL
        blocks.append((key, draw(st.lists(value_op(value_size), min_size=1, max_size=10))))

    def build(map_fd):
        out = [BPF_ALU64_IMM(BPF_MOV, 6, 0)] + init_regs(MAP_SCALARS, inits)
        for key, ops in blocks:
            out += [BPF_ST_MEM(BPF_W, FP, -4, key), BPF_MOV64_REG(2, FP), BPF_ALU64_IMM(BPF_ADD, 2, -4),
                    *BPF_LD_MAP_FD(1, map_fd), BPF_CALL_HELPER(FuncId.map_lookup_elem),
                    BPF_JMP_IMM(BPF_JEQ, 0, 0, len(ops) + 1), BPF_MOV64_REG(1, 0), *ops]
            out += fold_regs(MAP_SCALARS, acc=6)
        return out + finish(acc=6)

    return value_size, max_entries, values, build


@st.composite
def subprog_programs(draw, jumps=False):
    """A static subprogram call: main passes scalars in r1..r4 and a pointer to its stack slot
    fp-8 in r5; the callee mixes r0..r4 (with forward jumps), stores r2 through r5 and returns
    a mix; main folds r0, its callee-saved r6..r9 and the slot.  Returns (insns, broken)."""
    args = tuple(range(5))
    body = draw(st.lists(alu_insn(args), min_size=1, max_size=25))
    if jumps:
        body = draw(with_jumps(body, args, 20))
    broken = draw(maybe_broken)
    if broken:
        body.insert(draw(st.integers(0, len(body))), BROKEN[broken])
    callee = [BPF_MOV64_REG(0, 1)] + body + [BPF_STX_MEM(BPF_DW, 5, 2, 0)] + fold_regs(range(1, 5)) + \
        [BPF_EXIT_INSN()]
    rest = fold_regs(range(6, 10)) + [BPF_LDX_MEM(BPF_DW, 1, FP, -SLOT), BPF_ALU64_IMM(BPF_MUL, 0, MIX),
                                      BPF_ALU64_REG(BPF_XOR, 0, 1)] + finish()
    main = init_regs(range(10), draw(st.lists(u64s, min_size=10, max_size=10))) + \
        [BPF_ST_MEM(BPF_DW, FP, -SLOT, draw(imm32)), BPF_MOV64_REG(5, FP), BPF_ALU64_IMM(BPF_ADD, 5, -SLOT),
         BPF_CALL_REL(len(rest))]
    return main + rest + callee, broken
