"""Cgroups of sockets for programs — net/core/filter.c (bpf_sk_cgroup_id, bpf_sk_ancestor_cgroup_id,
bpf_skb_ancestor_cgroup_id, bpf_skb_under_cgroup) with kernel/cgroup/cgroup.c (cgroup_ancestor,
cgroup_is_descendant).

A socket belongs to the cgroup of the task that made it (``sk_cgrp_data``, set at creation);
the sock a test run gives its skb is made by the task running the test (sk_alloc()).
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.sk_lookup_family import fullsock, sk_of_ptr
from uapi.bpf import FuncId
from uapi.errno import Errno
from uapi.insn import s32

__all__ = ["SK_CGROUP_RUNTIME"]

_U32 = 0xFFFFFFFF


def _sock_cgroup(env, sk):
    from fakekernel.cgroup_run import sock_cgroup
    if getattr(sk, "sk_cgrp_data", None) is None and not hasattr(sk, "sk_is_tcp"):
        return env.kernel.current.cgroup or env.kernel.world.cgroup.root     # a test run's sk_alloc()
    return sock_cgroup(env.kernel, sk)


def _cgroup_ancestor(cgrp, level: int):
    """cgroup_ancestor(): the ancestor at depth `level` (the root is 0), or None."""
    chain = list(cgrp.ancestors())[::-1]                 # root first
    return chain[level] if 0 <= level < len(chain) else None


def _skb_sk(env):
    sk = getattr(env.ctx, "sk", None)
    return env.kernel.world.net.socktab.resolve(sk) if sk is not None else None


def _ancestor_id(env, sk, level: int) -> int:
    """__bpf_sk_ancestor_cgroup_id()."""
    if sk is None or not fullsock(sk):
        return 0
    anc = _cgroup_ancestor(_sock_cgroup(env, sk), level)
    return anc.id if anc is not None else 0


def bpf_sk_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sk_cgroup_id(sk): the cgroup of the task that made the socket."""
    _, sk = sk_of_ptr(env, r1)
    return _sock_cgroup(env, sk).id if fullsock(sk) else 0


def bpf_sk_ancestor_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    return _ancestor_id(env, sk_of_ptr(env, r1)[1], s32(r2))


def bpf_skb_ancestor_cgroup_id(env, r1, r2, r3, r4, r5) -> int:
    return _ancestor_id(env, _skb_sk(env), s32(r2))


def bpf_skb_under_cgroup(env, r1, r2, r3, r4, r5) -> int:
    """bpf_skb_under_cgroup(skb, cgroup array, index): 1 / 0, or -errno."""
    sk = _skb_sk(env)
    if sk is None or not fullsock(sk):
        return neg_errno(Errno.ENOENT)
    array = env.mem.object_at(r2)
    idx = r3 & _U32
    if idx >= array.max_entries:
        return neg_errno(Errno.E2BIG)
    cgrp = array.ptrs.get(idx)
    if cgrp is None:
        return neg_errno(Errno.EAGAIN)
    return int(any(c is cgrp for c in _sock_cgroup(env, sk).ancestors()))


SK_CGROUP_RUNTIME = {
    FuncId.sk_cgroup_id: bpf_sk_cgroup_id,
    FuncId.sk_ancestor_cgroup_id: bpf_sk_ancestor_cgroup_id,
    FuncId.skb_ancestor_cgroup_id: bpf_skb_ancestor_cgroup_id,
    FuncId.skb_under_cgroup: bpf_skb_under_cgroup,
}
