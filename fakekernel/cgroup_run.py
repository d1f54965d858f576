"""Running a cgroup's effective programs at a hook — kernel/bpf/cgroup.c
(bpf_prog_run_array_cg, and the ``struct bpf_sock`` a cgroup/sock program reads).

`bpf_prog_run_array_cg` runs the effective array of one attach type on a ctx: each program
in order, the run context (``current.bpf_ctx``: cgroup storages and the return code
bpf_get_retval/bpf_set_retval reach) set around it.  A program returning 0 turns a success
into -EPERM unless a program already set an error; with ``ret_flags`` the bits above bit 0
are collected (bind's BPF_RET_BIND_NO_CAP_NET_BIND_SERVICE).  The result is the return code
of the hook (0 or -errno).

`CgCtx` is the kernel-side ctx object helpers see as ``env.ctx``: the uapi struct the program
runs on (``uapi``, a cffi struct mapped as the "ctx" region), the socket (``sk``), the regions
mapped for the run (``mapped``: the "sock" region a ``sk`` field points at), and the socket
helpers (bpf_setsockopt / bpf_getsockopt on ``sk``).
"""
from __future__ import annotations

import attrs

from fakekernel.bpf.core import bpf_prog_run
from fakekernel.errors import Errno, KernelError
from fakekernel.helpers.sockopt import bpf_sock_getsockopt, bpf_sock_setsockopt
from fakekernel.maps.cgroup_storage import bpf_cgroup_run_ctx
from fakekernel.net.socket import AF_INET, AF_INET6, TcpState
from uapi.ffi import ffi
from uapi.insn import s32, u32

__all__ = ["CgCtx", "CgroupRetval", "raise_retval", "bpf_prog_run_array_cg", "sock_cgroup", "task_dfl_cgroup", "fill_bpf_sock",
           "MAX_ERRNO"]

MAX_ERRNO = 4095                    # include/linux/err.h: IS_ERR_VALUE()
_NO_RX_QUEUE = -1                   # sk_rx_queue_get() of a socket that recorded none


class CgroupRetval(KernelError):
    """A hook's return code that names no Linux errno (bpf_set_retval(-4000), or a positive
    value): the syscall returns it as is (``-errno`` of this error is the code)."""

    def __init__(self, retval: int, detail: str = ""):
        Exception.__init__(self, retval, detail)
        self.errno = -retval
        self.detail = detail


def raise_retval(ret: int, detail: str) -> None:
    """Fail the syscall with the hook's return code `ret` (non-zero)."""
    try:
        err = Errno(-ret)
    except ValueError:
        raise CgroupRetval(ret, detail) from None
    raise KernelError(err, detail)


def task_dfl_cgroup(kern, task):
    """task_dfl_cgroup(): the task's cgroup2 cgroup (the root until it is moved)."""
    return task.cgroup or kern.world.cgroup.root


def sock_cgroup(kern, sk):
    """sock_cgroup_ptr(&sk->sk_cgrp_data): the cgroup of the task that created the socket."""
    return getattr(sk, "sk_cgrp_data", None) or kern.world.cgroup.root


def _is_err_value(v: int) -> bool:
    return -MAX_ERRNO <= v < 0


