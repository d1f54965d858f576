"""bpf_check through PROG_LOAD on a fakekernel: rewrites, references, and the give-up rule."""
from fakekernel import kernel_layout
from fakekernel.bpf.prog import BpfProg
from fakekernel.progs.ctx import SKB_PTR_SLOTS
from fakekernel.syscall.fdget import bpf_prog_get
from fakekernel.verifier.fixups import ctx_load_sites
from uapi import calls
from uapi.bpf import (
    BPF_ADD, BPF_DW, BPF_JGT, BPF_JLT, BPF_LD, BPF_LDX, BPF_MEM, BPF_IMM, BPF_W, FuncId, MapType, ProgType,
)
from uapi.insn import (
    BPF_ALU64_IMM, BPF_ALU64_REG, BPF_CALL_HELPER, BPF_CALL_REL, BPF_EXIT_INSN, BPF_JMP_IMM, BPF_JMP_REG,
    BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM, Insn,
    assemble_insns, decode_prog,
)


def _prog(b, fd) -> BpfProg:
    return bpf_prog_get(b.kern.current, fd)


def test_prog_load_rewrites_packet_pointer_loads(fake):
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, 80), BPF_LDX_MEM(BPF_W, 3, 1, 76), BPF_LDX_MEM(BPF_W, 4, 1, 0),
             BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    fd = calls.prog_load(fake, ProgType.SCHED_CLS, assemble_insns(insns))
    x = _prog(fake, fd).xlated
    assert x[0] == Insn(BPF_LDX | BPF_MEM | BPF_DW, 2, 1, SKB_PTR_SLOTS["data_end"], 0)
    assert x[1] == Insn(BPF_LDX | BPF_MEM | BPF_DW, 3, 1, SKB_PTR_SLOTS["data"], 0)
    # ordinary fields become struct sk_buff loads (skb->len)
    assert x[2] == Insn(BPF_LDX | BPF_MEM | BPF_W, 4, 1, kernel_layout.offsetof("sk_buff.len"), 0)
    fake.close(fd)


def test_prog_load_map_refs_become_plain_imm64_holding_references(fake):
    mfd = calls.map_create(fake, MapType.ARRAY, 4, 8, 1)
    bpf_map = fake.kern.current.files.fdget(mfd).private_data
    refs = bpf_map.refcnt
    fd = calls.prog_load(fake, ProgType.SOCKET_FILTER, assemble_insns(
        [BPF_LD_MAP_FD(1, mfd), BPF_LD_MAP_FD(2, mfd), BPF_LD_MAP_VALUE(3, mfd, 4), BPF_MOV64_IMM(0, 0),
         BPF_EXIT_INSN()]))
    prog = _prog(fake, fd)
    assert prog.aux.used_maps == [bpf_map] and bpf_map.refcnt == refs + 1     # one reference per map
    x = prog.xlated
    assert x[0].code == BPF_LD | BPF_IMM | BPF_DW and x[0].src_reg == 0
    handle = (x[0].imm & 0xFFFFFFFF) | ((x[1].imm & 0xFFFFFFFF) << 32)
    assert fake.kern.mem.object_at(handle) is bpf_map
    value = (x[4].imm & 0xFFFFFFFF) | ((x[5].imm & 0xFFFFFFFF) << 32)
    assert value == bpf_map.map_direct_value_addr(4) + 4
    fake.close(fd)
    assert bpf_map.refcnt == refs
    fake.close(mfd)


def test_prog_load_rejection_drops_map_references(fake):
    mfd = calls.map_create(fake, MapType.HASH, 4, 8, 4)
    bpf_map = fake.kern.current.files.fdget(mfd).private_data
    refs = bpf_map.refcnt
    res = calls.prog_load(fake, ProgType.SOCKET_FILTER, assemble_insns(
        [BPF_LD_MAP_FD(1, mfd), BPF_EXIT_INSN()]), strict=False)
    assert res.ret < 0 and bpf_map.refcnt == refs
    fake.close(mfd)


