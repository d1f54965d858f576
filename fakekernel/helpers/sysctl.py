"""The sysctl helpers — kernel/bpf/cgroup.c (bpf_sysctl_get_name, bpf_sysctl_get_current_value,
bpf_sysctl_get_new_value, bpf_sysctl_set_new_value, copy_sysctl_value, sysctl_cpy_dir).

They act on ``env.ctx``, a `fakekernel.cgroup_sysctl.SysctlKern` (struct bpf_sysctl_kern):
the sysctl's path (``net/ipv4/tcp_mem``), its current value as text, whether this is a write
and the new value (``new_val``, ``new_updated``).
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, TypeFlag
from uapi.bpf import BPF_F_SYSCTL_BASE_NAME, FuncId
from uapi.errno import Errno

__all__ = ["SYSCTL_PROTOS", "SYSCTL_HELPERS_RUNTIME", "strscpy"]

PAGE_SIZE = 4096

SYSCTL_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.sysctl_get_name, arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_MEM,
                                                      ArgType.CONST_SIZE, ArgType.ANYTHING)),
    FuncProto(func=FuncId.sysctl_get_current_value, arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_UNINIT_MEM,
                                                               ArgType.CONST_SIZE)),
    FuncProto(func=FuncId.sysctl_get_new_value, arg_types=(ArgType.PTR_TO_CTX, ArgType.PTR_TO_UNINIT_MEM,
                                                           ArgType.CONST_SIZE)),
    FuncProto(func=FuncId.sysctl_set_new_value, arg_types=(ArgType.PTR_TO_CTX,
                                                           ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY,
                                                           ArgType.CONST_SIZE)),
)}


def strscpy(src: bytes, size: int) -> tuple[bytes, int]:
    """strscpy(): (bytes written incl. the NUL, chars copied or -E2BIG when truncated)."""
    if size <= 0:
        return b"", -Errno.E2BIG
    if len(src) < size:
        return src + b"\0", len(src)
    return src[:size - 1] + b"\0", -Errno.E2BIG


def bpf_sysctl_get_name(env, r1, r2, r3, r4, r5) -> int:
    """The full path ("net/ipv4/tcp_mem") or with BPF_F_SYSCTL_BASE_NAME the last component."""
    if not r2:
        return neg_errno(Errno.EINVAL)
    name = env.ctx.sysctl_name.encode()
    if r4 & BPF_F_SYSCTL_BASE_NAME:
        name = name.rsplit(b"/", 1)[-1]
    out, ret = strscpy(name, r3)
    env.mem.write(r2, out)
    return ret if ret >= 0 else neg_errno(-ret)


def _copy_sysctl_value(env, dst: int, dst_len: int, src: bytes | None) -> int:
    """copy_sysctl_value()."""
    if not dst:
        return neg_errno(Errno.EINVAL)
    if not dst_len:
        return neg_errno(Errno.E2BIG)
    if not src:
        env.mem.write(dst, bytes(dst_len))
        return neg_errno(Errno.EINVAL)
    if dst_len > len(src):
        env.mem.write(dst, src + bytes(dst_len - len(src)))
        return len(src)
    env.mem.write(dst, src[:dst_len - 1] + b"\0")
    return neg_errno(Errno.E2BIG)


def bpf_sysctl_get_current_value(env, r1, r2, r3, r4, r5) -> int:
    return _copy_sysctl_value(env, r2, r3, env.ctx.cur_val)


def bpf_sysctl_get_new_value(env, r1, r2, r3, r4, r5) -> int:
    if not env.ctx.write:
        if r2 and r3:
            env.mem.write(r2, bytes(r3))
        return neg_errno(Errno.EINVAL)
    return _copy_sysctl_value(env, r2, r3, env.ctx.new_val)


def bpf_sysctl_set_new_value(env, r1, r2, r3, r4, r5) -> int:
    ctx = env.ctx
    if not ctx.write or not ctx.new_val or not r2 or not r3:
        return neg_errno(Errno.EINVAL)
    if r3 > PAGE_SIZE - 1:
        return neg_errno(Errno.E2BIG)
    ctx.new_val = bytes(env.mem.read(r2, r3))
    ctx.new_updated = True
    return 0


SYSCTL_HELPERS_RUNTIME = {
    FuncId.sysctl_get_name: bpf_sysctl_get_name,
    FuncId.sysctl_get_current_value: bpf_sysctl_get_current_value,
    FuncId.sysctl_get_new_value: bpf_sysctl_get_new_value,
    FuncId.sysctl_set_new_value: bpf_sysctl_set_new_value,
}
