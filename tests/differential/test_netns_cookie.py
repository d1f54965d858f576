"""bpf_get_netns_cookie, fake vs the real kernel: init_net's cookie (tc with a NULL ctx, and from
the skb's socket-less ctx) and the helper's availability per program type."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.asm import assemble
from uapi.bpf import ProgType

pytestmark = pytest.mark.differential


@pytest.mark.parametrize("prog_type", [ProgType.SCHED_CLS, ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB,
                                       ProgType.XDP])
def test_netns_cookie_of_init_net_matches_kernel(both, prog_type):
    def s(b):
        r = calls.prog_load(b, prog_type, assemble("r1 = 0\ncall bpf_get_netns_cookie#122\nexit"),
                            log_level=1, log_size=1 << 16, strict=False)
        if r.ret < 0:
            return r.ret, r.log.splitlines()[-2:]
        out = calls.prog_test_run(b, r.ret, bytes(64)).retval
        b.close(r.ret)
        return out
    fake, host = both
    assert s(fake) == s(host)
