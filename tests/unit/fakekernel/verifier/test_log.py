"""kernel/bpf/log.c semantics of VerifierLog: attr validation, rotation, fixed mode, true size."""
import pytest

from fakekernel.errors import KernelError
from fakekernel.verifier.log import BPF_LOG_FIXED, BPF_LOG_LEVEL1, VerifierLog
from uapi.errno import Errno


@pytest.mark.parametrize("level,buf,size", [(0, 0x1000, 64), (1, 0, 64), (1, 0x1000, 0), (16, 0x1000, 64),
                                            (1, 0x1000, (1 << 30))])
def test_vlog_init_bad_attrs_einval(level, buf, size):
    with pytest.raises(KernelError) as e:
        VerifierLog.init(level, buf, size)
    assert e.value.errno == Errno.EINVAL


def test_vlog_rotating_keeps_the_end_and_counts_true_size():
    log = VerifierLog.init(BPF_LOG_LEVEL1, 0x1000, 8)
    log.write("0123456789\n")
    assert log.user_bytes() == b"456789\n\0"
    assert log.len_max == 12 and log.truncated()


def test_vlog_fixed_keeps_the_start():
    log = VerifierLog.init(BPF_LOG_LEVEL1 | BPF_LOG_FIXED, 0x1000, 8)
    log.write("0123456789\n")
    assert log.user_bytes() == b"0123456\0"
    assert log.truncated()


def test_vlog_reset_keeps_len_max():
    """A path popped at level 1 leaves its bytes counted in log_true_size."""
    log = VerifierLog.init(BPF_LOG_LEVEL1, 0x1000, 100)
    log.write("a" * 50)
    log.reset(10)
    log.write("b")
    assert log.end_pos == 11 and log.len_max == 51 and not log.truncated()


def test_vlog_alignment_matches_kernel_padding():
    # "0: (b7) r0 = 0\n" is 15 bytes: the ';' lands in column 38
    assert VerifierLog.alignment(15) == 24
