"""bpftool with clang-built programs under `fakekernel run` (as uid 65534) and as root on the
real kernel: `prog loadall` / `prog load` of an object with XDP, tc, socket-filter and
cgroup_skb programs, global data and a BTF-typed hash map; `ls` and `rm -r` of the pin
directories (the runner answers stat/access for bpffs paths); `prog show` (plain and -j);
`map show`; `cgroup attach/show/detach` on the cgroup2 root (a directory the target opens
natively, mirrored into the emulated hierarchy); `net attach/show/detach xdp` on lo
(rtnetlink RTM_SETLINK/GETLINK over the runner's emulated NETLINK_ROUTE socket).  The outputs must agree line by line
once ids, load times and the JIT's fields are normalised: fakekernel does not JIT
(`not jited`), and its xlated programs lack the kernel's inlined map lookups (a
difference `prog dump xlated` would show; see issue 6).
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

from backends import host_unavailable_reason, unavailable

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
AS_USER = HERE / "runner_as_user.py"
NOBODY = 65534
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
CGROUP2 = "/sys/fs/cgroup/unified"


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fk-bpftool-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def progs_obj(workdir):
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None or shutil.which("bpftool", path=ENV["PATH"]) is None:
        unavailable("clang and bpftool are needed")
    obj = workdir / "progs.bpf.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(HERE / "libbpf" / "progs.bpf.c"), "-o", str(obj)], check=True)
    os.chmod(obj, 0o644)
    return obj


def script(obj: pathlib.Path, pins: str) -> str:
    return "\n".join([
        f"mkdir {pins}",
        f"bpftool prog loadall {obj} {pins}/all",
        f"ls {pins}/all",
        f"test -e {pins}/all/xdp_pass && echo pinned",
        f"bpftool prog show pinned {pins}/all/xdp_pass",
        f"bpftool -j prog show pinned {pins}/all/tc_ok",
        f"bpftool prog show pinned {pins}/all/sock_all",
        f"bpftool prog load {obj} {pins}/one type xdp",
        f"bpftool prog show pinned {pins}/one",
        # only the pinned program of `prog load` outlives bpftool (the others died with its
        # fds: close accounting of a process that also mmap()ed global data)
        "bpftool prog show | grep -cE 'name (xdp_pass|tc_ok|sock_all|cg_in) '",
        "bpftool map show name hits",
        f"bpftool cgroup attach {CGROUP2} ingress pinned {pins}/all/cg_in multi",
        f"bpftool cgroup show {CGROUP2}",
        f"bpftool cgroup detach {CGROUP2} ingress pinned {pins}/all/cg_in",
        f"bpftool cgroup show {CGROUP2}",
        f"bpftool net attach xdp pinned {pins}/all/xdp_pass dev lo",
        "bpftool net show dev lo",
        "bpftool -j net show dev lo",
        f"bpftool net attach xdp pinned {pins}/one dev lo || echo refused: busy",
        "bpftool net detach xdp dev lo",
        "bpftool net show dev lo",
        f"rm -r {pins}",
        f"ls {pins} 2>&1 | sed 's/^ls: //'",
        "",
    ])


def normalise(out: str) -> str:
    out = re.sub(r"^\d+: ", "ID: ", out, flags=re.M)
    out = re.sub(r"^\d+ +", "ID ", out, flags=re.M)        # `cgroup show`: %-8u ids
    out = re.sub(r'"(id|loaded_at|btf_id)":\d+', r'"\1":N', out)
    out = re.sub(r"(map_ids|btf_id) [\d,]+", r"\1 N", out)
    out = re.sub(r'"map_ids":\[[\d,]+\]', '"map_ids":[N]', out)
    out = re.sub(r"loaded_at \S+", "loaded_at T", out)
    out = re.sub(r"xlated \d+B  (jited \d+B|not jited)", "xlated ?B  jit ?", out)
    out = re.sub(r'"bytes_xlated":\d+,"jited":(true,"bytes_jited":\d+|false)', '"jit":?', out)
    out = re.sub(r"\bid \d+", "id N", out)                   # `net show`: lo(1) generic id N
    out = re.sub(r'"id":\d+', '"id":N', out)
    out = re.sub(r"\buid \d+", "uid U", out)
    out = re.sub(r'"uid":\d+', '"uid":U', out)
    return out


@pytest.mark.parametrize("interception", ["seccomp", "preload"])
def test_bpftool_prog_loadall_show_cgroup_matches_real_kernel(workdir, progs_obj, interception):
    """Both ways the runner reaches a target: seccomp notification, and the LD_PRELOAD
    fallback (`--preload`) used where seccomp notification is unavailable."""
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    pins = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    try:
        real = subprocess.run(["sh", "-c", script(progs_obj, pins)], capture_output=True,
                              text=True, env=ENV, timeout=120)
    finally:
        subprocess.run(["rm", "-rf", pins])
        subprocess.run(["bpftool", "net", "detach", "xdp", "dev", "lo"], capture_output=True, env=ENV)
    assert real.returncode == 0, real.stderr
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    mode = ["--preload"] if interception == "preload" else []
    emu = subprocess.run([sys.executable, str(AS_USER), *mode, "--", "sh", "-c",
                          script(progs_obj, pins)],
                         cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert emu.returncode == 0, emu.stderr
    assert (normalise(emu.stdout), emu.stderr) == (normalise(real.stdout), real.stderr)
    assert "cg_in" in real.stdout and "xdp_pass" in real.stdout and "pinned\n" in real.stdout
    assert "lo(1) generic id" in real.stdout
