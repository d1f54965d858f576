"""The cgroup/sockopt hooks — kernel/bpf/cgroup.c (__cgroup_bpf_run_filter_setsockopt,
__cgroup_bpf_run_filter_getsockopt, sockopt_alloc_buf) as net/socket.c's do_sock_setsockopt /
do_sock_getsockopt call them.

setsockopt: the programs see the user's option (``optval``..``optval_end``: a buffer of
max(16, optlen) bytes, at most a page) and may change level, optname and the value
(``optlen``), refuse (EPERM), or set ``optlen = -1`` to skip the kernel's handler (the call
then succeeds).  getsockopt: the kernel's handler runs first; the programs see its result
(``retval``, the value and its length, the buffer being the user's optlen long) and may
change all three.  An ``optlen`` beyond the buffer is EFAULT (ignored when the user's buffer
exceeds a page and the new length is not negative).
"""
from __future__ import annotations

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, raise_retval, sock_cgroup
from fakekernel.errors import Errno, KernelError
from uapi.bpf import AttachType
from uapi.ffi import ffi
from uapi.insn import s32

__all__ = ["do_sock_setsockopt", "do_sock_getsockopt", "SockoptCtx"]

PAGE_SIZE = 4096
_MIN_SET_BUF = 16                  # __cgroup_bpf_run_filter_setsockopt's minimum buffer
_INT = ffi.sizeof("int")


class SockoptCtx(CgCtx):
    """struct bpf_sockopt_kern: ``retval`` reads and writes the run context's return code."""

    def before_run(self, run_ctx) -> None:
        self.uapi.retval = run_ctx.retval
        self._shown = run_ctx.retval

    def after_run(self, run_ctx) -> None:
        if self.uapi.retval != self._shown:
            run_ctx.retval = s32(self.uapi.retval)


def _enabled(kern, sk, atype: int) -> bool:
    return bool(sock_cgroup(kern, sk).bpf.effective.get(atype))


def _run(kern, sk, atype: int, level: int, optname: int, buf: bytearray, optlen: int, retval: int):
    """One run over the sockopt ctx: (return code, the ctx after the run)."""
    so = ffi.new("struct bpf_sockopt *")
    so.level, so.optname, so.optlen = level, optname, optlen
    ctx = SockoptCtx(uapi=so, name="bpf_sockopt", sk=sk)
    region = kern.mem.map_region(buf, "packet", "sockopt optval")
    ctx.mapped.append(region)
    so.optval = ffi.cast("void *", region.base)
    so.optval_end = ffi.cast("void *", region.base + len(buf))
    ctx.map_sock(kern, lambda a: setattr(so, "sk", ffi.cast("void *", a)))
    ret = bpf_prog_run_array_cg(kern, sock_cgroup(kern, sk), atype, ctx, retval)
    return ret, so


def _as_bytes(value) -> bytes:
    if isinstance(value, int):
        return (value & 0xFFFFFFFF).to_bytes(_INT, "little")
    return bytes(value)


def do_sock_setsockopt(kern, sk, level: int, optname: int, value) -> None:
    """setsockopt(2) through the cgroup's setsockopt programs, then the socket's handler."""
    if not _enabled(kern, sk, AttachType.CGROUP_SETSOCKOPT):
        sk.setsockopt(level, optname, value)
        return
    data = _as_bytes(value)
    optlen = len(data)
    max_optlen = min(max(_MIN_SET_BUF, optlen), PAGE_SIZE)
    buf = bytearray(max_optlen)
    buf[:min(optlen, max_optlen)] = data[:max_optlen]
    ret, so = _run(kern, sk, AttachType.CGROUP_SETSOCKOPT, level, optname, buf, optlen, 0)
    if ret:
        raise_retval(ret, "a cgroup setsockopt program refused")
    if so.optlen == -1:
        return                                   # the program handled it: bypass the kernel
    if so.optlen > max_optlen or so.optlen < -1:
        if optlen > PAGE_SIZE and so.optlen >= 0:
            sk.setsockopt(level, optname, value)
            return
        raise KernelError(Errno.EFAULT, "program optlen out of bounds")
    if so.optlen != 0:
        value = bytes(buf[:so.optlen])
    sk.setsockopt(so.level, so.optname, value)


def do_sock_getsockopt(kern, sk, level: int, optname: int, optlen: int) -> bytes:
    """getsockopt(2): the socket's handler, then the cgroup's getsockopt programs."""
    if not _enabled(kern, sk, AttachType.CGROUP_GETSOCKOPT):
        return sk.getsockopt(level, optname, optlen)
    try:
        out, retval = sk.getsockopt(level, optname, optlen), 0
    except KernelError as e:
        out, retval = b"", -e.errno
    if optlen < 0:
        raise KernelError(Errno.EINVAL, "negative optlen")       # sockopt_alloc_buf()
    max_optlen = min(optlen, PAGE_SIZE)
    buf = bytearray(max_optlen)
    ctx_optlen = orig_optlen = optlen
    if not retval:
        ctx_optlen = orig_optlen = len(out)
        buf[:min(len(out), max_optlen)] = out[:max_optlen]
    ret, so = _run(kern, sk, AttachType.CGROUP_GETSOCKOPT, level, optname, buf, ctx_optlen, retval)
    if ret < 0:
        raise_retval(ret, "getsockopt failed")
    if so.optlen > max_optlen or so.optlen < 0:
        if orig_optlen > PAGE_SIZE and so.optlen >= 0:
            if retval:
                raise_retval(retval, "getsockopt failed")
            return out
        raise KernelError(Errno.EFAULT, "program optlen out of bounds")
    if so.optlen != 0:
        return bytes(buf[:so.optlen])
    return out if not retval else b""
