"""PROG_LOAD of BTF-attached TRACING programs (tp_btf = BPF_TRACE_RAW_TP, iter = BPF_TRACE_ITER),
fake vs the real kernel: the attach target checks of verifier.c bpf_check_attach_target /
check_attach_btf_id and the BTF-typed ctx rules of btf.c btf_ctx_access, compared by errno
and verifier log.

The reference kernel refuses fentry/fexit/fmod_ret/LSM/EXT loads with EPERM right after the
prog_flags check, before anything else, so only that earlier check is compared for them; the
rest of those types is covered by tests/unit/fakekernel/test_tracing.py from the source.
"""
from __future__ import annotations

import functools

import pytest

from fakekernel.btf_vmlinux import BtfIndex
from uapi import calls
from uapi.asm import assemble
from uapi.btf import BtfKind
from uapi.bpf import AttachType, ProgLoadFlags, ProgType

pytestmark = pytest.mark.differential

@functools.cache
def ix() -> BtfIndex:
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        return BtfIndex(f.read())


def bid(name: str, kind=BtfKind.FUNC) -> int:
    found = ix().find_by_name_kind(name.encode(), kind)
    assert found > 0, name
    return found


def tp(name: str) -> int:
    return bid("btf_trace_" + name, BtfKind.TYPEDEF)


def prog(*lines: str) -> bytes:
    return assemble("\n".join((*lines, "r0 = 0", "exit")))


def load(b, prog_type, eat, btf_id, insns=None, **kw):
    r = calls.prog_load(b, prog_type, insns or prog(), log_level=1, log_size=1 << 16,
                        expected_attach_type=eat, attach_btf_id=btf_id, strict=False, **kw)
    if r.ret >= 0:
        b.close(r.ret)
        return "ok", r.log
    return r.ret, r.log


RAW_TP, ITER = AttachType.TRACE_RAW_TP, AttachType.TRACE_ITER

