"""Stack trace helpers — kernel/bpf/stackmap.c (bpf_get_stackid, bpf_get_stack, bpf_get_task_stack,
__bpf_get_stackid, __bpf_get_stack) over kernel/events/callchain.c (get_perf_callchain).

The simulated kernel has no real stacks: a call chain is a list of return addresses inside
kallsyms functions, innermost first.  A hook that knows where it fires supplies its chain
(``env.ctx.kernel_stack``); otherwise the chain is the one the kernel shows for the run — the
program itself (its ``bpf_prog_<tag>_<name>`` symbol: one address per program, where Linux has
the call site), the kprobe's function for a kprobe_multi run, then the
PROG_TEST_RUN path of its type and the bpf() syscall entry.  The user stack of a task is one
frame (its simulated syscall return address).  Stack maps get the frames through
`StackTraceMap.stack_map_store`, in the bucket ``jhash2(ips) & (n_buckets - 1)``.
"""
from __future__ import annotations

from fakekernel.helpers.base import neg_errno
from fakekernel.maps.stackmap import PERF_MAX_STACK_DEPTH, StackTraceMap
from uapi.bpf import FuncId, MapFlags, ProgType, StackFlags
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import u32, u64

__all__ = ["STACK_RUNTIME", "kernel_callchain", "jhash2", "USER_SYSCALL_IP"]

_U32 = ffi.sizeof("__u32")
_U64 = ffi.sizeof("__u64")
_BUILD_ID_ELEM = ffi.sizeof("struct bpf_stack_build_id")
BPF_STACK_BUILD_ID_IP = 2           # enum bpf_stack_build_id_status (uapi; not generated)
_RET_OFF = 0x1D                     # where the simulated callers' return addresses sit
USER_SYSCALL_IP = 0x00007F0000001000   # the simulated user stack: the syscall's return address
_GET_STACK_FLAGS = StackFlags.SKIP_FIELD_MASK | StackFlags.USER_STACK | StackFlags.USER_BUILD_ID
_GET_STACKID_FLAGS = (StackFlags.SKIP_FIELD_MASK | StackFlags.USER_STACK | StackFlags.FAST_STACK_CMP
                      | StackFlags.REUSE_STACKID)

_SYSCALL_ENTRY = ("__sys_bpf", "__x64_sys_bpf", "do_syscall_64", "entry_SYSCALL_64_after_hwframe")
_SKB = ("bpf_test_run", "bpf_prog_test_run_skb")
_TEST_RUN_CHAIN = {
    ProgType.SOCKET_FILTER: _SKB, ProgType.SCHED_CLS: _SKB, ProgType.SCHED_ACT: _SKB,
    ProgType.CGROUP_SKB: _SKB, ProgType.LWT_IN: _SKB, ProgType.LWT_OUT: _SKB, ProgType.LWT_XMIT: _SKB,
    ProgType.XDP: ("bpf_test_run", "bpf_prog_test_run_xdp"),
    ProgType.RAW_TRACEPOINT: ("__bpf_prog_test_run_raw_tp", "bpf_prog_test_run_raw_tp"),
    ProgType.SYSCALL: ("bpf_prog_test_run_syscall",),
    ProgType.TRACING: ("bpf_fentry_test1", "bpf_prog_test_run_tracing"),
}
_SLEEPING = ("__schedule", "schedule", "do_nanosleep", "hrtimer_nanosleep", "__x64_sys_nanosleep",
             "do_syscall_64", "entry_SYSCALL_64_after_hwframe")


def _ret_addr(kern, name: str) -> int:
    f = kern.world.trace.kallsyms.add(name, 0)
    return f.addr + _RET_OFF


def _prog_ip(env) -> int:
    """The program's frame: its image symbol ``bpf_prog_<tag>_<name>`` in kallsyms (one address
    per program — the simulated run has no call-site address)."""
    prog = env.prog
    ip = getattr(prog, "bpf_func", 0)
    if ip:
        return ip
    tag = getattr(prog, "tag", b"")
    name = getattr(prog.aux, "name", b"")
    sym = "bpf_prog_%s_%s" % (tag.hex() if isinstance(tag, bytes) else tag,
                              name.decode(errors="replace") if isinstance(name, bytes) else name)
    return _ret_addr(env.kernel, sym)


