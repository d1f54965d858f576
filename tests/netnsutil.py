"""Run a scenario on the real kernel inside a fresh network namespace (a forked child that
unshare(CLONE_NEWNET)s and sets the namespace up with ``ip`` / ``sysctl`` commands), so its
routes, neighbours and sockets are exactly the ones a test made — the differential tests of
the networking helpers (fib_lookup, socket lookups) compare the fake against that."""
from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import subprocess

from backends import HostBackend, host_unavailable_reason, unavailable

__all__ = ["in_netns", "CLONE_NEWNET"]

CLONE_NEWNET = 0x40000000


def in_netns(setup: list[str], fn):
    """fn(HostBackend()) in a forked child inside a new network namespace set up by `setup`
    (commands run without a shell); returns what fn returned (it must pickle).  Skips (fails
    under CI=true) without the real bpf(), root or iproute2."""
    reason = host_unavailable_reason()
    if reason is None and os.geteuid() != 0:
        reason = "a new network namespace needs root"
    if reason is None and shutil.which("ip") is None:
        reason = "iproute2 (ip) is not installed"
    if reason is not None:
        unavailable(reason)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # pragma: no cover - the child
        os.close(rfd)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            for cmd in setup:
                subprocess.run(cmd.split(), check=True, capture_output=True)
            b = HostBackend()
            out = ("ok", fn(b))
            leaked = b.cleanup()
            if leaked:
                out = ("err", f"leaked fds {leaked}")
        except BaseException as e:             # noqa: BLE001 - report anything to the parent
            out = ("err", repr(e))
        with os.fdopen(wfd, "wb") as w:
            pickle.dump(out, w)
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    status, val = pickle.loads(data)
    assert status == "ok", val
    return val
