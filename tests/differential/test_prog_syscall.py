"""BPF_PROG_TYPE_SYSCALL, fakekernel vs the real kernel: the sleepable rule, ctx access rules, the
helper set, PROG_TEST_RUN (ctx_in copied in and back, refused fields), and the helpers at run time:
bpf_sys_bpf creating a map (the fd lands in the caller), refused commands, bpf_sys_close,
bpf_kallsyms_lookup_name and bpf_btf_find_by_name_kind."""
from __future__ import annotations

import pytest

from uapi import calls
from uapi.attr import Attr
from uapi.bpf import (BPF_B, BPF_DW, BPF_W, BPF_ADD, BPF_FUNC_MAX_ID, BpfCmd, FuncId, MapType, ProgLoadFlags,
                      ProgType)
from uapi.btf import BtfKind
from uapi.ffi import ffi
from uapi.insn import (BPF_ALU64_IMM, BPF_CALL_HELPER, BPF_EXIT_INSN, BPF_LD_IMM64, BPF_LDX_MEM, BPF_MOV64_IMM,
                       BPF_MOV64_REG, BPF_ST_MEM, BPF_STX_MEM, assemble_insns)
from verifier.test_verifier_cases import error_lines

pytestmark = pytest.mark.differential

SYSCALL = ProgType.SYSCALL
SLEEPABLE = ProgLoadFlags.SLEEPABLE
BAD_PTR = 8


def load(b, insns, ptype=SYSCALL, flags=SLEEPABLE, lic=b"GPL"):
    return calls.prog_load(b, ptype, assemble_insns(insns), lic, log_level=1, log_size=1 << 16,
                           prog_flags=flags, strict=False)


def loaded(b, insns):
    r = load(b, insns)
    assert r.ret >= 0, r.log
    return r.ret


def ret(v):
    return [BPF_MOV64_IMM(0, v), BPF_EXIT_INSN()]


def put_bytes(fp_off, data):
    """Store `data` (padded to 8) on the stack at fp+fp_off, 8 bytes at a time through r9."""
    data = data + bytes(-len(data) % 8)
    out = []
    for i in range(0, len(data), 8):
        out += [*BPF_LD_IMM64(9, int.from_bytes(data[i:i + 8], "little")),
                BPF_STX_MEM(BPF_DW, 10, 9, fp_off + i)]
    return out


# ---------------------------------------------------------------- loading

def _verdict(b, insns, ptype=SYSCALL, flags=SLEEPABLE):
    r = load(b, insns, ptype, flags)
    if r.ret >= 0:
        b.close(r.ret)
    return (r.ret >= 0 or r.ret, error_lines(r.log))


LOADS = {
    "not_sleepable": (ret(0), SYSCALL, 0),
    "sleepable": (ret(0), SYSCALL, SLEEPABLE),
    "raw_tp_sleepable": (ret(0), ProgType.RAW_TRACEPOINT, SLEEPABLE),
    "xdp_sleepable": (ret(0), ProgType.XDP, SLEEPABLE),
    "kprobe_sleepable": (ret(0), ProgType.KPROBE, SLEEPABLE),
    "ctx_write": ([BPF_ST_MEM(BPF_DW, 1, 0, 1)] + ret(0), SYSCALL, SLEEPABLE),
    "ctx_read_last": ([BPF_LDX_MEM(BPF_B, 0, 1, 0xFFFE), BPF_EXIT_INSN()], SYSCALL, SLEEPABLE),
    "ctx_read_u16_max": ([BPF_LDX_MEM(BPF_B, 0, 1, 0x7FFF)] + ret(0), SYSCALL, SLEEPABLE),
    "ctx_read_neg": ([BPF_LDX_MEM(BPF_W, 0, 1, -4), BPF_EXIT_INSN()], SYSCALL, SLEEPABLE),
    "ctx_misaligned": ([BPF_LDX_MEM(BPF_W, 0, 1, 2), BPF_EXIT_INSN()], SYSCALL, SLEEPABLE),
    "sys_bpf_not_sleepable_xdp": ([BPF_CALL_HELPER(FuncId.sys_bpf)] + ret(0), ProgType.XDP, 0),
    "get_func_ip": ([BPF_CALL_HELPER(FuncId.get_func_ip), BPF_EXIT_INSN()], SYSCALL, SLEEPABLE),
    "copy_from_user": ([BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -8), BPF_MOV64_IMM(2, 8),
                        BPF_MOV64_IMM(3, 0), BPF_CALL_HELPER(FuncId.copy_from_user), BPF_EXIT_INSN()],
                       SYSCALL, SLEEPABLE),
    "copy_from_user_not_sleepable": ([BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -8), BPF_MOV64_IMM(2, 8),
                                      BPF_MOV64_IMM(3, 0), BPF_CALL_HELPER(FuncId.copy_from_user),
                                      BPF_EXIT_INSN()], ProgType.RAW_TRACEPOINT, 0),
}


