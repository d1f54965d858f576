"""The pytest plugin (fakekernel/pytest_plugin.py), exercised by running pytest on small test files.

Each case writes a test module into a fresh directory and runs ``python -m pytest -p
fakekernel.pytest_plugin`` there (the repo's own conftest is not involved), then checks
the outcome counts and messages.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parents[2]
CLIENT = pathlib.Path(__file__).resolve().parent / "runner_client.py"

HEADER = f"""
import ctypes, os, subprocess, sys
import pytest
from uapi import calls
from uapi.bpf import MapType
CLIENT = {str(CLIENT)!r}
"""


def _plugin_args() -> list[str]:
    """`-p fakekernel.pytest_plugin` from a checkout; nothing when fakekernel is installed
    (its pytest11 entry point registers the plugin, and registering it twice is an error)."""
    from importlib.metadata import entry_points
    if any(ep.value == "fakekernel.pytest_plugin" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "fakekernel.pytest_plugin"]


def pytest_on(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(HEADER + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", *_plugin_args(),
                           "-p", "no:cacheprovider", "-q", "-rA", "--rootdir", str(tmp_path),
                           *args, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


def outcome(r: subprocess.CompletedProcess) -> dict[str, int]:
    last = r.stdout.strip().splitlines()[-1]
    return {k.rstrip("s") if k.startswith("error") else k: int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last)}


def test_fixture_is_a_fresh_kernel_with_leak_check(tmp_path):
    r = pytest_on(tmp_path, """
        def test_clean(fakekernel):
            fd = calls.map_create(fakekernel, MapType.HASH, 4, 4, 8)
            assert fd == 3
            assert fakekernel.close(fd) == 0

        def test_fresh_each_time(fakekernel):
            assert calls.map_create(fakekernel, MapType.ARRAY, 4, 4, 1) == 3
            fakekernel.close(3)
            assert len(fakekernel.map_idr) == 0

        def test_leaks_an_fd(fakekernel):
            calls.map_create(fakekernel, MapType.HASH, 4, 4, 8)

        @pytest.mark.keep_objects
        def test_leak_allowed(fakekernel):
            calls.map_create(fakekernel, MapType.HASH, 4, 4, 8)

        def test_pinned_is_not_a_leak(fakekernel):
            fd = calls.map_create(fakekernel, MapType.HASH, 4, 4, 8)
            calls.obj_pin(fakekernel, fd, "/sys/fs/bpf/m")
            fakekernel.close(fd)
    """)
    assert outcome(r) == {"passed": 5, "error": 1}, r.stdout
    assert "ERROR at teardown of test_leaks_an_fd" in r.stdout
    assert "LeakError: test left fds open in its Kernel: [3]" in r.stdout


def test_fakekernel_run_shares_the_fixture_kernel(tmp_path):
    r = pytest_on(tmp_path, """
        def test_client(fakekernel, fakekernel_run):
            r = fakekernel_run([sys.executable, CLIENT])
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("create hash 3 True\\n")
            assert "lookup 2 0 200" in r.stdout
            # the client's map was freed when it exited: its id no longer resolves
            assert fakekernel.map_idr.get_next(0) is None

        def test_pin_outlives_the_process(fakekernel, fakekernel_run):
            code = ("import ctypes; from uapi import calls; from uapi.backend import HostKernel; "
                    "k = HostKernel(); fd = calls.map_create(k, 1, 4, 4, 8); "
                    "calls.obj_pin(k, fd, '/sys/fs/bpf/shared'); print(0)")
            r = fakekernel_run([sys.executable, "-c", code], env={"PYTHONPATH": os.environ["PYTHONPATH"]})
            assert (r.returncode, r.stdout, r.stderr) == (0, "0\\n", "")
            fd = calls.obj_get(fakekernel, "/sys/fs/bpf/shared")
            assert fd >= 3
            fakekernel.close(fd)

        def test_exit_status_input_timeout(fakekernel_run):
            assert fakekernel_run(["sh", "-c", "exit 7"]).returncode == 7
            assert fakekernel_run(["cat"], input="hi").stdout == "hi"
            with pytest.raises(subprocess.TimeoutExpired):
                fakekernel_run(["sleep", "30"], timeout=0.5)
            with pytest.raises(subprocess.CalledProcessError):
                fakekernel_run(["false"], check=True)
    """)
    assert outcome(r) == {"passed": 3}, r.stdout + r.stderr


def test_marker_runs_subprocesses_under_the_runner(tmp_path):
    r = pytest_on(tmp_path, """
        @pytest.mark.fakekernel_subprocess
        def test_marked(fakekernel):
            out = subprocess.run([sys.executable, CLIENT], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert "keys [2, 3]" in out.stdout
            out = subprocess.check_output("stat -f -c %T /sys/fs/bpf", shell=True, text=True)
            assert out == "bpf_fs\\n"
            assert fakekernel.map_idr.get_next(0) is None     # freed when the client exited

        @pytest.mark.fakekernel_subprocess
        def test_marked_without_fixture_argument():
            out = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/bpf"], capture_output=True,
                                 text=True)
            assert out.stdout == "bpf_fs\\n"

        def test_unmarked_runs_natively():
            out = subprocess.run(["sh", "-c", "grep -c '^Seccomp:.*2' /proc/self/status"],
                                 capture_output=True, text=True)
            assert out.stdout == "0\\n"

        @pytest.mark.fakekernel_subprocess
        def test_marked_is_filtered():
            out = subprocess.run(["sh", "-c", "grep -c '^Seccomp:.*2' /proc/self/status"],
                                 capture_output=True, text=True)
            assert out.stdout == "1\\n"
    """)
    assert outcome(r) == {"passed": 4}, r.stdout + r.stderr


def test_option_applies_to_every_test(tmp_path):
    r = pytest_on(tmp_path, """
        def test_a():
            out = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/bpf"], capture_output=True,
                                 text=True)
            assert out.stdout == "bpf_fs\\n"
    """, "--fakekernel-subprocess")
    assert outcome(r) == {"passed": 1}, r.stdout + r.stderr


def test_syscall_shim_fixture_for_ctypes_loaders(tmp_path):
    r = pytest_on(tmp_path, """
        class MapCreate(ctypes.Structure):
            _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                        ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32)]

        def test_shim(fakekernel, fakekernel_syscall):
            attr = MapCreate(2, 4, 8, 4)
            fd = fakekernel_syscall(321, 0, ctypes.byref(attr), ctypes.sizeof(attr))
            assert fd == 3 and len(fakekernel.map_idr) == 1
            assert fakekernel_syscall(321, 9999, None, 0) == -1
            assert ctypes.get_errno() == 22
            assert fakekernel_syscall(3, fd) == 0          # close of the simulated fd
            assert len(fakekernel.map_idr) == 0
            assert fakekernel_syscall(39) == os.getpid()   # anything else: the real kernel
    """)
    assert outcome(r) == {"passed": 1}, r.stdout + r.stderr
