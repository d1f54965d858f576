"""Helper-call rewrites of do_misc_fixups — kernel/bpf/verifier.c (map_gen_lookup inlining of
bpf_map_lookup_elem, the map-ops call targets, BPF_CALL_IMM), kernel/bpf/arraymap.c
(array_map_gen_lookup), kernel/bpf/hashtab.c (htab_map_gen_lookup).

The kernel inlines ``bpf_map_lookup_elem`` on an ARRAY into index arithmetic from the map
pointer (the values start at ``offsetof(struct bpf_array, value)``: an array map's opaque
address is placed there, see `ArrayMap.kernel_object_address`) and on a HASH into a call of
``__htab_map_lookup_elem`` (returning the element) plus the step to the value.  Such a call
of a kernel function runs through `KERNEL_CALLS` (a reserved imm -> Python function); the
interpreter and the compiled tiers look there when the prog's helper table has no entry.

Also here: the division guards (no divide-by-zero or INT_MIN / -1 fault) and, for socket
filters and tc, LD_ABS / LD_IND as calls of bpf_skb_load_helper_*_no_cache (bpf_gen_ld_abs).

Helper calls otherwise keep their helper ids in ``prog.xlated`` (the runtime dispatches on
them); `call_imm_for_dump` gives the imm the kernel shows instead: the target function's
address relative to ``__bpf_call_base``, with kallsyms names from `fakekernel.trace`.

Which map a call site uses comes from a dataflow over the map references reaching R1 (the
kernel records it during its walk, insn_aux_data map_ptr_state); a site where several maps
reach R1 is "poisoned" and keeps the plain helper call, as in the kernel.  Not inlined here
although 6.18 does: PERCPU_ARRAY / PERCPU_HASH (this_cpu_ptr instruction), LRU_HASH (the
element's lru_node.ref update), ARRAY_OF_MAPS / HASH_OF_MAPS, bpf_get_smp_processor_id.
"""
from __future__ import annotations

from fakekernel import kernel_layout as kl
from fakekernel.verifier.cfg import _successors, is_ldimm64
from fakekernel.verifier.env import BPF_REG_SIZE
from fakekernel.errors import Errno
from fakekernel.progs.skb_convert import BPF_REG_AX
from uapi.bpf import (BPF_ABS, BPF_ADD, BPF_ALU, BPF_ALU64, BPF_AND, BPF_B, BPF_CALL, BPF_DIV, BPF_DW, BPF_H, BPF_IND,
                      BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JMP32, BPF_JNE, BPF_JSGE, BPF_K, BPF_LD, BPF_LDX, BPF_LSH,
                      BPF_MEM, BPF_MOD, BPF_MOV, BPF_MUL, BPF_NEG, BPF_ST, BPF_STX, BPF_W, BPF_X, BPF_XOR, FuncId,
                      MapFlags, MapType, ProgType)
from uapi.insn import (BPF_ALU32_IMM, BPF_ALU32_REG, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CLASS, BPF_EXIT_INSN,
                       BPF_JMP_A, BPF_JMP_IMM, BPF_LDX_MEM, BPF_MODE, BPF_OP, BPF_MOV32_IMM, BPF_MOV32_REG,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_SIZE, Insn, u32)

__all__ = ["do_misc_fixups", "call_imm_for_dump", "map_at_calls", "bpf_gen_ld_abs", "KERNEL_CALLS",
           "BPF_CALL_BASE_SYM"]

BPF_CALL_BASE_SYM = "__bpf_call_base"
_R0, _R1, _R2, _R6, _FP = 0, 1, 2, 6, 10
_U64 = (1 << 64) - 1
_CALLER_SAVED = range(6)           # r0-r5: a call clobbers them
_UNKNOWN = "?"
_VALUE_ALIGN = 8


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


# ---------------------------------------------------------------- kernel functions by call imm

def _htab_map_lookup_elem(env, r1, r2, r3, r4, r5) -> int:
    """__htab_map_lookup_elem(map, key): the element (0 if none); its value follows the key."""
    m = env.mem.object_at(r1)
    value = m.map_lookup_elem(env.mem.read(r2, m.key_size))
    if not value:
        return 0
    return value - kl.offsetof("htab_elem.key") - _round_up(m.key_size, _VALUE_ALIGN)


#: reserved call imms (above every helper id, below the kfunc keys) -> (kallsyms name, runtime)
_KCALL_BASE = 0x7FFF0000
KERNEL_CALLS = {_KCALL_BASE: ("__htab_map_lookup_elem", _htab_map_lookup_elem)}
_KCALL_OF = {name: imm for imm, (name, _fn) in KERNEL_CALLS.items()}