@pytest.mark.parametrize("name", sorted(LOADS))
def test_syscall_load_rules(both, name):
    insns, ptype, flags = LOADS[name]
    fake, host = both
    assert _verdict(fake, insns, ptype, flags) == _verdict(host, insns, ptype, flags)


def _helper_verdicts(b):
    out = {}
    for func_id in range(BPF_FUNC_MAX_ID + 1):
        r = load(b, [BPF_CALL_HELPER(func_id), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()], lic=b"MIT")
        if r.ret >= 0:
            b.close(r.ret)
        line = error_lines(r.log).split("\n")[0]
        out[func_id] = ("unknown" if "invalid func" in line else "not-allowed" if "cannot use helper" in line
                        else "gpl" if "GPL-restricted" in line else "probe" if "not allowed in probe" in line
                        else "allowed")
    return out


def test_syscall_helper_set_matches_kernel(both):
    fake, host = both
    f, h = _helper_verdicts(fake), _helper_verdicts(host)
    assert {k: (v, h[k]) for k, v in f.items() if v != h[k]} == {}


# ---------------------------------------------------------------- PROG_TEST_RUN

# ctx[0] = 42 (u64); ctx[12] += 1 (u32); r0 = ctx[8] (u32)
RW = [BPF_ST_MEM(BPF_DW, 1, 0, 42), BPF_LDX_MEM(BPF_W, 2, 1, 12), BPF_ALU64_IMM(BPF_ADD, 2, 1),
      BPF_STX_MEM(BPF_W, 1, 2, 12), BPF_LDX_MEM(BPF_W, 0, 1, 8), BPF_EXIT_INSN()]


def run(b, fd, ctx=None, **fields):
    """PROG_TEST_RUN with ctx_in = a writable buffer; returns (ret, retval, the buffer afterwards)."""
    buf = ffi.new("char[]", ctx) if ctx is not None else None
    kw = {"test__prog_fd": fd, **fields}
    if buf is not None:
        kw.update(test__ctx_in=buf, test__ctx_size_in=len(ctx))
    ret_, a = calls.raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, **kw)
    return ret_, a.get("test.retval"), bytes(ffi.buffer(buf)) if buf is not None else None


def scenario_test_run(b):
    fd = loaded(b, RW)
    r7 = loaded(b, ret(7))
    ctx = bytes(range(1, 17))
    out = [run(b, fd, ctx), run(b, fd, ctx + b"extra"), run(b, fd, ctx[:15]), run(b, fd),
           run(b, r7), run(b, r7, b"\1"), run(b, r7, bytes(0x10000)), run(b, r7, bytes(0xFFFF))[:2],
           run(b, fd, ctx, test__repeat=1), run(b, fd, ctx, test__flags=1), run(b, fd, ctx, test__duration=1),
           run(b, fd, ctx, test__batch_size=1), run(b, fd, ctx, test__data_size_in=4),
           run(b, fd, ctx, test__data_in=ffi.new("char[]", 14), test__data_size_in=14),
           run(b, fd, ctx, test__ctx_out=ffi.new("char[]", 16), test__ctx_size_out=16),
           run(b, fd, ctx, test__data_out=ffi.new("char[]", 16), test__data_size_out=16),
           run(b, fd, ctx, test__cpu=1),
           calls.raw(b, BpfCmd.PROG_TEST_RUN, None, size=80, test__prog_fd=fd, test__ctx_in=BAD_PTR,
                     test__ctx_size_in=16)[0]]
    b.close(fd)
    b.close(r7)
    return out


def test_syscall_test_run(both):
    fake, host = both
    assert scenario_test_run(fake) == scenario_test_run(host)


# ---------------------------------------------------------------- helpers at run time

def sys_bpf_prog(cmd, attr: bytes, size=None):
    """Build attr at fp-128 and return bpf_sys_bpf(cmd, attr, size)."""
    size = len(attr) if size is None else size
    return put_bytes(-128, attr) + [BPF_MOV64_IMM(1, cmd), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -128),
                                    BPF_MOV64_IMM(3, size), BPF_CALL_HELPER(FuncId.sys_bpf), BPF_EXIT_INSN()]


