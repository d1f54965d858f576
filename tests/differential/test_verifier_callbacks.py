"""Callbacks on fakekernel and on the real kernel: every row of
tests/verifier/test_callbacks_cases.py (whole level-1 log, level-2 error lines).
"""
from __future__ import annotations

import pytest

from differential.test_verifier_subprogs import compare_level1, compare_level2
from verifier.test_callbacks_cases import CALLBACK_CASES

pytestmark = pytest.mark.differential


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[c.name for c in CALLBACK_CASES])
def test_verifier_callbacks_log_level1(both, case):
    compare_level1(*both, case)


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[c.name for c in CALLBACK_CASES])
def test_verifier_callbacks_log_level2_errors(both, case):
    compare_level2(*both, case)
