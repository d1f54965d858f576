"""Test helpers for the hook tests: programs installed as fds without PROG_LOAD.

`install_prog` builds a BpfProg from already-"xlated" instructions (ctx accesses written
against the kernel ctx layout, as the verifier would leave them) and installs it as a
"bpf-prog" fd of the kernel's current task, so the attach/link commands can be tested
on their own.
"""
from __future__ import annotations

import types

from fakekernel.bpf.prog import BpfProg, BpfProgAux
from fakekernel.fdtable import O_CLOEXEC, O_RDWR, File
from fakekernel.helpers import HELPERS
from uapi.insn import BPF_EXIT_INSN, BPF_MOV64_IMM, assemble_insns, decode_prog


class _Prog(BpfProg):
    """A BpfProg that can carry the runner's cached helper table."""


def _ops():
    def get_func_proto(fid, prog):
        fn = HELPERS.get(int(fid))
        return types.SimpleNamespace(func=fn) if fn is not None else None
    return types.SimpleNamespace(verifier_ops=types.SimpleNamespace(get_func_proto=get_func_proto))


def ret_prog(value: int) -> bytes:
    return assemble_insns([BPF_MOV64_IMM(0, value), BPF_EXIT_INSN()])


def install_prog(kern, prog_type: int, insns: bytes | None = None, *, eat: int = 0,
                 name: bytes = b"", used_maps=()) -> int:
    insns = ret_prog(1) if insns is None else insns
    aux = BpfProgAux(name=name, used_maps=[m.get() for m in used_maps])
    prog = _Prog(kern=kern, type=prog_type, expected_attach_type=eat, insns=insns,
                 orig_insns=insns, len=len(insns) // 8, aux=aux, ops=_ops())
    prog.xlated = decode_prog(insns)
    prog.aux.id = kern.prog_idr.alloc_cyclic(prog)
    return kern.current.files.install(File(kind="bpf-prog", private_data=prog,
                                           f_flags=O_RDWR | O_CLOEXEC))


def prog_of(kern, fd: int):
    return kern.current.files.fdget(fd).private_data
