"""struct bpf_prog and struct bpf_prog_aux — include/linux/bpf.h, include/linux/filter.h."""
from __future__ import annotations

import hashlib

import attrs

__all__ = ["BpfProg", "BpfProgAux", "prog_tag"]

BPF_TAG_SIZE = 8


def prog_tag(xlated: bytes) -> bytes:
    """bpf_prog_calc_tag(): first 8 bytes of SHA-256 (6.18; SHA-1 before) over the insns
    with map fds zeroed.

    The caller passes the instructions as the kernel hashes them (LD_IMM64 map references
    with their imm fields cleared).
    """
    return hashlib.sha256(xlated).digest()[:BPF_TAG_SIZE]


@attrs.define(eq=False)
class BpfProgAux:
    id: int = 0
    name: bytes = b""
    used_maps: list = attrs.field(factory=list)      # BpfMap, each holding a reference
    load_time: int = 0                               # ns since boot
    uid: int = 0
    verified_insns: int = 0
    attach_btf_id: int = 0
    attach_btf: object = None
    dst_prog: object = None                          # attach_prog_fd's prog (EXT, fentry on a prog)
    attach_target: object = None                     # verifier.attach_btf.AttachTarget (TRACING/LSM/EXT)
    attach_consumed: bool = False                    # linked once: dst_prog/dst_trampoline cleared
    btf: object = None
    func_info: bytes = b""
    line_info: bytes = b""
    orig_func_info: bytes = b""                      # ... as the loader gave them (before insn patching
    orig_line_info: bytes = b""                      # moved the offsets): what a reload passes again
    sleepable: bool = False
    xdp_has_frags: bool = False
    ifindex: int = 0
    loader: object = None                            # the Task that loaded it (capability tiers)
    run_cnt: int = 0
    run_time_ns: int = 0
    recursion_misses: int = 0
    max_ctx_offset: int = 0                          # last ctx byte a load/store reaches (verifier)
    max_tp_access: int = 0                           # last writable-tracepoint buffer byte reached
    streams: tuple | None = None                     # (stdout, stderr) BpfStreams, made on first use
    kfunc_tab: dict = attrs.field(factory=dict)      # btf id -> kfunc name of every kfunc it calls


@attrs.define(eq=False)
class BpfProg:
    kern: object
    type: int
    expected_attach_type: int
    insns: bytes                          # the instructions as loaded (xlated, map refs resolved)
    orig_insns: bytes = b""               # the user's instructions
    len: int = 0
    gpl_compatible: bool = False
    tag: bytes = b""
    aux: BpfProgAux = attrs.field(factory=BpfProgAux)
    ops: object = None                    # the ProgTypeDef of its type
    refcnt: int = 1
    freed: bool = False
    engine: object = None                 # the compiled/decoded form the runner executes
    xlated: list | None = None            # the verifier's final instructions (list[Insn])
    helpers: dict | None = None           # helper id -> runtime function (built on first run)
    runs: int = 0                         # executions so far (engine tiering; not the stats)
    prog_flags: int = 0

    def get(self) -> "BpfProg":
        self.refcnt += 1
        return self

    def put(self) -> None:
        self.refcnt -= 1
        if self.refcnt == 0:
            self._free()

    def _free(self) -> None:
        if self.freed:
            return
        self.freed = True
        if self.aux.id:
            self.kern.prog_idr.remove(self.aux.id)
        self._free_used_maps()
        btf, self.aux.btf = self.aux.btf, None       # __bpf_prog_put_noref(): btf_put()
        if btf is not None:
            btf.put()

    def _free_used_maps(self) -> None:
        maps, self.aux.used_maps = self.aux.used_maps, []
        for m in maps:
            m.put()

    def file_release(self, file) -> None:
        self.put()