def test_prog_load_gives_up_rather_than_false_reject(fake):
    """A variable offset into the packet is not modelled yet: accepted (the kernel accepts it too)."""
    insns = [BPF_LDX_MEM(BPF_W, 2, 1, 4), BPF_LDX_MEM(BPF_W, 1, 1, 0), BPF_MOV64_REG(3, 1),
             BPF_ALU64_IMM(BPF_ADD, 3, 14), BPF_MOV64_IMM(0, 2), BPF_JMP_REG(BPF_JGT, 3, 2, 7),
             BPF_LDX_MEM(0x10, 4, 1, 0),                       # r4 = *(u8 *)data
             BPF_ALU64_IMM(0x50, 4, 7),                        # r4 &= 7
             BPF_ALU64_REG(BPF_ADD, 1, 4),                     # data += r4 (variable)
             BPF_MOV64_REG(3, 1), BPF_ALU64_IMM(BPF_ADD, 3, 1),
             BPF_JMP_REG(BPF_JGT, 3, 2, 1),
             BPF_LDX_MEM(0x10, 0, 1, 0),
             BPF_EXIT_INSN()]
    res = calls.prog_load(fake, ProgType.XDP, assemble_insns(insns), strict=False)
    assert res.ret >= 0
    fake.close(res.ret)


def test_prog_load_bpf_to_bpf_calls_accepted_with_ctx_rewrites(fake):
    """Subprograms are not walked yet: the program is accepted and ctx loads are still found."""
    insns = [BPF_MOV64_REG(6, 1), BPF_CALL_REL(2), BPF_LDX_MEM(BPF_W, 0, 6, 76), BPF_EXIT_INSN(),
             BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]
    fd = calls.prog_load(fake, ProgType.SCHED_CLS, assemble_insns(insns))
    assert _prog(fake, fd).xlated[2].off == SKB_PTR_SLOTS["data"]
    fake.close(fd)


def test_ctx_load_sites_follow_copies_and_spills():
    insns = decode_prog(assemble_insns([
        BPF_MOV64_REG(6, 1), BPF_ST_MEM(BPF_DW, 10, -16, 0), 
        Insn(0x7B, 10, 6, -8, 0),                               # *(u64 *)(r10 -8) = r6
        BPF_CALL_HELPER(FuncId.ktime_get_ns),
        BPF_LDX_MEM(BPF_DW, 7, 10, -8), BPF_LDX_MEM(BPF_W, 0, 7, 76), BPF_LDX_MEM(BPF_W, 0, 6, 80),
        BPF_LDX_MEM(BPF_W, 0, 1, 76), BPF_EXIT_INSN()]))
    assert ctx_load_sites(insns) == {5, 6}


def test_prog_load_verified_insns_and_log_true_size(fake):
    res = calls.prog_load(fake, ProgType.SOCKET_FILTER, assemble_insns(
        [BPF_MOV64_IMM(0, 0), BPF_JMP_IMM(BPF_JLT, 0, 4, 0), BPF_EXIT_INSN()]), log_level=1, log_size=4096,
        strict=False)
    assert res.ret >= 0 and res.log.startswith("processed 3 insns")
    assert _prog(fake, res.ret).aux.verified_insns == 3
    fake.close(res.ret)


def test_patch_insn_fixes_jumps_across_a_longer_rewrite():
    from fakekernel.verifier.env import InsnAux
    from fakekernel.verifier.fixups import patch_insn
    insns = [BPF_JMP_IMM(0x10, 1, 0, 2), BPF_MOV64_IMM(0, 1), BPF_MOV64_IMM(0, 2), BPF_EXIT_INSN(),
             BPF_JMP_IMM(0x10, 1, 0, -4)]
    aux = [InsnAux() for _ in insns]
    patch_insn(insns, aux, 1, [BPF_MOV64_IMM(0, 1), BPF_MOV64_IMM(0, 3)])
    assert insns[0].off == 3 and insns[5].off == -5 and len(aux) == len(insns) == 6


def test_queue_mapping_store_skips_no_queue_mapping(fake):
    from uapi.bpf import BPF_JGE, BPF_JMP, BPF_K
    fd = calls.prog_load(fake, ProgType.SCHED_CLS, assemble_insns(
        [BPF_MOV64_IMM(2, 5), Insn(0x63, 1, 2, 12, 0), BPF_MOV64_IMM(0, 0), BPF_EXIT_INSN()]))
    x = _prog(fake, fd).xlated
    assert x[1] == Insn(BPF_JMP | BPF_JGE | BPF_K, 2, 0, 1, 0xFFFF) and x[2].code == 0x6B
    assert x[2].off == kernel_layout.offsetof("sk_buff.queue_mapping")
    fake.close(fd)
