"""Kfuncs with no state of their own — kernel/bpf/helpers.c (bpf_rcu_read_lock/unlock,
bpf_preempt_disable/enable, bpf_local_irq_save/restore, bpf_cast_to_kern_ctx, bpf_rdonly_cast,
__bpf_trap).

The simulated kernel runs one program at a time on one simulated CPU, so RCU read sections,
preemption and interrupt masking have nothing to exclude: what the kernel enforces about their
pairing is the verifier's business, and at run time they only keep the values the kernel keeps
(the saved irq flags word the program passes back to restore).
"""
from __future__ import annotations

__all__ = ["GENERIC_KFUNCS"]

#: what local_irq_save() leaves in the flags word on x86 with interrupts on (X86_EFLAGS_IF | bit 1)
_IRQ_FLAGS_ON = 0x246


def _nothing(env, r1, r2, r3, r4, r5) -> int:
    return 0


def _first_arg(env, r1, r2, r3, r4, r5) -> int:
    """bpf_cast_to_kern_ctx / bpf_rdonly_cast: the same address, seen with another BTF type."""
    return r1


def bpf_local_irq_save(env, flags, r2, r3, r4, r5) -> int:
    env.mem.store(flags, 8, _IRQ_FLAGS_ON)
    return 0


GENERIC_KFUNCS = {
    "bpf_rcu_read_lock": _nothing, "bpf_rcu_read_unlock": _nothing,
    "bpf_preempt_disable": _nothing, "bpf_preempt_enable": _nothing,
    "bpf_local_irq_save": bpf_local_irq_save, "bpf_local_irq_restore": _nothing,
    "bpf_cast_to_kern_ctx": _first_arg, "bpf_rdonly_cast": _first_arg,
}
