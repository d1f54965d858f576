"""fakekernel/conformance.py: the bpf_conformance ISA suite on the interpreter, its assembler and
the plugin protocol.

The .data files are looked up in tests/data/conformance (vendored copy), or in the directory named
by FAKEKERNEL_CONFORMANCE_DIR.
"""
from __future__ import annotations

import io
import os
import pathlib

import pytest

from fakekernel.conformance import AsmError, assemble, main, parse_data_file, plugin_main, run_conformance_case, run_program
from uapi.asm import assemble as kernel_assemble
from uapi.insn import decode_prog

_CANDIDATES = [
    os.environ.get("FAKEKERNEL_CONFORMANCE_DIR"),
    pathlib.Path(__file__).resolve().parents[1] / "data" / "conformance",
    "/work/shared/conformance",
]
SUITE = next((pathlib.Path(p) for p in _CANDIDATES if p and pathlib.Path(p).is_dir()), None)
FILES = sorted(SUITE.glob("*.data")) if SUITE else []
EXPECTED_FILES = 313


def test_suite_is_present():
    assert SUITE is not None, "bpf_conformance .data files not found"
    assert len(FILES) == EXPECTED_FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_conformance_file(path):
    expected, actual = run_conformance_case(path)
    assert actual == expected, f"r0=0x{actual:x}, expected 0x{expected:x}" if isinstance(actual, int) else actual


def test_raw_sections_match_the_assembler():
    cases = [parse_data_file(p) for p in FILES]
    raw = [c for c in cases if c.raw is not None]
    assert raw
    for case in raw:
        assert assemble(case.asm) == case.raw


def test_assembler_syntax():
    text = """
    # comment
    mov32 %r0, 0x10
    lddw %r1, -2
    ldxsh %r2, [%r10-8]
    stxdw [%r10-8], %r1
    lock fetch and32 [%r10-4], %r3
    lock cmpxchg [%r10-8], %r1
    movsx1632 %r3, %r2
    sdiv %r3, -3
    be16 %r3
    swap64 %r3
    jsgt32 %r1, %r2, L
    ja32 L
    call local L
    call 5
    call %r2
    L:
    exit
    """
    expected = kernel_assemble("""
    w0 = 16
    r1 = 0xfffffffffffffffe
    r2 = *(s16 *)(r10 -8)
    *(u64 *)(r10 -8) = r1
    r3 = atomic_fetch_and((u32 *)(r10 -4), r3)
    r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)
    w3 = (s16)w2
    r3 s/= -3
    r3 = be16 r3
    r3 = bswap64 r3
    if w1 s> w2 goto pc+4
    gotol pc+3
    call pc+2
    call bpf_ktime_get_ns#5
    """)
    got = assemble(text)
    # `call %r2` (uBPF callx) and the final exit have no kernel text to compare with
    assert got[: len(expected)] == expected
    callx, exit_ = decode_prog(got[len(expected):])
    assert (callx.code, callx.dst_reg) == (0x8D, 2) and exit_.code == 0x95


@pytest.mark.parametrize("text", [
    "mov %r16, 1", "mov32 %r0, 0x100000000", "mov %r0, 2147483648", "ldxdw %r0, [%r1+70000]", "frob %r0",
    "ja nowhere", "lock nand [%r1], %r2", "add %r0", "L:\nL:\nexit", "call far 1",
])
def test_assembler_rejects(text):
    with pytest.raises(AsmError):
        assemble(text)


def test_first_exit_is_an_implicit_label():
    insns = decode_prog(assemble("ja exit\nmov %r0, 1\nexit\nexit"))
    assert insns[0].off == 1


def test_memory_and_length_in_r1_r2():
    prog = assemble("ldxb %r0, [%r1+1]\nadd %r0, %r2\nexit")
    assert run_program(prog, bytes([7, 8, 9])) == 8 + 3
    assert run_program(assemble("mov %r0, %r1\nor %r0, %r2\nexit")) == 0


def test_unwind_helper():
    assert run_program(assemble("mov %r1, 0\ncall 5\nmov %r0, 2\nexit")) == 0
    assert run_program(assemble("mov %r1, 3\ncall 5\nexit")) == 3


def _plugin(args, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    rc = plugin_main(args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _hex(data: bytes) -> str:
    return "".join(f"{b:02x}  " for b in data)  # the runner's spacing


def test_plugin_protocol():
    prog = assemble("ldxh %r0, [%r1]\nadd %r0, %r2\nexit")
    assert _plugin([_hex(b"\x01\x02\x03")], _hex(prog) + "\n") == (0, "204\n", "")
    assert _plugin(["--program", _hex(prog), _hex(b"\xff\xff")]) == (0, "10001\n", "")
    rc, out, err = _plugin([], _hex(assemble("ldxb %r0, [%r1]\nexit")))
    assert rc == 1 and out == "" and "invalid read" in err
    assert _plugin(["--elf"], _hex(prog))[0] == 1
    # contiguous hex (e.g. `xxd -p` output) is the same program
    assert _plugin([prog.hex()], prog.hex() + "\n")[0:2] == _plugin([_hex(prog)], _hex(prog))[0:2]
    assert _plugin([], "b70000002a0000009500000000000000\n") == (0, "2a\n", "")


def test_main_runs_a_directory(tmp_path, capsys):
    (tmp_path / "ok.data").write_text("-- asm\nmov %r0, 3\nexit\n-- result\n0x3\n")
    assert main(["run", str(tmp_path)]) == 0
    (tmp_path / "bad.data").write_text("-- asm\nmov %r0, 3\nexit\n-- result\n0x4\n")
    assert main(["run", str(tmp_path)]) == 1
    assert "Passed 1 out of 2 tests." in capsys.readouterr().out
