"""Runtime of the kernel/trace/bpf_trace.c and stackmap.c helpers against the real kernel, from
raw_tracepoint / XDP test runs: bpf_get_stack (flag and size errnos, the shape of the frames),
bpf_get_stackid (bucket ids = jhash2 of the recorded frames, EEXIST/REUSE), the perf counter
and branch snapshot errnos, and ring buffer dynptr records read back through the mmap.
Addresses differ between the two kernels by nature: stacks are compared by shape."""
from __future__ import annotations

import mmap

import pytest

from fakekernel.friendly import RingBuffer
from fakekernel.helpers.stack import jhash2
from helperutil import HelperProg
from uapi import calls
from uapi.bpf import BpfCmd, MapType, ProgType

pytestmark = pytest.mark.differential

RAW_TP = ProgType.RAW_TRACEPOINT
KERNEL_TEXT = 0xFFFFFFFF80000000
USER_END = 0x0000800000000000
U64_MAX = 2**64 - 1


def _s64(v: bytes) -> int:
    return int.from_bytes(v[:8], "little", signed=True)


def _frames(v: bytes) -> list[int]:
    return [int.from_bytes(v[k:k + 8], "little") for k in range(0, len(v), 8)]


# ---------------------------------------------------------------- bpf_get_stack

def _get_stack(b, size: int, flags: int):
    body = f"""
    r1 = 0
    r2 = r6
    r2 += 64
    r3 = {size}
    r4 = {flags:#x} ll
    call bpf_get_stack
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body.replace("    r1 = 0\n", "    r1 = r9\n"), prog_type=RAW_TP) as p:
        v = p.run(bytes(64) + b"\xaa" * 1024)[1]
    ret = _s64(v)
    buf = v[64:64 + size]
    if ret < 0:
        return ret, buf == bytes(size)
    frames = _frames(buf)
    n = ret // 8 if not flags & 0x800 else ret // 32
    if flags & 0x800:
        return ret > 0, ret % 32 == 0
    used, rest = frames[:n], frames[n:]
    kernel = not flags & 0x100
    return (ret > 0, ret % 8 == 0, all(f >= KERNEL_TEXT if kernel else 0 < f < USER_END for f in used),
            all(f == 0 for f in rest), v[64 + size:64 + size + 8] == b"\xaa" * 8)


GET_STACK_CASES = {
    "kernel": (256, 0), "kernel_skip_1": (256, 1), "user": (256, 0x100),
    "size_not_multiple_einval": (100, 0), "unknown_flag_einval": (256, 0x1000),
    "kernel_build_id_einval": (256, 0x800), "user_build_id_size_einval": (256, 0x900),
    "skip_everything_efault": (256, 255), "one_frame": (8, 0), "fast_cmp_flag_einval": (256, 0x200),
}


@pytest.mark.parametrize("case", GET_STACK_CASES.values(), ids=GET_STACK_CASES.keys())
def test_get_stack_shape_and_errno(both, case):
    """Kernel frames are kernel text addresses, the rest of the buffer zeroed; bad flags or a
    size that is not whole frames clear the buffer and give -EINVAL."""
    fake, host = both
    assert _get_stack(fake, *case) == _get_stack(host, *case)


# ---------------------------------------------------------------- bpf_get_stackid

def _stackid_body(smap: int, flags: list[int]) -> str:
    return "".join(f"""
    r1 = r9
    r2 = map[id:{smap}]
    r3 = {f:#x} ll
    call bpf_get_stackid
    *(u64 *)(r6 +{8 * k}) = r0
""" for k, f in enumerate(flags))


def _stackid(b, flags: list[int], max_entries: int = 16, value_size: int = 8 * 32, map_flags: int = 0):
    smap = calls.map_create(b, MapType.STACK_TRACE, 4, value_size, max_entries, map_flags=map_flags)
    try:
        with HelperProg(b, _stackid_body(smap, flags), prog_type=RAW_TP) as p:
            v = p.run()[1]
        rets = [_s64(v[8 * k:]) for k in range(len(flags))]
        n_buckets = 1 << (max_entries - 1).bit_length()
        shape = []
        for r in rets:
            if r < 0:
                shape.append(r)
                continue
            stack = calls.map_lookup_elem(b, smap, r.to_bytes(4, "little"), value_size)
            ips = [f for f in _frames(stack) if f]
            raw = b"".join(f.to_bytes(8, "little") for f in ips)
            words = [int.from_bytes(raw[k:k + 4], "little") for k in range(0, len(raw), 4)]
            shape.append(("id", jhash2(words) & (n_buckets - 1) == r, all(f >= KERNEL_TEXT for f in ips)
                          if not map_flags else True, len(ips) > 0))
        # the same call site twice gives the same id (ids compared relative to the first)
        return shape, [r == rets[0] for r in rets]
    finally:
        b.close(smap)


# The first frame is the program's own (on Linux: the call site in the JIT image), so
# distinct call sites compare equal only with one frame skipped.
STACKID_CASES = {
    "kernel": [0], "skip_1": [1], "unknown_flag_einval": [0x800], "user": [0x100],
    "skip_too_many_efault": [200],
    "same_stack_twice": [1, 1],
    "fast_cmp": [1, 0x201],
}
@pytest.mark.parametrize("case", STACKID_CASES.values(), ids=STACKID_CASES.keys())
def test_get_stackid_bucket_is_jhash_of_frames(both, case):
    """The id is jhash2(ips) & (n_buckets - 1), computed here over what the map recorded."""
    fake, host = both
    assert _stackid(fake, case) == _stackid(host, case)


def test_get_stackid_one_bucket_eexist_then_reuse_enomem(both):
    """One element, two different stacks (skip 0 and 1): the second is -EEXIST, and with
    BPF_F_REUSE_STACKID -ENOMEM (no free element to replace the bucket with)."""
    fake, host = both
    args = dict(flags=[0, 1, 0x401], max_entries=1)
    assert _stackid(fake, **args) == _stackid(host, **args)


# ---------------------------------------------------------------- perf counters, branches

def _perf_read(b, flags: list[int]):
    arr = calls.map_create(b, MapType.PERF_EVENT_ARRAY, 4, 4, 2)
    body = "".join(f"""
    r1 = map[id:{arr}]
    r2 = {f:#x} ll
    call bpf_perf_event_read
    *(u64 *)(r6 +{8 * k}) = r0
    r1 = map[id:{arr}]
    r2 = {f:#x} ll
    r3 = r6
    r3 += 256
    r4 = {24 if k % 2 == 0 else 16}
    call bpf_perf_event_read_value
    *(u64 *)(r6 +{128 + 8 * k}) = r0
""" for k, f in enumerate(flags))
    try:
        with HelperProg(b, body, prog_type=RAW_TP) as p:
            v = p.run()[1]
        return [_s64(v[8 * k:]) for k in range(len(flags))], [_s64(v[128 + 8 * k:]) for k in range(len(flags))], \
            v[256:280] == bytes(24)
    finally:
        b.close(arr)


def test_perf_event_read_errnos(both):
    """-E2BIG past the array, -ENOENT for an empty slot, -EINVAL for flags beyond the index
    (and a wrong value size)."""
    flags = [0, 1, 2, 0xFFFFFFFF, 1 << 32, 5]
    fake, host = both
    assert _perf_read(fake, flags) == _perf_read(host, flags)


def _branch_snapshot(b, size: int, flags: int):
    body = f"""
    r1 = r6
    r1 += 64
    r2 = {size}
    r3 = {flags}
    call bpf_get_branch_snapshot
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body, prog_type=RAW_TP) as p:
        return _s64(p.run()[1])


@pytest.mark.parametrize("size,flags", [(0, 0), (24, 0), (240, 0), (25, 0), (24, 1)])
def test_get_branch_snapshot_errno(both, size, flags):
    fake, host = both
    assert _branch_snapshot(fake, size, flags) == _branch_snapshot(host, size, flags)


# ---------------------------------------------------------------- ring buffer dynptrs

def _rb_dynptr_body(rb: int, size: int, flags: int, commit: str) -> str:
    """reserve a dynptr, write 8 bytes at 0 (when it succeeded), submit/discard it."""
    return f"""
    r1 = map[id:{rb}]
    r2 = {size}
    r3 = {flags}
    r4 = r10
    r4 += -16
    call bpf_ringbuf_reserve_dynptr
    *(u64 *)(r6 +0) = r0
    r1 = 0x1122334455667788 ll
    *(u64 *)(r10 -24) = r1
    r1 = r10
    r1 += -16
    r2 = 0
    r3 = r10
    r3 += -24
    r4 = 8
    r5 = 0
    call bpf_dynptr_write
    *(u64 *)(r6 +8) = r0
    r1 = r10
    r1 += -16
    r2 = 0
    call bpf_ringbuf_{commit}_dynptr
"""


def _kern(b):
    return b.kern if hasattr(b, "kern") else b.host


def _rb_dynptr(b, cases):
    ret, _ = calls.raw(b, BpfCmd.MAP_CREATE, "map_extra", map_type=MapType.RINGBUF, key_size=0,
                       value_size=0, max_entries=mmap.PAGESIZE)
    rb = ret
    out, seen = [], []
    try:
        with RingBuffer(_kern(b), rb, seen.append) as ring:
            for size, flags, commit in cases:
                with HelperProg(b, _rb_dynptr_body(rb, size, flags, commit), prog_type=ProgType.XDP) as p:
                    v = p.run()[1]
                out.append((_s64(v), _s64(v[8:])))
                out.append(ring.consume())
    finally:
        b.close(rb)
    return out, [bytes(s) for s in seen]


RB_DYNPTR_CASES = {
    "submit": [(16, 0, "submit")],
    "discard": [(16, 0, "discard")],
    "flags_einval": [(16, 1, "discard")],
    "too_big_for_ring_einval": [(8192, 0, "discard")],
    "past_dynptr_max_e2big": [((1 << 24), 0, "discard")],
    "short_record_write_e2big": [(4, 0, "submit")],
    "several": [(8, 0, "submit"), (32, 0, "submit"), (8, 0, "discard"), (100, 0, "submit")],
}


@pytest.mark.parametrize("case", RB_DYNPTR_CASES.values(), ids=RB_DYNPTR_CASES.keys())
def test_ringbuf_dynptr_records_and_errnos(both, case):
    fake, host = both
    assert _rb_dynptr(fake, case) == _rb_dynptr(host, case)


# ---------------------------------------------------------------- bpf_get_task_stack

def _task_stack(b, size: int, flags: int):
    body = f"""
    call bpf_get_current_task_btf
    r1 = r0
    r2 = r6
    r2 += 64
    r3 = {size}
    r4 = {flags:#x} ll
    call bpf_get_task_stack
    *(u64 *)(r6 +0) = r0
"""
    with HelperProg(b, body) as p:
        v = p.run(bytes(64) + b"\xaa" * 1024)[1]
    ret = _s64(v)
    if ret < 0:
        return ret, v[64:64 + size] == bytes(size)
    frames = _frames(v[64:64 + size])
    used = frames[:ret // 8]
    kernel = not flags & 0x100
    return (ret > 0, ret % 8 == 0, all(f >= KERNEL_TEXT if kernel else 0 < f < USER_END for f in used),
            all(f == 0 for f in frames[ret // 8:]))


@pytest.mark.parametrize("size,flags", [(256, 0), (256, 0x100), (100, 0), (256, 0x1000), (8, 0)])
def test_get_task_stack_current_shape_and_errno(both, size, flags):
    fake, host = both
    assert _task_stack(fake, size, flags) == _task_stack(host, size, flags)
