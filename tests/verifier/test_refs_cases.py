"""Verifier cases for reference tracking (ringbuf_reserve/submit/discard, sk_lookup_tcp /
sk_release, pointer casts) and typed pointer helper arguments (socket, sock_common, ringbuf
memory): verdicts and error lines of Linux 6.18.
"""
from __future__ import annotations

import pytest

from uapi.bpf import MapType
from verifier.test_subprogs_cases import EACCES, EINVAL, RINGBUF, SC, SF, AsmCase, accept, check_case, reject

PROG_ARRAY = (MapType.PROG_ARRAY, 4, 4, 4)

REF_CASES = [
    AsmCase("sk_arith", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+3
r0 += 8
r1 = r0
call bpf_sk_release
r0 = 0
exit
""", reject(EACCES, 'R0 pointer arithmetic on sock prohibited')),
    AsmCase("sk_fullsock", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+9
r6 = r0
r1 = r0
call bpf_tcp_sock
if r0 == 0x0 goto pc+3
r1 = r0
call bpf_sk_release
goto pc+2
r1 = r6
call bpf_sk_release
r0 = 0
exit
""", accept()),
    AsmCase("sk_leak", SC, """
r6 = *(u32 *)(r1 +0)
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+3
if r6 == 0x0 goto pc+2
r1 = r0
call bpf_sk_release
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=11\nBPF_EXIT instruction in main prog would lead to reference leak')),
    AsmCase("sk_nonull", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp

r1 = r0
call bpf_sk_release
r0 = 0
exit
""", reject(EACCES, 'R1 type=sock_or_null expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_')),
    AsmCase("sk_ok", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+2
r1 = r0
call bpf_sk_release
r0 = 0
exit
""", accept()),
    AsmCase("sk_rel_null", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+2
r1 = 0
call bpf_sk_release
r0 = 0
exit
""", reject(EACCES, 'R1 type=scalar expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_')),
    AsmCase("sk_rel_stack", SC, """
*(u64 *)(r10 -8) = 0
*(u64 *)(r10 -16) = 0
*(u64 *)(r10 -24) = 0
*(u64 *)(r10 -32) = 0
*(u64 *)(r10 -40) = 0
r2 = r10
r2 += -40
r3 = 36
r4 = -1
r5 = 0
call bpf_sk_lookup_tcp
if r0 == 0x0 goto pc+2
r1 = r10
call bpf_sk_release
r0 = 0
exit
""", reject(EACCES, 'R1 type=fp expected=sock_common, sock, tcp_sock, xdp_sock, ptr_, trusted_ptr_')),
    AsmCase("sk_tcpsock_ctx", SC, """
call bpf_tcp_sock
r0 = 0
exit
""", reject(EACCES, 'R1 type=ctx expected=sock_common, sock, tcp_sock, xdp_sock')),
    AsmCase("rb_acquire_in_callee", SF, """
call pc+2
r0 = 0
exit
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=7\nBPF_EXIT instruction in main prog would lead to reference leak'), maps=(RINGBUF,)),
    AsmCase("rb_arith_null", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r0 += 4
r0 = 0
exit
""", reject(EACCES, 'R0 pointer arithmetic on ringbuf_mem_or_null prohibited, null-check it first'), maps=(RINGBUF,)),
    AsmCase("rb_double", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+8
r6 = r0
r1 = r0
r2 = 0
call bpf_ringbuf_submit
r1 = r6
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EACCES, 'R1 type=scalar expected=ringbuf_mem'), maps=(RINGBUF,)),
    AsmCase("rb_leak_after_call", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r6 = r0
if r0 == 0x0 goto pc+5
r1 = 0
r2 = 0
call pc+4
r0 = 0
exit
r0 = 0
exit
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=4\nBPF_EXIT instruction in main prog would lead to reference leak'), maps=(RINGBUF,)),
    AsmCase("rb_leak_branch", SF, """
r6 = *(u32 *)(r1 +0)
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+5
if r6 > 3 goto pc+3
r1 = r0
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=5\nBPF_EXIT instruction in main prog would lead to reference leak'), maps=(RINGBUF,)),
    AsmCase("rb_nullcheck_missing", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r1 = r0
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EACCES, 'R1 type=ringbuf_mem_or_null expected=ringbuf_mem'), maps=(RINGBUF,)),
    AsmCase("rb_ok", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+5
r1 = 1
*(u64 *)(r0 +0) = r1
r1 = r0
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", accept(), maps=(RINGBUF,)),
    AsmCase("rb_oob", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+5
r1 = 1
*(u64 *)(r0 +4) = r1
r1 = r0
r2 = 0
call bpf_ringbuf_discard
r0 = 0
exit
""", reject(EACCES, 'invalid access to memory, mem_size=8 off=4 size=8\nR0 min value is outside of the allowed memory range'), maps=(RINGBUF,)),
    AsmCase("rb_release_in_callee", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+2
r1 = r0
call pc+2
r0 = 0
exit
r2 = 0
call bpf_ringbuf_discard
r0 = 0
exit
""", accept(), maps=(RINGBUF,)),
    AsmCase("rb_size_var", SF, """
r2 = *(u32 *)(r1 +0)
r1 = map[id:{0}]
r3 = 0
call bpf_ringbuf_reserve
r0 = 0
exit
""", reject(EACCES, "R2 is not a known constant'"), maps=(RINGBUF,)),
    AsmCase("rb_submit_off", SF, """
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+4
r1 = r0
r1 += 4
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EINVAL, 'R1 must have zero offset when passed to release func or trusted arg to kfunc'), maps=(RINGBUF,)),
    AsmCase("rb_submit_scalar", SF, """
r1 = 0
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EACCES, 'R1 type=scalar expected=ringbuf_mem')),
    AsmCase("rb_submit_stack", SF, """
r1 = r10
r1 += -8
r2 = 0
call bpf_ringbuf_submit
r0 = 0
exit
""", reject(EACCES, 'R1 type=fp expected=ringbuf_mem')),
    AsmCase("rb_tail_call_leak", SF, """
r6 = r1
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
if r0 == 0x0 goto pc+9
r7 = r0
r1 = r6
r2 = map[id:{1}]
r3 = 0
call bpf_tail_call
r1 = r7
r2 = 0
call bpf_ringbuf_discard
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=5\ntail_call would lead to reference leak'),
            maps=(RINGBUF, PROG_ARRAY)),
]


@pytest.mark.parametrize("case", REF_CASES, ids=[c.name for c in REF_CASES])
def test_ref_case(fake, case):
    check_case(fake, case)
