"""Socket cookies for programs — net/core/filter.c (bpf_get_socket_cookie on an skb) with
net/core/sock_diag.c's sock_gen_cookie().

One counter per simulated machine (`SocketTable.next_cookie`) numbers every socket on first
need, whether userspace asked (SO_COOKIE, a socket-map lookup) or a program did.  The sock a
test run gives its skb is a fresh one each run, so each run sees a new cookie (the same
through all its repetitions).
"""
from __future__ import annotations

from uapi.bpf import FuncId

__all__ = ["SOCK_COOKIE_RUNTIME", "bpf_get_socket_cookie", "sock_gen_cookie"]


def sock_gen_cookie(kern, sk) -> int:
    """__sock_gen_cookie() for a `Socket` or any other sock object (skbuff.Sock)."""
    gen = getattr(sk, "sock_gen_cookie", None)
    if gen is not None:
        return gen()
    return kern.world.net.socktab.dummy_cookie(sk)


def bpf_get_socket_cookie(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_socket_cookie(skb): skb->sk's cookie, 0 without a socket."""
    sk = getattr(env.ctx, "sk", None)
    if sk is None:
        return 0
    return sock_gen_cookie(env.kernel, env.kernel.world.net.socktab.resolve(sk))


SOCK_COOKIE_RUNTIME = {FuncId.get_socket_cookie: bpf_get_socket_cookie}
