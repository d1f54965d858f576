"""PROG_ARRAY, fakekernel vs the real kernel: creation, prog fds in / prog ids out, the
owner compatibility rule (first prog stored or loaded fixes it), the clear on the last
user reference, and tail calls through PROG_TEST_RUN (targets, empty slots, out-of-range
indexes, the 33-call limit)."""
from __future__ import annotations

import time

import pytest

from uapi import calls
from uapi.bpf import BPF_ADD, BPF_DW, BPF_JNE, BPF_W, AttachType, BpfCmd, FuncId, MapFlags, MapType, ProgType
from uapi.calls import raw
from uapi.errno import Errno
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_LD_MAP_FD, BPF_LDX_MEM,
                       BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)

from maputil import both_equal

pytestmark = pytest.mark.differential

LAST = "excl_prog_hash_size"
PA = MapType.PROG_ARRAY
MARK = ffi.offsetof("struct __sk_buff", "mark")


def op(b, cmd, last="flags", **kw) -> int:
    ret, _ = raw(b, cmd, last, **kw)
    return ret


def k32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def create(b, key_size=4, value_size=4, max_entries=4, **kw):
    ret, _ = raw(b, BpfCmd.MAP_CREATE, LAST, map_type=PA, key_size=key_size, value_size=value_size,
                 max_entries=max_entries, **kw)
    if ret >= 0:
        b.close(ret)
        return "fd"
    return ret


CREATE_CASES = {
    "ok": dict(),
    "value8_einval": dict(value_size=8),
    "key8_einval": dict(key_size=8),
    "max0_einval": dict(max_entries=0),
    "rdonly_prog_einval": dict(map_flags=MapFlags.RDONLY_PROG),
    "wronly_prog_einval": dict(map_flags=MapFlags.WRONLY_PROG),
    "rdonly": dict(map_flags=MapFlags.RDONLY),
    "mmapable_einval": dict(map_flags=MapFlags.MMAPABLE),
    "inner_map_einval": dict(map_flags=MapFlags.INNER_MAP),
    "preserve_elems_einval": dict(map_flags=MapFlags.PRESERVE_ELEMS),
    "no_prealloc_einval": dict(map_flags=MapFlags.NO_PREALLOC),
    "numa0": dict(map_flags=MapFlags.NUMA_NODE, numa_node=0),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_map_create_prog_array(both, case):
    both_equal(both, lambda b: create(b, **CREATE_CASES[case]))


def ret_prog(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def load(b, insns, prog_type=ProgType.SCHED_CLS, eat=0):
    r = calls.prog_load(b, prog_type, assemble_insns(insns), expected_attach_type=eat, strict=False)
    return r.ret if r.ret < 0 else r.ret


def prog_id(b, fd) -> int:
    info, _ = calls.obj_get_info_by_fd(b, fd, "prog")
    return info.id


def lookup(b, fd, k):
    v = bytearray(4)
    return op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=fd, key=k32(k), value=v), int.from_bytes(v, "little")


def test_map_prog_array_elem_semantics(both):
    def scenario(b):
        fd = calls.map_create(b, PA, 4, 4, 3)
        other_map = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        p1, p2 = load(b, ret_prog(1)), load(b, ret_prog(2))
        xdp = load(b, ret_prog(2), ProgType.XDP)
        act = load(b, ret_prog(3), ProgType.SCHED_ACT)
        ids = {prog_id(b, p1): "p1", prog_id(b, p2): "p2"}
        up = lambda k, v, f=0: op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(k), value=k32(v), flags=f)
        out = [lookup(b, fd, 0), lookup(b, fd, 7)]
        out += [up(0, other_map), up(0, 9999), up(0, 2**32 - 1), up(5, p1), up(0, p1, 1), up(0, p1, 2),
                up(0, p1, 4)]
        out.append(up(0, xdp))          # the first prog stored fixes the owner (XDP) ...
        out.append(up(1, p1))           # ... so SCHED_CLS is now refused
        out.append(op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(0)))
        out.append(up(1, act))          # the owner stays XDP after the slot is emptied
        out.append(up(2, xdp))
        r, v = lookup(b, fd, 2)
        out.append((r, v == prog_id(b, xdp)))
        out += [op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(k)) for k in (2, 2, 3, 2**32 - 1)]
        nk = bytearray(4)
        out.append((op(b, BpfCmd.MAP_GET_NEXT_KEY, "next_key", map_fd=fd, key=k32(1), next_key=nk), bytes(nk)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd=fd, key=k32(0), value=bytearray(4)))
        out.append(op(b, BpfCmd.MAP_LOOKUP_BATCH, "batch.flags", batch__map_fd=fd, batch__keys=bytearray(16),
                      batch__values=bytearray(16), batch__count=4, batch__out_batch=bytearray(4)))
        out.append(op(b, BpfCmd.MAP_FREEZE, "map_fd", map_fd=fd))
        out.append(up(0, xdp))
        for f in (p1, p2, xdp, act, other_map, fd):
            b.close(f)
        return out, sorted(ids.values())
    both_equal(both, scenario)