def kernel_callchain(env, task=None) -> list[int]:
    """The kernel return addresses of the running program's context (or of a sleeping `task`)."""
    kern = env.kernel
    if task is not None and task is not (getattr(env, "task", None) or kern.current):
        return [_ret_addr(kern, n) for n in _SLEEPING]
    chain = getattr(env.ctx, "kernel_stack", None)
    if chain is not None:
        return list(chain)
    out = [_prog_ip(env)] if env.prog is not None else []
    entry_ip = getattr(env.ctx, "entry_ip", None)
    if entry_ip is not None:
        out.append(entry_ip + _RET_OFF)
        callers = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")
    else:
        ptype = env.prog.type if env.prog is not None else None
        callers = _TEST_RUN_CHAIN.get(ptype, ("bpf_prog_test_run",)) + _SYSCALL_ENTRY
    return out + [_ret_addr(kern, n) for n in callers]


def _callchain(env, user: bool, max_depth: int, task=None) -> list[int]:
    """get_perf_callchain(): at most max_depth entries of the kernel or the user stack."""
    chain = [USER_SYSCALL_IP] if user else kernel_callchain(env, task)
    return chain[:max_depth]


def _max_stack(env) -> int:
    return env.kernel.sysctls.get("kernel.perf_event_max_stack", PERF_MAX_STACK_DEPTH)


# ---- jhash2 (include/linux/jhash.h) ----
_JHASH_INITVAL = 0xDEADBEEF
_M32 = 0xFFFFFFFF


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a, b, c):
    a = (a - c) & _M32; a ^= _rol32(c, 4); c = (c + b) & _M32          # noqa: E702
    b = (b - a) & _M32; b ^= _rol32(a, 6); a = (a + c) & _M32          # noqa: E702
    c = (c - b) & _M32; c ^= _rol32(b, 8); b = (b + a) & _M32          # noqa: E702
    a = (a - c) & _M32; a ^= _rol32(c, 16); c = (c + b) & _M32         # noqa: E702
    b = (b - a) & _M32; b ^= _rol32(a, 19); a = (a + c) & _M32         # noqa: E702
    c = (c - b) & _M32; c ^= _rol32(b, 4); b = (b + a) & _M32          # noqa: E702
    return a, b, c


def _final(a, b, c):
    c ^= b; c = (c - _rol32(b, 14)) & _M32                             # noqa: E702
    a ^= c; a = (a - _rol32(c, 11)) & _M32                             # noqa: E702
    b ^= a; b = (b - _rol32(a, 25)) & _M32                             # noqa: E702
    c ^= b; c = (c - _rol32(b, 16)) & _M32                             # noqa: E702
    a ^= c; a = (a - _rol32(c, 4)) & _M32                              # noqa: E702
    b ^= a; b = (b - _rol32(a, 14)) & _M32                             # noqa: E702
    c ^= b; c = (c - _rol32(b, 24)) & _M32                             # noqa: E702
    return a, b, c


def jhash2(words: list[int], initval: int = 0) -> int:
    """jhash2(): Bob Jenkins' lookup3 over u32 words."""
    a = b = c = (_JHASH_INITVAL + (len(words) << 2) + initval) & _M32
    k = list(words)
    while len(k) > 3:
        a = (a + k[0]) & _M32
        b = (b + k[1]) & _M32
        c = (c + k[2]) & _M32
        a, b, c = _mix(a, b, c)
        k = k[3:]
    if k:
        k = k + [0] * (3 - len(k))
        a = (a + k[0]) & _M32
        b = (b + k[1]) & _M32
        c = (c + k[2]) & _M32
        a, b, c = _final(a, b, c)
    return c


def _ips_bytes(ips: list[int]) -> bytes:
    return b"".join(u64(ip).to_bytes(_U64, "little") for ip in ips)


def _build_id_frames(ips: list[int]) -> bytes:
    """stack_map_get_build_id_offset() without a vma to look in: every frame is a bare IP."""
    out = bytearray()
    for ip in ips:
        elem = ffi.new("struct bpf_stack_build_id *")
        elem.status = BPF_STACK_BUILD_ID_IP
        elem.ip = u64(ip)
        out += bytes(ffi.buffer(elem))
    return bytes(out)


def _hash_ips(ips: list[int]) -> int:
    raw = _ips_bytes(ips)
    return jhash2([int.from_bytes(raw[k:k + _U32], "little") for k in range(0, len(raw), _U32)])


