"""C back end of the compiled tier — what arch/x86/net/bpf_jit_comp.c emits as machine code, emitted
here as C for the system compiler (the way eBPF for Windows' bpf2c turns programs into native drivers).

One C function per program: BPF registers are locals, every basic block (:mod:`fakekernel.jit.cfg`)
starts with a label, jumps are ``goto``. bpf-to-bpf calls push an explicit frame array and return
through a ``switch`` on the return slot. Memory goes through ``fk_xlate``: the last region hit, then the
live stack frames, then a small region cache, then :func:`RunState.resolve` in Python (which raises the
interpreter's fault); a translated pointer is never outside a mapped region's host buffer. Helpers,
callback stacks and cache misses are ``extern "Python"`` callbacks.
"""
from __future__ import annotations

from fakekernel.interp.run import MAX_BPF_STACK, MAX_CALL_FRAMES, SKF_LL_OFF, SKF_NET_OFF
from fakekernel.jit.cfg import Op, Program
from fakekernel.jit.runtime import NREGS
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

__all__ = ["CGEN_VERSION", "HEADER", "CDEF", "generate", "F_STATIC", "F_NO_SKB", "F_DEPTH", "ST_DONE",
           "ST_FAULT", "ST_PYERR", "NCACHE"]

CGEN_VERSION = 3
NCACHE = 8  # region cache slots (slot 0 is the always-missing sentinel)

ST_DONE, ST_FAULT, ST_PYERR = 0, 1, 2
F_STATIC, F_NO_SKB, F_DEPTH = 0, 1, 2

#: the run structure shared by Python (uapi-free ABI-mode FFI) and every compiled program
HEADER = f"""
struct fk_region {{ uint64_t base; uint64_t size; uint8_t *host; int64_t writable; }};
struct fk_run {{
    int64_t token;
    uint64_t regs[{NREGS}];
    uint64_t count;
    int64_t pc;
    int64_t fault;
    int64_t hstatus;
    int64_t tail_counted;
    int64_t ncache;
    int64_t last;
    int64_t next_slot;
    uint64_t stack_base[{MAX_CALL_FRAMES}];
    uint8_t *stack_host[{MAX_CALL_FRAMES}];
    struct fk_region cache[{NCACHE + 1}];
    const uint8_t *skb;
    int64_t skb_len;
    int64_t has_skb;
    int64_t net_off;
    int64_t mac_off;
    int64_t has_mac;
}};
"""

CDEF = HEADER + """
int64_t fk_prog(void *run, int64_t entry, int64_t depth);
int64_t fk_repeat(void *run, int64_t n);
extern "Python" uint64_t fk_py_helper(int64_t token, uint64_t func_id, int64_t callx, int64_t depth,
                                      uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5);
extern "Python" int64_t fk_py_resolve(int64_t token, uint64_t addr, uint64_t size, int64_t write, int64_t depth);
extern "Python" int64_t fk_py_stack(int64_t token, int64_t depth);
"""

