"""Verifier cases for callbacks (bpf_loop, bpf_for_each_map_elem) verified as loops: the
callback's frame and arguments, its return range, convergence, references and ctx pointers
into the caller's stack.  Programs carry BTF func_info (the kernel requires it for a
BPF_PSEUDO_FUNC); verdicts and error lines are Linux 6.18's.
"""
from __future__ import annotations

import pytest

from uapi.bpf import MapType
from verifier.test_subprogs_cases import SF, AsmCase, accept, check_case
from verifier.test_verifier_cases import reject
from uapi.errno import Errno

EACCES, EINVAL, ENOTSUPP = Errno.EACCES, Errno.EINVAL, Errno.ENOTSUPP

CALLBACK_CASES = [
    AsmCase("foreach_key_oob", SF, """
r1 = map[id:{0}]
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 0
exit
r0 = *(u32 *)(r2 +2)
r0 = 0
exit
""", reject(EACCES, 'invalid access to map key, key_size=4 off=2 size=4\nR2 min value is outside of the allowed memory range'), maps=((MapType.HASH, 4, 8, 4),), funcs=((0, 'main', False, 0), (9, 'cb', False, 4),)),
    AsmCase("foreach_key_write", SF, """
r1 = map[id:{0}]
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 0
exit
*(u32 *)(r2 +0) = 1
r0 = 0
exit
""", reject(EACCES, 'write to change key R2 not allowed'), maps=((MapType.HASH, 4, 8, 4),), funcs=((0, 'main', False, 0), (9, 'cb', False, 4),)),
    AsmCase("foreach_ok", SF, """
r1 = map[id:{0}]
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 0
exit
r0 = *(u32 *)(r2 +0)
r0 = *(u64 *)(r3 +0)
r0 = 0
exit
""", accept(), maps=((MapType.ARRAY, 4, 8, 4),), funcs=((0, 'main', False, 0), (9, 'cb', False, 4),), exact_log=False),
    AsmCase("foreach_ringbuf", SF, """
r1 = map[id:{0}]
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 0
exit
r0 = 0
exit
""", reject(ENOTSUPP, 'R1 is not a scalar\ncallback function not allowed for map'), maps=((MapType.RINGBUF, 0, 0, 4096),), funcs=((0, 'main', False, 0), (9, 'cb', False, 4),)),
    AsmCase("foreach_val_oob", SF, """
r1 = map[id:{0}]
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_for_each_map_elem
r0 = 0
exit
r0 = *(u64 *)(r3 +4)
r0 = 0
exit
""", reject(EACCES, 'invalid access to map value, value_size=8 off=4 size=8\nR3 min value is outside of the allowed memory range'), maps=((MapType.HASH, 4, 8, 4),), funcs=((0, 'main', False, 0), (9, 'cb', False, 4),)),
    AsmCase("loop1", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = 0
exit
""", accept(), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_cb_calls_sub", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r1 = 1
call pc+1
exit
r0 = r1
exit
""", accept(), funcs=((0, 'main', False, 0), (10, 'cb', False, 2), (13, 'sub', False, 1),)),
    AsmCase("loop_cb_ctx_idx", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r6 = r2
r1 = r1
*(u32 *)(r10 -4) = r1
r2 = r10
r2 += -4
r1 = map[id:{0}]
call bpf_map_lookup_elem
if r0 == 0x0 goto pc+2
r1 = *(u64 *)(r0 +0)
*(u64 *)(r6 +0) = r1
r0 = 0
exit
""", accept(), maps=((MapType.ARRAY, 4, 8, 4),), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),), exact_log=False),
    AsmCase("loop_cb_leak", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r1 = map[id:{0}]
r2 = 8
r3 = 0
call bpf_ringbuf_reserve
r0 = 0
exit
""", reject(EINVAL, 'Unreleased reference id=2 alloc_insn=14\nBPF_EXIT instruction in main prog would lead to reference leak'), maps=((MapType.RINGBUF, 0, 0, 4096),), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_counter", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r3 = *(u64 *)(r2 +0)
r3 += 1
*(u64 *)(r2 +0) = r3
r0 = 0
exit
""", accept(), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_ctx_oob", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = *(u64 *)(r2 +8)
r0 = 0
exit
""", reject(EACCES, 'invalid read from stack R2 off=0 size=8'), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_global_cb", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = 0
exit
""", reject(EINVAL, 'callback function not static'), funcs=((0, 'main', False, 0), (10, 'cb', True, 2),)),
    AsmCase("loop_in_sub", SF, """
call pc+2
r0 = 0
exit
*(u64 *)(r10 -8) = 0
r1 = 2
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = 1
exit
""", accept(), funcs=((0, 'main', False, 0), (3, 'sub', False, 0), (13, 'cb', False, 2),)),
    AsmCase("loop_null_ctx", SF, """
r1 = 4
r2 = subprog[+6]
r3 = 0
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = *(u64 *)(r2 +0)
r0 = 0
exit
""", reject(EACCES, "R2 invalid mem access 'scalar'"), funcs=((0, 'main', False, 0), (8, 'cb', False, 2),)),
    AsmCase("loop_r3_uninit", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = r3
exit
""", reject(EACCES, 'R3 !read_ok'), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_ret2", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = 2
exit
""", reject(EINVAL, 'At callback return the register R0 has smin=2 smax=2 should have been in [0, 1]'), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_ret_ptr", SF, """
*(u64 *)(r10 -8) = 0
r1 = 4
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r0 = r2
exit
""", reject(EINVAL, 'cannot return stack pointer to the caller'), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
    AsmCase("loop_unknown_n", SF, """
r1 = *(u32 *)(r1 +0)
*(u64 *)(r10 -8) = 0
r2 = subprog[+7]
r3 = r10
r3 += -8
r4 = 0
call bpf_loop
r0 = 0
exit
r3 = *(u64 *)(r2 +0)
r3 += 1
*(u64 *)(r2 +0) = r3
r0 = 0
exit
""", accept(), funcs=((0, 'main', False, 0), (10, 'cb', False, 2),)),
]


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[c.name for c in CALLBACK_CASES])
def test_callback_case(fake, case):
    check_case(fake, case)
