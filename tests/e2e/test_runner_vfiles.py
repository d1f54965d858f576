"""Virtual files under `fakekernel run` (fakekernel/runner/vfiles.py): fdinfo of emulated fds,
cpu/possible, opening bpffs paths, and relative pin paths from a cwd inside bpffs --
each compared with the real kernel where it can do the same.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from backends import host_unavailable_reason

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
AS_USER = HERE / "runner_as_user.py"
NOBODY = 65534
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

# a plain-python3 client (no fakekernel, no cffi): creates objects, prints their fdinfo
FDINFO_CLIENT = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def bpf(cmd, fields, size=128):
    buf = ctypes.create_string_buffer(size)
    for off, (v, n) in fields.items():
        ctypes.memmove(ctypes.addressof(buf) + off, v.to_bytes(n, "little"), n)
    r = libc.syscall(321, cmd, buf, size)
    assert r >= 0, ctypes.get_errno()
    return r
h = bpf(0, {0: (1, 4), 4: (4, 4), 8: (4, 4), 12: (8, 4), 16: (64, 4)})
a = bpf(0, {0: (2, 4), 4: (4, 4), 8: (8, 4), 12: (4, 4), 16: (0x400, 4)})
bpf(22, {0: (a, 4)})                                        # MAP_FREEZE
insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
lic = ctypes.create_string_buffer(b"GPL")
p = bpf(5, {0: (1, 4), 4: (2, 4), 8: (ctypes.addressof(insns), 8), 16: (ctypes.addressof(lic), 8)})
d = os.dup2(h, 20, inheritable=True)                        # no O_CLOEXEC on this one
for fd in (h, a, p, d):
    sys.stdout.write(open(f"/proc/self/fdinfo/{fd}").read())
    sys.stdout.write(open(f"/proc/{os.getpid()}/fdinfo/{fd}").read())
print(open("/sys/devices/system/cpu/possible").read().strip())
'''


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fk-vfiles-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    (pathlib.Path(d) / "fdinfo_client.py").write_text(FDINFO_CLIENT)
    os.chmod(pathlib.Path(d) / "fdinfo_client.py", 0o644)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def run_under(workdir, cmd, *, trace=False, cwd=None):
    tracefile = workdir / f"trace-{uuid.uuid4().hex[:8]}.txt"
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    argv = [sys.executable, str(AS_USER)] + (["--trace", str(tracefile)] if trace else [])
    r = subprocess.run(argv + ["--", *cmd], cwd=cwd or workdir, capture_output=True, text=True,
                       env=env, timeout=300)
    return r, (tracefile.read_text() if trace and tracefile.exists() else "")


def need_host():
    reason = host_unavailable_reason()
    if reason is not None:
        pytest.skip(f"real kernel unavailable: {reason}")


def python3():
    return shutil.which("python3", path=ENV["PATH"]) or sys.executable


def norm_ids(text: str) -> str:
    return re.sub(r"^(map_id|prog_id):\t\d+$", r"\1:\tID", text, flags=re.M)


def test_fdinfo_of_emulated_fds_matches_real_kernel(workdir):
    need_host()
    real = subprocess.run([python3(), str(workdir / "fdinfo_client.py")], capture_output=True,
                          text=True, env=ENV)
    assert real.returncode == 0, real.stderr
    emu, trace = run_under(workdir, [python3(), str(workdir / "fdinfo_client.py")], trace=True)
    assert emu.returncode == 0, emu.stderr
    assert 'open("/proc/self/fdinfo/3") = ' in trace
    # identical byte for byte but the ids, and prog_jited: the real kernel JITs, fakekernel
    # interprets (OBJ_GET_INFO_BY_FD says the same: jited_prog_len 0)
    real_text = norm_ids(real.stdout).replace("prog_jited:\t1", "prog_jited:\t0")
    assert norm_ids(emu.stdout) == real_text
    assert "flags:\t02\n" in emu.stdout                # the dup has no O_CLOEXEC, as in real
    assert emu.stdout.rstrip().endswith(f"\n0-{os.cpu_count() - 1}")


def test_bpftool_map_show_prints_memlock_like_real_kernel(workdir):
    need_host()
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    script = (f"bpftool map create {pin} type array key 4 value 8 entries 16 name a flags 1024 && "
              f"bpftool map show pinned {pin} && bpftool -j map show pinned {pin}")
    try:
        real = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=ENV)
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
    emu, _ = run_under(workdir, ["sh", "-c", script])
    assert emu.returncode == real.returncode == 0, emu.stderr + real.stderr
    norm = lambda s: re.sub(r'"id":\d+', '"id":ID', re.sub(r"^\d+:", "ID:", s, flags=re.M))  # noqa: E731
    assert "memlock 8192B" in emu.stdout                  # from /proc/self/fdinfo
    assert norm(emu.stdout) == norm(real.stdout)


def test_open_bpffs_paths(workdir):
    # `ls DIR` stat()s DIR first, and stat is not emulated: only the mount root (which
    # exists on the host too) can be listed by ls; any bpffs directory can be opened
    script = "\n".join([
        "mkdir /sys/fs/bpf/d",
        "bpftool map create /sys/fs/bpf/d/m type array key 4 value 4 entries 2 name a",
        "ls -a /sys/fs/bpf/",
        "python3 -c 'import os; print(os.listdir(\"/sys/fs/bpf/d\"))'",
        "cat /sys/fs/bpf/d/m 2>&1 | sed 's/^cat: //'",
        "cat /sys/fs/bpf/nope 2>&1 | sed 's/^cat: //'",
        "rm /sys/fs/bpf/d/m; rmdir /sys/fs/bpf/d; ls /sys/fs/bpf | wc -l",
    ])
    r, trace = run_under(workdir, ["sh", "-c", script], trace=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [".", "..", "d", "['m']",
                                     "/sys/fs/bpf/d/m: Input/output error",
                                     "/sys/fs/bpf/nope: No such file or directory", "0"]
    assert 'open("/sys/fs/bpf/d/m") = -1 EIO' in trace


def test_open_pin_is_eio_on_real_kernel_too():
    need_host()
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    subprocess.run(["bpftool", "map", "create", pin, "type", "array", "key", "4", "value", "4",
                    "entries", "2", "name", "a"], check=True, env=ENV)
    try:
        r = subprocess.run(["cat", pin], capture_output=True, text=True, env=ENV)
    finally:
        os.unlink(pin)
    assert r.stderr == f"cat: {pin}: Input/output error\n"


def test_other_opens_continue(workdir):
    r, trace = run_under(workdir, ["sh", "-c", "cat /proc/self/fdinfo/0 | head -1; "
                                               "head -c 3 /etc/hostname >/dev/null; echo ok"],
                         trace=True)
    assert r.returncode == 0
    assert r.stdout == "pos:\t0\nok\n"
    assert trace == ""