_PRELUDE = f"""
#include <stdint.h>
#include <string.h>
{HEADER}
static uint64_t fk_py_helper(int64_t token, uint64_t func_id, int64_t callx, int64_t depth,
                             uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5);
static int64_t fk_py_resolve(int64_t token, uint64_t addr, uint64_t size, int64_t write, int64_t depth);
static int64_t fk_py_stack(int64_t token, int64_t depth);

#define FK_STACK {MAX_BPF_STACK}
static inline uint64_t fk_ld1(const uint8_t *p) {{ return *p; }}
static inline uint64_t fk_ld2(const uint8_t *p) {{ uint16_t v; memcpy(&v, p, 2); return v; }}
static inline uint64_t fk_ld4(const uint8_t *p) {{ uint32_t v; memcpy(&v, p, 4); return v; }}
static inline uint64_t fk_ld8(const uint8_t *p) {{ uint64_t v; memcpy(&v, p, 8); return v; }}
static inline void fk_st1(uint8_t *p, uint64_t x) {{ *p = (uint8_t)x; }}
static inline void fk_st2(uint8_t *p, uint64_t x) {{ uint16_t v = (uint16_t)x; memcpy(p, &v, 2); }}
static inline void fk_st4(uint8_t *p, uint64_t x) {{ uint32_t v = (uint32_t)x; memcpy(p, &v, 4); }}
static inline void fk_st8(uint8_t *p, uint64_t x) {{ memcpy(p, &x, 8); }}

static inline uint64_t fk_sdiv64(uint64_t a, uint64_t b) {{
    if (!b) return 0;
    if ((int64_t)b == -1) return 0 - a;
    return (uint64_t)((int64_t)a / (int64_t)b);
}}
static inline uint64_t fk_smod64(uint64_t a, uint64_t b) {{
    if (!b) return a;
    if ((int64_t)b == -1) return 0;
    return (uint64_t)((int64_t)a % (int64_t)b);
}}
static inline uint64_t fk_sdiv32(uint64_t a, uint64_t b) {{
    int32_t sb = (int32_t)(uint32_t)b;
    if (!sb) return 0;
    if (sb == -1) return (uint32_t)(0u - (uint32_t)a);
    return (uint32_t)((int32_t)(uint32_t)a / sb);
}}
static inline uint64_t fk_smod32(uint64_t a, uint64_t b) {{
    int32_t sb = (int32_t)(uint32_t)b;
    if (!sb) return (uint32_t)a;
    if (sb == -1) return 0;
    return (uint32_t)((int32_t)(uint32_t)a % sb);
}}

static __attribute__((noinline)) uint8_t *fk_xlate_slow(struct fk_run *run, uint64_t addr, uint64_t size,
                                                        int64_t write, int64_t depth) {{
    for (int64_t d = depth; d >= 0; d--) {{
        uint64_t so = addr - run->stack_base[d];
        if (so < FK_STACK && size <= FK_STACK - so) return run->stack_host[d] + so;
    }}
    for (int64_t i = 1; i <= run->ncache; i++) {{
        struct fk_region *c = &run->cache[i];
        uint64_t o = addr - c->base;
        if (o < c->size && size <= c->size - o && (!write || c->writable)) {{ run->last = i; return c->host + o; }}
    }}
    int64_t i = fk_py_resolve(run->token, addr, size, write, depth);
    if (i <= 0) return 0;
    run->last = i;
    return run->cache[i].host + (addr - run->cache[i].base);
}}
static inline uint8_t *fk_xlate(struct fk_run *run, uint64_t addr, uint64_t size, int64_t write, int64_t depth) {{
    struct fk_region *c = &run->cache[run->last];
    uint64_t o = addr - c->base;
    if (o < c->size && size <= c->size - o && (!write || c->writable)) return c->host + o;
    return fk_xlate_slow(run, addr, size, write, depth);
}}

/* bpf_skb_load_helper_*: big-endian load; 0 where the helper fails */
static inline int fk_skb_load(struct fk_run *run, uint64_t offset, int64_t size, uint64_t *out) {{
    int64_t off = (int32_t)(uint32_t)offset;
    if (off < 0) {{
        if (off >= {SKF_NET_OFF}) off = off - ({SKF_NET_OFF}) + run->net_off;
        else if (off >= {SKF_LL_OFF} && run->has_mac) off = off - ({SKF_LL_OFF}) + run->mac_off;
        else return 0;
    }}
    if (off < 0 || run->skb_len - off < size) return 0;
    uint64_t v = 0;
    for (int64_t i = 0; i < size; i++) v = (v << 8) | run->skb[off + i];
    *out = v;
    return 1;
}}
"""

_CMP = {BPF_JEQ: "==", BPF_JNE: "!=", BPF_JGT: ">", BPF_JGE: ">=", BPF_JLT: "<", BPF_JLE: "<=",
        BPF_JSGT: ">", BPF_JSGE: ">=", BPF_JSLT: "<", BPF_JSLE: "<="}
_SIGNED_CMP = (BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE)
_C_BIN = {BPF_ADD: "+", BPF_SUB: "-", BPF_MUL: "*", BPF_OR: "|", BPF_AND: "&", BPF_XOR: "^"}
_RMW = {BPF_ADD: "+", BPF_AND: "&", BPF_OR: "|", BPF_XOR: "^"}
_SIGNED_FN = {(True, BPF_DIV): "fk_sdiv64", (True, BPF_MOD): "fk_smod64", (False, BPF_DIV): "fk_sdiv32",
              (False, BPF_MOD): "fk_smod32"}
