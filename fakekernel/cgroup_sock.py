"""The cgroup/sock hooks — kernel/bpf/cgroup.c (__cgroup_bpf_run_filter_sk) as net/ipv4/af_inet.c
and net/ipv6/af_inet6.c call it: BPF_CGROUP_RUN_PROG_INET_SOCK in inet_create/inet6_create,
BPF_CGROUP_RUN_PROG_INET_SOCK_RELEASE in inet_release, and the INET4/INET6_POST_BIND run
after a successful bind.

The program reads a ``struct bpf_sock`` of the socket (`fakekernel.cgroup_run.fill_bpf_sock`);
what sock_create/sock_release programs write to ``bound_dev_if``, ``mark`` and ``priority``
lands in the socket.  A 0 verdict refuses: socket(2) fails with EPERM (the socket is
released), a post_bind refusal undoes the bind (inet_bind's BPF_CGROUP_RUN_PROG_INET4_POST_BIND
failure path: the port is released and the error returned).
"""
from __future__ import annotations

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, raise_retval, fill_bpf_sock, sock_cgroup, task_dfl_cgroup
from fakekernel.net.socket import AF_INET, AF_INET6
from uapi.bpf import AttachType
from uapi.ffi import ffi
from uapi.insn import s32

__all__ = ["inet_sock_create", "inet_sock_release", "inet_post_bind", "run_filter_sk"]

_INET = (AF_INET, AF_INET6)


def run_filter_sk(kern, sk, atype: int) -> int:
    """__cgroup_bpf_run_filter_sk(): 0 or -errno."""
    cgrp = sock_cgroup(kern, sk)
    if not cgrp.bpf.effective.get(atype):
        return 0
    bs = ffi.new("struct bpf_sock *")
    fill_bpf_sock(bs, sk)
    ret = bpf_prog_run_array_cg(kern, cgrp, atype, CgCtx(uapi=bs, name="bpf_sock", sk=sk, region_kind="sock"))
    # writes of sock_create / sock_release programs go to the socket itself
    sk.sk_bound_dev_if, sk.sk_mark, sk.sk_priority = bs.bound_dev_if, s32(bs.mark), s32(bs.priority)
    return ret


def inet_sock_create(kern, task, sk) -> None:
    """sk_alloc's cgroup association (sock_cgroup_set), then inet_create()'s
    BPF_CGROUP_RUN_PROG_INET_SOCK: KernelError(EPERM ...) when a program refuses."""
    sk.sk_cgrp_data = task_dfl_cgroup(kern, task)
    if sk.family not in _INET:
        return
    ret = run_filter_sk(kern, sk, AttachType.CGROUP_INET_SOCK_CREATE)
    if ret < 0:                         # (a positive code is not a failure for __sock_create)
        sk.sk_cgrp_data = None          # sk_common_release(): no inet_release, no release programs
        raise_retval(ret, "a cgroup sock_create program refused the socket")


def inet_sock_release(sk) -> None:
    """inet_release(): BPF_CGROUP_RUN_PROG_INET_SOCK_RELEASE (its verdict is ignored)."""
    if sk.family in _INET and getattr(sk, "sk_cgrp_data", None) is not None:
        run_filter_sk(sk.net.kern, sk, AttachType.CGROUP_INET_SOCK_RELEASE)


def inet_post_bind(kern, sk) -> int:
    """BPF_CGROUP_RUN_PROG_INET4/6_POST_BIND: 0 or -errno."""
    atype = AttachType.CGROUP_INET4_POST_BIND if sk.family == AF_INET else AttachType.CGROUP_INET6_POST_BIND
    return run_filter_sk(kern, sk, atype)
