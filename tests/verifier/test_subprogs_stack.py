"""check_max_stack_depth() rounding: each frame of a call chain counts its stack rounded up to 16
bytes with the JIT (the host's setting and the fake's default), to 32 (at least one unit) without
it (net.core.bpf_jit_enable=0 — the real kernel here cannot be switched: fake-only tests).
"""
from __future__ import annotations

import pytest

from fakekernel import Kernel
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import ProgType
from uapi.errno import Errno

#: main uses 496 bytes of stack, the callee none
MAIN_496 = """
*(u64 *)(r10 -496) = 0
call pc+2
r0 = 0
exit
r0 = 0
exit
"""


def _load(jit: int):
    k = Kernel(sysctls={"net.core.bpf_jit_enable": jit})
    res = calls.prog_load(k, ProgType.SOCKET_FILTER, assemble(MAIN_496), log_level=1, log_size=1 << 16,
                          strict=False)
    if res.ret >= 0:
        k.close(res.ret)
    return res


def test_stack_depth_rounded_to_16_with_jit_accepted():
    assert _load(1).ret >= 0


def test_stack_depth_rounded_to_32_without_jit_eacces():
    res = _load(0)
    assert res.ret == -Errno.EACCES
    assert "combined stack size of 2 calls is 544. Too large\n" in res.log


@pytest.mark.parametrize("jit", [0, 1])
def test_stack_depth_stats_list_every_subprog(jit):
    k = Kernel(sysctls={"net.core.bpf_jit_enable": jit})
    res = calls.prog_load(k, ProgType.SOCKET_FILTER, assemble(MAIN_496.replace("-496", "-8")), log_level=1 | 4,
                          log_size=1 << 16, strict=False)
    assert res.ret >= 0
    k.close(res.ret)
    assert "stack depth 8+0\n" in res.log
