"""When seccomp notification cannot reach bpf(): the runner says why, and serves dynamically
linked targets through its LD_PRELOAD fallback instead.

A nested `fakekernel run` is the reproducible case of "another listener already
supervises this process" (EBUSY, as under LXD/Incus/sysbox): the inner run falls back to
LD_PRELOAD, says so on stderr, and the C client prints exactly what it prints on the
real kernel.  `--no-preload` turns the fallback off (exit 125 with the cause and the
fix), and a statically linked target cannot be served by LD_PRELOAD (exit 125, said so).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from backends import unavailable

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
       "PYTHONPATH": str(REPO)}
RUN = [sys.executable, "-m", "fakekernel.cli", "run"]
C_EXPECTED = (HERE / "runner_client.expected").read_text()     # test_runner.py's C client


@pytest.fixture(scope="module")
def clients():
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-fallback-"))
    dynamic, static = d / "client", d / "client-static"
    subprocess.run([cc, "-O1", "-o", str(dynamic), str(HERE / "runner_client.c")], check=True)
    r = subprocess.run([cc, "-O1", "-static", "-o", str(static), str(HERE / "runner_client.c")],
                       capture_output=True)
    yield dynamic, (static if r.returncode == 0 else None)
    shutil.rmtree(d)


def test_nested_run_falls_back_to_ld_preload(clients):
    r = subprocess.run([*RUN, "--", *RUN, "--", str(clients[0])], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED
    assert "Device or resource busy" in r.stderr
    assert "falling back to LD_PRELOAD interception" in r.stderr


def test_nested_run_without_fallback_names_cause_and_fix(clients):
    r = subprocess.run([*RUN, "--", *RUN, "--no-preload", "--", str(clients[0])],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 125
    assert "another seccomp listener already supervises this process" in r.stderr
    assert r.stdout == ""


def test_preload_refuses_a_static_target(clients):
    if clients[1] is None:
        unavailable("no static libc to link a static client (libc6-dev)")
    r = subprocess.run([*RUN, "--preload", "--", str(clients[1])], capture_output=True,
                       text=True, env=ENV, timeout=120)
    assert r.returncode == 125
    assert "statically linked" in r.stderr and "without --preload" in r.stderr


def test_preload_serves_the_c_client(clients):
    r = subprocess.run([*RUN, "--preload", "--", str(clients[0])], capture_output=True,
                       text=True, env=ENV, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, C_EXPECTED, "")


DOCKER_LIKE = """
import sys
from uapi.seccomp import (Cbpf, NR_X86_64, PR_SET_NO_NEW_PRIVS, SeccompOp, SeccompRet, ffi,
                          libc, sock_filter_bytes)
from uapi.errno import Errno
nr_off = ffi.offsetof("struct seccomp_data", "nr")
prog = sock_filter_bytes([
    (Cbpf.LD | Cbpf.W | Cbpf.ABS, 0, 0, nr_off),
    (Cbpf.JMP | Cbpf.JEQ | Cbpf.K, 0, 1, NR_X86_64.bpf),
    (Cbpf.RET | Cbpf.K, 0, 0, SeccompRet.ERRNO | Errno.EPERM),
    (Cbpf.RET | Cbpf.K, 0, 0, SeccompRet.ALLOW)])
buf = ffi.new("char[]", prog)
fprog = ffi.new("struct sock_fprog *")
fprog.len = len(prog) // ffi.sizeof("struct sock_filter")
fprog.filter = ffi.cast("struct sock_filter *", buf)
assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
L = lambda v: ffi.cast("long", v)
assert libc.syscall(L(NR_X86_64.seccomp), L(SeccompOp.SET_MODE_FILTER), L(0), fprog) == 0
from fakekernel.runner import main
sys.exit(main(["--", sys.argv[1]]))
"""


def test_docker_like_profile_falls_back_to_ld_preload(clients):
    """Docker's default seccomp profile answers bpf() with EPERM before any listener; the
    runner detects it and serves the dynamically linked client through LD_PRELOAD."""
    r = subprocess.run([sys.executable, "-c", DOCKER_LIKE, str(clients[0])], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED
    assert "Docker" in r.stderr and "falling back to LD_PRELOAD interception" in r.stderr
