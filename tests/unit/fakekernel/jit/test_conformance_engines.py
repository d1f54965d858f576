"""fakekernel/jit: the bpf_conformance ISA suite (tests/data/conformance) on every engine tier."""
from __future__ import annotations

import pathlib

import pytest

from fakekernel import conformance
from fakekernel.jit import compile_prog
from fakekernel.jit.native import compiler_works

SUITE = pathlib.Path(__file__).resolve().parents[3] / "data" / "conformance"
FILES = sorted(SUITE.glob("*.data"))
TIERS = ["interp", "python", pytest.param("c", marks=pytest.mark.skipif(not compiler_works(), reason="no C compiler"))]


def test_suite_is_present():
    assert len(FILES) == 313


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_conformance_file_on_engine(path, tier, monkeypatch):
    built = []

    def factory(insns, **kwargs):
        eng = compile_prog(insns, tier=tier, **kwargs)
        built.append(eng)
        return eng

    monkeypatch.setattr(conformance, "Interpreter", factory)
    expected, actual = conformance.run_conformance_case(path)
    assert built and built[0].tier == tier
    assert actual == expected, f"r0=0x{actual:x}, expected 0x{expected:x}" if isinstance(actual, int) else actual
