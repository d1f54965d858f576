"""BPF_TOKEN_CREATE, fake vs the real kernel, from the initial user namespace: the bpffs root is
refused with EOPNOTSUPP; anything that is not a bpffs mount root (a subdirectory, another
filesystem's directory, a map fd), a bad fd and non-zero flags get the kernel's errnos."""
from __future__ import annotations

import os

import pytest

from uapi import calls
from uapi.bpf import BpfCmd, MapType

pytestmark = pytest.mark.differential

BPFFS = "/sys/fs/bpf"


def token_create(b, fd, flags=0):
    ret, _ = calls.raw(b, BpfCmd.TOKEN_CREATE, "token_create.bpffs_fd", token_create__flags=flags,
                       token_create__bpffs_fd=fd)
    return ret


def test_token_create_errors_match_kernel(both):
    def s(b):
        d = b.pin_dir()
        root = b.open(BPFFS, os.O_RDONLY | os.O_DIRECTORY)
        sub = b.open(d, os.O_RDONLY | os.O_DIRECTORY)
        m = calls.map_create(b, MapType.ARRAY, 4, 4, 1)
        out = [token_create(b, root), token_create(b, root, flags=1), token_create(b, sub),
               token_create(b, m), token_create(b, 9999)]
        for fd in (m, sub, root):
            b.close(fd)
        return out
    fake, host = both
    assert s(fake) == s(host)
