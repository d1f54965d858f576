"""The verifier log — kernel/bpf/log.c (bpf_vlog_init, bpf_verifier_vlog, bpf_vlog_reset, bpf_vlog_finalize,
print_verifier_state, print_insn_state).

The log is kept whole in memory as the kernel's positions see it (``end_pos`` may move back on
reset); what reaches the user's buffer is derived at finalize time with the kernel's rules:
rotating mode keeps the *last* ``log_size - 1`` bytes, BPF_LOG_FIXED the first ones; a log
that did not fit is ENOSPC; ``log_true_size`` is the largest size the log ever needed.
"""
from __future__ import annotations

from fakekernel.errors import Errno, KernelError

BPF_REG_SIZE = 8
NOT_INIT = 0

__all__ = ["VerifierLog", "BPF_LOG_LEVEL", "BPF_LOG_LEVEL1", "BPF_LOG_LEVEL2", "BPF_LOG_STATS", "BPF_LOG_FIXED",
           "BPF_LOG_MASK", "UINT_MAX", "print_verifier_state", "print_insn_state"]

# include/linux/bpf_verifier.h (kernel-internal, so not in the generated uapi)
BPF_LOG_LEVEL1 = 1
BPF_LOG_LEVEL2 = 2
BPF_LOG_STATS = 4
BPF_LOG_FIXED = 8
BPF_LOG_LEVEL = BPF_LOG_LEVEL1 | BPF_LOG_LEVEL2
BPF_LOG_MASK = BPF_LOG_LEVEL1 | BPF_LOG_LEVEL2 | BPF_LOG_STATS | BPF_LOG_FIXED
UINT_MAX = (1 << 32) - 1
_BPF_LOG_MIN_ALIGNMENT = 8
_BPF_LOG_ALIGNMENT = 40


class VerifierLog:
    """struct bpf_verifier_log."""

    def __init__(self, level: int, ubuf: int, len_total: int):
        self.level = level
        self.ubuf = ubuf
        self.len_total = len_total
        self.buf = bytearray()          # bytes [0, end_pos) as the kernel's positions count them
        self.start_pos = 0
        self.len_max = 0

    @classmethod
    def init(cls, level: int, ubuf: int, len_total: int) -> "VerifierLog":
        """bpf_vlog_init() / bpf_verifier_log_attr_valid(): EINVAL on nonsense."""
        log = cls(level, ubuf, len_total)
        if bool(ubuf) != bool(len_total):
            raise KernelError(Errno.EINVAL, "log_buf and log_size must be given together")
        if ubuf and level == 0:
            raise KernelError(Errno.EINVAL, "log buffer without log_level")
        if level & ~BPF_LOG_MASK:
            raise KernelError(Errno.EINVAL, "unknown log_level bits")
        if len_total > UINT_MAX >> 2:
            raise KernelError(Errno.EINVAL, "log_size too large")
        return log

    @property
    def end_pos(self) -> int:
        return len(self.buf)

    def needed(self) -> bool:
        return bool(self.level)

    def write(self, text: str) -> None:
        """bpf_verifier_vlog()."""
        if not self.level:
            return
        data = text.encode()
        n = len(data) + 1
        self.len_max = min(UINT_MAX, max(self.len_max, self.end_pos + n))
        self.buf += data
        if not self.level & BPF_LOG_FIXED:
            new_end = self.end_pos + 1
            if self.len_total and new_end - self.start_pos >= self.len_total:
                self.start_pos = new_end - self.len_total

    def reset(self, new_pos: int) -> None:
        """bpf_vlog_reset()."""
        if not self.level or new_pos > self.end_pos:
            return
        del self.buf[new_pos:]
        if self.end_pos < self.start_pos:
            self.start_pos = self.end_pos

    def truncated(self) -> bool:
        """The log needed more than log_size at some point (ENOSPC even for a valid program)."""
        return bool(self.ubuf) and self.len_max > self.len_total

    @staticmethod
    def alignment(pos: int) -> int:
        """vlog_alignment(): the padding before a ';' state annotation."""
        target = max(pos + _BPF_LOG_MIN_ALIGNMENT // 2, _BPF_LOG_ALIGNMENT)
        target = -(-target // _BPF_LOG_MIN_ALIGNMENT) * _BPF_LOG_MIN_ALIGNMENT
        return target - pos - 1

    def user_bytes(self) -> bytes:
        """What the user's buffer holds after finalize (NUL-terminated)."""
        if not self.len_total:
            return b""
        if self.level & BPF_LOG_FIXED:
            return bytes(self.buf[: self.len_total - 1]) + b"\0"
        keep = self.len_total - 1
        return bytes(self.buf[max(0, self.end_pos - keep):]) + b"\0"

    def finalize(self, task) -> int:
        """bpf_vlog_finalize(): copy to the user and return log_true_size.

        The caller turns ``truncated()`` into ENOSPC (after writing log_true_size back)."""
        if not self.level:
            return 0
        if self.ubuf:
            task.mm.copy_to_user(self.ubuf, self.user_bytes())
        return self.len_max


# ---------------------------------------------------------------- state printing

def print_verifier_state(env, state, print_all: bool, fs=None) -> str:
    """print_verifier_state() of frame ``fs`` (the current one by default) of ``state``."""
    fs = fs if fs is not None else state.cur
    parts = [f" frame{fs.frameno}:"] if fs.frameno else []
    for i, reg in enumerate(fs.regs):
        if reg.type == NOT_INIT:
            continue
        if not print_all and not env.all_scratched and i not in env.scratched_regs:
            continue
        parts.append(f" R{i}={reg.state_str(fs.frameno)}")
    for spi in range(fs.allocated_stack // BPF_REG_SIZE):
        if not print_all and not env.all_scratched and spi not in env.scratched_stack:
            continue
        slot = fs.stack.get(spi)
        if slot is None or all(t == "?" for t in slot.slot_type):
            continue
        types = "".join(slot.slot_type)
        if slot.slot_type[BPF_REG_SIZE - 1] == "r" and slot.spilled is not None:
            parts.append(f" fp{(-spi - 1) * BPF_REG_SIZE}={types[:types.index('r')]}"
                         f"{slot.spilled.state_str(fs.frameno)}")
        else:
            parts.append(f" fp{(-spi - 1) * BPF_REG_SIZE}={types}")
    ref_ids = [r[0] for r in state.refs]
    if state.active_lock is not None and state.active_lock[1]:     # the lock is a reference
        ref_ids.insert(0, state.active_lock[1])
    if ref_ids:
        parts.append(" refs=" + ",".join(str(i) for i in ref_ids))
    if fs.in_callback_fn:
        parts.append(" cb")
    if fs.in_async_callback_fn:
        parts.append(" async_cb")
    if not print_all:
        env.clean()
    return "".join(parts) + "\n"


def print_insn_state(env, state) -> None:
    """print_insn_state(): annotate the previous insn line, or start a "N:" state line."""
    log = env.log
    if env.prev_log_pos and env.prev_log_pos == log.end_pos:
        log.reset(env.prev_log_pos - 1)
        env.verbose(" " * log.alignment(env.prev_insn_print_pos) + ";")
    else:
        env.verbose(f"{env.insn_idx}:")
    env.verbose(print_verifier_state(env, state, False))