def _bucket_hash(data: bytes, build_id: bool) -> int:
    """The hash a bucket was filed under (bucket->hash): of its ips."""
    if not build_id:
        return _hash_ips([int.from_bytes(data[k:k + _U64], "little") for k in range(0, len(data), _U64)])
    elems = [ffi.from_buffer("struct bpf_stack_build_id *", data[k:k + _BUILD_ID_ELEM])
             for k in range(0, len(data), _BUILD_ID_ELEM)]
    return _hash_ips([e.ip for e in elems])


def __bpf_get_stackid(smap: StackTraceMap, ips: list[int], flags: int) -> int:
    skip = flags & StackFlags.SKIP_FIELD_MASK
    if len(ips) <= skip:
        return neg_errno(Errno.EFAULT)
    ips = ips[skip:]
    h = _hash_ips(ips)
    stack_id = h & (smap.n_buckets - 1)
    bucket = smap.buckets.get(stack_id)
    build_id = bool(smap.map_flags & MapFlags.STACK_BUILD_ID)
    data = _build_id_frames(ips) if build_id else _ips_bytes(ips)
    hash_matches = bucket is not None and _bucket_hash(bucket[1], build_id) == h
    if hash_matches and flags & StackFlags.FAST_STACK_CMP:
        return stack_id
    if hash_matches and bucket[0] == len(ips) and bucket[1] == data:
        return stack_id
    if bucket is not None and not flags & StackFlags.REUSE_STACKID:
        return neg_errno(Errno.EEXIST)
    if len(smap.buckets) >= smap.max_entries:        # pcpu_freelist_pop() came back empty
        return neg_errno(Errno.ENOMEM)
    smap.stack_map_store(stack_id, data[:smap.value_size])
    return stack_id


def bpf_get_stackid(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_stackid(ctx, map, flags): the bucket id of the current stack."""
    smap = env.mem.object_at(r2)
    flags = r3
    if flags & ~int(_GET_STACKID_FLAGS):
        return neg_errno(Errno.EINVAL)
    skip = flags & StackFlags.SKIP_FIELD_MASK
    frame = _BUILD_ID_ELEM if smap.map_flags & MapFlags.STACK_BUILD_ID else _U64
    max_depth = min(smap.value_size // frame + skip, _max_stack(env))
    ips = _callchain(env, bool(flags & StackFlags.USER_STACK), max_depth)
    return __bpf_get_stackid(smap, ips, flags)


def __bpf_get_stack(env, buf: int, size: int, flags: int, task=None) -> int:
    """__bpf_get_stack(): the frames copied into buf (the rest zeroed); buf cleared on error."""
    user = bool(flags & StackFlags.USER_STACK)
    build_id = bool(flags & StackFlags.USER_BUILD_ID)
    skip = flags & StackFlags.SKIP_FIELD_MASK
    elem = _BUILD_ID_ELEM if build_id else _U64
    cur = getattr(env, "task", None) or env.kernel.current
    crosstask = task is not None and task is not cur
    err = Errno.EINVAL
    if flags & ~int(_GET_STACK_FLAGS) or (not user and build_id) or size % elem:
        pass
    elif crosstask and user:
        err = Errno.EOPNOTSUPP
    else:
        num_elem = size // elem
        max_depth = min(num_elem + skip, _max_stack(env))
        trace = _callchain(env, user, max_depth, task)
        if len(trace) < skip:
            err = Errno.EFAULT
        else:
            ips = trace[skip:skip + num_elem]
            data = _build_id_frames(ips) if build_id else _ips_bytes(ips)
            if size:
                env.mem.write(buf, data + bytes(size - len(data)))
            return len(data)
    if size:
        env.mem.write(buf, bytes(size))
    return neg_errno(err)


def bpf_get_stack(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_stack(ctx, buf, size, flags)."""
    return __bpf_get_stack(env, r2, u32(r3), r4)


def bpf_get_task_stack(env, r1, r2, r3, r4, r5) -> int:
    """bpf_get_task_stack(task, buf, size, flags)."""
    return __bpf_get_stack(env, r2, u32(r3), r4, task=env.mem.object_at(r1))


STACK_RUNTIME = {
    FuncId.get_stackid: bpf_get_stackid,
    FuncId.get_stack: bpf_get_stack,
    FuncId.get_task_stack: bpf_get_task_stack,
}