def array_map_gen_lookup(m) -> list[Insn] | None:
    """array_map_gen_lookup(): r0 = &value[*(u32 *)r2] or NULL."""
    if m.map_flags & MapFlags.INNER_MAP:
        return None
    elem = m.elem_size
    out = [BPF_ALU64_IMM(BPF_ADD, _R1, kl.offsetof("bpf_array.value")), BPF_LDX_MEM(BPF_W, _R0, _R2, 0)]
    if not m.bypass_spec_v1:
        out += [BPF_JMP_IMM(BPF_JGE, _R0, m.max_entries, 4), BPF_ALU32_IMM(BPF_AND, _R0, m.index_mask)]
    else:
        out.append(BPF_JMP_IMM(BPF_JGE, _R0, m.max_entries, 3))
    if elem & (elem - 1) == 0:
        out.append(BPF_ALU64_IMM(BPF_LSH, _R0, elem.bit_length() - 1))
    else:
        out.append(BPF_ALU64_IMM(BPF_MUL, _R0, elem))
    return out + [BPF_ALU64_REG(BPF_ADD, _R0, _R1), BPF_JMP_A(1), BPF_MOV64_IMM(_R0, 0)]


def htab_map_gen_lookup(m) -> list[Insn]:
    """htab_map_gen_lookup(): call __htab_map_lookup_elem, then step from the element to its value."""
    return [Insn(BPF_JMP | BPF_CALL, 0, 0, 0, _KCALL_OF["__htab_map_lookup_elem"]),
            BPF_JMP_IMM(BPF_JEQ, _R0, 0, 1),
            BPF_ALU64_IMM(BPF_ADD, _R0, kl.offsetof("htab_elem.key") + _round_up(m.key_size, _VALUE_ALIGN))]


_GEN_LOOKUP = {MapType.ARRAY: array_map_gen_lookup, MapType.HASH: htab_map_gen_lookup}


# ---------------------------------------------------------------- which map reaches R1

def _transfer(insn, facts: dict, mem) -> dict:
    f = dict(facts)
    cls = BPF_CLASS(insn.code)
    if is_ldimm64(insn):
        f[insn.dst_reg] = _UNKNOWN            # completed by the caller (needs the second half)
    elif cls == BPF_JMP and BPF_OP(insn.code) == BPF_CALL:
        for r in _CALLER_SAVED:
            f.pop(r, None)
    elif insn.code == (BPF_ALU64 | BPF_MOV | BPF_X) and insn.off == 0:          # r = r
        if insn.src_reg in f:
            f[insn.dst_reg] = f[insn.src_reg]
        else:
            f.pop(insn.dst_reg, None)
    elif cls in (BPF_ST, BPF_STX) and insn.dst_reg == _FP:
        f = {k: v for k, v in f.items() if not (isinstance(k, tuple) and abs(k[1] - insn.off) < BPF_REG_SIZE)}
        if cls == BPF_STX and BPF_MODE(insn.code) == BPF_MEM and BPF_SIZE(insn.code) == BPF_DW \
                and insn.src_reg in f:
            f[("fp", insn.off)] = f[insn.src_reg]
    elif cls == BPF_LDX and insn.src_reg == _FP and BPF_SIZE(insn.code) == BPF_DW and ("fp", insn.off) in f:
        f[insn.dst_reg] = f[("fp", insn.off)]
    elif cls in (BPF_LD, BPF_LDX, BPF_ALU, BPF_ALU64):
        f.pop(insn.dst_reg, None)
    return f


def _join(a: dict | None, b: dict) -> dict:
    if a is None:
        return b
    return {k: a[k] | b[k] for k in a.keys() & b.keys()}


def map_at_calls(insns: list[Insn], mem) -> dict[int, object]:
    """call index -> the one map reaching R1 there (poisoned or unknown sites are left out)."""
    n = len(insns)
    facts: list[dict | None] = [None] * n
    facts[0] = {}
    work = [0]
    while work:
        t = work.pop()
        insn = insns[t]
        out = _transfer(insn, facts[t], mem)
        if is_ldimm64(insn) and t + 1 < n:
            addr = u32(insn.imm) | (u32(insns[t + 1].imm) << 32)
            out[insn.dst_reg] = frozenset({addr})
        for w, _edge in _successors(insns, t):
            if 0 <= w < n:
                new = _join(facts[w], {k: (v if isinstance(v, frozenset) else frozenset({v}))
                                       for k, v in out.items()})
                if new != facts[w]:
                    facts[w] = new
                    work.append(w)
    found = {}
    for i, insn in enumerate(insns):
        if insn.code == BPF_JMP | BPF_CALL and insn.src_reg == 0 and facts[i] is not None:
            addrs = facts[i].get(_R1)
            if addrs and len(addrs) == 1 and _UNKNOWN not in addrs:
                try:
                    found[i] = mem.object_at(next(iter(addrs)))
                except Exception:
                    continue
    return found


