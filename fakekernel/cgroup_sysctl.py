"""The cgroup sysctl hook — kernel/bpf/cgroup.c (__cgroup_bpf_run_filter_sysctl) as
fs/proc/proc_sysctl.c's proc_sys_call_handler() calls it, with the integer sysctls'
proc_dointvec() behind it.

`proc_sys_read` / `proc_sys_write` are read(2)/write(2) of ``/proc/sys/<path>`` for the
sysctls the simulated kernel has (``kern.sysctls``, keyed ``net.ipv4.ip_forward``): the
CGROUP_SYSCTL programs of the task's cgroup see a ``struct bpf_sysctl`` (``write``,
``file_pos`` which they may move), the name, the current value as text ("1\\n") and, for a
write, the new text, which bpf_sysctl_set_new_value() may replace.  A refusal is EPERM.
"""
from __future__ import annotations

from fakekernel.cgroup_run import CgCtx, bpf_prog_run_array_cg, task_dfl_cgroup
from fakekernel.errors import Errno, KernelError
from uapi.bpf import AttachType
from uapi.ffi import ffi

__all__ = ["proc_sys_read", "proc_sys_write", "SysctlKern"]

PAGE_SIZE = 4096
_PROC_SYS = "/proc/sys/"


class SysctlKern(CgCtx):
    """struct bpf_sysctl_kern: what the sysctl helpers read (fakekernel.helpers.sysctl)."""

    sysctl_name: str = ""                # "net/ipv4/ip_forward"
    write: bool = False
    cur_val: bytes = b""
    new_val: bytes | None = None
    new_updated: bool = False


def _key(path: str) -> tuple[str, str]:
    """("net/ipv4/ip_forward", "net.ipv4.ip_forward") from a /proc/sys path or a sysctl name."""
    p = path[len(_PROC_SYS):] if path.startswith(_PROC_SYS) else path
    p = p.strip("/").replace(".", "/")
    return p, p.replace("/", ".")


def _dointvec_read(value: int) -> bytes:
    return f"{value}\n".encode()


def _dointvec_write(kern, key: str, data: bytes) -> None:
    """proc_dointvec(): one integer, optional surrounding whitespace."""
    text = data.split(b"\0", 1)[0].strip()
    try:
        kern.sysctls[key] = int(text.decode())
    except (UnicodeDecodeError, ValueError):
        raise KernelError(Errno.EINVAL, "not an integer") from None


def _run_filter(kern, task, name: str, key: str, write: bool, new: bytes | None, pos: int):
    """__cgroup_bpf_run_filter_sysctl(): (0 or -errno, new text or None, file position)."""
    cgrp = task_dfl_cgroup(kern, task)
    if not cgrp.bpf.effective.get(AttachType.CGROUP_SYSCTL):
        return 0, new, pos
    bs = ffi.new("struct bpf_sysctl *")
    bs.write, bs.file_pos = int(write), pos
    ctx = SysctlKern(uapi=bs, name="bpf_sysctl")
    ctx.sysctl_name, ctx.write = name, write
    ctx.cur_val = _dointvec_read(kern.sysctls[key])
    ctx.new_val = new[:PAGE_SIZE] if write and new else None
    ret = bpf_prog_run_array_cg(kern, cgrp, AttachType.CGROUP_SYSCTL, ctx)
    if not ret and ctx.new_updated:
        new = ctx.new_val
    return ret, new, bs.file_pos


def proc_sys_read(kern, path: str, count: int = PAGE_SIZE, pos: int = 0, *, task=None):
    """read(2) of /proc/sys/<path>: the bytes, or -errno."""
    task = task or kern.current
    name, key = _key(path)
    if key not in kern.sysctls:
        return -Errno.ENOENT
    ret, _, pos = _run_filter(kern, task, name, key, False, None, pos)
    if ret:
        return ret
    if pos:
        return b""                       # proc_dointvec(): a read past the start gives nothing
    return _dointvec_read(kern.sysctls[key])[:count]


def proc_sys_write(kern, path: str, data: bytes, pos: int = 0, *, task=None) -> int:
    """write(2) to /proc/sys/<path>: the count written, or -errno."""
    task = task or kern.current
    name, key = _key(path)
    if key not in kern.sysctls:
        return -Errno.ENOENT
    ret, new, pos = _run_filter(kern, task, name, key, True, bytes(data), pos)
    if ret:
        return ret
    count = len(new)
    if pos:
        return count                    # SYSCTL_WRITES_STRICT: a write past the start is ignored
    try:
        _dointvec_write(kern, key, new)
    except KernelError as e:
        return -e.errno
    return count