def tail_caller(map_fd, index=None, after=7):
    """tail_call(ctx, map, index or ctx->mark); return `after` when the call does not happen."""
    idx = [BPF_MOV64_IMM(3, index)] if index is not None else [BPF_LDX_MEM(BPF_W, 3, 1, MARK)]
    return [*idx, *BPF_LD_MAP_FD(2, map_fd), BPF_CALL_HELPER(FuncId.tail_call),
            BPF_MOV64_IMM(0, after), BPF_EXIT_INSN()]


def test_map_prog_array_owner_fixed_by_prog_load(both):
    def scenario(b):
        fd = calls.map_create(b, PA, 4, 4, 2)
        out = [load(b, tail_caller(fd, 0)) >= 0]                     # SCHED_CLS becomes the owner
        xdp = load(b, ret_prog(2), ProgType.XDP)
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(xdp)))
        out.append(load(b, tail_caller(fd, 0), ProgType.XDP))       # EINVAL at load
        out.append(load(b, tail_caller(fd, 0), ProgType.SCHED_ACT))
        cg_in = load(b, ret_prog(1), ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS)
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(cg_in)))
        fd2 = calls.map_create(b, PA, 4, 4, 2)
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd2, key=k32(0), value=k32(cg_in)))
        cg_out = load(b, ret_prog(1), ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS)
        out.append(op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd2, key=k32(1), value=k32(cg_out)))
        for f in list(b.fds):
            b.close(f)
        return [x if not isinstance(x, int) or x < 0 else "ok" for x in out]
    both_equal(both, scenario)


def _run(b, fd, mark=0):
    c = ffi.new("struct __sk_buff *")
    c.mark = mark
    r = calls.prog_test_run(b, fd, bytes(64), ctx_in=bytes(ffi.buffer(c)), strict=False)
    return r.ret, r.retval


def test_prog_test_run_tail_calls(both):
    def scenario(b):
        fd = calls.map_create(b, PA, 4, 4, 4)
        caller = load(b, tail_caller(fd))
        targets = [load(b, ret_prog(40 + i)) for i in range(3)]
        for i, t in enumerate(targets[:2]):
            op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(i), value=k32(t))
        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(3), value=k32(caller))   # loops via mark=3
        out = [_run(b, caller, m) for m in (0, 1, 2, 3, 4, 2**32 - 1)]
        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(targets[2]))
        out.append(_run(b, caller, 0))
        op(b, BpfCmd.MAP_DELETE_ELEM, "key", map_fd=fd, key=k32(0))
        out.append(_run(b, caller, 0))
        for f in (caller, *targets, fd):
            b.close(f)
        return out
    both_equal(both, scenario)


def test_prog_test_run_tail_call_limit_33(both):
    """A program tail-calling itself bumps a counter each time: 1 run + 33 tail calls."""
    def scenario(b):
        pa = calls.map_create(b, PA, 4, 4, 1)
        cnt = calls.map_create(b, MapType.ARRAY, 4, 8, 1)
        insns = [BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_W, 10, -4, 0), *BPF_LD_MAP_FD(1, cnt),
                 BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -4), BPF_CALL_HELPER(FuncId.map_lookup_elem),
                 BPF_JMP_IMM(BPF_JNE, 0, 0, 2), BPF_MOV64_IMM(0, 99), BPF_EXIT_INSN(),
                 BPF_LDX_MEM(BPF_DW, 1, 0, 0), BPF_ALU64_IMM(BPF_ADD, 1, 1), BPF_STX_MEM(BPF_DW, 0, 1, 0),
                 BPF_MOV64_REG(1, 6), *tail_caller(pa, 0, after=5)]
        p = load(b, insns)
        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=pa, key=k32(0), value=k32(p))
        out = []
        for _ in range(2):
            out.append(_run(b, p))
            v = bytearray(8)
            op(b, BpfCmd.MAP_LOOKUP_ELEM, map_fd=cnt, key=k32(0), value=v)
            out.append(int.from_bytes(v, "little"))
        for f in (p, pa, cnt):
            b.close(f)
        return out
    got = both_equal(both, scenario)
    assert got[1] == 34


def test_map_prog_array_cleared_when_last_uref_goes(both):
    """A prog using the array keeps the map alive; closing the last map fd empties it."""
    def scenario(b):
        fd = calls.map_create(b, PA, 4, 4, 2)
        caller = load(b, tail_caller(fd))
        target = load(b, ret_prog(42))
        op(b, BpfCmd.MAP_UPDATE_ELEM, map_fd=fd, key=k32(0), value=k32(target))
        info, _ = calls.obj_get_info_by_fd(b, fd, "map")
        out = [_run(b, caller, 0)]
        b.close(fd)
        b.close(target)                 # only the (cleared) array could have kept it
        fd2 = calls.map_get_fd_by_id(b, info.id)
        # 6.18 clears a prog array from a work item after the last user reference goes:
        # wait (bounded) for the slot to empty before observing the tail call
        for _ in range(200):
            if lookup(b, fd2, 0)[0] == -Errno.ENOENT:
                break
            time.sleep(0.01)
        out.append(lookup(b, fd2, 0))
        out.append(_run(b, caller, 0))
        b.close(fd2)
        b.close(caller)
        return out
    both_equal(both, scenario)
