"""PROG_LOAD of fentry/fexit/fmod_ret, LSM and EXT programs on the emulated kernel — kernel/bpf/
verifier.c bpf_check_attach_target / check_attach_btf_id, bpf_lsm.c bpf_lsm_verify_prog, btf.c
btf_ctx_access.  The reference kernel refuses these loads (EPERM) so the expectations come
from the source; the log lines are the kernel's format strings."""
from __future__ import annotations

import functools
import os
import struct

import pytest

from btfutil import BtfWriter, btf_load
from fakekernel import Kernel
from fakekernel.btf_vmlinux import btf_index
from uapi import calls
from uapi.asm import assemble
from uapi.btf import BtfKind
from uapi.bpf import AttachType, BpfCmd, LinkType, MapType, ProgLoadFlags, ProgType
from uapi.errno import Errno

pytestmark = pytest.mark.skipif(not os.access("/sys/kernel/btf/vmlinux", os.R_OK),
                                reason="no vmlinux BTF")
FENTRY, FEXIT, FMOD_RET = AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN


@functools.cache
def _ix():
    return btf_index(Kernel().btf_vmlinux)


def fn(name: str) -> int:
    return _ix().find_by_name_kind(name.encode(), BtfKind.FUNC)


def prog(*lines: str) -> bytes:
    return assemble("\n".join((*lines, "r0 = 0", "exit")))


def load(k, prog_type, eat, btf_id, insns=None, **kw):
    r = calls.prog_load(k, prog_type, insns or prog(), log_level=1, log_size=1 << 16,
                        expected_attach_type=eat, attach_btf_id=btf_id, strict=False, **kw)
    if r.ret >= 0:
        k.close(r.ret)
        return 0, ""
    return r.ret, r.log.split("processed ")[0]


@pytest.mark.parametrize("eat", [FENTRY, FEXIT])
def test_fentry_fexit_reads_args_ok(kernel, eat):
    assert load(kernel, ProgType.TRACING, eat, fn("bpf_fentry_test2"), prog("r0 = *(u64 *)(r1 +8)")) == (0, "")


def test_fentry_past_args_eacces(kernel):
    assert load(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test1"), prog("r0 = *(u64 *)(r1 +8)")) == \
        (-Errno.EACCES, "0: R1=ctx() R10=fp0\n0: (79) r0 = *(u64 *)(r1 +8)\n"
                        "func 'bpf_fentry_test1' doesn't have 2-th argument\n"
                        "invalid bpf_context access off=8 size=8\n")


def test_fexit_reads_return_value_ok(kernel):
    assert load(kernel, ProgType.TRACING, FEXIT, fn("bpf_fentry_test1"), prog("r0 = *(u64 *)(r1 +8)"))[0] == 0


def test_fexit_past_return_value_eacces(kernel):
    ret, log = load(kernel, ProgType.TRACING, FEXIT, fn("bpf_fentry_test1"), prog("r0 = *(u64 *)(r1 +16)"))
    assert ret == -Errno.EACCES and "doesn't have 3-th argument" in log


def test_fentry_not_a_function_einval(kernel):
    ts = _ix().find_by_name_kind(b"task_struct", BtfKind.STRUCT)
    assert load(kernel, ProgType.TRACING, FENTRY, ts) == \
        (-Errno.EINVAL, f"attach_btf_id {ts} is not a function\n")


def test_fentry_denied_function_einval(kernel):
    assert load(kernel, ProgType.TRACING, FENTRY, fn("migrate_disable")) == (-Errno.EINVAL, "")


def test_fexit_noreturn_einval(kernel):
    assert load(kernel, ProgType.TRACING, FEXIT, fn("do_exit")) == \
        (-Errno.EINVAL, "Attaching fexit/fmod_ret to __noreturn functions is rejected.\n")


def test_fmod_ret_on_fmodret_set_ok(kernel):
    assert load(kernel, ProgType.TRACING, FMOD_RET, fn("bpf_modify_return_test"),
                prog("r0 = *(u64 *)(r1 +16)"))[0] == 0


def test_fmod_ret_not_modifiable_einval(kernel):
    assert load(kernel, ProgType.TRACING, FMOD_RET, fn("bpf_fentry_test2")) == \
        (-Errno.EINVAL, "bpf_fentry_test2() is not modifiable\n")


def test_fentry_sleepable_not_allowed_einval(kernel):
    assert load(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test2"),
                prog_flags=ProgLoadFlags.SLEEPABLE) == (-Errno.EINVAL, "bpf_fentry_test2 is not sleepable\n")


def test_fentry_sleepable_on_kf_sleepable_fmodret_ok(kernel):
    assert load(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test1"),
                prog_flags=ProgLoadFlags.SLEEPABLE)[0] == 0


