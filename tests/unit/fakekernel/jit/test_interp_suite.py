"""fakekernel/jit: the reference interpreter's own unit tests (tests/unit/fakekernel/interp/test_run.py),
re-run with every compiled tier standing in for ``Interpreter``."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

from fakekernel.jit import compile_prog
from fakekernel.jit.native import compiler_works

_SUITE_PATH = pathlib.Path(__file__).resolve().parents[1] / "interp" / "test_run.py"
_spec = importlib.util.spec_from_file_location("_fk_jit_interp_suite", _SUITE_PATH)
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

TIERS = ["python", pytest.param("c", marks=pytest.mark.skipif(not compiler_works(), reason="no C compiler"))]


@pytest.fixture(autouse=True, params=TIERS)
def tier(request, monkeypatch):
    def factory(insns, **kwargs):
        return compile_prog(insns, tier=request.param, **kwargs)

    monkeypatch.setattr(suite, "Interpreter", factory)
    return request.param


globals().update({name: fn for name, fn in vars(suite).items() if name.startswith("test_") and callable(fn)})
