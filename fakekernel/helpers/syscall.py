"""Helpers of BPF_PROG_TYPE_SYSCALL programs — kernel/bpf/syscall.c (bpf_sys_bpf, bpf_sys_close,
bpf_kallsyms_lookup_name) and kernel/bpf/btf.c (bpf_btf_find_by_name_kind).

``bpf_sys_bpf`` runs a bpf() command on behalf of the program, as __sys_bpf() with a kernel
bpfptr: the attr and every pointer inside it are addresses in the program's memory (its ctx,
stack or map values), read and written through `KernelPtrMemory` instead of the task's user
memory.  Only the commands the kernel lets a program issue are accepted.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError
from fakekernel.helpers.base import neg_errno
from fakekernel.helpers.proto import ArgType, FuncProto, RetType, TypeFlag
from uapi.bpf import BpfCmd, FuncId
from uapi.ffi import ffi
from uapi.insn import s32, u32, u64

__all__ = ["SYSCALL_PROTOS", "SYSCALL_RUNTIME", "KernelPtrMemory", "SYS_BPF_CMDS"]

_U64 = ffi.sizeof("__u64")
_BTF_KIND_MASK = 0xFF            # bpf_find_btf_id() hands the u32 kind on as a u8

SYSCALL_PROTOS: dict[int, FuncProto] = {p.func: p for p in (
    FuncProto(func=FuncId.sys_bpf, might_sleep=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.ANYTHING, ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE)),
    FuncProto(func=FuncId.sys_close, might_sleep=True, ret_type=RetType.INTEGER,
              arg_types=(ArgType.ANYTHING,)),
    FuncProto(func=FuncId.kallsyms_lookup_name, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_MEM, ArgType.CONST_SIZE_OR_ZERO, ArgType.ANYTHING,
                         ArgType.PTR_TO_FIXED_SIZE_MEM | TypeFlag.MEM_UNINIT | TypeFlag.MEM_WRITE
                         | TypeFlag.MEM_ALIGNED)),
    FuncProto(func=FuncId.btf_find_by_name_kind, ret_type=RetType.INTEGER,
              arg_types=(ArgType.PTR_TO_MEM | TypeFlag.MEM_RDONLY, ArgType.CONST_SIZE, ArgType.ANYTHING,
                         ArgType.ANYTHING)),
)}

#: bpf_sys_bpf(): the commands a program may issue; any other is -EINVAL
SYS_BPF_CMDS = frozenset({
    BpfCmd.MAP_CREATE, BpfCmd.MAP_DELETE_ELEM, BpfCmd.MAP_UPDATE_ELEM, BpfCmd.MAP_FREEZE,
    BpfCmd.MAP_GET_FD_BY_ID, BpfCmd.PROG_LOAD, BpfCmd.BTF_LOAD, BpfCmd.LINK_CREATE,
    BpfCmd.RAW_TRACEPOINT_OPEN,
})


class KernelPtrMemory:
    """The UserMemory protocol over the kernel address space (a KERNEL_BPFPTR): a bad
    address is EFAULT, as copy_from_kernel_nofault would report it."""

    def __init__(self, mem):
        self.mem = mem

    def copy_from_user(self, addr: int, n: int) -> bytes:
        from fakekernel.interp.memory import InterpreterFault
        if n == 0:
            return b""
        try:
            return bytes(self.mem.read(addr, n))
        except InterpreterFault:
            raise KernelError(Errno.EFAULT, f"kernel read of {n} bytes at {addr:#x}") from None

    def copy_to_user(self, addr: int, data: bytes) -> None:
        from fakekernel.interp.memory import InterpreterFault
        if not data:
            return
        try:
            self.mem.write(addr, data)
        except InterpreterFault:
            raise KernelError(Errno.EFAULT, f"kernel write of {len(data)} bytes at {addr:#x}") from None

    def check_zeroed_user(self, addr: int, n: int) -> bool:
        return not any(self.copy_from_user(addr, n))

    def strncpy_from_user(self, addr: int, maxlen: int) -> bytes:
        out = bytearray()
        while len(out) < maxlen:
            b = self.copy_from_user(addr + len(out), 1)
            if b == b"\0":
                break
            out += b
        return bytes(out)


def _current(env):
    return getattr(env, "task", None) or env.kernel.current


def bpf_sys_bpf(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sys_bpf(cmd, attr, attr_size): __sys_bpf() on kernel pointers, for the current task."""
    from fakekernel.syscall import sys_bpf
    cmd = u32(r1)
    if cmd not in SYS_BPF_CMDS:
        return neg_errno(Errno.EINVAL)
    task = _current(env)
    saved, task.mm = task.mm, KernelPtrMemory(env.mem)
    try:
        ret = sys_bpf(env.kernel, task, cmd, r2, u32(r3))
    finally:
        task.mm = saved
    return u64(ret)


def bpf_sys_close(env, r1, r2, r3, r4, r5) -> int:
    """bpf_sys_close(fd): close_fd() in the current task."""
    try:
        _current(env).files.close(u32(r1))
    except KernelError as e:
        return neg_errno(e.errno)
    return 0


def _c_string(env, addr: int, size: int) -> bytes | None:
    """name/name_sz as the kernel takes them: at least 2 bytes, NUL-terminated at the end."""
    size = s32(size)                 # an int: a negative size is refused like a short one
    if size <= 1:
        return None
    raw = env.mem.read(addr, size)
    if raw[-1]:
        return None
    return raw.split(b"\0", 1)[0]


def bpf_kallsyms_lookup_name(env, r1, r2, r3, r4, r5) -> int:
    """bpf_kallsyms_lookup_name(name, name_sz, flags, res)."""
    from fakekernel.syscall.obj_info import bpf_dump_raw_ok
    env.mem.write(r4, bytes(_U64))
    if s32(r3):
        return neg_errno(Errno.EINVAL)
    name = _c_string(env, r1, r2)
    if name is None:
        return neg_errno(Errno.EINVAL)
    if not bpf_dump_raw_ok(env.kernel, _current(env).creds):
        return neg_errno(Errno.EPERM)
    f = env.kernel.world.trace.kallsyms.lookup_name(name.decode("latin-1"))
    if f is None:
        return neg_errno(Errno.ENOENT)
    env.mem.write(r4, f.addr.to_bytes(_U64, "little"))
    return 0


def bpf_btf_find_by_name_kind(env, r1, r2, r3, r4, r5) -> int:
    """bpf_btf_find_by_name_kind(name, name_sz, kind, flags): a vmlinux BTF type id."""
    from fakekernel.btf_vmlinux import btf_index
    if s32(r4):
        return neg_errno(Errno.EINVAL)
    name = _c_string(env, r1, r2)
    if name is None:
        return neg_errno(Errno.EINVAL)
    vmlinux = env.kernel.btf_vmlinux
    if vmlinux is None:
        return neg_errno(Errno.EINVAL)
    tid = btf_index(vmlinux).find_by_name_kind(name, u32(r3) & _BTF_KIND_MASK)
    return tid if tid > 0 else neg_errno(Errno.ENOENT)


SYSCALL_RUNTIME = {
    FuncId.sys_bpf: bpf_sys_bpf,
    FuncId.sys_close: bpf_sys_close,
    FuncId.kallsyms_lookup_name: bpf_kallsyms_lookup_name,
    FuncId.btf_find_by_name_kind: bpf_btf_find_by_name_kind,
}