def map_create_attr(map_type=MapType.ARRAY, key=4, value=8, entries=3):
    a = Attr()
    a.set("map_type", map_type)
    a.set("key_size", key)
    a.set("value_size", value)
    a.set("max_entries", entries)
    return bytes(ffi.buffer(a.c))[:Attr.size("map_extra")]


def scenario_sys_bpf(b):
    out = []
    p = loaded(b, sys_bpf_prog(BpfCmd.MAP_CREATE, map_create_attr()))
    r, retval, _ = run(b, p)
    out.append((r, retval < 1 << 31))
    if r == 0 and retval < 1 << 31:
        info, _ = calls.obj_get_info_by_fd(b, retval, "map")
        out.append((info.type, info.key_size, info.value_size, info.max_entries))
        closer = loaded(b, [BPF_MOV64_IMM(1, retval), BPF_CALL_HELPER(FuncId.sys_close), BPF_EXIT_INSN()])
        out += [run(b, closer)[:2], run(b, closer)[:2]]            # 0, then -EBADF
        b.close(closer)
    b.close(p)
    for cmd, attr in ((BpfCmd.MAP_CREATE, map_create_attr(key=0)),        # the command's own errno
                      (BpfCmd.MAP_LOOKUP_ELEM, bytes(32)),                 # not allowed from a program
                      (BpfCmd.PROG_TEST_RUN, bytes(80)), (BpfCmd.OBJ_GET, bytes(16)),
                      (BpfCmd.MAP_GET_FD_BY_ID, bytes(16)),                # id 0: ENOENT
                      (BpfCmd.MAP_FREEZE, bytes(8))):                      # fd 0: not a map
        p = loaded(b, sys_bpf_prog(cmd, attr))
        out.append((cmd, run(b, p)[:2]))
        b.close(p)
    return out


def test_syscall_sys_bpf(both):
    fake, host = both
    assert scenario_sys_bpf(fake) == scenario_sys_bpf(host)


def name_prog(func, name: bytes, size, arg3, arg4_res=True):
    """func(name on the stack, size, arg3, &res or flags); returns r0 (res in ctx[0] for kallsyms)."""
    body = [BPF_MOV64_REG(6, 1)] + put_bytes(-64, name) + [
        BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -64), BPF_MOV64_IMM(2, size), BPF_MOV64_IMM(3, arg3)]
    if arg4_res:
        body += [BPF_MOV64_REG(4, 10), BPF_ALU64_IMM(BPF_ADD, 4, -8)]
    else:
        body += [BPF_MOV64_IMM(4, 0)]
    body += [BPF_CALL_HELPER(func)]
    if arg4_res:
        body += [BPF_LDX_MEM(BPF_DW, 2, 10, -8), BPF_STX_MEM(BPF_DW, 6, 2, 0)]
    return body + [BPF_EXIT_INSN()]


def scenario_names(b):
    out = []
    cases = [(FuncId.kallsyms_lookup_name, b"bpf_check\0", 10, 0, True),
             (FuncId.kallsyms_lookup_name, b"no_such_symbol_fk\0", 18, 0, True),
             (FuncId.kallsyms_lookup_name, b"bpf_check\0", 1, 0, True),
             (FuncId.kallsyms_lookup_name, b"bpf_check\0", 9, 0, True),
             (FuncId.kallsyms_lookup_name, b"bpf_check\0", 10, 1, True),
             (FuncId.btf_find_by_name_kind, b"task_struct\0", 12, BtfKind.STRUCT, False),
             (FuncId.btf_find_by_name_kind, b"task_struct\0", 12, BtfKind.UNION, False),
             (FuncId.btf_find_by_name_kind, b"task_struct\0", 12, 0x100 + BtfKind.STRUCT, False),
             (FuncId.btf_find_by_name_kind, b"int\0", 4, BtfKind.INT, False),
             (FuncId.btf_find_by_name_kind, b"bpf_check\0", 10, BtfKind.FUNC, False),
             (FuncId.btf_find_by_name_kind, b"no_such_type_fk\0", 16, BtfKind.STRUCT, False),
             (FuncId.btf_find_by_name_kind, b"task_struct\0", 11, BtfKind.STRUCT, False),
             (FuncId.btf_find_by_name_kind, b"task_struct\0", 1, BtfKind.STRUCT, False)]
    for func, name, size, arg3, res in cases:
        p = loaded(b, name_prog(func, name, size, arg3, res))
        r, retval, ctx = run(b, p, bytes(8))
        out.append((r, retval, int.from_bytes(ctx, "little") != 0))
        b.close(p)
    p = loaded(b, [BPF_MOV64_REG(6, 1)] + put_bytes(-64, b"task_struct\0") + [
        BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -64), BPF_MOV64_IMM(2, 12),
        BPF_MOV64_IMM(3, BtfKind.STRUCT), BPF_MOV64_IMM(4, 1), BPF_CALL_HELPER(FuncId.btf_find_by_name_kind),
        BPF_EXIT_INSN()])
    out.append(run(b, p, bytes(8))[:2])                  # flags != 0
    b.close(p)
    return out