# ---------------------------------------------------------------- division, LD_ABS

def _div_mod_guard(insn: Insn) -> list[Insn] | None:
    """Division and modulo that cannot fault: by an immediate -1 (signed), by a register 0 or -1."""
    code, cls, op = insn.code, BPF_CLASS(insn.code), BPF_OP(insn.code)
    if cls not in (BPF_ALU, BPF_ALU64) or op not in (BPF_DIV, BPF_MOD):
        return None
    is64, isdiv, signed = cls == BPF_ALU64, op == BPF_DIV, insn.off == 1
    alu, jmp = (BPF_ALU64, BPF_JMP) if is64 else (BPF_ALU, BPF_JMP32)
    dst, src = insn.dst_reg, insn.src_reg
    if code & BPF_X == 0:
        if not (signed and insn.imm == -1):
            return None
        return [Insn(alu | BPF_NEG | BPF_K, dst, 0, 0, 0)] if isdiv else [BPF_MOV32_IMM(dst, 0)]
    if signed and isdiv:        # x sdiv 0 -> 0; MIN sdiv -1 -> MIN (the negation)
        return [BPF_MOV64_REG(BPF_REG_AX, src), Insn(alu | BPF_ADD | BPF_K, BPF_REG_AX, 0, 0, 1),
                Insn(jmp | BPF_JGT | BPF_K, BPF_REG_AX, 0, 4, 1), Insn(jmp | BPF_JEQ | BPF_K, BPF_REG_AX, 0, 1, 0),
                Insn(alu | BPF_MOV | BPF_K, dst, 0, 0, 0), Insn(alu | BPF_NEG | BPF_K, dst, 0, 0, 0),
                BPF_JMP_A(1), insn]
    tail = [] if is64 else [BPF_JMP_A(1), BPF_MOV32_REG(dst, dst)]
    if signed:                  # x smod 0 -> x; x smod -1 -> 0
        return [BPF_MOV64_REG(BPF_REG_AX, src), Insn(alu | BPF_ADD | BPF_K, BPF_REG_AX, 0, 0, 1),
                Insn(jmp | BPF_JGT | BPF_K, BPF_REG_AX, 0, 3, 1),
                Insn(jmp | BPF_JEQ | BPF_K, BPF_REG_AX, 0, 3 + (0 if is64 else 1), 1),
                BPF_MOV32_IMM(dst, 0), BPF_JMP_A(1), insn] + tail
    if isdiv:                   # x div 0 -> 0
        return [Insn(jmp | BPF_JNE | BPF_K, src, 0, 2, 0), BPF_ALU32_REG(BPF_XOR, dst, dst), BPF_JMP_A(1), insn]
    return [Insn(jmp | BPF_JEQ | BPF_K, src, 0, 1 + (0 if is64 else 1), 0), insn] + tail    # x mod 0 -> x


def _skb_load_helper(size: int):
    """bpf_skb_load_helper_{8,16,32}_no_cache(skb, offset): the bytes big-endian, or -EFAULT."""
    def helper(env, r1, r2, r3, r4, r5) -> int:
        value = env.ctx.ld_abs_view().load_be(r2, size)
        return (-Errno.EFAULT) & _U64 if value is None else value
    return helper


KERNEL_CALLS.update({_KCALL_BASE + 1 + i: (f"bpf_skb_load_helper_{8 * size}_no_cache", _skb_load_helper(size))
                     for i, size in enumerate((1, 2, 4))})
_KCALL_OF = {name: imm for imm, (name, _fn) in KERNEL_CALLS.items()}
_GEN_LD_ABS_TYPES = frozenset({ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT})
_LD_SIZE = {BPF_B: 1, BPF_H: 2, BPF_W: 4}


def bpf_gen_ld_abs(insn: Insn) -> list[Insn]:
    """net/core/filter.c bpf_gen_ld_abs(): LD_ABS / LD_IND as a call of the load helper (ctx in
    R6); a failed load ends the program with r0 = 0."""
    if BPF_MODE(insn.code) == BPF_ABS:
        out = [BPF_MOV64_IMM(_R2, insn.imm)]
    else:
        out = [BPF_MOV64_REG(_R2, insn.src_reg)] + ([BPF_ALU64_IMM(BPF_ADD, _R2, insn.imm)] if insn.imm else [])
    name = f"bpf_skb_load_helper_{8 * _LD_SIZE[BPF_SIZE(insn.code)]}_no_cache"
    return out + [BPF_MOV64_REG(_R1, _R6), Insn(BPF_JMP | BPF_CALL, 0, 0, 0, _KCALL_OF[name]),
                  BPF_JMP_IMM(BPF_JSGE, _R0, 0, 2), BPF_ALU32_REG(BPF_XOR, _R0, _R0), BPF_EXIT_INSN()]


