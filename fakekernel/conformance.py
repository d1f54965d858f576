"""ISA conformance — the bpf_conformance suite (github.com/Alan-Jowett/bpf_conformance) run on the
interpreter of kernel/bpf/core.c (fakekernel.interp).

Three pieces:

* :func:`assemble` — an assembler for the suite's uBPF-style syntax (``mov32 %r0, 0``,
  ``ldxdw %r1, [%r10-8]``, ``lock fetch add [%r10-8], %r1``, ``call local func1``, labels);
* :func:`run_conformance_case` — parse a ``.data`` file, run it, return (expected, actual);
* :func:`plugin_main` — the suite's plugin protocol: program bytes as base-16 on stdin (or
  ``--program HEX``), the input memory as base-16 in the first positional argument, r0 printed in
  hex on stdout; failures exit non-zero with the message on stderr.

The suite's runtime contract: r1 points to a writable copy of the ``-- mem`` bytes and r2 holds its
length (both 0 without memory); helper #5 is ``unwind`` (returns its argument, and a zero result
ends the program with r0 = 0); ``call %reg`` (callx) calls the helper whose id is in the register.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from fakekernel.interp import AddressSpace, Interpreter, InterpreterFault, RunEnv
from uapi.bpf import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
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
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LSH,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_SUB,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
)
from uapi.insn import INSN_SIZE, Insn, decode_prog, encode_prog, u64

__all__ = [
    "AsmError",
    "ConformanceCase",
    "assemble",
    "parse_data_file",
    "run_program",
    "run_conformance_case",
    "plugin_main",
    "main",
    "UNWIND_HELPER_ID",
    "CONFORMANCE_HELPERS",
]

#: the helper id the suite's runtimes register as "unwind" (tests/call_unwind_fail.data)
UNWIND_HELPER_ID = 5

_MAX_REG = 15  # the suite's assembler accepts %r11-%r15 for negative tests
_S16 = (-(1 << 15), (1 << 15) - 1)
_S32 = (-(1 << 31), (1 << 31) - 1)
_U16_MAX = (1 << 16) - 1
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1
_WIDTH_SUFFIX_32 = "32"
_WIDTH_SUFFIX_64 = "64"


class AsmError(ValueError):
    """A line the suite's assembler would reject."""


# --- operand decoding --------------------------------------------------------------------------------


def _reg(text: str) -> int:
    m = re.fullmatch(r"%r(\d+)", text)
    if not m or int(m.group(1)) > _MAX_REG:
        raise AsmError(f"invalid register: {text}")
    return int(m.group(1))


def _imm32(text: str) -> int:
    """Hex is an unsigned 32-bit pattern, decimal a signed 32-bit value."""
    try:
        if "0x" in text.lower():
            value = int(text, 16)
            if not 0 <= value <= _U32_MAX:
                raise AsmError(f"immediate out of 32-bit range: {text}")
            return value
        value = int(text, 10)
    except ValueError:
        raise AsmError(f"invalid immediate: {text}") from None
    if not _S32[0] <= value <= _S32[1]:
        raise AsmError(f"immediate out of 32-bit range: {text}")
    return value


def _imm64(text: str) -> int:
    try:
        value = int(text, 16) if "0x" in text.lower() else int(text, 10)
    except ValueError:
        raise AsmError(f"invalid immediate: {text}") from None
    if not -(1 << 63) <= value <= _U64_MAX:
        raise AsmError(f"immediate out of 64-bit range: {text}")
    return u64(value)


def _offset(text: str) -> int:
    try:
        if "0x" in text.lower():
            value = int(text, 16)
            if not -_U16_MAX <= value <= _U16_MAX:
                raise AsmError(f"offset out of 16-bit range: {text}")
            return value
        value = int(text, 10)
    except ValueError:
        raise AsmError(f"invalid offset: {text}") from None
    if not _S16[0] <= value <= _S16[1]:
        raise AsmError(f"offset out of 16-bit range: {text}")
    return value


