"""Verifier cases for bpf-to-bpf calls (selftests style, kernel-syntax assembly): frames,
argument passing, caller-saved clobbering, stack pointers into a caller's frame, call depth
and the combined stack size.  Each row's verdict and error lines are Linux 6.18's;
tests/differential/test_verifier_subprogs.py runs the rows on the real kernel and compares
the whole log.
"""
from __future__ import annotations

import attrs
import pytest

from btfutil import BtfWriter, btf_load
from uapi import calls
from uapi.asm import assemble
from uapi.bpf import BpfCmd, MapType, ProgType
from uapi.errno import Errno
from verifier.test_verifier_cases import Expect, accept, error_lines, reject

SF, SC = ProgType.SOCKET_FILTER, ProgType.SCHED_CLS
EACCES, EINVAL, E2BIG = Errno.EACCES, Errno.EINVAL, Errno.E2BIG
RINGBUF = (MapType.RINGBUF, 0, 0, 4096)


@attrs.frozen
class AsmCase:
    """A program in kernel syntax; ``{0}``, ``{1}`` ... are the fds of ``maps``."""

    name: str
    prog_type: int
    text: str
    expect: Expect
    maps: tuple = ()
    exact_log: bool = True      # False: this pass prunes less than the kernel (precision marks)
    funcs: tuple = ()           # BTF func_info: (insn_off, name, global?, number of int args | ("int", "ctx", ...))

    def build(self, fds: list[int]) -> bytes:
        return assemble(self.text.format(*fds))


def _func_info_btf(b, funcs: tuple):
    """A BTF with one FUNC per subprog (int f(int, ...)) loaded on ``b``; (fd, func_info bytes)."""
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    skb = w.ptr(w.struct("__sk_buff", 4, [("len", i, 0)]))
    recs = []
    for insn_off, name, is_global, nargs in funcs:
        kinds = nargs if isinstance(nargs, tuple) else ("int",) * nargs
        proto = w.func_proto(i, [(f"a{k}", skb if kind == "ctx" else i) for k, kind in enumerate(kinds)])
        recs.append((insn_off, w.func(name, proto, linkage=1 if is_global else 0)))
    bfd = btf_load(b, w.blob()).ret
    assert bfd >= 0
    return bfd, b"".join(x.to_bytes(4, "little") for rec in recs for x in rec)


def load_asm_case(b, case: AsmCase, log_level: int = 1):
    fds = [calls.map_create(b, *spec) for spec in case.maps]
    bfd = -1
    try:
        insns = case.build(fds)
        if not case.funcs:
            res = calls.prog_load(b, case.prog_type, insns, b"GPL", log_level=log_level, log_size=1 << 20,
                                  strict=False)
        else:
            bfd, fi = _func_info_btf(b, case.funcs)
            log = bytearray(1 << 20)
            ret, a = calls.raw(b, BpfCmd.PROG_LOAD, "log_true_size", prog_type=case.prog_type, insns=insns,
                               insn_cnt=len(insns) // 8, license=b"GPL\0", log_level=log_level,
                               log_size=len(log), log_buf=log, prog_btf_fd=bfd, func_info_rec_size=8,
                               func_info=bytearray(fi), func_info_cnt=len(case.funcs))
            text = bytes(log).split(b"\0", 1)[0].decode(errors="replace")
            res = calls.ProgLoadResult(ret, text, a.get("log_true_size"))
    finally:
        for fd in fds + ([bfd] if bfd >= 0 else []):
            b.close(fd)
    if res.ret >= 0:
        b.close(res.ret)
    return res


def check_case(b, case: AsmCase) -> None:
    res = load_asm_case(b, case)
    if case.expect.errno == 0:
        assert res.ret >= 0, res.log
    else:
        assert res.ret == -case.expect.errno, res.log
        assert error_lines(res.log) == case.expect.msg
    assert res.log.endswith("mark_read 0\n")


