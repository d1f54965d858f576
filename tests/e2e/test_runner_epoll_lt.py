"""Level-triggered epoll on emulated ring buffers (runner/epoll.py): a waiter that leaves
records unconsumed is reported ready again, as by the kernel's ringbuf_map_poll; EPOLLET
keeps edge semantics (a new event only on the next wakeup: a commit with the consumer
caught up, or BPF_RB_FORCE_WAKEUP), EPOLL_CTL_MOD re-polls.  The raw client
(runner_epoll_lt.c) and a libbpf ring_buffer__poll client whose callback fails once
(runner_epoll_libbpf.c) print the same under the runner -- seccomp notification and the
ptrace fallback, as uid 65534 -- as on the real kernel as root.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from backends import host_unavailable_reason, unavailable

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
AS_USER = HERE / "runner_as_user.py"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
RAW_EXPECTED = """\
ringbuf ok mmap ok ok
progs ok ok
ctl lt: 0
ctl et: 0
empty: lt 0 et 0
run: 2
after run: lt 1 et 1
again, unconsumed: lt 1 et 0
third time: lt 1 et 0
run (no wakeup: consumer behind): 2
after: lt 1 et 0
run forced wakeup: 2
after: lt 1 et 1
pending 48
consumed: lt 0 et 0
run: 2
after: lt 1 et 1
mod et->lt: 0
after mod: lt 1 et 1
twice: lt 1 et 1
consumed: lt 0 et 0
blocking 50ms, empty: 0
"""
LIBBPF_EXPECTED = """\
map ok prog ok ring_buffer ok
run 0: 0 retval 2
run 1: 0 retval 2
poll 1: -7 calls 1
epoll fd still ready: 1
poll 2: 1 calls 2
poll 3 (empty): 0 calls 2
"""


@pytest.fixture(scope="module")
def clients():
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-epoll-"))
    os.chmod(d, 0o777)
    raw = d / "epoll_lt"
    subprocess.run([cc, "-O1", "-o", str(raw), str(HERE / "runner_epoll_lt.c")], check=True)
    lib = d / "epoll_libbpf"
    r = subprocess.run([cc, "-O1", "-o", str(lib), str(HERE / "runner_epoll_libbpf.c"), "-lbpf"],
                       capture_output=True)
    yield d, raw, (lib if r.returncode == 0 else None)
    shutil.rmtree(d, ignore_errors=True)


def _under_runner(d, exe, *flags):
    env = {**ENV, "HOME": str(d), "XDG_CACHE_HOME": str(d / "xdg")}
    return subprocess.run([sys.executable, str(AS_USER), *flags, "--", str(exe)], cwd=d,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("flags", [(), ("--ptrace",)], ids=["seccomp", "ptrace"])
def test_ringbuf_epoll_level_and_edge_triggered(clients, flags):
    d, raw, _ = clients
    r = _under_runner(d, raw, *flags)
    assert (r.returncode, r.stdout, r.stderr) == (0, RAW_EXPECTED, "")


@pytest.mark.parametrize("flags", [(), ("--ptrace",)], ids=["seccomp", "ptrace"])
def test_libbpf_ring_buffer_poll_woken_again_with_records_left(clients, flags):
    d, _, lib = clients
    if lib is None:
        unavailable("libbpf-dev is not installed")
    r = _under_runner(d, lib, *flags)
    assert (r.returncode, r.stdout, r.stderr) == (0, LIBBPF_EXPECTED, "")


def test_real_kernel_agrees(clients):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    d, raw, lib = clients
    r = subprocess.run([str(raw)], capture_output=True, text=True, env=ENV, timeout=60)
    assert (r.returncode, r.stdout) == (0, RAW_EXPECTED)
    if lib is not None:
        r = subprocess.run([str(lib)], capture_output=True, text=True, env=ENV, timeout=60)
        assert (r.returncode, r.stdout) == (0, LIBBPF_EXPECTED)