_SX = {1: "int8_t", 2: "int16_t", 4: "int32_t"}
_REG_LIST = [f"r{i}" for i in range(NREGS)]
_TERMINATORS = ("ja", "jmp", "may_goto", "exit", "call", "callx", "pcall", "fault")


def _u64(k: int) -> str:
    return f"UINT64_C(0x{k:x})"


def _alu(op: Op) -> list[str]:
    d = f"r{op.dst}"
    s = f"r{op.src}" if op.src is not None else _u64(op.k)
    o = op.op
    if op.signed:
        return [f"{d} = {_SIGNED_FN[(op.is64, o)]}({d}, {s});"]
    if op.is64:
        if o in _C_BIN:
            return [f"{d} {_C_BIN[o]}= {s};"]
        if o == BPF_DIV:
            if op.src is None:
                return [f"{d} = 0;" if not op.k else f"{d} /= {s};"]
            return [f"{d} = {s} ? {d} / {s} : 0;"]
        if o == BPF_MOD:
            if op.src is None:
                return [] if not op.k else [f"{d} %= {s};"]
            return [f"if ({s}) {d} %= {s};"]
        if o == BPF_LSH:
            return [f"{d} <<= ({s} & 63);"]
        if o == BPF_RSH:
            return [f"{d} >>= ({s} & 63);"]
        if o == BPF_ARSH:
            return [f"{d} = (uint64_t)((int64_t){d} >> ({s} & 63));"]
        if o == BPF_MOV:
            return [f"{d} = {s};"]
        raise AssertionError(o)
    a, b = f"(uint32_t){d}", f"(uint32_t){s}"
    if o in _C_BIN:
        return [f"{d} = (uint32_t)({a} {_C_BIN[o]} {b});"]
    if o == BPF_DIV:
        return [f"{{ uint32_t b_ = {b}; {d} = b_ ? {a} / b_ : 0; }}"]
    if o == BPF_MOD:
        return [f"{{ uint32_t b_ = {b}; {d} = b_ ? {a} % b_ : {a}; }}"]
    if o == BPF_LSH:
        return [f"{d} = (uint32_t)({a} << ({s} & 31));"]
    if o == BPF_RSH:
        return [f"{d} = {a} >> ({s} & 31);"]
    if o == BPF_ARSH:
        return [f"{d} = (uint32_t)((int32_t){a} >> ({s} & 31));"]
    if o == BPF_MOV:
        return [f"{d} = {b};"]
    raise AssertionError(o)


def _cond(op: Op) -> str:
    signed = op.op in _SIGNED_CMP
    if op.is64:
        t = "int64_t" if signed else "uint64_t"
        lhs, rhs = f"({t})r{op.dst}", f"({t})" + (f"r{op.src}" if op.src is not None else _u64(op.k))
    else:
        t = "int32_t" if signed else "uint32_t"
        lhs = f"({t})(uint32_t)r{op.dst}"
        rhs = f"({t})(uint32_t)" + (f"r{op.src}" if op.src is not None else _u64(op.k))
    if op.op == BPF_JSET:
        return f"({lhs} & {rhs})"
    return f"({lhs} {_CMP[op.op]} {rhs})"


