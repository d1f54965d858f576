"""bpf_spin_lock / bpf_spin_unlock — kernel/bpf/helpers.c (__bpf_spin_lock_irqsave,
__bpf_spin_unlock_irqrestore).

Programs run one at a time in the simulator, so taking the lock never waits; what stays
observable is the lock word inside the map value, which is set while the lock is held
and cleared on unlock, as the kernel's queued spinlock / test-and-set lock does.  The
verifier's lock rules (one lock held, no helper calls or exit while held) are not
checked by the first-pass verifier yet.
"""
from __future__ import annotations

from uapi.bpf import FuncId
from uapi.ffi import ffi

__all__ = ["SPIN_LOCK_RUNTIME", "bpf_spin_lock", "bpf_spin_unlock"]

_LOCK_SIZE = ffi.sizeof("struct bpf_spin_lock")
_LOCKED = (1).to_bytes(_LOCK_SIZE, "little")
_UNLOCKED = bytes(_LOCK_SIZE)


def bpf_spin_lock(env, r1, r2, r3, r4, r5) -> int:
    env.mem.write(r1, _LOCKED)
    return 0


def bpf_spin_unlock(env, r1, r2, r3, r4, r5) -> int:
    env.mem.write(r1, _UNLOCKED)
    return 0


SPIN_LOCK_RUNTIME = {
    FuncId.spin_lock: bpf_spin_lock,
    FuncId.spin_unlock: bpf_spin_unlock,
}
