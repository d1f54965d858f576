"""`fakekernel run` end to end: unmodified, unprivileged clients against the simulated kernel.

Every client runs as uid 65534 (the test machine runs as root; `runner_as_user.py` drops
privileges after importing) and, where the real bpf() is available, the same client runs
as root on the real kernel: the outputs must match (ids aside; `memlock` comes from the
emulated /proc/self/fdinfo).  Needs: gcc (C client), python3 (ctypes client), bpftool
(Debian `bpftool`).
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest

from backends import host_unavailable_reason, unavailable

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
AS_USER = HERE / "runner_as_user.py"
NOBODY = 65534
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@pytest.fixture(scope="module")
def workdir():
    """A directory the unprivileged target can use (cwd, compiled clients, trampoline cache)."""
    d = tempfile.mkdtemp(prefix="fk-runner-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def run_under(workdir: pathlib.Path, cmd: list[str], *, trace: bool = False):
    """(CompletedProcess, trace text) of `fakekernel run [--trace] -- cmd` as nobody."""
    tracefile = workdir / f"trace-{uuid.uuid4().hex[:8]}.txt"
    argv = [sys.executable, str(AS_USER)] + (["--trace", str(tracefile)] if trace else [])
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    r = subprocess.run(argv + ["--", *cmd], cwd=workdir, capture_output=True, text=True,
                       env=env, timeout=300)
    text = tracefile.read_text() if trace and tracefile.exists() else ""
    return r, text


def run_real(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120, **kw)


def _need_host():
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")


def _world_runnable(path: str) -> bool:
    p = pathlib.Path(path).resolve()
    for d in [p, *p.parents]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    return True


# ---------------------------------------------------------------- C client

C_EXPECTED = (HERE / "runner_client.expected").read_text()   # also test_runner_fallback.py


@pytest.fixture(scope="module")
def c_client(workdir):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    exe = workdir / "runner_client"
    subprocess.run([cc, "-O1", "-o", str(exe), str(HERE / "runner_client.c")], check=True)
    os.chmod(exe, 0o755)
    return str(exe)


def test_c_client_under_runner(workdir, c_client):
    r, _ = run_under(workdir, [c_client])
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED
    assert "internal error" not in r.stderr


def test_c_client_real_kernel_agrees(c_client):
    _need_host()
    r = run_real([c_client])
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED


# ---------------------------------------------------------------- Python ctypes client

PY_EXPECTED = """\
create hash 3 True
update 3 0
update 1 0
update 2 0
update full? no: -1 ENOENT
lookup 2 0 200
lookup 42 -1 ENOENT
delete 1 0
delete 1 again -1 ENOENT
get_next_key end -1 ENOENT
keys [2, 3]
lookup on pipe -1 EINVAL
bad attr pointer -1 EFAULT
"""


@pytest.fixture(scope="module")
def python_for_nobody():
    for cand in (sys.executable, "/usr/bin/python3"):
        if cand and os.path.exists(cand) and (os.getuid() != 0 or _world_runnable(cand)):
            return cand
    unavailable("no python3 the unprivileged user can run")


def test_python_ctypes_client_under_runner(workdir, python_for_nobody):
    client = workdir / "runner_client.py"
    shutil.copy(HERE / "runner_client.py", client)
    os.chmod(client, 0o644)
    r, _ = run_under(workdir, [python_for_nobody, str(client)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == PY_EXPECTED


def test_python_ctypes_client_real_kernel_agrees(python_for_nobody):
    _need_host()
    r = run_real([python_for_nobody, str(HERE / "runner_client.py")])
    assert r.returncode == 0, r.stderr
    assert r.stdout == PY_EXPECTED


# ---------------------------------------------------------------- bpftool

def _bpftool_script(pin: str) -> str:
    return "\n".join([
        "set -e",
        # BPF_F_ZERO_SEED (64): the real kernel seeds each hash map randomly, which makes
        # the dump order vary from run to run; with a zero seed it is deterministic
        f"bpftool map create {pin} type hash key 4 value 4 entries 8 name m flags 64",
        f"bpftool map update pinned {pin} key 1 0 0 0 value 2 0 0 0",
        f"bpftool map update pinned {pin} key 5 0 0 0 value 9 9 9 9",
        f"bpftool map lookup pinned {pin} key 1 0 0 0",
        f"bpftool map dump pinned {pin}",
        f"bpftool -j map dump pinned {pin}",
        f"bpftool map getnext pinned {pin} key 1 0 0 0 || true",
        f"bpftool map delete pinned {pin} key 5 0 0 0",
        f"bpftool map show pinned {pin}",
        f"bpftool -j map show pinned {pin}",
        "",
    ])


def _normalise(out: str) -> str:
    """Ids differ (memlock, read from /proc/self/fdinfo, must not)."""
    out = re.sub(r"^\d+: ", "ID: ", out, flags=re.M)
    out = re.sub(r'"id":\d+', '"id":ID', out)
    return out


@pytest.fixture(scope="module")
def bpftool():
    exe = shutil.which("bpftool", path=ENV["PATH"])
    if exe is None:
        unavailable("bpftool not installed (Debian package `bpftool`)")
    return exe


def test_bpftool_session_under_runner(workdir, bpftool):
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    r, trace = run_under(workdir, ["sh", "-c", _bpftool_script(pin) + "bpftool map show\n"],
                         trace=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "key: 01 00 00 00  value: 02 00 00 00" in out
    assert "Found 2 elements" in out
    # state persists across the bpftool processes of one run: `map show` lists the map
    assert out.rstrip().endswith("key 4B  value 4B  max_entries 8  memlock 1680B")
    assert 'statfs("/sys/fs/bpf") = 0' in trace
    assert "bpf(OBJ_PIN" in trace and "bpf(MAP_CREATE, map_type=HASH" in trace


def test_bpftool_session_matches_real_kernel(workdir, bpftool):
    _need_host()
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    script = _bpftool_script(pin)
    try:
        real = run_real(["sh", "-c", script])
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
    assert real.returncode == 0, real.stderr
    emu, _ = run_under(workdir, ["sh", "-c", script])
    assert emu.returncode == 0, emu.stderr
    assert _normalise(emu.stdout) == _normalise(real.stdout)
    assert emu.stderr == real.stderr


# ---------------------------------------------------------------- bpffs paths, trace, status

def test_bpffs_mkdir_statfs_unlink_rmdir(workdir, bpftool):
    script = "\n".join([
        "set -e",
        "mkdir /sys/fs/bpf/d",
        "stat -f -c %T /sys/fs/bpf/d",
        "bpftool map create /sys/fs/bpf/d/m type array key 4 value 4 entries 2 name a",
        "mkdir /sys/fs/bpf/d 2>/dev/null && echo mkdir-again-ok || echo mkdir-again-failed",
        "rmdir /sys/fs/bpf/d 2>/dev/null && echo rmdir-ok || echo rmdir-nonempty-failed",
        "rm /sys/fs/bpf/d/m",
        "rmdir /sys/fs/bpf/d",
        "stat -f /sys/fs/bpf/d >/dev/null 2>&1 && echo still-there || echo gone",
        "bpftool map show",
        "echo done",
    ])
    r, trace = run_under(workdir, ["sh", "-c", script], trace=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bpf_fs", "mkdir-again-failed", "rmdir-nonempty-failed",
                                "gone", "done"]
    assert 'mkdir("/sys/fs/bpf/d") = -1 EEXIST' in trace
    assert 'rmdir("/sys/fs/bpf/d") = -1 ENOTEMPTY' in trace
    # unpinned and no fd left: the map is gone
    assert trace.rstrip().endswith("bpf(MAP_GET_NEXT_ID, start_id=0) = -1 ENOENT")


def test_trace_lines_name_command_fields_and_errno(workdir, c_client):
    r, trace = run_under(workdir, [c_client], trace=True)
    assert r.returncode == 0, r.stderr
    lines = trace.splitlines()
    assert re.match(r"\[pid \d+\] bpf\(MAP_CREATE, map_type=HASH key_size=4 value_size=4 "
                    r"max_entries=8 .*map_name=\"client\".*\) = 3$", lines[0])
    assert any(re.search(r"bpf\(MAP_LOOKUP_ELEM, map_fd=3 .*\) = -1 ENOENT$", x) for x in lines)
    assert any(x.endswith("bpf(9999, <0 bytes>) = -1 EINVAL") for x in lines)
    # the fork child's calls are answered by the same supervisor, under its own pid
    assert len({x.split("]")[0] for x in lines}) == 2


def test_exit_status_and_statfs_elsewhere_untouched(workdir):
    r, trace = run_under(workdir, ["sh", "-c", "stat -f -c %T /proc; exit 3"], trace=True)
    assert r.returncode == 3
    assert r.stdout.strip() == "proc"
    assert trace == ""