class _Gen:
    def __init__(self, prog: Program, max_loops: int) -> None:
        self.p = prog
        self.max_loops = max_loops
        self.static_stack = not prog.writes_r10

    def spill(self) -> str:
        return " ".join(f"run->regs[{i}] = r{i};" for i in range(NREGS))

    def fault_py(self, idx: int, sub: int | str) -> str:
        return f"{{ run->pc = {idx}; n -= {sub}; goto fk_fault_py; }}"

    def fault_static(self, idx: int, code: int) -> str:
        return f"{{ run->pc = {idx}; run->fault = {code}; n -= {self.p.rem[idx]}; goto fk_fault_static; }}"

    def xlate(self, op: Op, reg: int, write: int) -> list[str]:
        return [f"uint8_t *p_ = fk_xlate(run, r{reg} + {_u64(op.off & ((1 << 64) - 1))}, {op.size}, {write}, depth);",
                f"if (!p_) {self.fault_py(op.idx, self.p.rem[op.idx])}"]

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
            return [f"{d} = 0 - {d};" if op.is64 else f"{d} = (uint32_t)(0u - (uint32_t){d});"]
        if k == "end":
            if not op.signed:
                return [] if op.off == 64 else [f"{d} = (uint{op.off}_t){d};"]
            return [f"{d} = __builtin_bswap{op.off}((uint{op.off}_t){d});"]
        if k == "movsx":
            t = _SX[op.off // 8]
            return [f"{d} = (uint64_t)(int64_t)({t})r{op.src};" if op.is64 else
                    f"{d} = (uint32_t)(int32_t)({t})r{op.src};"]
        if k == "ld_imm64":
            return [f"{d} = {_u64(op.k)};"]
        if k == "ldx":
            slot = self.stack_slot(op, op.src)
            conv = f"(uint64_t)(int64_t)({_SX[op.size]})" if op.signed else ""
            if slot is not None:
                return [f"{d} = {conv}fk_ld{op.size}(stk + {slot});"]
            return ["{", *self.xlate(op, op.src, 0), f"{d} = {conv}fk_ld{op.size}(p_);", "}"]
        if k in ("st", "stx"):
            value = _u64(op.k) if k == "st" else f"r{op.src}"
            slot = self.stack_slot(op, op.dst)
            if slot is not None:
                return [f"fk_st{op.size}(stk + {slot}, {value});"]
            return ["{", *self.xlate(op, op.dst, 1), f"fk_st{op.size}(p_, {value});", "}"]
        if k == "atomic":
            return self.atomic(op)
        if k == "ld_pkt":
            rem = self.p.rem[op.idx]
            t = f"r{op.src} + {_u64(op.k)}" if op.src is not None else _u64(op.k)
            lines = [f"if (!run->has_skb) {self.fault_static(op.idx, F_NO_SKB)}",
                     f"{{ uint64_t t_ = {t}, v_; r1 = r6; r2 = t_;",
                     f"  if (!fk_skb_load(run, t_, {op.size}, &v_)) {{ r0 = 0; n -= {rem - 1}; goto fk_exit; }}",
                     "  r0 = v_; }"]
            return lines
        raise AssertionError(k)

    def atomic(self, op: Op) -> list[str]:
        imm, size = op.op, op.size
        s = f"r{op.src}"
        if imm == BPF_LOAD_ACQ:
            return ["{", *self.xlate(op, op.src, 0), f"r{op.dst} = fk_ld{size}(p_);", "}"]
        if imm == BPF_STORE_REL:
            return ["{", *self.xlate(op, op.dst, 1), f"fk_st{size}(p_, {s});", "}"]
        cast = "uint64_t" if size == 8 else "uint32_t"
        lines = ["{", *self.xlate(op, op.dst, 0),
                 f"p_ = fk_xlate(run, r{op.dst} + {_u64(op.off & ((1 << 64) - 1))}, {size}, 1, depth);",
                 f"if (!p_) {self.fault_py(op.idx, self.p.rem[op.idx])}",
                 f"uint64_t old_ = fk_ld{size}(p_);"]
        if imm == BPF_XCHG:
            lines += [f"fk_st{size}(p_, {s});", f"{s} = old_;"]
        elif imm == BPF_CMPXCHG:
            lines += [f"if (old_ == ({cast})r0) fk_st{size}(p_, {s});", "r0 = old_;"]
        else:
            lines.append(f"fk_st{size}(p_, ({cast})(old_ {_RMW[imm & ~BPF_FETCH]} {s}));")
            if imm & BPF_FETCH:
                lines.append(f"{s} = old_;")
        return lines + ["}"]

    def terminator(self, op: Op) -> list[str]:
        k = op.kind
        if k == "ja":
            return [f"goto L{op.tgt};"]
        if k == "jmp":
            return [f"if {_cond(op)} goto L{op.tgt};", f"goto L{op.nxt};"]
        if k == "may_goto":
            return [f"if (!loops) goto L{op.tgt};", "loops--;", f"goto L{op.nxt};"]
        if k == "exit":
            return ["goto fk_exit;"]
        if k in ("call", "callx"):
            fid = _u64(op.k & ((1 << 64) - 1)) if k == "call" else f"r{op.dst}"
            return [
                self.spill(),
                "run->hstatus = 0;",
                f"{{ uint64_t v_ = fk_py_helper(run->token, {fid}, {int(k == 'callx')}, depth, r1, r2, r3, r4, r5);",
                "  switch (run->hstatus) {",
                "  case 0: r0 = v_; break;",
                "  case 1: break;",
                "  case 2: r0 = v_; goto fk_exit;",
                f"  default: {{ int64_t tc_ = run->tail_counted; run->tail_counted = 0; {self.fault_py(op.idx, '1 - tc_')} }}",
                "  } }",
                f"goto L{op.nxt};",
            ]
        if k == "pcall":
            save = " ".join(f"fr[fd].r[{i - 1}] = r{i};" for i in range(1, 11))
            return [
                f"if (depth + 1 >= {MAX_CALL_FRAMES}) {self.fault_static(op.idx, F_DEPTH)}",
                save,
                f"fr[fd].loops = loops; fr[fd].ret = {op.nxt}; fd++; depth++;",
                "if (!run->stack_host[depth]) {",
                "  " + self.spill(),
                f"  if (fk_py_stack(run->token, depth) < 0) {{ fd--; depth--; {self.fault_py(op.idx, self.p.rem[op.idx])} }}",
                "}",
                "stk = run->stack_host[depth]; memset(stk, 0, FK_STACK); r10 = run->stack_base[depth] + FK_STACK;",
                f"r6 = r7 = r8 = r9 = 0; loops = UINT64_C({self.max_loops});",
                f"goto L{op.tgt};",
            ]
        if k == "fault":
            return [self.fault_static(op.idx, F_STATIC)]
        raise AssertionError(k)

    def block(self, start: int) -> list[str]:
        p = self.p
        lines = [f"L{start}: n += {p.block_len[start]};"]
        idx = start
        for _ in range(p.block_len[start]):
            op = p.ops[idx]
            if op.kind in _TERMINATORS:
                return lines + self.terminator(op)
            lines += self.op_lines(op)
            idx = op.nxt
        return lines + [f"goto L{idx};"]

    def source(self) -> str:
        p = self.p
        regs = ", ".join(f"r{i} = run->regs[{i}]" for i in range(NREGS))
        out = [
            _PRELUDE,
            "int64_t fk_prog(void *run_, int64_t entry, int64_t depth) {",
            "struct fk_run *run = (struct fk_run *)run_;",
            f"uint64_t {regs};",
            "uint8_t *stk = run->stack_host[depth];",
            f"uint64_t loops = UINT64_C({self.max_loops}), n = 0;",
            "int64_t fd = 0;",
            f"struct {{ uint64_t r[10]; uint64_t loops; int64_t ret; }} fr[{MAX_CALL_FRAMES}];",
            "(void)fr; (void)fd; (void)stk;",
            "switch (entry) {",
            *(f"case {e}: goto L{e};" for e in p.entries),
            "default: run->pc = entry; run->fault = 0; goto fk_fault_static;",
            "}",
        ]
        for start in p.leaders:
            out += self.block(start)
        out += ["fk_exit:", "if (fd == 0) {", self.spill(), "run->count = n; return 0; }"]
        if p.has_pcalls:
            restore = " ".join(f"r{i} = fr[fd].r[{i - 1}];" for i in range(1, 11))
            rets = sorted({op.nxt for op in p.ops.values() if op.kind == "pcall"})
            out += ["fd--; depth--;", restore, "loops = fr[fd].loops; stk = run->stack_host[depth];",
                    "switch (fr[fd].ret) {", *(f"case {r}: goto L{r};" for r in rets), "}"]
        out += [
            "fk_fault_static:", self.spill(), f"run->count = n; return {ST_FAULT};",
            "fk_fault_py:", self.spill(), f"run->count = n; return {ST_PYERR};",
            "}",
            "",
            "int64_t fk_repeat(void *run_, int64_t reps) {",
            "struct fk_run *run = (struct fk_run *)run_;",
            "uint64_t saved[11], total = 0; int64_t st = 0;",
            "memcpy(saved, run->regs, sizeof saved);",
            "for (int64_t i = 0; i < reps; i++) {",
            "  memcpy(run->regs, saved, sizeof saved);",
            "  if (i) memset(run->stack_host[0], 0, FK_STACK);",
            "  st = fk_prog(run, 0, 0); total += run->count;",
            "  if (st) break;",
            "}",
            "run->count = total; return st;",
            "}",
        ]
        return "\n".join(out) + "\n"


def generate(prog: Program, max_loops: int) -> str:
    return _Gen(prog, max_loops).source()