def test_lsm_hook_ok(kernel):
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, fn("bpf_lsm_file_open"),
                prog("r0 = *(u64 *)(r1 +8)"))[0] == 0


def test_lsm_non_gpl_einval(kernel):
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, fn("bpf_lsm_file_open"), license=b"MIT") == \
        (-Errno.EINVAL, "LSM programs must have a GPL compatible license\n")


def test_lsm_not_a_hook_einval(kernel):
    i = fn("bpf_lsm_verify_prog")
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, i) == \
        (-Errno.EINVAL, f"attach_btf_id {i} points to wrong type name bpf_lsm_verify_prog\n")


def test_lsm_disabled_hook_einval(kernel):
    i = fn("bpf_lsm_getprocattr")
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, i) == \
        (-Errno.EINVAL, f"attach_btf_id {i} points to disabled hook bpf_lsm_getprocattr\n")


def test_lsm_sleepable_hook_rules(kernel):
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, fn("bpf_lsm_file_open"),
                prog_flags=ProgLoadFlags.SLEEPABLE)[0] == 0
    assert load(kernel, ProgType.LSM, AttachType.LSM_MAC, fn("bpf_lsm_sk_free_security"),
                prog_flags=ProgLoadFlags.SLEEPABLE) == \
        (-Errno.EINVAL, "bpf_lsm_sk_free_security is not sleepable\n")


def test_ext_without_target_prog_einval(kernel):
    assert load(kernel, ProgType.EXT, 0, fn("bpf_fentry_test1")) == \
        (-Errno.EINVAL, "Cannot replace kernel functions\n")


# ---- EXT (freplace) against a program with BTF ----

def _target_btf(k, arg_kind="int"):
    w = BtfWriter()
    i = w.int_("int", 4, encoding=1)
    skb = w.struct("__sk_buff", 4, [("len", i, 0)])
    arg = w.ptr(skb) if arg_kind == "ptr" else i
    proto = w.func_proto(i, [("ctx", w.ptr(skb))])
    sub_proto = w.func_proto(i, [("x", arg)])
    main = w.func("main", proto, linkage=1)
    sub = w.func("sub", sub_proto, linkage=1)
    return btf_load(k, w.blob()).ret, main, sub


def _load_with_btf(k, prog_type, insns, btf_fd, func_info, *, log=None, **kw):
    fbuf = bytearray(b"".join(struct.pack("<II", off, tid) for off, tid in func_info))
    if log is not None:
        kw.update(log_level=1, log_size=len(log), log_buf=log)
    ret, _ = calls.raw(k, BpfCmd.PROG_LOAD, "log_true_size", prog_type=prog_type,
                       insns=bytes(insns), insn_cnt=len(insns) // 8, license=b"GPL\0",
                       prog_btf_fd=btf_fd, func_info_rec_size=8, func_info=fbuf,
                       func_info_cnt=len(func_info), **kw)
    return ret


def _first_line(log: bytearray) -> bytes:
    return bytes(log).split(b"\n", 1)[0]


TARGET = assemble("r1 = 1\ncall pc+2\nr0 = 0\nexit\nr0 = r1\nexit")


def test_ext_replaces_global_subprog_ok(kernel):
    btf_fd, main, sub = _target_btf(kernel)
    tgt = _load_with_btf(kernel, ProgType.SCHED_CLS, TARGET, btf_fd, [(0, main), (4, sub)])
    assert tgt >= 0
    ext_btf, _m, ext_sub = _target_btf(kernel)
    ext = _load_with_btf(kernel, ProgType.EXT, assemble("r0 = r1\nexit"), ext_btf, [(0, ext_sub)],
                         attach_prog_fd=tgt, attach_btf_id=sub)
    assert ext >= 0
    for fd in (ext, ext_btf, tgt, btf_fd):
        kernel.close(fd)


def test_ext_arg_mismatch_einval(kernel):
    btf_fd, main, sub = _target_btf(kernel)
    tgt = _load_with_btf(kernel, ProgType.SCHED_CLS, TARGET, btf_fd, [(0, main), (4, sub)])
    ext_btf, _m, ext_sub = _target_btf(kernel, arg_kind="ptr")
    log = bytearray(4096)
    ret = _load_with_btf(kernel, ProgType.EXT, assemble("r0 = 0\nexit"), ext_btf, [(0, ext_sub)],
                         attach_prog_fd=tgt, attach_btf_id=sub, log=log)
    assert (ret, _first_line(log)) == (-Errno.EINVAL, b"arg0 in sub() is PTR while sub() has INT")
    for fd in (ext_btf, tgt, btf_fd):
        kernel.close(fd)


