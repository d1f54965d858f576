"""Test tiers, backends and the leak check (STYLE.md §14).

* `kernel` fixture: a fresh fakekernel.Kernel; at teardown every fd the test left open is
  a failure (unless marked keep_objects), and after all processes exit no object may
  still be alive except those pinned or attached on purpose.
* `fake` / `host` fixtures: `Backend`s (see tests/backends.py) over a fresh Kernel and
  over the real kernel.  `host` skips where the real bpf() is unavailable, except with
  CI=true, where an unavailable oracle fails the test.
"""
from __future__ import annotations

import os
import sys
import pathlib

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = pathlib.Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from backends import FakeBackend, HostBackend, host_unavailable_reason  # noqa: E402
from fakekernel import Kernel  # noqa: E402
from fakekernel.pytest_plugin import check_leaks  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _leak_check(request, kern: Kernel) -> None:
    if request.node.get_closest_marker("keep_objects") is None:
        check_leaks(kern)


@pytest.fixture
def kernel(request):
    k = Kernel()
    yield k
    _leak_check(request, k)


@pytest.fixture
def fake(request):
    b = FakeBackend()
    yield b
    b.cleanup()
    _leak_check(request, b.kern)


@pytest.fixture
def host():
    reason = host_unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the real-kernel oracle is unavailable: {reason}")
        pytest.skip(f"real bpf() unavailable: {reason}")
    b = HostBackend()
    yield b
    leaked = b.cleanup()
    assert not leaked, f"test left real-kernel fds open: {leaked}"


@pytest.fixture
def both(fake, host):
    """(fake, host): run the same scenario on each and compare."""
    return fake, host
