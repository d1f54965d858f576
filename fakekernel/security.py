"""LSM hooks with BPF programs on them — security/security.c (call_int_hook over the
registered LSMs) and kernel/bpf/bpf_lsm.c (the bpf_lsm_<hook> attach points).

An LSM program (BPF_LSM_MAC) attaches to the trampoline of ``bpf_lsm_<hook>``; when the
simulated kernel reaches the hook, `call_lsm_hook` plays the call through that trampoline: the
programs see the hook's arguments and the first non-zero value an int hook's program returns
is the hook's verdict (a -errno refuses the operation).  Hooks with nothing attached cost one
dict lookup.  The hooks the simulated kernel calls today: ``bpf`` (every bpf() command, before
the command is looked at, as __sys_bpf does).
"""
from __future__ import annotations

import functools

from fakekernel.btf_vmlinux import BPF_LSM_PREFIX, btf_index
from fakekernel.trace.trampoline import call_traced, trampolines
from uapi.btf import BtfKind
from uapi.insn import s32

__all__ = ["call_lsm_hook", "security_bpf"]


@functools.lru_cache(maxsize=256)
def _hook_btf_id(ix, hook: str) -> int:
    return ix.find_by_name_kind(BPF_LSM_PREFIX + hook.encode(), BtfKind.FUNC)


def call_lsm_hook(kern, hook: str, args: list) -> int:
    """The verdict of `hook` (0: allowed) with `args` (ints; addresses for pointers)."""
    table = trampolines(kern)
    if not table:
        return 0
    btf = kern.btf_vmlinux
    key = (("btf", btf.id), _hook_btf_id(btf_index(btf), hook))
    if key not in table:
        return 0
    return s32(call_traced(kern, key, args, lambda: 0))


def security_bpf(kern, cmd: int, attr: bytes, size: int, kernel: bool = False) -> int:
    """security_bpf(): the kernel's copy of attr is what an LSM program reads."""
    if not trampolines(kern):
        return 0
    region = kern.mem.map_region(bytearray(attr), "kmalloc", "bpf_attr")
    try:
        return call_lsm_hook(kern, "bpf", [cmd, region.base, size, int(kernel)])
    finally:
        kern.mem.unmap(region)