# (attach type, target, instructions, extra load args)
CASES = {
    "tp_btf_ok": (RAW_TP, lambda: tp("sched_switch"), prog(), {}),
    "tp_btf_scalar_arg_u64": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u64 *)(r1 +0)"), {}),
    "tp_btf_scalar_arg_u32": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u32 *)(r1 +0)"), {}),
    "tp_btf_ptr_arg": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u64 *)(r1 +24)"), {}),
    "tp_btf_past_last_arg_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u64 *)(r1 +32)"), {}),
    "tp_btf_unaligned_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u32 *)(r1 +4)"), {}),
    "tp_btf_ptr_narrow_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u32 *)(r1 +8)"), {}),
    "tp_btf_write_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("*(u64 *)(r1 +0) = r1"), {}),
    "tp_btf_negative_off_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u64 *)(r1 -8)"), {}),
    "tp_btf_beyond_ctx_eacces": (RAW_TP, lambda: tp("sched_switch"), prog("r0 = *(u64 *)(r1 +96)"), {}),
    "tp_btf_one_arg_tp_second_eacces": (RAW_TP, lambda: tp("sched_wakeup"), prog("r0 = *(u64 *)(r1 +8)"), {}),
    "tp_btf_struct_not_typedef_einval": (RAW_TP, lambda: bid("task_struct", BtfKind.STRUCT), prog(), {}),
    "tp_btf_func_not_typedef_einval": (RAW_TP, lambda: bid("bpf_fentry_test1"), prog(), {}),
    "tp_btf_wrong_typedef_name_einval": (RAW_TP, lambda: bid("u32", BtfKind.TYPEDEF), prog(), {}),
    "tp_btf_no_btf_id_einval": (RAW_TP, lambda: 0, prog(), {}),
    "tp_btf_invalid_btf_id_einval": (RAW_TP, lambda: 1_000_000, prog(), {}),
    "tp_btf_btf_id_over_max_einval": (RAW_TP, lambda: 10_000_000, prog(), {}),
    "tp_btf_sleepable_einval": (RAW_TP, lambda: tp("sched_switch"), prog(),
                                {"prog_flags": ProgLoadFlags.SLEEPABLE}),
    "tp_btf_non_gpl": (RAW_TP, lambda: tp("sched_switch"), prog(), {"license": b"MIT"}),
    "iter_bpf_map_ok": (ITER, lambda: bid("bpf_iter_bpf_map"), prog(), {}),
    "iter_task_sleepable_ok": (ITER, lambda: bid("bpf_iter_task"), prog(),
                               {"prog_flags": ProgLoadFlags.SLEEPABLE}),
    "iter_meta_read": (ITER, lambda: bid("bpf_iter_bpf_map"), prog("r0 = *(u64 *)(r1 +0)"), {}),
    "iter_obj_read": (ITER, lambda: bid("bpf_iter_bpf_prog"), prog("r0 = *(u64 *)(r1 +8)"), {}),
    "iter_past_args_eacces": (ITER, lambda: bid("bpf_iter_bpf_map"), prog("r0 = *(u64 *)(r1 +16)"), {}),
    "iter_ptr_narrow_eacces": (ITER, lambda: bid("bpf_iter_task"), prog("r0 = *(u32 *)(r1 +8)"), {}),
    "iter_not_a_target_einval": (ITER, lambda: bid("bpf_iter_num_new"), prog(), {}),
    "iter_plain_func_einval": (ITER, lambda: bid("bpf_fentry_test1"), prog(), {}),
    "iter_struct_not_func_einval": (ITER, lambda: bid("task_struct", BtfKind.STRUCT), prog(), {}),
    "tracing_no_attach_type_einval": (0, lambda: bid("bpf_fentry_test1"), prog(), {}),
    "tracing_cgroup_attach_type_einval": (AttachType.CGROUP_INET_INGRESS, lambda: bid("bpf_fentry_test1"),
                                          prog(), {}),
    "iter_obj_deref_without_null_check_eacces": (ITER, lambda: bid("bpf_iter_bpf_map"),
                                                 prog("r1 = *(u64 *)(r1 +8)", "r0 = *(u32 *)(r1 +24)"), {}),
    "iter_obj_arith_without_null_check_eacces": (ITER, lambda: bid("bpf_iter_bpf_map"),
                                                 prog("r1 = *(u64 *)(r1 +8)", "r1 += 8"), {}),
    "iter_obj_scalar_after_null_check": (ITER, lambda: bid("bpf_iter_bpf_map"),
                                         prog("r1 = *(u64 *)(r1 +8)", "if r1 == 0x0 goto pc+1",
                                              "r0 = *(u32 *)(r1 +24)"), {}),
    "iter_meta_scalar_read": (ITER, lambda: bid("bpf_iter_bpf_map"),
                              prog("r1 = *(u64 *)(r1 +0)", "r0 = *(u64 *)(r1 +8)"), {}),
    "iter_obj_returned_einval": (ITER, lambda: bid("bpf_iter_bpf_map"),
                                 assemble("r0 = *(u64 *)(r1 +8)\nexit"), {}),
    "tp_btf_task_scalar_read": (RAW_TP, lambda: tp("sched_switch"),
                                prog("r1 = *(u64 *)(r1 +8)", "r0 = *(u32 *)(r1 +16)"), {}),
    "tp_btf_task_write_eacces": (RAW_TP, lambda: tp("sched_switch"),
                                 prog("r1 = *(u64 *)(r1 +8)", "r2 = 1", "*(u32 *)(r1 +16) = r2"), {}),
    "tp_btf_task_negative_off_eacces": (RAW_TP, lambda: tp("sched_switch"),
                                        prog("r1 = *(u64 *)(r1 +8)", "r0 = *(u64 *)(r1 -8)"), {}),
    "tp_btf_trusted_never_null": (RAW_TP, lambda: tp("sched_switch"),
                                  prog("r1 = *(u64 *)(r1 +8)", "if r1 == 0x0 goto pc+1", "r0 = 1"), {}),
    "tp_btf_non_gpl_btf_read_einval": (RAW_TP, lambda: tp("sched_switch"),
                                       prog("r1 = *(u64 *)(r1 +8)", "r0 = *(u32 *)(r1 +16)"),
                                       {"license": b"MIT"}),
    "iter_return_2_einval": (ITER, lambda: bid("bpf_iter_bpf_map"), assemble("r0 = 2\nexit"), {}),
    "iter_return_1_ok": (ITER, lambda: bid("bpf_iter_bpf_map"), assemble("r0 = 1\nexit"), {}),
    "tp_btf_return_anything_ok": (RAW_TP, lambda: tp("sched_switch"), assemble("r0 = 7\nexit"), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prog_load_tracing(both, case):
    fake, host = both
    eat, target, insns, kw = CASES[case]
    assert load(fake, ProgType.TRACING, eat, target(), insns, **kw) == \
        load(host, ProgType.TRACING, eat, target(), insns, **kw)


@pytest.mark.parametrize("prog_type,eat", [(ProgType.TRACING, AttachType.TRACE_FENTRY),
                                           (ProgType.TRACING, AttachType.TRACE_FEXIT),
                                           (ProgType.TRACING, AttachType.MODIFY_RETURN),
                                           (ProgType.LSM, AttachType.LSM_MAC),
                                           (ProgType.EXT, 0)])
def test_prog_load_trampoline_types_unknown_prog_flag_einval(both, prog_type, eat):
    """The one check the reference kernel makes before refusing these types (EPERM)."""
    fake, host = both
    target = bid("bpf_lsm_file_open" if prog_type == ProgType.LSM else "bpf_fentry_test1")
    args = (prog_type, eat, target, prog())
    assert load(fake, *args, prog_flags=1 << 20) == load(host, *args, prog_flags=1 << 20) == (-22, "")


# ---- tp_btf links: RAW_TRACEPOINT_OPEN (no name) and LINK_CREATE with BPF_TRACE_RAW_TP ----

def _tp_btf_link_scenario(b):
    from uapi.bpf import BpfCmd, LinkType
    from uapi.ffi import ffi
    p = calls.prog_load(b, ProgType.TRACING, prog("r0 = *(u64 *)(r1 +8)"),
                        expected_attach_type=RAW_TP, attach_btf_id=tp("sched_switch"))
    out = [calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie", raw_tracepoint__prog_fd=p,
                     raw_tracepoint__name=bytearray(b"sched_switch\0"))[0]]
    l1 = calls.raw(b, BpfCmd.RAW_TRACEPOINT_OPEN, "raw_tracepoint.cookie", raw_tracepoint__prog_fd=p,
                   raw_tracepoint__cookie=7)[0]
    l2 = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.tracing.cookie", link_create__prog_fd=p,
                   link_create__attach_type=RAW_TP, link_create__tracing__cookie=9)[0]
    l3 = calls.raw(b, BpfCmd.LINK_CREATE, "link_create.tracing.cookie", link_create__prog_fd=p,
                   link_create__attach_type=ITER)[0]
    out += [b.sym(l1), b.sym(l2), l3]
    for lk in (l1, l2):
        name = bytearray(32)
        raw = bytearray(ffi.sizeof("struct bpf_link_info"))
        li = ffi.from_buffer("struct bpf_link_info *", raw)
        li.raw_tracepoint.tp_name = ffi.cast("uint64_t", ffi.from_buffer(name))
        li.raw_tracepoint.tp_name_len = len(name)
        r, _ = calls.raw(b, BpfCmd.OBJ_GET_INFO_BY_FD, "info.info", info__bpf_fd=lk,
                         info__info_len=len(raw), info__info=raw)
        out.append((r, li.type == LinkType.RAW_TRACEPOINT, li.raw_tracepoint.tp_name_len,
                    bytes(name).rstrip(b"\0"), li.raw_tracepoint.cookie))
    for fd in list(b.fds):
        b.close(fd)
    return out


