"""BPF_PROG_TEST_RUN for TRACING programs — net/bpf/test_run.c: bpf_prog_test_run_tracing() and
the kernel functions it calls (bpf_fentry_test1..9, bpf_modify_return_test/2).

The program under test is not run directly: the run calls those functions, and whatever
fentry/fexit/fmod_ret programs are linked to their trampolines run around them
(`fakekernel.trace.trampoline.call_traced`).  retval is ``side_effect << 16 | ret`` for
fmod_ret (ret truncated to u16), 0 otherwise; other attach types answer EFAULT.
"""
from __future__ import annotations

from fakekernel.btf_vmlinux import btf_index
from fakekernel.errors import Errno, KernelError
from fakekernel.trace.trampoline import call_traced
from uapi.bpf import AttachType
from uapi.btf import BtfKind
from uapi.insn import s32, u32

__all__ = ["bpf_prog_test_run_tracing", "BPF_FENTRY_TESTS"]

_U16 = 0xFFFF
_INT = 4


def _s8(v: int) -> int:
    v &= 0xFF
    return v - 0x100 if v & 0x80 else v


def _s16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


# name -> (arguments the run passes, the C function's result for them)
BPF_FENTRY_TESTS = (
    ("bpf_fentry_test1", (1,), lambda a: s32(a + 1)),
    ("bpf_fentry_test2", (2, 3), lambda a, b: s32(a + b)),
    ("bpf_fentry_test3", (4, 5, 6), lambda a, b, c: s32(_s8(a) + b + c)),
    ("bpf_fentry_test4", (7, 8, 9, 10), lambda a, b, c, d: s32(a + _s8(b) + c + d)),
    ("bpf_fentry_test5", (11, 12, 13, 14, 15), lambda a, b, c, d, e: s32(a + b + _s16(c) + d + e)),
    ("bpf_fentry_test6", (16, 17, 18, 19, 20, 21),
     lambda a, b, c, d, e, f: s32(a + b + _s16(c) + d + e + f)),
)
_EXPECTED = (2, 5, 15, 34, 65, 111)


def _key(kern, name: str) -> tuple:
    ix = btf_index(kern.btf_vmlinux)
    return (("btf", kern.btf_vmlinux.id), ix.find_by_name_kind(name.encode(), BtfKind.FUNC))


def _fentry_run(kern) -> bool:
    """The FENTRY/FEXIT branch: every call must return what the C code returns."""
    for (name, args, impl), want in zip(BPF_FENTRY_TESTS, _EXPECTED):
        if s32(call_traced(kern, _key(kern, name), list(args), lambda: impl(*args))) != want:
            return False
    mem = kern.mem
    arg = mem.map_region(bytearray(8), "arg", "struct bpf_fentry_test_t")     # {.a = NULL}
    retval = mem.map_region(bytearray(4), "arg", "u32 retval")
    try:
        if s32(call_traced(kern, _key(kern, "bpf_fentry_test7"), [0], lambda: 0)) != 0:
            return False
        r8 = call_traced(kern, _key(kern, "bpf_fentry_test8"), [arg.base],
                         lambda: int.from_bytes(arg.buf[:8], "little"))
        if s32(r8) != 0:
            return False
        r9 = call_traced(kern, _key(kern, "bpf_fentry_test9"), [retval.base],
                         lambda: int.from_bytes(retval.buf[:_INT], "little"))
        return u32(r9) == 0
    finally:
        mem.unmap(retval)
        mem.unmap(arg)


def _modify_return_run(kern) -> tuple[int, int]:
    """The MODIFY_RETURN branch: (ret as u16, side_effect)."""
    mem = kern.mem
    b = mem.map_region(bytearray((2).to_bytes(_INT, "little")), "arg", "int b")
    side_effect = 0

    def bval() -> int:
        return s32(int.from_bytes(b.buf[:_INT], "little"))

    def bump() -> None:
        b.buf[:_INT] = u32(bval() + 1).to_bytes(_INT, "little")

    def test1():
        bump()
        return s32(1 + bval())

    def test2():
        bump()
        return s32(1 + bval() + 3 + 4 + 5 + 6 + 7)
    try:
        ret = call_traced(kern, _key(kern, "bpf_modify_return_test"), [1, b.base], test1) & _U16
        if bval() != 2:
            side_effect += 1
        b.buf[:_INT] = (2).to_bytes(_INT, "little")
        ret = (ret + call_traced(kern, _key(kern, "bpf_modify_return_test2"),
                                 [1, b.base, 3, 4, 5, 6, 7], test2)) & _U16
        if bval() != 2:
            side_effect += 1
    finally:
        mem.unmap(b)
    return ret, side_effect & _U16


def bpf_prog_test_run_tracing(kern, task, prog, attr, ctx) -> int:
    """bpf_prog_test_run_tracing(): EINVAL for flags/cpu/batch_size, EFAULT unless the
    program is fentry/fexit/fmod_ret (or a kernel function misbehaved)."""
    t = attr.test
    if t.flags or t.cpu or t.batch_size:
        raise KernelError(Errno.EINVAL, "flags/cpu/batch_size are not for tracing test runs")
    eat = prog.expected_attach_type
    if eat in (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT):
        if not _fentry_run(kern):
            raise KernelError(Errno.EFAULT, "a bpf_fentry_test function returned a wrong value")
        retval = 0
    elif eat == AttachType.MODIFY_RETURN:
        ret, side_effect = _modify_return_run(kern)
        retval = (side_effect << 16) | ret
    else:
        raise KernelError(Errno.EFAULT, "not a trampoline program")
    ctx.put_attr_field("test.retval", retval)
    return 0