def test_ext_unknown_subprog_einval(kernel):
    btf_fd, main, sub = _target_btf(kernel)
    tgt = _load_with_btf(kernel, ProgType.SCHED_CLS, prog(), btf_fd, [(0, main)])
    ext_btf, _m, ext_sub = _target_btf(kernel)
    log = bytearray(4096)
    ret = _load_with_btf(kernel, ProgType.EXT, assemble("r0 = 0\nexit"), ext_btf, [(0, ext_sub)],
                         attach_prog_fd=tgt, attach_btf_id=sub, log=log)
    assert (ret, _first_line(log)) == (-Errno.EINVAL, b"Subprog sub doesn't exist")
    for fd in (ext_btf, tgt, btf_fd):
        kernel.close(fd)


def test_attach_btf_obj_fd_user_btf_enotsupp(kernel):
    btf_fd, _main, sub = _target_btf(kernel)
    ret, _ = calls.raw(kernel, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.TRACING,
                       expected_attach_type=FENTRY, insns=prog(), insn_cnt=2, license=b"GPL\0",
                       attach_btf_obj_fd=btf_fd, attach_btf_id=sub)
    assert ret == -Errno.ENOTSUPP
    kernel.close(btf_fd)


def test_attach_btf_obj_fd_vmlinux_ok(kernel):
    vm = calls.raw(kernel, BpfCmd.BTF_GET_FD_BY_ID, "open_flags", btf_id=1)[0]
    assert vm >= 0
    ret, _ = calls.raw(kernel, BpfCmd.PROG_LOAD, "log_true_size", prog_type=ProgType.TRACING,
                       expected_attach_type=FENTRY, insns=prog(), insn_cnt=2, license=b"GPL\0",
                       attach_btf_obj_fd=vm, attach_btf_id=fn("bpf_fentry_test1"))
    assert ret >= 0
    kernel.close(ret)
    kernel.close(vm)


# ---- links and the trampoline: LINK_CREATE / RAW_TRACEPOINT_OPEN, PROG_TEST_RUN ----

def _counter(k, slots=4):
    """One array element of `slots` u64s (programs address it as map[id:fd][0]+8*i)."""
    return calls.map_create(k, MapType.ARRAY, 4, 8 * slots, 1)


def _load_fd(k, prog_type, eat, btf_id, text) -> int:
    fd = calls.prog_load(k, prog_type, assemble(text + "\nexit"), expected_attach_type=eat,
                         attach_btf_id=btf_id)
    assert fd >= 0
    return fd


def _link(k, prog_fd, attach_type, **extra):
    fields = {f"link_create__{a}": v for a, v in extra.items()}
    r, _ = calls.raw(k, BpfCmd.LINK_CREATE, None, size=64, link_create__prog_fd=prog_fd,
                     link_create__attach_type=attach_type, **fields)
    return r


def _test_run(k, prog_fd, **kw):
    fields = {f"test__{a}": v for a, v in kw.items()}
    r, a = calls.raw(k, BpfCmd.PROG_TEST_RUN, "test.batch_size", test__prog_fd=prog_fd, **fields)
    return r, a.get("test.retval")


def _slot(k, m, i, slots=4) -> int:
    value = calls.map_lookup_elem(k, m, bytes(4), 8 * slots)
    return int.from_bytes(value[8 * i:8 * i + 8], "little")


def test_fentry_fexit_links_run_on_test_run(kernel):
    m = _counter(kernel)
    # fentry: slot0 += 1, slot1 = arg0; fexit: slot2 = ret
    fentry = _load_fd(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test1"),
                      f"r6 = *(u64 *)(r1 +0)\nr1 = map[id:{m}][0]+0\nr2 = 1\n"
                      "lock *(u64 *)(r1 +0) += r2\n*(u64 *)(r1 +8) = r6\nr0 = 0")
    fexit = _load_fd(kernel, ProgType.TRACING, FEXIT, fn("bpf_fentry_test1"),
                     f"r6 = *(u64 *)(r1 +8)\nr1 = map[id:{m}][0]+0\n*(u64 *)(r1 +16) = r6\nr0 = 0")
    assert _test_run(kernel, fentry) == (0, 0)
    assert _slot(kernel, m, 0) == 0                                    # not linked yet
    l1, l2 = _link(kernel, fentry, FENTRY), _link(kernel, fexit, FEXIT)
    assert l1 >= 0 and l2 >= 0
    assert _test_run(kernel, fexit) == (0, 0)
    assert (_slot(kernel, m, 0), _slot(kernel, m, 1), _slot(kernel, m, 2)) == (1, 1, 2)
    info = calls.obj_get_info_by_fd(kernel, l1, "link")[0]
    assert (info.type, info.tracing.attach_type, info.tracing.target_obj_id,
            info.tracing.target_btf_id) == (LinkType.TRACING, FENTRY, 1, fn("bpf_fentry_test1"))
    assert _link(kernel, fentry, FENTRY) == -Errno.EBUSY               # linked there already
    kernel.close(l1)
    assert _test_run(kernel, fexit) == (0, 0)
    assert _slot(kernel, m, 0) == 1                                    # fentry unlinked
    for fd in (l2, fexit, fentry, m):
        kernel.close(fd)