def _mem_operand(text: str) -> tuple[int, int]:
    """``[%r10-8]`` / ``[%r1+2]`` / ``[%r1]`` -> (reg, off)."""
    m = re.fullmatch(r"\[(%r\d+)(?:([+-].+))?\]", text)
    if not m:
        raise AsmError(f"failed to decode register and offset: {text}")
    return _reg(m.group(1)), _offset(m.group(2)) if m.group(2) else 0


# --- encoders: (asm, mnemonic, operands) -> Insn | list[Insn] -------------------------------------------


@attrs.define
class _Asm:
    """Per-program state: the instructions so far, labels and pending label references."""

    out: list[Insn] = attrs.field(factory=list)
    labels: dict[str, int] = attrs.field(factory=dict)
    fixups: list[tuple[int, str, str]] = attrs.field(factory=list)  # (insn idx, label, field)

    def target(self, text: str, field: str) -> int:
        """A jump target: ``+N``/``-N`` is a displacement, anything else a label fixed up later."""
        if text[:1] in "+-":
            return _offset(text) if field == "off" else _imm32(text)
        self.fixups.append((len(self.out), text, field))
        return 0


_ALU_OPS = {
    "add": BPF_ADD,
    "sub": BPF_SUB,
    "mul": BPF_MUL,
    "div": BPF_DIV,
    "sdiv": BPF_DIV,
    "or": BPF_OR,
    "and": BPF_AND,
    "lsh": BPF_LSH,
    "rsh": BPF_RSH,
    "mod": BPF_MOD,
    "smod": BPF_MOD,
    "xor": BPF_XOR,
    "mov": BPF_MOV,
    "arsh": BPF_ARSH,
}
_SIGNED_ALU = {"sdiv", "smod"}
_JMP_OPS = {
    "jeq": BPF_JEQ,
    "jgt": BPF_JGT,
    "jge": BPF_JGE,
    "jset": BPF_JSET,
    "jne": BPF_JNE,
    "jsgt": BPF_JSGT,
    "jsge": BPF_JSGE,
    "jlt": BPF_JLT,
    "jle": BPF_JLE,
    "jslt": BPF_JSLT,
    "jsle": BPF_JSLE,
}
_SIZES = {"b": BPF_B, "h": BPF_H, "w": BPF_W, "dw": BPF_DW}
_ENDIAN = {"le": BPF_ALU | BPF_END | BPF_TO_LE, "be": BPF_ALU | BPF_END | BPF_TO_BE,
           "swap": BPF_ALU64 | BPF_END | BPF_TO_LE, "bswap": BPF_ALU64 | BPF_END | BPF_TO_LE}
_ATOMIC_OPS = {"add": BPF_ADD, "and": BPF_AND, "or": BPF_OR, "xor": BPF_XOR, "xchg": BPF_XCHG, "cmpxchg": BPF_CMPXCHG}
_MOVSX = "movsx"


def _split_width(mnemonic: str) -> tuple[str, int]:
    if mnemonic.endswith(_WIDTH_SUFFIX_32):
        return mnemonic[: -len(_WIDTH_SUFFIX_32)], BPF_ALU
    if mnemonic.endswith(_WIDTH_SUFFIX_64):
        return mnemonic[: -len(_WIDTH_SUFFIX_64)], BPF_ALU64
    return mnemonic, BPF_ALU64


def _nargs(operands: list[str], n: int, mnemonic: str) -> None:
    if len(operands) != n:
        raise AsmError(f"invalid number of operands for mnemonic: {mnemonic}")


