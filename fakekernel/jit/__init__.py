"""Compiled execution tiers — kernel/bpf/core.c bpf_prog_select_runtime(): a verified program is
compiled once (native code when a C compiler works, generated Python otherwise) and run many times;
the reference interpreter (:mod:`fakekernel.interp`) stays the oracle the tiers are tested against.

``compile_prog(insns, prog=...)`` returns an engine whose ``run(mem, r1, helpers=, env=, ...)`` is
:meth:`fakekernel.interp.Interpreter.run`, plus ``run_repeat(n, ...)`` for PROG_TEST_RUN's repeat.
``FAKEKERNEL_ENGINE=interp|python|c`` forces a tier.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from fakekernel.interp import Interpreter
from fakekernel.interp.run import BPF_MAX_LOOPS
from fakekernel.jit.pygen import PyEngine
from fakekernel.jit.runtime import Engine
from uapi.insn import Insn

__all__ = ["compile_prog", "Engine", "InterpEngine", "PyEngine", "engine_tier", "ENGINE_ENV", "TIERS"]

ENGINE_ENV = "FAKEKERNEL_ENGINE"
TIERS = ("c", "python", "interp")


class InterpEngine(Interpreter):
    """The reference interpreter behind the engine interface (the kernel's ___bpf_prog_run fallback)."""

    tier = "interp"

    @property
    def interpreter(self) -> Interpreter:
        return self

    def run_repeat(self, n: int, mem, r1: int, *, helpers, env, skb_data=None, extra_args: Sequence[int] = (),
                   entry: int = 0) -> int:
        if n < 1:
            raise ValueError("repeat count must be positive")
        r0 = 0
        for _ in range(n):
            r0 = self.run(mem, r1, helpers=helpers, env=env, skb_data=skb_data, extra_args=extra_args,
                          entry=entry)
        return r0


def engine_tier() -> str:
    """The tier compile_prog() uses: the forced one, else C if a compiler works, else Python."""
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced:
        if forced not in TIERS:
            raise ValueError(f"{ENGINE_ENV}={forced!r}: expected one of {', '.join(TIERS)}")
        return forced
    from fakekernel.jit.native import compiler_works

    return "c" if compiler_works() else "python"


def compile_prog(insns: Sequence[Insn], *, prog: object = None, tier: str | None = None, callx: bool = False,
                 max_loops: int = BPF_MAX_LOOPS):
    """Compile ``insns`` (the verifier's final program) for ``tier`` (default: :func:`engine_tier`)."""
    auto = tier is None
    tier = tier or engine_tier()
    if tier == "c":
        from fakekernel.jit.native import CEngine

        try:
            return CEngine(insns, prog=prog, callx=callx, max_loops=max_loops)
        except Exception:
            if not auto:
                raise
            tier = "python"  # this program did not build (compiler limits): the next tier down
    if tier == "python":
        return PyEngine(insns, prog=prog, callx=callx, max_loops=max_loops)
    if tier == "interp":
        return InterpEngine(insns, prog=prog, callx=callx, max_loops=max_loops)
    raise ValueError(f"unknown engine tier {tier!r}")
