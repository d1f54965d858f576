"""Emulated fds across processes under `fakekernel run` (as uid 65534) and on the real kernel:
a map fd passed with SCM_RIGHTS to a forked child, an mmap()ed BPF_F_MMAPABLE array shared
through fork, and map ids that die with the last fd or mapping (the runner's close
accounting: inotify per description, a reference recount for mmap()able maps).
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
EXPECTED = """\
child got an fd: 1
child update via passed fd: 0
parent lookup after child: 0 value 42
get_fd_by_id after last close: ENOENT
mmap: ok
lookup of a value the child wrote through the mapping: 0 value 42
mapping sees an update: 99
get_fd_by_id while mapped: fd
get_fd_by_id after munmap: ENOENT
"""


@pytest.fixture(scope="module")
def client():
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-fdpass-"))
    os.chmod(d, 0o755)
    exe = d / "fdpass"
    subprocess.run([cc, "-O1", "-o", str(exe), str(HERE / "runner_fdpass_client.c")], check=True)
    os.chmod(exe, 0o755)
    yield exe
    shutil.rmtree(d)


def test_fds_across_fork_scm_rights_and_mmap_under_runner(client):
    env = {**ENV, "HOME": str(client.parent), "XDG_CACHE_HOME": str(client.parent / "cache")}
    r = subprocess.run([sys.executable, str(AS_USER), "--", str(client)], cwd=client.parent,
                       capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, EXPECTED, "")


def test_fds_across_processes_real_kernel_agrees(client):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    r = subprocess.run([str(client)], capture_output=True, text=True, env=ENV, timeout=60)
    assert (r.returncode, r.stdout) == (0, EXPECTED)