def do_misc_fixups(env) -> None:
    """The per-insn rewrites, last insn first: division guards, LD_ABS / LD_IND for the types
    with gen_ld_abs, bpf_map_lookup_elem inlined where the map has a map_gen_lookup."""
    from fakekernel.verifier.fixups import patch_insn
    sites = map_at_calls(env.insns, env.kern.mem)
    ld_abs = env.prog.type in _GEN_LD_ABS_TYPES
    for i in range(len(env.insns) - 1, -1, -1):
        insn = env.insns[i]
        new = _div_mod_guard(insn)
        if new is None and ld_abs and BPF_CLASS(insn.code) == BPF_LD and BPF_MODE(insn.code) in (BPF_ABS, BPF_IND):
            new = bpf_gen_ld_abs(insn)
        if new is None and i in sites and insn.imm == FuncId.map_lookup_elem:
            gen = _GEN_LOOKUP.get(getattr(sites[i], "map_type", None))
            new = gen(sites[i]) if gen is not None else None
        if new:
            patch_insn(env.insns, env.aux, i, new, env.prog)


# ---------------------------------------------------------------- the imm a dump shows

_MAP_OPS = {  # map type -> the kernel's map_lookup/update/delete_elem (measured on 6.18)
    MapType.ARRAY: ("array_map_lookup_elem", "array_map_update_elem", "array_map_delete_elem"),
    MapType.PERCPU_ARRAY: ("percpu_array_map_lookup_elem", "array_map_update_elem", "array_map_delete_elem"),
    MapType.HASH: ("htab_map_lookup_elem", "htab_map_update_elem", "htab_map_delete_elem"),
    MapType.LRU_HASH: ("htab_lru_map_lookup_elem", "htab_lru_map_update_elem", "htab_lru_map_delete_elem"),
    MapType.PERCPU_HASH: ("htab_percpu_map_lookup_elem", "htab_percpu_map_update_elem", "htab_map_delete_elem"),
    MapType.LRU_PERCPU_HASH: ("htab_lru_percpu_map_lookup_elem", "htab_lru_percpu_map_update_elem",
                              "htab_lru_map_delete_elem"),
    MapType.LPM_TRIE: ("trie_lookup_elem", "trie_update_elem", "trie_delete_elem"),
}
_MAP_HELPERS = (FuncId.map_lookup_elem, FuncId.map_update_elem, FuncId.map_delete_elem)
_QUEUE_OPS = {FuncId.map_push_elem: {MapType.QUEUE: "queue_stack_map_push_elem",
                                     MapType.STACK: "queue_stack_map_push_elem"},
              FuncId.map_pop_elem: {MapType.QUEUE: "queue_map_pop_elem", MapType.STACK: "stack_map_pop_elem"},
              FuncId.map_peek_elem: {MapType.QUEUE: "queue_map_peek_elem", MapType.STACK: "stack_map_peek_elem"}}
_HELPER_FUNC = {FuncId.get_prandom_u32: "bpf_user_rnd_u32"}     # BPF_CALL_x names that are not bpf_<helper>


def _target_name(func_id: int, m) -> str:
    if func_id in KERNEL_CALLS:
        return KERNEL_CALLS[func_id][0]
    mt = getattr(m, "map_type", None)
    if m is not None and func_id in _MAP_HELPERS and mt in _MAP_OPS:
        return _MAP_OPS[mt][_MAP_HELPERS.index(func_id)]
    if m is not None and func_id in _QUEUE_OPS and mt in _QUEUE_OPS[func_id]:
        return _QUEUE_OPS[func_id][mt]
    if func_id in _HELPER_FUNC:
        return _HELPER_FUNC[func_id]
    try:
        return "bpf_" + FuncId(func_id).name
    except ValueError:
        return f"bpf_helper_{func_id}"


def call_imm_for_dump(kern, insns: list[Insn], maps_at: dict, i: int) -> int:
    """BPF_CALL_IMM(target): the helper's (or kernel function's) address minus __bpf_call_base."""
    syms = kern.world.trace.kallsyms
    base = syms.add(BPF_CALL_BASE_SYM, 0, traceable=False).addr
    target = syms.add(_target_name(insns[i].imm, maps_at.get(i)), 5, traceable=False).addr
    return target - base
