"""Kernel-format disassembly — kernel/bpf/disasm.c, used by the verifier log and for debugging.

The one implementation lives in :mod:`uapi.asm` (it is pure ABI text); this module re-exports it
under the kernel's names so the verifier can ``from fakekernel.interp.disasm import print_bpf_insn``.
"""
from uapi.asm import disasm, disasm_prog, func_id_name, print_bpf_insn, symbolic_imm

__all__ = ["disasm", "disasm_prog", "func_id_name", "print_bpf_insn", "symbolic_imm"]
