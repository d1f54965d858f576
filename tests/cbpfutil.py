"""A small classic-BPF evaluator with seccomp semantics, for testing the runner's filter."""
from __future__ import annotations

from uapi.seccomp import Cbpf, ffi

__all__ = ["run_filter"]

_OFF_NR = ffi.offsetof("struct seccomp_data", "nr")
_OFF_ARCH = ffi.offsetof("struct seccomp_data", "arch")
_OFF_ARGS = ffi.offsetof("struct seccomp_data", "args")
_ARG_SIZE = ffi.sizeof("uint64_t")


def run_filter(prog: bytes, arch: int, nr: int, *args: int) -> int:
    """The filter's verdict for syscall `nr` of `arch` with `args` (low 32 bits loaded)."""
    insns = ffi.from_buffer("struct sock_filter[]", prog)
    n = len(prog) // ffi.sizeof("struct sock_filter")
    data = {_OFF_NR: nr & 0xFFFFFFFF, _OFF_ARCH: arch}
    for i in range(6):
        value = args[i] if i < len(args) else 0
        data[_OFF_ARGS + i * _ARG_SIZE] = value & 0xFFFFFFFF
        data[_OFF_ARGS + i * _ARG_SIZE + 4] = (value >> 32) & 0xFFFFFFFF
    a, pc = 0, 0
    for _ in range(1000):
        assert 0 <= pc < n, "fell off the filter"
        i = insns[pc]
        if i.code == Cbpf.LD | Cbpf.W | Cbpf.ABS:
            a = data[i.k]
        elif i.code == Cbpf.ALU | Cbpf.AND | Cbpf.K:
            a &= i.k
        elif i.code == Cbpf.JMP | Cbpf.JEQ | Cbpf.K:
            pc += i.jt if a == i.k else i.jf
        elif i.code == Cbpf.JMP | Cbpf.JSET | Cbpf.K:
            pc += i.jt if a & i.k else i.jf
        elif i.code & 0x07 == Cbpf.RET:
            return i.k
        else:
            raise AssertionError(f"unexpected opcode {i.code:#x}")
        pc += 1
    raise AssertionError("loop")
