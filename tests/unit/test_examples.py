"""The shipped examples and the demo run end to end and assert their own results."""
from __future__ import annotations

import pytest

from fakekernel.examples import cgroup_ingress_policy, kprobe_counter, xdp_counter


@pytest.mark.parametrize("mod", [xdp_counter, cgroup_ingress_policy, kprobe_counter],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_example_main_succeeds(mod, capsys):
    assert mod.main() == 0


def test_demo_succeeds(capsys):
    from fakekernel.cli import main
    assert main(["demo"]) == 0
    assert "as the kernel would do" in capsys.readouterr().out