def test_tp_btf_links(both):
    fake, host = both
    assert _tp_btf_link_scenario(fake) == _tp_btf_link_scenario(host)


@pytest.mark.parametrize("eat,target,kw", [
    (RAW_TP, lambda: tp("sched_switch"), {}), (ITER, lambda: bid("bpf_iter_bpf_map"), {}),
    (RAW_TP, lambda: tp("sched_switch"), {"flags": 1}), (RAW_TP, lambda: tp("sched_switch"), {"cpu": 1}),
    (RAW_TP, lambda: tp("sched_switch"), {"repeat": 3})])
def test_prog_test_run_tracing_not_trampoline_efault(both, eat, target, kw):
    """bpf_prog_test_run_tracing(): EINVAL for flags/cpu, EFAULT for non-trampoline programs."""
    from uapi.bpf import BpfCmd
    out = []
    for b in both:
        p = calls.prog_load(b, ProgType.TRACING, prog(), expected_attach_type=eat, attach_btf_id=target())
        fields = {f"test__{k}": v for k, v in kw.items()}
        r, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, "test.batch_size", test__prog_fd=p, **fields)
        out.append((r, a.get("test.retval")))
        b.close(p)
    assert out[0] == out[1]


# ---- every iterator target's ctx arguments (ctx_arg_info types, BTF walks, NULL checks) ----

_ITER_TARGETS = ("bpf_link", "bpf_map", "bpf_map_elem", "bpf_prog", "bpf_sk_storage_map", "cgroup",
                 "dmabuf", "ipv6_route", "kmem_cache", "ksym", "netlink", "sockmap", "task",
                 "task_file", "task_vma", "tcp", "udp", "unix")
_BUF_ARGS = {("bpf_map_elem", 2), ("bpf_map_elem", 3), ("bpf_sk_storage_map", 3), ("sockmap", 2)}


def _iter_arg_cases():
    for tgt in _ITER_TARGETS:
        t = ix().type_by_id(bid("bpf_iter_" + tgt))
        for a in range(len(ix().params(t.type))):
            bodies = {"load": ["r0 = 0"], "deref": ["r0 = *(u8 *)(r1 +0)"],
                      "arith": ["r1 += 1"],
                      "checked_deref": ["if r1 == 0x0 goto pc+1", "r0 = *(u8 *)(r1 +0)"],
                      "checked_deref16": ["if r1 == 0x0 goto pc+1", "r0 = *(u64 *)(r1 +16)"]}
            for name, body in bodies.items():
                if (tgt, a) in _BUF_ARGS and name.startswith("checked"):
                    continue         # PTR_TO_BUF accesses after the check are not walked here
                yield pytest.param(tgt, a, body, id=f"{tgt}-arg{a}-{name}")


@pytest.mark.parametrize("tgt,arg,body", list(_iter_arg_cases()))
def test_iter_ctx_args(both, tgt, arg, body):
    insns = prog(f"r1 = *(u64 *)(r1 +{8 * arg})", *body, "r0 = 0")
    fake, host = both
    assert load(fake, ProgType.TRACING, ITER, bid("bpf_iter_" + tgt), insns) == \
        load(host, ProgType.TRACING, ITER, bid("bpf_iter_" + tgt), insns)
