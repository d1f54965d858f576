"""Launching under the runner: trampolines, exit statuses, and the refusal messages.

These start real processes behind a real seccomp listener (no privileges needed).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import threading

import pytest

from fakekernel.runner import launch as launch_mod
from fakekernel.runner.cli import EXIT_RUNNER_FAILED, run
from uapi.seccomp import FilterFlag

REPO = pathlib.Path(__file__).resolve().parents[4]


def _finish(launched) -> None:
    """Serve the target until it exits (its opens are trapped too), then close the listener."""
    from fakekernel import Kernel
    from fakekernel.runner.supervisor import Supervisor
    sup = Supervisor(Kernel(), launched.listener)
    t = threading.Thread(target=sup.serve, daemon=True)
    t.start()
    launched.proc.wait()
    t.join(30)
    sup.close()
    launched.listener.close()


def _seccomp_notify_unavailable() -> str | None:
    try:
        launched = launch_mod.launch(["true"])
    except launch_mod.LaunchError as e:
        return str(e)
    _finish(launched)
    return None


_REASON = _seccomp_notify_unavailable() if sys.platform == "linux" else "not Linux"
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"seccomp notify: {_REASON}")


def _kernel_at_least(major: int, minor: int) -> bool:
    v = os.uname().release.split("-")[0].split(".")
    return (int(v[0]), int(v[1])) >= (major, minor)


@pytest.fixture(params=["c", "python"])
def trampoline(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setenv("FAKEKERNEL_TRAMPOLINE", "python")
    elif launch_mod.compiled_trampoline() is None:
        pytest.skip("no C compiler for the C trampoline")
    return request.param


def test_launch_installs_killable_listener(trampoline):
    launched = launch_mod.launch(["true"])
    try:
        assert launched.flags & FilterFlag.NEW_LISTENER
        if _kernel_at_least(5, 19):
            assert launched.flags & FilterFlag.WAIT_KILLABLE_RECV
    finally:
        _finish(launched)


@pytest.mark.parametrize("script,status", [("exit 0", 0), ("exit 7", 7), ("kill -9 $$", 137)])
def test_run_returns_command_status(trampoline, script, status):
    assert run(["sh", "-c", script]) == status


def test_run_missing_command_127(trampoline):
    with tempfile.TemporaryFile() as err:
        assert run(["/nonexistent/fk-cmd"], stderr=err) == 127
        err.seek(0)
        assert b"/nonexistent/fk-cmd" in err.read()


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, **kw)


def test_nested_runner_ebusy_names_cause():
    inner = ("import sys; from fakekernel.runner import main; "
             "sys.exit(main(['--no-preload', '--', 'true']))")
    code = ("import sys; from fakekernel.runner import main; "
            f"sys.exit(main(['--', sys.executable, '-c', {inner!r}]))")
    r = _python(code)
    assert r.returncode == EXIT_RUNNER_FAILED, r.stderr
    assert "EBUSY" in r.stderr or "Device or resource busy" in r.stderr
    assert "another seccomp listener" in r.stderr


def test_outer_errno_filter_for_bpf_is_detected():
    """Docker's default profile answers bpf() with EPERM before any listener sees it."""
    code = """
import os, sys
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
sys.exit(main(["--no-preload", "--", "true"]))
"""
    r = _python(code)
    assert r.returncode == EXIT_RUNNER_FAILED, r.stderr
    assert "EPERM" in r.stderr and "Docker" in r.stderr
