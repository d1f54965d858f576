"""Execution engines side by side: instructions per second of the reference interpreter, the generated-Python
tier, the native (C) tier and the real kernel's PROG_TEST_RUN, on a fixed set of programs.

    python3 benchmarks/engine.py [--seconds S] [--only NAME]

Every program is a SOCKET_FILTER the real verifier accepts, so the kernel column loads the same bytes
(``prog_load`` + ``prog_test_run(repeat=N)``) and turns the reported mean duration into insns/s with the
instruction count of the reference interpreter's run of the same input (the kernel's retval is checked
against the interpreter's r0, so both took the same path). LD_ABS offsets are relative to the network
header on a SOCKET_FILTER test run, so the engines get the packet without its Ethernet header.

Columns: ``interp`` / ``python`` / ``c 1x`` are single ``run()`` calls in a Python loop (per-run overhead
included); ``py rep`` / ``c rep`` are ``run_repeat(n)`` (the loop inside the engine, inside C for a
program without helper calls); ``kernel`` is the real JIT under PROG_TEST_RUN.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fakekernel.interp import AddressSpace, Interpreter, RunEnv  # noqa: E402
from fakekernel.jit import compile_prog  # noqa: E402
from fakekernel.jit.native import compiler_works  # noqa: E402
from uapi import calls  # noqa: E402
from uapi.backend import HostKernel  # noqa: E402
from uapi.bpf import (  # noqa: E402
    BPF_ADD, BPF_AND, BPF_ARSH, BPF_B, BPF_DW, BPF_H, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_X, BPF_JGE, BPF_JGT, BPF_JLT, BPF_JNE, BPF_JSET,
    BPF_LSH, BPF_MUL, BPF_OR, BPF_RSH, BPF_SUB, BPF_W, BPF_XOR, FuncId, MapType, ProgType,
)
from uapi.insn import (  # noqa: E402
    BPF_ALU32_IMM, BPF_ALU32_REG, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP, BPF_CALL_HELPER, BPF_EXIT_INSN,
    BPF_LD_ABS, BPF_LD_IMM64_RAW, BPF_LD_IND, BPF_LD_MAP_FD, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG,
    BPF_ST_MEM, BPF_STX_MEM, Insn, encode_prog,
)

ETH_HLEN = 14
# Ethernet + IPv4 (IHL 5, proto TCP) + TCP header (ports 0x1234 -> 443) + payload
PACKET = bytes.fromhex(
    "ffffffffffff" "020000000001" "0800"
    "4500003c1c4640004006b1e6c0a80001c0a800c7"
    "123401bb0000000100000000a0027210fe300000"
) + bytes(range(64))
MAP_ENTRIES = 16
TRIALS = 3


class _Asm:
    """Insns with forward/backward label references: J(cond, dst, src_or_imm, "label")."""

    def __init__(self) -> None:
        self.items: list = []

    def __call__(self, *insns) -> None:
        for insn in insns:
            self.items.extend(insn if isinstance(insn, tuple) else [insn])

    def label(self, name: str) -> None:
        self.items.append(("label", name))

    def jmp(self, op: int, dst: int, operand: int | None, label: str, *, reg: bool = False) -> None:
        self.items.append(("jmp", op, dst, operand, label, reg))

    def goto(self, label: str) -> None:
        self.items.append(("ja", label))

    def build(self) -> list[Insn]:
        labels, pos = {}, 0
        for it in self.items:
            if isinstance(it, tuple) and it[0] == "label":
                labels[it[1]] = pos
            else:
                pos += 1
        out: list[Insn] = []
        for it in self.items:
            if isinstance(it, Insn):
                out.append(it)
            elif it[0] == "jmp":
                _, op, dst, operand, label, reg = it
                off = labels[label] - len(out) - 1
                out.append(Insn(BPF_JMP | op | (BPF_X if reg else BPF_K), dst, operand if reg else 0, off,
                                0 if reg else operand))
            elif it[0] == "ja":
                out.append(Insn(BPF_JMP | BPF_JA, 0, 0, labels[it[1]] - len(out) - 1, 0))
        return out


def alu_heavy() -> list[Insn]:
    """~1000 straight-line ALU insns seeded from the packet."""
    a = _Asm()
    a(BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_W, 12))  # r0 = saddr
    a(BPF_MOV64_REG(7, 0), BPF_LD_ABS(BPF_W, 16), BPF_MOV64_REG(8, 0), BPF_MOV64_IMM(9, 0x1234567))
    ops = [(BPF_ADD, 7, 8), (BPF_XOR, 8, 9), (BPF_MUL, 9, 7), (BPF_RSH, 7, 3), (BPF_SUB, 8, 7), (BPF_OR, 9, 8),
           (BPF_LSH, 8, 5), (BPF_AND, 7, 9), (BPF_ARSH, 9, 2), (BPF_ADD, 8, 9)]
    i = 0
    while len(a.items) < 995:
        op, d, s = ops[i % len(ops)]
        if op in (BPF_RSH, BPF_LSH, BPF_ARSH):
            a((BPF_ALU64_IMM if i % 3 else BPF_ALU32_IMM)(op, d, s))
        elif i % 4 == 3:
            a(BPF_ALU64_IMM(op, d, 0x9E3779B1 & 0x7FFFFFFF))
        else:
            a((BPF_ALU64_REG if i % 2 else BPF_ALU32_REG)(op, d, s))
        i += 1
    a(BPF_MOV64_REG(0, 7), BPF_ALU64_REG(BPF_XOR, 0, 8), BPF_ALU64_REG(BPF_ADD, 0, 9), BPF_ALU64_IMM(BPF_AND, 0, 0xFF),
      BPF_EXIT_INSN())
    return a.build()


def branchy() -> list[Insn]:
    """A loop over the 64 payload bytes with a data-dependent 4-way branch per byte (verifier-friendly:
    the byte is reloaded every iteration, so the paths merge at the loop tail)."""
    payload = 40  # IPv4 (20) + TCP (20) headers
    a = _Asm()
    a(BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_W, 12), BPF_MOV64_REG(9, 0), BPF_MOV64_IMM(8, 0))
    a.label("loop")
    a(BPF_LD_IND(BPF_B, 8, payload))
    a.jmp(BPF_JSET, 0, 1, "odd")
    a.jmp(BPF_JGT, 0, 40, "big")
    a(BPF_ALU64_IMM(BPF_ADD, 9, 1))
    a.goto("next")
    a.label("big")
    a(BPF_ALU64_REG(BPF_XOR, 9, 0), BPF_ALU64_IMM(BPF_RSH, 9, 1))
    a.goto("next")
    a.label("odd")
    a.jmp(BPF_JLT, 0, 20, "small")
    a(BPF_ALU64_REG(BPF_ADD, 9, 0), BPF_ALU64_IMM(BPF_LSH, 9, 1))
    a.goto("next")
    a.label("small")
    a(BPF_ALU64_IMM(BPF_SUB, 9, 3))
    a.label("next")
    a(BPF_ALU64_IMM(BPF_ADD, 8, 1))
    a.jmp(BPF_JLT, 8, 64, "loop")
    a(BPF_MOV64_REG(0, 9), BPF_ALU64_IMM(BPF_AND, 0, 0xFFFF), BPF_EXIT_INSN())
    return a.build()


def memory_heavy() -> list[Insn]:
    """Fill a 256-byte stack array, then 24 passes of load/mix/store over it."""
    a = _Asm()
    a(BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_W, 16), BPF_MOV64_REG(7, 0))
    for off in range(-256, 0, 8):
        a(BPF_STX_MEM(BPF_DW, 10, 7, off), BPF_ALU64_IMM(BPF_ADD, 7, 0x3B))
    a(BPF_MOV64_IMM(8, 0))
    a.label("pass")
    for off in range(-256, 0, 8):
        a(BPF_LDX_MEM(BPF_DW, 1, 10, off), BPF_ALU64_REG(BPF_XOR, 1, 8), BPF_ALU64_IMM(BPF_MUL, 1, 33),
          BPF_STX_MEM(BPF_DW, 10, 1, off))
    a(BPF_ALU64_IMM(BPF_ADD, 8, 1))
    a.jmp(BPF_JLT, 8, 24, "pass")
    a(BPF_LDX_MEM(BPF_DW, 0, 10, -8), BPF_LDX_MEM(BPF_W, 1, 10, -128), BPF_ALU64_REG(BPF_ADD, 0, 1),
      BPF_ALU64_IMM(BPF_AND, 0, 0xFFFF), BPF_EXIT_INSN())
    return a.build()


def helper_heavy(map_ref: tuple[int, int]) -> list[Insn]:
    """16 bpf_map_lookup_elem() calls on an array map, bumping each value (atomic add)."""
    src, imm = map_ref
    a = _Asm()
    a(BPF_MOV64_IMM(6, 0), BPF_MOV64_IMM(7, 0))
    a.label("loop")
    a(BPF_STX_MEM(BPF_W, 10, 6, -4), BPF_LD_IMM64_RAW(1, src, imm), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4),
      BPF_CALL_HELPER(FuncId.map_lookup_elem))
    a.jmp(BPF_JEQ, 0, 0, "skip")
    a(BPF_MOV64_IMM(1, 1), BPF_ATOMIC_OP(BPF_DW, BPF_ADD, 0, 1, 0), BPF_LDX_MEM(BPF_DW, 1, 0, 0),
      BPF_ALU64_REG(BPF_ADD, 7, 1))
    a.label("skip")
    a(BPF_ALU64_IMM(BPF_ADD, 6, 1))
    a.jmp(BPF_JLT, 6, MAP_ENTRIES, "loop")
    a(BPF_MOV64_IMM(0, 1), BPF_EXIT_INSN())  # the sum depends on earlier runs; return a constant
    return a.build()


def packet_parser() -> list[Insn]:
    """IPv4/TCP header walk with LD_ABS/LD_IND: version, IHL, protocol, fragment, port checks."""
    a = _Asm()
    a(BPF_MOV64_REG(6, 1), BPF_LD_ABS(BPF_B, 0), BPF_MOV64_REG(7, 0), BPF_ALU64_IMM(BPF_RSH, 7, 4))
    a.jmp(BPF_JNE, 7, 4, "drop")
    a(BPF_ALU64_IMM(BPF_AND, 0, 0x0F))
    a.jmp(BPF_JLT, 0, 5, "drop")
    a(BPF_ALU64_IMM(BPF_LSH, 0, 2), BPF_MOV64_REG(8, 0))  # r8 = IP header length
    a(BPF_LD_ABS(BPF_B, 9))
    a.jmp(BPF_JNE, 0, 6, "drop")
    a(BPF_LD_ABS(BPF_H, 6), BPF_ALU64_IMM(BPF_AND, 0, 0x1FFF))
    a.jmp(BPF_JNE, 0, 0, "drop")
    a(BPF_LD_ABS(BPF_W, 12), BPF_MOV64_REG(9, 0), BPF_LD_ABS(BPF_W, 16), BPF_ALU64_REG(BPF_XOR, 9, 0))
    a(BPF_LD_IND(BPF_H, 8, 2))  # destination port
    a.jmp(BPF_JEQ, 0, 443, "https")
    a.jmp(BPF_JEQ, 0, 80, "http")
    a.goto("drop")
    a.label("http")
    a(BPF_MOV64_IMM(0, 80))
    a(BPF_EXIT_INSN())
    a.label("https")
    a(BPF_LD_IND(BPF_H, 8, 0), BPF_ALU64_REG(BPF_ADD, 0, 9), BPF_LD_IND(BPF_B, 8, 13))  # src port, flags
    a.jmp(BPF_JSET, 0, 0x02, "syn")
    a(BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN())
    a.label("syn")
    a(BPF_MOV64_IMM(0, 0xFFFF), BPF_EXIT_INSN())
    a.label("drop")
    a(BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN())
    return a.build()


PROGRAMS = {
    "alu-heavy": alu_heavy,
    "branchy": branchy,
    "memory-heavy": memory_heavy,
    "helper-heavy": helper_heavy,
    "packet-parser": packet_parser,
}


# --- the engines' side: an array map whose values are regions, and its lookup helper ---------------------


class _ArrayMap:
    def __init__(self, mem: AddressSpace) -> None:
        self.values = [mem.map_region(bytearray(8), "map_value", f"bench[{i}]") for i in range(MAP_ENTRIES)]


def _engine_setup():
    mem = AddressSpace()
    amap = _ArrayMap(mem)
    handle = mem.map_object(amap)

    def map_lookup_elem(env, map_addr, key_addr, r3, r4, r5):
        m = env.mem.object_at(map_addr)
        key = env.mem.load(key_addr, 4)
        return m.values[key].base if key < len(m.values) else 0

    ctx = mem.map_region(bytearray(192), "ctx", "__sk_buff")
    return mem, ctx, {int(FuncId.map_lookup_elem): map_lookup_elem}, handle


def _insns_for_engines(name: str, handle: int) -> list[Insn]:
    return PROGRAMS[name]((0, handle)) if name == "helper-heavy" else PROGRAMS[name]()


def _time_loop(fn, seconds: float) -> tuple[int, float]:
    """Call fn() until `seconds` pass; (calls, elapsed)."""
    fn()
    n, start = 0, time.perf_counter()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed
        batch = min(batch * 2, 1 << 20)


def measure_engines(name: str, seconds: float) -> dict:
    mem, ctx, helpers, handle = _engine_setup()
    insns = _insns_for_engines(name, handle)
    skb = PACKET[ETH_HLEN:]
    env = RunEnv(mem=mem)
    r0 = Interpreter(insns).run(mem, ctx.base, helpers=helpers, env=env, skb_data=skb)
    count = env.insn_count
    out = {"insns": len(insns), "executed": count, "r0": r0}
    tiers = [("interp", "interp", False), ("python", "python", False), ("py rep", "python", True)]
    if compiler_works():
        tiers += [("c 1x", "c", False), ("c rep", "c", True)]
    for label, tier, repeat in tiers:
        eng = compile_prog(insns, tier=tier)
        env = RunEnv(mem=mem)
        if repeat:
            reps = [1]

            def fn():
                eng.run_repeat(reps[0], mem, ctx.base, helpers=helpers, env=env, skb_data=skb)

            # grow the inner repeat until one call takes ~10 ms
            while True:
                t = time.perf_counter()
                fn()
                if time.perf_counter() - t > 0.01 or reps[0] >= 1 << 24:
                    break
                reps[0] *= 4
        else:
            def fn():
                eng.run(mem, ctx.base, helpers=helpers, env=env, skb_data=skb)
        best = 0.0
        for _ in range(TRIALS):  # best of: the machine may be shared
            env.insn_count = 0
            calls_, elapsed = _time_loop(fn, seconds / TRIALS)
            assert env.insn_count % count == 0, (label, env.insn_count, count)
            best = max(best, env.insn_count / elapsed)
        out[label] = best
        out[label + " us"] = count / best * 1e6
    return out


def measure_kernel(name: str, seconds: float) -> dict | None:
    b = HostKernel()
    map_fd = None
    try:
        if name == "helper-heavy":
            map_fd = calls.map_create(b, MapType.ARRAY, 4, 8, MAP_ENTRIES)
            insns = helper_heavy((1, map_fd))  # BPF_PSEUDO_MAP_FD
        else:
            insns = PROGRAMS[name]()
        fd = calls.prog_load(b, ProgType.SOCKET_FILTER, encode_prog(insns), log_size=1 << 20, log_level=1)
    except Exception as exc:  # no bpf() here, or the verifier said no
        if map_fd is not None:
            b.close(map_fd)
        return {"error": str(exc).splitlines()[0][:80]}
    try:
        res = calls.prog_test_run(b, fd, PACKET, repeat=1)
        repeat = 1000
        while True:
            t = time.perf_counter()
            res = calls.prog_test_run(b, fd, PACKET, repeat=repeat)
            if time.perf_counter() - t > seconds / TRIALS or repeat >= 1 << 26:
                break
            repeat *= 4
        ns = min([res.duration] + [calls.prog_test_run(b, fd, PACKET, repeat=repeat).duration
                                   for _ in range(TRIALS - 1)])
        return {"retval": res.retval, "ns": ns, "repeat": repeat}
    finally:
        b.close(fd)
        if map_fd is not None:
            b.close(map_fd)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    ap.add_argument("--only", help="run one program")
    args = ap.parse_args()
    names = [args.only] if args.only else list(PROGRAMS)
    cols = ["interp", "python", "py rep", "c 1x", "c rep", "kernel"]
    print(f"C compiler: {'yes' if compiler_works() else 'no'}; instructions per second (higher is better)\n")
    print(f"{'program':14} {'insns':>6} {'exec':>6} " + " ".join(f"{c:>9}" for c in cols)
          + f" {'c1x us':>7} {'k/c rep':>8} {'c rep/int':>9}")
    for name in names:
        e = measure_engines(name, args.seconds)
        k = measure_kernel(name, args.seconds)
        kernel_ips = None
        note = ""
        if k and "error" not in k:
            kernel_ips = e["executed"] / (k["ns"] * 1e-9) if k["ns"] else None
            if k["retval"] != e["r0"]:
                note = f"  (kernel retval {k['retval']} != interp r0 {e['r0']}: counts not comparable)"
        elif k:
            note = f"  (kernel: {k['error']})"
        e["kernel"] = kernel_ips
        ratio_k = f"{kernel_ips / e['c rep']:.1f}x" if kernel_ips and e.get("c rep") else "-"
        ratio_i = f"{e['c rep'] / e['interp']:.0f}x" if e.get("c rep") else "-"
        print(f"{name:14} {e['insns']:>6} {e['executed']:>6} " + " ".join(f"{_fmt(e.get(c)):>9}" for c in cols)
              + f" {_fmt(e.get('c 1x us')):>7} {ratio_k:>8} {ratio_i:>9}{note}")


if __name__ == "__main__":
    main()
