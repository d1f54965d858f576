"""A statically linked Go program (CGO_ENABLED=0: its own syscall layer, no libc) issuing raw
bpf(2) from goroutines on several OS threads, under `fakekernel run` as uid 65534 and as
root on the real kernel: the outputs must be the same.  Needs `go` (Debian golang-go).
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
NOBODY = 65534
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
EXPECTED = """\
map_create: ok
lookup 39: no such file or directory
entries: 32 sum: 112048
get_next_key bad fd: -1 bad file descriptor
unknown command: -1 invalid argument
"""


@pytest.fixture(scope="module")
def go_binary():
    go = shutil.which("go", path=ENV["PATH"])
    if go is None:
        unavailable("go is not installed (Debian package golang-go)")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-go-"))
    os.chmod(d, 0o755)
    try:
        exe = d / "bpfraw"
        env = {**ENV, "CGO_ENABLED": "0", "HOME": str(d), "GOCACHE": str(d / "cache"),
               "GOPATH": str(d / "gopath"), "GOFLAGS": "-mod=mod"}
        subprocess.run([go, "build", "-o", str(exe), str(HERE / "go" / "bpfraw.go")], check=True,
                       env=env, cwd=d, capture_output=True)
        assert b"ld-linux" not in exe.read_bytes()[:4096]      # no PT_INTERP: static
        os.chmod(exe, 0o755)
        yield exe
    finally:
        shutil.rmtree(d)


def test_static_go_binary_under_runner(go_binary):
    env = {**ENV, "HOME": str(go_binary.parent), "XDG_CACHE_HOME": str(go_binary.parent / "xdg")}
    r = subprocess.run([sys.executable, str(AS_USER), "--", str(go_binary)], cwd=go_binary.parent,
                       capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, EXPECTED, "")


def test_static_go_binary_real_kernel_agrees(go_binary):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    r = subprocess.run([str(go_binary)], capture_output=True, text=True, env=ENV, timeout=60)
    assert (r.returncode, r.stdout) == (0, EXPECTED)