def _enc_alu(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    name, cls = _split_width(mnemonic)
    off = 1 if name in _SIGNED_ALU else 0
    if name.startswith(_MOVSX):
        off, name = _offset(name[len(_MOVSX) :]), "mov"
    if name == "neg":
        _nargs(ops, 1, mnemonic)
        return Insn(cls | BPF_NEG | BPF_K, _reg(ops[0]))
    if name not in _ALU_OPS:
        raise AsmError(f"invalid mnemonic: {mnemonic}")
    _nargs(ops, 2, mnemonic)
    if ops[1].startswith("%"):
        return Insn(cls | _ALU_OPS[name] | BPF_X, _reg(ops[0]), _reg(ops[1]), off, 0)
    return Insn(cls | _ALU_OPS[name] | BPF_K, _reg(ops[0]), 0, off, _imm32(ops[1]))


def _enc_endian(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    m = re.fullmatch(r"(le|be|swap|bswap)(\d+)", mnemonic)
    if not m:
        raise AsmError(f"invalid mnemonic: {mnemonic}")
    _nargs(ops, 1, mnemonic)
    return Insn(_ENDIAN[m.group(1)], _reg(ops[0]), 0, 0, _imm32(m.group(2)))


def _enc_lddw(asm: _Asm, mnemonic: str, ops: list[str]) -> list[Insn]:
    _nargs(ops, 2, mnemonic)
    value = _imm64(ops[1])
    return [Insn(BPF_LD | BPF_IMM | BPF_DW, _reg(ops[0]), 0, 0, value & _U32_MAX), Insn(0, 0, 0, 0, value >> 32)]


def _enc_ldx(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    m = re.fullmatch(r"ldx(s?)(b|h|w|dw)", mnemonic)
    if not m or (m.group(1) and m.group(2) == "dw"):
        raise AsmError(f"invalid mnemonic: {mnemonic}")
    _nargs(ops, 2, mnemonic)
    src, off = _mem_operand(ops[1])
    mode = BPF_MEMSX if m.group(1) else BPF_MEM
    return Insn(BPF_LDX | mode | _SIZES[m.group(2)], _reg(ops[0]), src, off, 0)


def _enc_st(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    m = re.fullmatch(r"st(x?)(b|h|w|dw)", mnemonic)
    if not m:
        raise AsmError(f"invalid mnemonic: {mnemonic}")
    _nargs(ops, 2, mnemonic)
    dst, off = _mem_operand(ops[0])
    if m.group(1):
        return Insn(BPF_STX | BPF_MEM | _SIZES[m.group(2)], dst, _reg(ops[1]), off, 0)
    return Insn(BPF_ST | BPF_MEM | _SIZES[m.group(2)], dst, 0, off, _imm32(ops[1]))


def _enc_lock(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    """``lock [fetch] <op>[32] [dst+off], src``."""
    fetch = bool(ops) and ops[0] == "fetch"
    if fetch:
        ops = ops[1:]
    if len(ops) != 3:
        raise AsmError("invalid number of operands for lock")
    name, cls = _split_width(ops[0])
    if name not in _ATOMIC_OPS or (cls == BPF_ALU64 and ops[0].endswith(_WIDTH_SUFFIX_64)):
        raise AsmError(f"invalid mnemonic: lock {ops[0]}")
    imm = _ATOMIC_OPS[name] | (BPF_FETCH if fetch else 0)
    size = BPF_W if cls == BPF_ALU else BPF_DW
    dst, off = _mem_operand(ops[1])
    return Insn(BPF_STX | BPF_ATOMIC | size, dst, _reg(ops[2]), off, imm)


def _enc_jmp(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    name, cls = _split_width(mnemonic)
    cls = BPF_JMP32 if cls == BPF_ALU else BPF_JMP
    if name not in _JMP_OPS or mnemonic.endswith(_WIDTH_SUFFIX_64):
        raise AsmError(f"invalid mnemonic: {mnemonic}")
    _nargs(ops, 3, mnemonic)
    if ops[1].startswith("%"):
        code, src, imm = cls | _JMP_OPS[name] | BPF_X, _reg(ops[1]), 0
    else:
        code, src, imm = cls | _JMP_OPS[name] | BPF_K, 0, _imm32(ops[1])
    return Insn(code, _reg(ops[0]), src, asm.target(ops[2], "off"), imm)


def _enc_ja(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    _nargs(ops, 1, mnemonic)
    if mnemonic == "ja32":
        return Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, asm.target(ops[0], "imm"))
    return Insn(BPF_JMP | BPF_JA, 0, 0, asm.target(ops[0], "off"), 0)


def _enc_exit(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    _nargs(ops, 0, mnemonic)
    asm.labels.setdefault("exit", len(asm.out))  # the first exit is the implicit label "exit"
    return Insn(BPF_JMP | BPF_EXIT)


def _enc_call(asm: _Asm, mnemonic: str, ops: list[str]) -> Insn:
    if len(ops) == 1:
        ops = ["helper", *ops]
    _nargs(ops, 2, mnemonic)
    mode, target = ops
    if mode == "helper":
        if target.startswith("%"):  # callx: helper id in a register
            return Insn(BPF_JMP | BPF_CALL | BPF_X, _reg(target), 0, 0, 0)
        return Insn(BPF_JMP | BPF_CALL | BPF_K, 0, 0, 0, _imm32(target))
    if mode == "local":
        return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, asm.target(target, "imm"))
    if mode == "runtime":
        return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, _imm32(target))
    raise AsmError("invalid call mode")


_Encoder = Callable[[_Asm, str, list[str]], "Insn | list[Insn]"]


#: the mnemonic table (the suite's _bpf_mnemonic_map), keyed by the shape of the mnemonic
_MNEMONICS: tuple[tuple[re.Pattern, _Encoder], ...] = tuple(
    (re.compile(pattern), encoder)
    for pattern, encoder in (
        (r"(le|be|swap|bswap)\d+", _enc_endian),
        (r"lddw", _enc_lddw),
        (r"ldxs?(b|h|w|dw)", _enc_ldx),
        (r"stx?(b|h|w|dw)", _enc_st),
        (r"lock", _enc_lock),
        (r"ja(32)?", _enc_ja),
        (r"exit", _enc_exit),
        (r"call", _enc_call),
        (r"j[a-z]+(32)?", _enc_jmp),
        (r"[a-z]+(\d+)?", _enc_alu),
    )
)


def _encoder_for(mnemonic: str) -> _Encoder:
    for pattern, encoder in _MNEMONICS:
        if pattern.fullmatch(mnemonic):
            return encoder
    raise AsmError(f"invalid mnemonic: {mnemonic}")


def assemble_insns(text: str) -> list[Insn]:
    asm = _Asm()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        mnemonic, _, rest = line.partition(" ")
        operands = [op.rstrip(",") for op in rest.split()]
        if mnemonic.endswith(":") and not operands:
            label = mnemonic[:-1]
            if label in asm.labels and label != "exit":
                raise AsmError(f"duplicate label ({label})")
            asm.labels[label] = len(asm.out)
            continue
        encoded = _encoder_for(mnemonic)(asm, mnemonic, operands)
        asm.out.extend(encoded if isinstance(encoded, list) else [encoded])
    for idx, label, field in asm.fixups:
        if label not in asm.labels:
            raise AsmError(f"invalid label: {label}")
        asm.out[idx] = attrs.evolve(asm.out[idx], **{field: asm.labels[label] - idx - 1})
    return asm.out


def assemble(text: str) -> bytes:
    """Assemble the suite's syntax into program bytes."""
    return encode_prog(assemble_insns(text))


# --- test files --------------------------------------------------------------------------------------


@attrs.frozen
class ConformanceCase:
    path: Path
    asm: str
    raw: bytes | None
    mem: bytes
    result: int | None
    error: str | None

    @property
    def program(self) -> bytes:
        """The bytecode the suite sends to a plugin (``-- raw`` wins over ``-- asm``)."""
        return self.raw if self.raw is not None else assemble(self.asm)


def _parse_number(text: str) -> int:
    token = text.split()[0]
    return int(token, 16) if "0x" in token.lower() else int(token, 10)


def parse_data_file(path: str | Path) -> ConformanceCase:
    """Split a ``.data`` file into its sections, as the suite's bpf_test_parser does."""
    path = Path(path)
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        line = line.rstrip("\r")
        if line.startswith("--"):
            current = line[2:].strip()
            sections.setdefault(current, [])
            continue
        if current is not None and line.strip():
            sections[current].append(line)
    raw = None
    if sections.get("raw"):
        words = " ".join(sections["raw"]).split()
        raw = b"".join(u64(_parse_number(w)).to_bytes(INSN_SIZE, "little") for w in words)
    mem = bytes(int(b, 16) for b in " ".join(sections.get("mem", [])).split())
    result = _parse_number(sections["result"][-1]) if sections.get("result") else None
    error = sections["error"][-1].strip() if sections.get("error") else None
    if result is None and error is None:
        raise ValueError(f"{path}: no result or error section")
    return ConformanceCase(path, "\n".join(sections.get("asm", [])), raw, mem, result, error)


class _Unwind(Exception):
    """Raised by the unwind helper to end the program."""


def _unwind(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    if r1 == 0:
        raise _Unwind
    return r1


CONFORMANCE_HELPERS = {UNWIND_HELPER_ID: _unwind}


def run_program(program: bytes, mem: bytes = b"") -> int:
    """Run program bytes with the suite's runtime contract; returns r0 (u64)."""
    interp = Interpreter(decode_prog(program), callx=True)
    space = AddressSpace()
    env = RunEnv(mem=space)
    r1 = r2 = 0
    if mem:
        region = space.map_region(bytearray(mem), "mem", "conformance_mem")
        r1, r2 = region.base, region.size
    try:
        return interp.run(space, r1, helpers=CONFORMANCE_HELPERS, env=env, extra_args=(r2,))
    except _Unwind:
        return 0


def run_conformance_case(path: str | Path) -> tuple[int | str | None, int | str]:
    """(expected, actual): r0 values, or the error strings for a ``-- error`` case."""
    case = parse_data_file(path)
    try:
        actual: int | str = run_program(case.program, case.mem)
    except (AsmError, InterpreterFault) as exc:
        if case.error is None:
            raise
        actual = str(exc)
    return (case.error if case.error is not None else case.result), actual


# --- the plugin protocol ---------------------------------------------------------------------------


def _base16_decode(text: str) -> bytes:
    """Base16 bytes as the suite's runner writes them ("b7 00 ..."); contiguous hex
    ("b700...") is accepted too, and so are unpadded single-digit tokens ("7")."""
    toks = text.split()
    if all(len(t) % 2 == 0 for t in toks):
        return bytes.fromhex("".join(toks))
    return bytes(int(tok, 16) for tok in toks)


def plugin_main(argv: Sequence[str] | None = None, stdin=None, stdout=None, stderr=None) -> int:
    """``plugin [--program HEX] [MEMHEX] [--debug] [--elf]``; program from stdin by default."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if argv[:1] == ["--help"]:
        print("usage: plugin [--program <base16 program bytes>] [<base16 memory bytes>] [--debug]", file=stdout)
        return 1
    if len(argv) > 1 and argv[0] == "--program":
        program_text, argv = argv[1], argv[2:]
    else:
        program_text = stdin.readline()
    memory_text = ""
    if argv and not argv[0].startswith("--"):
        memory_text, argv = argv[0], argv[1:]
    if "--elf" in argv:
        print("ELF input is not supported", file=stderr)
        return 1
    try:
        program = _base16_decode(program_text)
        r0 = run_program(program, _base16_decode(memory_text))
    except (ValueError, InterpreterFault) as exc:
        print(str(exc).splitlines()[0], file=stderr)
        return 1
    print(f"{r0:x}", file=stdout)
    return 0


def _run_suite(paths: Sequence[str], verbose: bool, stdout) -> int:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.data")) if p.is_dir() else [p])
    passed = 0
    for f in files:
        try:
            expected, actual = run_conformance_case(f)
            ok = expected == actual
            detail = "" if ok else f" (expected {expected!r}, got {actual!r})"
        except Exception as exc:  # a report line per file; the test suite is where failures crash
            ok, detail = False, f" ({type(exc).__name__}: {exc})"
        passed += ok
        if verbose or not ok:
            print(f'"{f}": {"Passed" if ok else "Failed"}{detail}', file=stdout)
    print(f"Passed {passed} out of {len(files)} tests.", file=stdout)
    return 0 if passed == len(files) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``fakekernel conformance run PATH...`` or ``fakekernel conformance plugin [ARGS...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plugin"]:
        return plugin_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fakekernel conformance")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run .data files (or directories of them)")
    run.add_argument("paths", nargs="+")
    run.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("plugin", help="speak the bpf_conformance plugin protocol")
    args = parser.parse_args(argv)
    return _run_suite(args.paths, args.verbose, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