def test_tracing_link_relink_after_release_ok(kernel):
    p = _load_fd(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test2"), "r0 = 0")
    l1 = _link(kernel, p, FENTRY)
    assert _link(kernel, p, FENTRY) == -Errno.EBUSY                    # same trampoline twice
    kernel.close(l1)
    l2 = _link(kernel, p, FENTRY)                                      # re-attach via attach_btf
    assert l2 >= 0
    for fd in (l2, p):
        kernel.close(fd)


def test_fmod_ret_changes_return_test_run(kernel):
    p = _load_fd(kernel, ProgType.TRACING, FMOD_RET, fn("bpf_modify_return_test"), "r0 = 0\nr0 = 9")
    # unlinked: both functions run (b: 2 -> 3 each time, two side effects), 1+3 and 1+3+3+4+5+6+7
    assert _test_run(kernel, p) == (0, (2 << 16) | (4 + 29))
    link = _link(kernel, p, FMOD_RET)
    # bpf_modify_return_test now returns 9 without running (b untouched); test2 runs: 1+3+3+4+5+6+7
    assert _test_run(kernel, p) == (0, (1 << 16) | (9 + 29))
    for fd in (link, p):
        kernel.close(fd)


def test_tracing_test_run_flags_einval_and_other_types_efault(kernel):
    p = _load_fd(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test1"), "r0 = 0")
    assert _test_run(kernel, p, flags=1)[0] == -Errno.EINVAL
    assert _test_run(kernel, p, cpu=1)[0] == -Errno.EINVAL
    it = _load_fd(kernel, ProgType.TRACING, AttachType.TRACE_ITER, fn("bpf_iter_bpf_map"), "r0 = 0")
    assert _test_run(kernel, it)[0] == -Errno.EFAULT
    for fd in (it, p):
        kernel.close(fd)


def test_raw_tracepoint_open_for_fentry_and_lsm(kernel):
    p = _load_fd(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test3"), "r0 = 0")
    lsm = _load_fd(kernel, ProgType.LSM, AttachType.LSM_MAC, fn("bpf_lsm_file_open"), "r0 = 0")
    name = bytearray(b"x\0")
    assert calls.raw(kernel, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie",
                     raw_tracepoint__prog_fd=p, raw_tracepoint__name=name)[0] == -Errno.EINVAL
    links = [calls.raw(kernel, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie",
                       raw_tracepoint__prog_fd=fd)[0] for fd in (p, lsm)]
    assert all(lk >= 0 for lk in links)
    info = calls.obj_get_info_by_fd(kernel, links[1], "link")[0]
    assert (info.type, info.tracing.attach_type) == (LinkType.TRACING, AttachType.LSM_MAC)
    for fd in (*links, lsm, p):
        kernel.close(fd)


def test_link_create_attach_type_must_match_einval(kernel):
    p = _load_fd(kernel, ProgType.TRACING, FENTRY, fn("bpf_fentry_test1"), "r0 = 0")
    assert _link(kernel, p, FEXIT) == -Errno.EINVAL
    assert _link(kernel, p, FENTRY, target_fd=p) == -Errno.EINVAL     # target_btf_id missing
    kernel.close(p)


def test_ext_link_create_and_retarget(kernel):
    btf_fd, main, sub = _target_btf(kernel)
    tgt = _load_with_btf(kernel, ProgType.SCHED_CLS, TARGET, btf_fd, [(0, main), (4, sub)])
    ext_btf, _m, ext_sub = _target_btf(kernel)
    ext = _load_with_btf(kernel, ProgType.EXT, assemble("r0 = r1\nexit"), ext_btf, [(0, ext_sub)],
                         attach_prog_fd=tgt, attach_btf_id=sub)
    l1 = _link(kernel, ext, 0)
    assert l1 >= 0
    info = calls.obj_get_info_by_fd(kernel, l1, "link")[0]
    tgt_id = calls.obj_get_info_by_fd(kernel, tgt, "prog")[0].id
    assert (info.type, info.tracing.target_obj_id, info.tracing.target_btf_id) == \
        (LinkType.TRACING, tgt_id, sub)
    assert _link(kernel, ext, 0) == -Errno.EINVAL                      # load-time target used up
    assert _link(kernel, ext, 0, target_fd=tgt, target_btf_id=sub) == -Errno.EBUSY   # replaced already
    kernel.close(l1)
    l2 = _link(kernel, ext, 0, target_fd=tgt, target_btf_id=sub)       # explicit re-target
    assert l2 >= 0
    for fd in (l2, ext, ext_btf, tgt, btf_fd):
        kernel.close(fd)