@attrs.define(eq=False)
class CgCtx:
    """The kernel ctx of a cgroup hook run (bpf_sock_addr_kern, bpf_sockopt_kern ...)."""

    uapi: object                       # the cffi uapi struct the program runs on
    name: str = "ctx"
    sk: object = None
    region_kind: str = "ctx"          # "sock" when the ctx is the socket itself (cgroup/sock)
    mapped: list = attrs.field(factory=list)
    keep: list = attrs.field(factory=list)       # cffi structs backing mapped regions

    def map_sock(self, kern, field_addr_setter) -> None:
        """Map a ``struct bpf_sock`` of ``sk`` as the "sock" region and hand its address to
        `field_addr_setter` (what a ``sk`` ctx field reads)."""
        if self.sk is None:
            return
        bs = ffi.new("struct bpf_sock *")
        fill_bpf_sock(bs, self.sk)
        region = kern.mem.map_region(ffi.buffer(bs), "sock", "bpf_sock")
        self.keep.append(bs)
        self.mapped.append(region)
        field_addr_setter(region.base)

    def before_run(self, run_ctx) -> None:
        """Called before each program: a ctx field backed by the run context is loaded."""

    def after_run(self, run_ctx) -> None:
        """Called after each program: what it wrote to such a field goes back."""

    # helper back-ends (fakekernel.helpers.cgroup_sock dispatches here)
    def bpf_setsockopt(self, env, level: int, optname: int, optval: int, optlen: int) -> int:
        return bpf_sock_setsockopt(env, self.sk, s32(level), s32(optname), optval, optlen)

    def bpf_getsockopt(self, env, level: int, optname: int, optval: int, optlen: int) -> int:
        return bpf_sock_getsockopt(env, self.sk, s32(level), s32(optname), optval, optlen)


def bpf_prog_run_array_cg(kern, cgrp, atype: int, kctx: CgCtx, retval: int = 0,
                          ret_flags: list | None = None) -> int:
    """bpf_prog_run_array_cg(): the hook's return code after every effective program ran.
    ``ret_flags``, when given, is a one-element list the flag bits are or-ed into."""
    entries = cgrp.bpf.effective.get(atype) or []
    if not entries:
        return retval
    mem = kern.mem
    region = mem.map_region(ffi.buffer(kctx.uapi), kctx.region_kind, kctx.name)
    if kctx.region_kind == "sock":
        kctx.mapped.append(region)          # a sock pointer helpers resolve (sk_storage_get)
    try:
        for pl in entries:
            with bpf_cgroup_run_ctx(kern, pl.storage) as run_ctx:
                run_ctx.retval = retval
                kctx.before_run(run_ctx)
                func_ret = u32(bpf_prog_run(kern, pl.effective_prog, region.base, ctx=kctx))
                kctx.after_run(run_ctx)
                retval = run_ctx.retval
            if ret_flags is not None:
                ret_flags[0] |= func_ret >> 1
                func_ret &= 1
            if not func_ret and not _is_err_value(retval):
                retval = -Errno.EPERM
    finally:
        mem.unmap(region)
        for r in kctx.mapped:
            if r is not region:
                mem.unmap(r)
        kctx.mapped.clear()
    return retval


# ------------------------------------------------------------------ struct bpf_sock

def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _words(addr: bytes) -> list[int]:
    return [int.from_bytes(addr[i:i + 4], "little") for i in range(0, len(addr), 4)]


def fill_bpf_sock(bs, sk) -> None:
    """What bpf_sock_convert_ctx_access() shows of a socket: family/type/protocol, the
    bound address and port (host order) and the peer (network order), state, and the
    writable bound_dev_if/mark/priority."""
    bs.family, bs.type, bs.protocol = sk.family, sk.type, sk.protocol
    bs.bound_dev_if = getattr(sk, "sk_bound_dev_if", 0)
    bs.mark = u32(getattr(sk, "sk_mark", 0))
    bs.priority = u32(getattr(sk, "sk_priority", 0))
    bs.state = getattr(sk, "state", TcpState.CLOSE)
    bs.rx_queue_mapping = _NO_RX_QUEUE
    addr = getattr(sk, "addr", None)
    bs.src_port = getattr(sk, "port", 0)
    peer = getattr(sk, "peer", None)
    if sk.family == AF_INET:
        if addr:
            bs.src_ip4 = _words(addr)[0]
        if peer:
            bs.dst_ip4 = _words(peer[0])[0] if len(peer[0]) == 4 else 0
    elif sk.family == AF_INET6:
        if addr:
            bs.src_ip6 = _words(addr)
        if peer:
            bs.dst_ip6 = _words(peer[0]) if len(peer[0]) == 16 else [0] * 4
    if peer:
        bs.dst_port = _be16(peer[1])