def test_syscall_kallsyms_and_btf_lookups(both):
    fake, host = both
    assert scenario_names(fake) == scenario_names(host)


def prog_load_via_sys_bpf(prog_type, insn_cnt=2):
    """PROG_LOAD from the program: insns and licence come from ctx_in (kernel pointers into
    the ctx copy), the attr is built on the stack."""
    a = Attr()
    a.set("prog_type", prog_type)
    a.set("insn_cnt", insn_cnt)
    size = Attr.size("prog_name")
    attr = bytes(ffi.buffer(a.c))[:size]
    insns_off, lic_off = ffi.offsetof("union bpf_attr", "insns"), ffi.offsetof("union bpf_attr", "license")
    return put_bytes(-128, attr) + [
        BPF_MOV64_REG(6, 1), BPF_STX_MEM(BPF_DW, 10, 6, -128 + insns_off),
        BPF_ALU64_IMM(BPF_ADD, 6, 16), BPF_STX_MEM(BPF_DW, 10, 6, -128 + lic_off),
        BPF_MOV64_IMM(1, BpfCmd.PROG_LOAD), BPF_MOV64_REG(2, 10), BPF_ALU64_IMM(BPF_ADD, 2, -128),
        BPF_MOV64_IMM(3, size), BPF_CALL_HELPER(FuncId.sys_bpf), BPF_EXIT_INSN()]


def scenario_prog_load(b):
    body = assemble_insns([BPF_MOV64_IMM(0, 7), BPF_EXIT_INSN()])
    ctx = body + b"GPL\0\0\0\0\0"
    out = []
    for ptype, cnt in ((ProgType.SOCKET_FILTER, 2), (ProgType.SOCKET_FILTER, 0), (ProgType.SOCKET_FILTER, 1),
                       (999, 2)):
        p = loaded(b, prog_load_via_sys_bpf(ptype, cnt))
        r, retval, _ = run(b, p, ctx)
        ok = r == 0 and retval < 1 << 31
        out.append((r, retval if not ok else "fd"))
        if ok:
            info, _ = calls.obj_get_info_by_fd(b, retval, "prog")
            tr = calls.prog_test_run(b, retval, bytes(64), strict=False)
            out.append((info.type, info.xlated_prog_len, tr.ret, tr.retval))
            b.close(retval)
        b.close(p)
    return out


def test_syscall_sys_bpf_prog_load(both):
    fake, host = both
    assert scenario_prog_load(fake) == scenario_prog_load(host)


def test_syscall_copy_from_user_from_the_caller(both):
    """bpf_copy_from_user() reads the test-running process's memory; a bad pointer is -EFAULT
    with the buffer zeroed."""
    secret = ffi.new("char[]", b"0123456789abcdef")
    addr = int(ffi.cast("uintptr_t", secret))
    prog = [BPF_MOV64_REG(6, 1), BPF_LDX_MEM(BPF_DW, 3, 6, 0), BPF_ST_MEM(BPF_DW, 10, -8, -1),
            BPF_MOV64_REG(1, 10), BPF_ALU64_IMM(BPF_ADD, 1, -8), BPF_MOV64_IMM(2, 8),
            BPF_CALL_HELPER(FuncId.copy_from_user), BPF_LDX_MEM(BPF_DW, 2, 10, -8), BPF_STX_MEM(BPF_DW, 6, 2, 8),
            BPF_EXIT_INSN()]

    def scenario(b):
        fd = loaded(b, prog)
        out = [run(b, fd, a.to_bytes(8, "little") + b"\xaa" * 8) for a in (addr, BAD_PTR, addr + 8)]
        b.close(fd)
        return out
    fake, host = both
    assert scenario(fake) == scenario(host)