SUBPROG_CASES = [
    AsmCase("args_add", SF, """
r1 = 1
r2 = 2
call pc+2
r0 = 0
exit
r0 = r1
r0 += r2
exit
""", accept()),
    AsmCase("branch_in_callee", SF, """
r1 = *(u32 *)(r1 +0)
call pc+2
r0 = 0
exit
if r1 > 10 goto pc+2
r0 = 1
exit
r0 = *(u64 *)(r10 -8)
exit
""", accept()),
    AsmCase("callee_oob_caller_stack", SF, """
r1 = r10
r1 += -8
call pc+2
r0 = 0
exit
r0 = *(u64 *)(r1 +8)
exit
""", reject(EACCES, 'invalid read from stack R1 off=0 size=8')),
    AsmCase("callee_reads_r6", SF, """
r6 = 5
call pc+2
r0 = 0
exit
r0 = r6
exit
""", reject(EACCES, 'R6 !read_ok')),
    AsmCase("caller_stack_uninit", SF, """
r1 = r10
r1 += -8
call pc+2
r0 = 0
exit
r0 = *(u64 *)(r1 +0)
exit
""", accept()),
    AsmCase("ctx_passed", SF, """
call pc+2
r0 = 0
exit
r0 = *(u32 *)(r1 +0)
exit
""", accept()),
    AsmCase("eight_frames", SF, """
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
r0 = 0
exit
""", accept()),
    AsmCase("nine_frames", SF, """
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
r0 = 0
exit
""", reject(E2BIG, 'the call stack of 9 frames is too deep')),
    AsmCase("r1_clobbered", SF, """
r1 = 5
call pc+2
r0 = r1
exit
r0 = 0
exit
""", reject(EACCES, 'R1 !read_ok')),
    AsmCase("r6_preserved", SF, """
r6 = 5
call pc+3
r0 = r6
r0 += 1
exit
r6 = 1
r0 = 0
exit
""", accept()),
    AsmCase("ret_ptr_used", SF, """
call pc+3
r0 = *(u32 *)(r0 +0)
r0 = 0
exit
r0 = r1
exit
""", accept()),
    AsmCase("ret_stack", SF, """
call pc+2
r0 = 0
exit
r0 = r10
exit
""", reject(EINVAL, 'cannot return stack pointer to the caller')),
    AsmCase("spill_in_callee", SF, """
r6 = r10
r6 += -16
r1 = r6
call pc+3
r0 = *(u64 *)(r10 -16)
r0 = *(u64 *)(r0 +0)
exit
r2 = r10
*(u64 *)(r1 +0) = r2
r0 = 0
exit
""", reject(EINVAL, 'cannot spill pointers to stack into stack frame of the caller')),
    AsmCase("stack_512", SF, """
*(u64 *)(r10 -256) = 0
call pc+2
r0 = 0
exit
*(u64 *)(r10 -256) = 0
r0 = 0
exit
""", accept()),
    AsmCase("stack_528", SF, """
*(u64 *)(r10 -512) = 0
call pc+2
r0 = 0
exit
*(u64 *)(r10 -8) = 0
r0 = 0
exit
""", reject(EACCES, 'combined stack size of 2 calls is 528. Too large')),
    AsmCase("stackptr", SF, """
*(u64 *)(r10 -8) = 0
r1 = r10
r1 += -8
call pc+3
r0 = *(u64 *)(r10 -8)
r0 = 0
exit
r2 = 7
*(u64 *)(r1 +0) = r2
r0 = 0
exit
""", accept()),
    AsmCase("two_calls_pruned", SF, """
r6 = *(u32 *)(r1 +0)
r1 = 1
if r6 > 5 goto pc+1
r1 = 2
call pc+4
r1 = r0
call pc+2
r0 = 0
exit
r0 = r1
r0 &= 3
exit
""", accept(), exact_log=False),
    AsmCase("ctx_and_stack_through_one_insn", SF, """
r1 = r1
call pc+5
*(u64 *)(r10 -8) = 0
r1 = r10
r1 += -8
call pc+1
exit
r0 = *(u32 *)(r1 +0)
exit
""", reject(EINVAL, 'same insn cannot be used with different pointers')),
    # --- global functions (BTF linkage global): assumed valid at the call, verified on their own
    AsmCase("global_bad_body", SF, """
r1 = 1
call pc+2
r0 = 0
exit
r0 = *(u64 *)(r1 +0)
exit
""", reject(EACCES, "R1 invalid mem access 'scalar'"), funcs=((0, 'main', False, 0), (4, 'gf', True, 1),)),
    AsmCase("global_chain", SF, """
r1 = 1
call pc+2
r0 = 0
exit
call pc+2
r0 = 0
exit
r0 = r1
r0 += r6
exit
""", reject(EACCES, 'R6 !read_ok'), funcs=((0, 'main', False, 0), (4, 'g1', True, 1), (7, 'g2', True, 1),)),
    AsmCase("global_ok", SF, """
r1 = 1
r2 = 2
call pc+1
exit
r0 = r1
r0 += r2
exit
""", accept(), funcs=((0, 'main', False, 0), (4, 'gf', True, 2),)),
    AsmCase("global_ptr_arg", SF, """
r1 = r10
r2 = 2
call pc+1
exit
r0 = r1
r0 += r2
exit
""", reject(EINVAL, "R1 is not a scalar\nCaller passes invalid args into func#1 ('gf')"), funcs=((0, 'main', False, 0), (4, 'gf', True, 2),)),
    AsmCase("global_r0_after", SF, """
call pc+3
if r0 > 3 goto pc+1
r0 = 0
exit
r0 = 7
exit
""", accept(), funcs=((0, 'main', False, 0), (4, 'gf', True, 0),)),
    AsmCase("global_ret_ptr", SF, """
r1 = 1
call pc+2
r0 = 0
exit
r0 = r10
exit
""", reject(EINVAL, 'At subprogram exit the register R0 is not a scalar value (fp)'), funcs=((0, 'main', False, 0), (4, 'gf', True, 1),)),
    AsmCase("global_twice", SF, """
r1 = 1
call pc+4
r1 = r10
call pc+2
r0 = 0
exit
r0 = r1
exit
""", reject(EINVAL, "R1 is not a scalar\nCaller passes invalid args into func#1 ('gf')"), funcs=((0, 'main', False, 0), (6, 'gf', True, 1),)),
    AsmCase("global_ctx_bad", SF, """
r1 = r10
r2 = 7
call pc+1
exit
r0 = *(u32 *)(r1 +0)
r0 += r2
exit
""", reject(EINVAL, "arg#0 expects pointer to ctx\nCaller passes invalid args into func#1 ('gf')"), funcs=((0, 'main', False, 0), (4, 'gf', True, ('ctx', 'int')),)),
    AsmCase("global_ctx_ok", SF, """
r2 = 7
call pc+1
exit
r0 = *(u32 *)(r1 +0)
r0 += r2
exit
""", accept(), funcs=((0, 'main', False, 0), (3, 'gf', True, ('ctx', 'int')),)),
    AsmCase("global_ctx_oob", SF, """
call pc+1
exit
r0 = *(u32 *)(r1 +200)
exit
""", reject(EACCES, 'invalid bpf_context access off=200 size=4'), funcs=((0, 'main', False, 0), (2, 'gf', True, ('ctx',)),)),
    AsmCase("global_ctx_scalar_swapped", SF, """
r2 = r1
r1 = 3
call pc+1
exit
r0 = *(u32 *)(r2 +0)
exit
""", accept(), funcs=((0, 'main', False, 0), (4, 'gf', True, ('int', 'ctx')),)),
    AsmCase("static_ctx_static", SF, """
call pc+1
exit
r0 = *(u32 *)(r1 +0)
exit
""", accept(), funcs=((0, 'main', False, 0), (2, 'sf', False, ('ctx',)),)),
]


@pytest.mark.parametrize("case", SUBPROG_CASES, ids=[c.name for c in SUBPROG_CASES])
def test_subprog_case(fake, case):
    check_case(fake, case)
