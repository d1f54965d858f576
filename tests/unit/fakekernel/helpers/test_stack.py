"""Simulated stacks (fakekernel.helpers.stack): what bpf_get_stack records for a raw_tp test run,
a sleeping task's stack, build-id stack maps, the perf_event_max_stack bound, and jhash2."""
from __future__ import annotations

from fakekernel.helpers.stack import USER_SYSCALL_IP, jhash2, kernel_callchain
from helperutil import HelperProg, prog_text
from uapi import calls
from uapi.bpf import MapFlags, MapType, ProgType

RAW_TP = ProgType.RAW_TRACEPOINT


def _symbolize(k, ips):
    syms = k.world.trace.kallsyms
    out = []
    for ip in ips:
        f = max((f for f in syms.by_addr.values() if f.addr <= ip), key=lambda f: f.addr)
        out.append(f.name)
    return out


def _get_stack(k, size=256, flags=0):
    body = f"""
    r1 = r9
    r2 = r6
    r2 += 8
    r3 = {size}
    r4 = {flags}
    call bpf_get_stack
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(k, body, prog_type=RAW_TP) as p:
        v = p.run()[1]
    n = int.from_bytes(v[:8], "little", signed=True)
    return n, [int.from_bytes(v[8 + i:16 + i], "little") for i in range(0, max(n, 0), 8)]


def test_raw_tp_test_run_stack_names(kernel):
    n, ips = _get_stack(kernel)
    names = _symbolize(kernel, ips)
    assert names[0].startswith("bpf_prog_") and names[1:] == [
        "__bpf_prog_test_run_raw_tp", "bpf_prog_test_run_raw_tp", "__sys_bpf", "__x64_sys_bpf",
        "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
    assert n == 8 * len(ips)


def test_skip_and_depth(kernel):
    """(Each call loads its own program, so frame 0 — the program's symbol — differs.)"""
    _, full = _get_stack(kernel)
    assert _get_stack(kernel, flags=2)[1] == full[2:]
    assert _get_stack(kernel, size=24)[1][1:] == full[1:3]
    kernel.sysctls["kernel.perf_event_max_stack"] = 3
    assert _get_stack(kernel, flags=1)[1] == full[1:3]          # skip counts against the bound


def test_user_stack_one_frame(kernel):
    assert _get_stack(kernel, flags=0x100) == (8, [USER_SYSCALL_IP])


def test_other_task_sleeps(kernel):
    other = kernel.spawn()

    class Env:
        pass
    env = Env()
    env.kernel, env.ctx, env.prog = kernel, None, None
    assert _symbolize(kernel, kernel_callchain(env, other))[:2] == ["__schedule", "schedule"]
    kernel.exit_task(other)


def test_build_id_stackmap_records_ips(kernel):
    smap = calls.map_create(kernel, MapType.STACK_TRACE, 4, 32 * 4, 4, map_flags=MapFlags.STACK_BUILD_ID)
    body = f"""
    r1 = r9
    r2 = map[id:{smap}]
    r3 = 0
    call bpf_get_stackid
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(kernel, body, prog_type=RAW_TP) as p:
        v = p.run()[1]
    sid = int.from_bytes(v[:8], "little", signed=True)
    assert sid >= 0
    rec = calls.map_lookup_elem(kernel, smap, sid.to_bytes(4, "little"), 128)
    kernel.close(smap)
    status = [int.from_bytes(rec[i:i + 4], "little") for i in range(0, 128, 32)]
    ips = [int.from_bytes(rec[i + 24:i + 32], "little") for i in range(0, 128, 32)]
    assert status == [2, 2, 2, 2]                            # BPF_STACK_BUILD_ID_IP
    _, full = _get_stack(kernel)
    assert ips[1:] == full[1:4]


def test_jhash2_vectors():
    assert jhash2([]) == 0xDEADBEEF
    assert jhash2([1, 2, 3]) != jhash2([3, 2, 1])
    assert jhash2([0] * 7, 1) != jhash2([0] * 7, 0)


def test_kprobe_multi_func_ip_and_stack(kernel):
    """A kprobe_multi program fired by world.trace.call: bpf_get_func_ip is the function's
    address; the stack is the program, the probed function, then the syscall entry."""
    from uapi.bpf import AttachType
    from uapi.ffi import ffi
    m = calls.map_create(kernel, MapType.ARRAY, 4, 128, 1)
    fd = calls.prog_load(kernel, ProgType.KPROBE, prog_text("""
        r1 = r9
        call bpf_get_func_ip
        *(u64 *)(r6 +0) = r0
        r1 = r9
        r2 = r6
        r2 += 16
        r3 = 64
        r4 = 0
        call bpf_get_stack
        *(u64 *)(r6 +8) = r0
    """, m, None), expected_attach_type=AttachType.TRACE_KPROBE_MULTI)
    name = ffi.new("char[]", b"vfs_read")
    syms = ffi.new("uint64_t[]", [int(ffi.cast("uintptr_t", name))])
    link = calls.link_create(kernel, fd, 0, AttachType.TRACE_KPROBE_MULTI, kprobe_multi__syms=syms,
                             kprobe_multi__cnt=1)
    assert kernel.world.trace.call("vfs_read", args=(1, 2, 3, 4)) == 1
    v = calls.map_lookup_elem(kernel, m, bytes(4), 128)
    for f in (link, fd, m):
        kernel.close(f)
    f = kernel.world.trace.kallsyms.lookup_name("vfs_read")
    assert int.from_bytes(v[:8], "little") == f.addr
    n = int.from_bytes(v[8:16], "little")
    ips = [int.from_bytes(v[16 + i:24 + i], "little") for i in range(0, n, 8)]
    assert _symbolize(kernel, ips)[1:] == ["vfs_read", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
