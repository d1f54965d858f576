"""uapi/asm.py: the kernel/bpf/disasm.c text, and the assembler that reads it back."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from uapi.asm import AsmError, assemble, assemble_insns, disasm, disasm_prog, func_id_name, print_bpf_insn
from uapi.bpf import (
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_ARSH, BPF_ATOMIC, BPF_B, BPF_CALL, BPF_CMPXCHG,
    BPF_DIV, BPF_DW, BPF_END, BPF_EXIT, BPF_FETCH, BPF_FUNC_MAX_ID, BPF_H, BPF_IMM, BPF_IND, BPF_JA,
    BPF_JCOND, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JLE, BPF_JLT, BPF_JMP, BPF_JMP32, BPF_JNE, BPF_JSET,
    BPF_JSGE, BPF_JSGT, BPF_JSLE, BPF_JSLT, BPF_K, BPF_LD, BPF_LDX, BPF_LOAD_ACQ, BPF_LSH, BPF_MAY_GOTO,
    BPF_MEM, BPF_MEMSX, BPF_MOD, BPF_MOV, BPF_MUL, BPF_NEG, BPF_OR, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE, BPF_PSEUDO_MAP_VALUE, BPF_RSH, BPF_ST, BPF_STORE_REL, BPF_STX, BPF_SUB,
    BPF_TO_BE, BPF_TO_LE, BPF_W, BPF_X, BPF_XCHG, BPF_XOR, FuncId,
)
from uapi.insn import (
    BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_LD_IMM64, BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_MOV64_IMM,
    Insn, assemble_insns as insns_to_bytes, decode_prog, encode_prog,
)

# (insn(s), exact kernel text after "(code) ")
KERNEL_TEXT = [
    (BPF_MOV64_IMM(0, 0), "(b7) r0 = 0"),
    (Insn(BPF_ALU | BPF_ADD | BPF_X, 1, 2), "(0c) w1 += w2"),
    (Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 10), "(bf) r1 = r10"),
    (BPF_ALU64_IMM(BPF_ADD, 2, -4), "(07) r2 += -4"),
    (Insn(BPF_ALU64 | BPF_ARSH | BPF_K, 3, 0, 0, 7), "(c7) r3 s>>= 7"),
    (Insn(BPF_ALU64 | BPF_DIV | BPF_X, 1, 2, 1), "(3f) r1 s/= r2"),
    (Insn(BPF_ALU64 | BPF_MOD | BPF_K, 1, 0, 1, 3), "(97) r1 s%= 3"),
    (Insn(BPF_ALU | BPF_MOD | BPF_K, 1, 0, 0, 3), "(94) w1 %= 3"),
    (Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 2, 8), "(bf) r1 = (s8)r2"),
    (Insn(BPF_ALU | BPF_MOV | BPF_X, 1, 2, 16), "(bc) w1 = (s16)w2"),
    (Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 2, 32), "(bf) r1 = (s32)r2"),
    (Insn(BPF_ALU64 | BPF_NEG, 4), "(87) r4 = -r4"),
    (Insn(BPF_ALU | BPF_NEG, 4), "(84) w4 = -w4"),
    (Insn(BPF_ALU | BPF_END | BPF_TO_BE, 1, 0, 0, 16), "(dc) r1 = be16 r1"),
    (Insn(BPF_ALU | BPF_END | BPF_TO_LE, 1, 0, 0, 32), "(d4) r1 = le32 r1"),
    (Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, 1, 0, 0, 64), "(d7) r1 = bswap64 r1"),
    (Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 2, 1, 1), "(bf) r1 = addr_space_cast(r2, 0, 1)"),
    (Insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 2, -1), "(bf) r1 = &(void __percpu *)(r2)"),
    (Insn(BPF_STX | BPF_MEM | BPF_W, 10, 1, -4), "(63) *(u32 *)(r10 -4) = r1"),
    (Insn(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -8, 0), "(7a) *(u64 *)(r10 -8) = 0"),
    (Insn(BPF_ST | BPF_MEM | BPF_B, 1, 0, 3, -1), "(72) *(u8 *)(r1 +3) = -1"),
    (Insn(BPF_LDX | BPF_MEM | BPF_B, 0, 1, 0), "(71) r0 = *(u8 *)(r1 +0)"),
    (Insn(BPF_LDX | BPF_MEMSX | BPF_B, 0, 1, 0), "(91) r0 = *(s8 *)(r1 +0)"),
    (Insn(BPF_LDX | BPF_MEMSX | BPF_W, 0, 1, -6), "(81) r0 = *(s32 *)(r1 -6)"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 10, 1, -8, BPF_ADD), "(db) lock *(u64 *)(r10 -8) += r1"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_W, 10, 1, -8, BPF_XOR), "(c3) lock *(u32 *)(r10 -8) ^= r1"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 10, 1, -8, BPF_ADD | BPF_FETCH),
     "(db) r1 = atomic64_fetch_add((u64 *)(r10 -8), r1)"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_W, 10, 1, -8, BPF_OR | BPF_FETCH),
     "(c3) r1 = atomic_fetch_or((u32 *)(r10 -8), r1)"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 10, 1, -8, BPF_CMPXCHG),
     "(db) r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 10, 1, -8, BPF_XCHG), "(db) r1 = atomic64_xchg((u64 *)(r10 -8), r1)"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_LOAD_ACQ), "(db) r0 = load_acquire((u64 *)(r1 +0))"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_B, 1, 2, 0, BPF_STORE_REL), "(d3) store_release((u8 *)(r1 +0), r2)"),
    (Insn(BPF_JMP | BPF_JGT | BPF_K, 1, 0, 2, 5), "(25) if r1 > 0x5 goto pc+2"),
    (Insn(BPF_JMP | BPF_JNE | BPF_K, 1, 0, -1, -1), "(55) if r1 != 0xffffffff goto pc-1"),
    (Insn(BPF_JMP32 | BPF_JSLT | BPF_X, 1, 2, -3), "(ce) if w1 s< w2 goto pc-3"),
    (Insn(BPF_JMP | BPF_JSET | BPF_X, 1, 2, 0), "(4d) if r1 & r2 goto pc+0"),
    (Insn(BPF_JMP | BPF_JA, 0, 0, 2), "(05) goto pc+2"),
    (Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 70000), "(06) gotol pc+70000"),
    (Insn(BPF_JMP | BPF_JCOND, 0, BPF_MAY_GOTO, 2), "(e5) may_goto pc+2"),
    (Insn(BPF_JMP | BPF_EXIT), "(95) exit"),
    (BPF_CALL_HELPER(FuncId.map_lookup_elem), "(85) call bpf_map_lookup_elem#1"),
    (BPF_CALL_HELPER(0), "(85) call bpf_unspec#0"),
    (BPF_CALL_HELPER(BPF_FUNC_MAX_ID), f"(85) call unknown#{BPF_FUNC_MAX_ID}"),
    (BPF_CALL_HELPER(-5), "(85) call unknown#-5"),
    (Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, 3), "(85) call pc+3"),
    (Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, -7), "(85) call pc-7"),
    (Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 42), "(85) call kernel-function#42"),
    (Insn(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 12), "(30) r0 = *(u8 *)skb[12]"),
    (Insn(BPF_LD | BPF_IND | BPF_W, 0, 3, 0, -2), "(40) r0 = *(u32 *)skb[r3 + -2]"),
    (BPF_LD_IMM64(0, 0x1234567890), "(18) r0 = 0x1234567890"),
    (BPF_LD_IMM64(2, -1), "(18) r2 = 0xffffffffffffffff"),
    (Insn(BPF_ST | 0xC0), "(c2) nospec"),
    # encodings the kernel has no text for
    (Insn(BPF_LDX | BPF_IMM | BPF_W), "BUG_ldx_01"),
    (Insn(BPF_ST | BPF_ABS | BPF_W), "BUG_st_22"),
    (Insn(BPF_STX | BPF_ATOMIC | BPF_DW, 1, 2, 0, BPF_MUL), "BUG_db"),
    (Insn(BPF_LD | BPF_MEM | BPF_W), "BUG_ld_60"),
]


@pytest.mark.parametrize("insn,text", KERNEL_TEXT, ids=[t for _, t in KERNEL_TEXT])
def test_print_bpf_insn_matches_kernel_text(insn, text):
    pair = insn if isinstance(insn, tuple) else (insn, None)
    assert print_bpf_insn(*pair) == text


def test_ld_imm64_pseudo_sources_in_kernel_mode():
    lo, hi = BPF_LD_MAP_FD(1, 5)
    assert print_bpf_insn(lo, hi) == "(18) r1 = 0x5"
    assert print_bpf_insn(lo, hi, allow_ptr_leaks=False) == "(18) r1 = 0x0"  # no pointer leaks
    assert print_bpf_insn(*BPF_LD_IMM64(1, 5), allow_ptr_leaks=False) == "(18) r1 = 0x5"  # plain constant
    with pytest.raises(ValueError):
        print_bpf_insn(lo)


def test_callbacks_like_bpf_insn_cbs():
    kfunc = Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 42)
    assert print_bpf_insn(kfunc, cb_call=lambda insn: "bpf_obj_new_impl") == "(85) call bpf_obj_new_impl#42"
    # helper names win over the callback, as in __func_get_name()
    helper = BPF_CALL_HELPER(FuncId.ktime_get_ns)
    assert print_bpf_insn(helper, cb_call=lambda insn: "nope") == "(85) call bpf_ktime_get_ns#5"
    lo, hi = BPF_LD_MAP_FD(1, 5)
    assert print_bpf_insn(lo, hi, cb_imm=lambda i, n, imm: f"map[id:{imm + 1}]") == "(18) r1 = map[id:6]"


def test_symbolic_pseudo_sources():
    assert disasm(BPF_LD_MAP_FD(1, 5)) == "r1 = map[id:5]"
    assert disasm(BPF_LD_MAP_VALUE(1, 5, 16)) == "r1 = map[id:5][0]+16"
    assert disasm(BPF_LD_MAP_FD(1, 5), symbolic=False) == "r1 = 0x5"
    pair = (Insn(BPF_LD | BPF_IMM | BPF_DW, 3, BPF_PSEUDO_FUNC, 0, -4), Insn(0))
    assert disasm(pair) == "r3 = subprog[-4]"


def test_func_id_name():
    assert func_id_name(FuncId.map_update_elem) == "bpf_map_update_elem"
    assert func_id_name(BPF_FUNC_MAX_ID) == "unknown"
    assert func_id_name(-1) == "unknown"


def test_disasm_prefixes_and_bytes():
    assert disasm(BPF_MOV64_IMM(0, 1)) == "r0 = 1"
    assert disasm(BPF_MOV64_IMM(0, 1), 7) == "7: (b7) r0 = 1"
    assert disasm(BPF_MOV64_IMM(0, 1).encode()) == "r0 = 1"
    assert disasm(insns_to_bytes([BPF_LD_IMM64(1, 1 << 33)])) == "r1 = 0x200000000"


def test_disasm_prog_numbers_slots_like_the_verifier_log():
    prog = insns_to_bytes([BPF_MOV64_IMM(0, 0), BPF_LD_MAP_FD(1, 3), Insn(BPF_JMP | BPF_EXIT)])
    assert disasm_prog(prog) == ["0: (b7) r0 = 0", "1: (18) r1 = map[id:3]", "3: (95) exit"]


def test_assemble_accepts_log_prefixes_comments_and_llvm_suffix():
    text = """
        0: (b7) r0 = 0          ; R0_w=0
        1: (18) r1 = map[id:3]
        ; a comment line
        r2 = 0x10 ll
        3: (95) exit
    """
    assert decode_prog(assemble(text)) == [BPF_MOV64_IMM(0, 0), *BPF_LD_MAP_FD(1, 3), *BPF_LD_IMM64(2, 16),
                                           Insn(BPF_JMP | BPF_EXIT)]


def test_assemble_helper_by_name_only():
    assert assemble_insns("call bpf_ktime_get_ns") == [BPF_CALL_HELPER(FuncId.ktime_get_ns)]


@pytest.mark.parametrize("text", [
    "r0 = frobnicate", "r16 = 0", "(b7) r1 = r2", "w1 += r2", "r1 = be16 r2", "r0 = 0x1ffffffffffffffff",
    "r1 = atomic_fetch_add((u64 *)(r10 -8), r1)", "r1 = atomic64_xchg((u64 *)(r10 -8), r2)",
    "call bpf_map_lookup_elem#2", "call bpf_no_such_helper", "r1 = (s8)5", "r1 += 4294967296",
    "r1 = *(u8 *)skb[1]",
])
def test_assemble_rejects_bad_text(text):
    with pytest.raises(AsmError):
        assemble(text)


# --- round trip over every valid encoding ---------------------------------------------------------------

regs = st.integers(0, 15)
offs = st.integers(-(1 << 15), (1 << 15) - 1)
imms = st.integers(-(1 << 31), (1 << 31) - 1)
u32s = st.integers(0, (1 << 32) - 1)
sizes = st.sampled_from([BPF_B, BPF_H, BPF_W, BPF_DW])
alu_classes = st.sampled_from([BPF_ALU, BPF_ALU64])
ALU_OPS = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR,
           BPF_MOV, BPF_ARSH]
JMP_OPS = [BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT,
           BPF_JSLE]


@st.composite
def alu_insns(draw):
    cls, op, src = draw(alu_classes), draw(st.sampled_from(ALU_OPS)), draw(st.sampled_from([BPF_K, BPF_X]))
    offs_ok = [0]
    if op in (BPF_DIV, BPF_MOD):
        offs_ok.append(1)
    if op == BPF_MOV and src == BPF_X:
        offs_ok += [8, 16] + ([32] if cls == BPF_ALU64 else [])
    off = draw(st.sampled_from(offs_ok))
    if src == BPF_X:
        return Insn(cls | op | BPF_X, draw(regs), draw(regs), off, 0)
    return Insn(cls | op | BPF_K, draw(regs), 0, off, draw(imms))


@st.composite
def misc_alu_insns(draw):
    kind = draw(st.sampled_from(["neg", "end", "bswap", "cast"]))
    d = draw(regs)
    if kind == "neg":
        return Insn(draw(alu_classes) | BPF_NEG | BPF_K, d)
    width = draw(st.sampled_from([16, 32, 64]))
    if kind == "end":
        return Insn(BPF_ALU | BPF_END | draw(st.sampled_from([BPF_TO_LE, BPF_TO_BE])), d, 0, 0, width)
    if kind == "bswap":
        return Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, d, 0, 0, width)
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, d, draw(regs), 1, draw(st.sampled_from([1, 1 << 16])))


@st.composite
def mem_insns(draw):
    kind = draw(st.sampled_from(["ldx", "ldsx", "st", "stx", "rmw", "xchg", "cmpxchg", "acq", "rel",
                                 "abs", "ind"]))
    d, s, off = draw(regs), draw(regs), draw(offs)
    word = draw(st.sampled_from([BPF_W, BPF_DW]))
    small = draw(st.sampled_from([BPF_B, BPF_H, BPF_W]))
    return {
        "ldx": lambda: Insn(BPF_LDX | BPF_MEM | draw(sizes), d, s, off),
        "ldsx": lambda: Insn(BPF_LDX | BPF_MEMSX | small, d, s, off),
        "st": lambda: Insn(BPF_ST | BPF_MEM | draw(sizes), d, 0, off, draw(imms)),
        "stx": lambda: Insn(BPF_STX | BPF_MEM | draw(sizes), d, s, off),
        "rmw": lambda: Insn(BPF_STX | BPF_ATOMIC | word, d, s, off,
                            draw(st.sampled_from([BPF_ADD, BPF_AND, BPF_OR, BPF_XOR]))
                            | draw(st.sampled_from([0, BPF_FETCH]))),
        "xchg": lambda: Insn(BPF_STX | BPF_ATOMIC | word, d, s, off, BPF_XCHG),
        "cmpxchg": lambda: Insn(BPF_STX | BPF_ATOMIC | word, d, s, off, BPF_CMPXCHG),
        "acq": lambda: Insn(BPF_STX | BPF_ATOMIC | draw(sizes), d, s, off, BPF_LOAD_ACQ),
        "rel": lambda: Insn(BPF_STX | BPF_ATOMIC | draw(sizes), d, s, off, BPF_STORE_REL),
        "abs": lambda: Insn(BPF_LD | BPF_ABS | small, 0, 0, 0, draw(imms)),
        "ind": lambda: Insn(BPF_LD | BPF_IND | small, 0, s, 0, draw(imms)),
    }[kind]()


@st.composite
def jmp_insns(draw):
    kind = draw(st.sampled_from(["cond", "ja", "gotol", "may_goto", "exit", "helper", "pcall", "kfunc"]))
    cls = draw(st.sampled_from([BPF_JMP, BPF_JMP32]))
    d, s, off = draw(regs), draw(regs), draw(offs)
    if kind == "cond":
        op = draw(st.sampled_from(JMP_OPS))
        if draw(st.booleans()):
            return Insn(cls | op | BPF_X, d, s, off, 0)
        return Insn(cls | op | BPF_K, d, 0, off, draw(imms))
    return {
        "ja": lambda: Insn(BPF_JMP | BPF_JA, 0, 0, off),
        "gotol": lambda: Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, draw(imms)),
        "may_goto": lambda: Insn(BPF_JMP | BPF_JCOND, 0, BPF_MAY_GOTO, off),
        "exit": lambda: Insn(BPF_JMP | BPF_EXIT),
        "helper": lambda: Insn(BPF_JMP | BPF_CALL, 0, 0, 0, draw(imms)),
        "pcall": lambda: Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, draw(imms)),
        "kfunc": lambda: Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, draw(imms)),
    }[kind]()


@st.composite
def ld_imm64_pairs(draw):
    d = draw(regs)
    src = draw(st.sampled_from([0, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC,
                                BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE]))
    imm1 = draw(imms)
    imm2 = 0 if src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_IDX) else draw(imms)
    return [Insn(BPF_LD | BPF_IMM | BPF_DW, d, src, 0, imm1), Insn(0, 0, 0, 0, imm2)]


valid_encodings = st.one_of(alu_insns().map(lambda i: [i]), misc_alu_insns().map(lambda i: [i]),
                            mem_insns().map(lambda i: [i]), jmp_insns().map(lambda i: [i]), ld_imm64_pairs())


@given(valid_encodings)
def test_round_trip_every_valid_encoding(insns):
    data = encode_prog(insns)
    assert assemble(disasm(insns)) == data
    assert assemble(disasm(insns, 3)) == data  # the verifier-log form, with its opcode check


@given(st.lists(valid_encodings, min_size=1, max_size=8))
def test_round_trip_programs(chunks):
    data = encode_prog([i for chunk in chunks for i in chunk])
    assert assemble("\n".join(disasm_prog(data))) == data
