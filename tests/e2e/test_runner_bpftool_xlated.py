"""`bpftool prog dump xlated` of clang-built XDP, tc, socket-filter and cgroup_skb programs under
`fakekernel run` (as uid 65534) against root on the real kernel: the ctx accesses appear as
struct sk_buff / xdp_buff loads and the hash-map lookup inlined (``__htab_map_lookup_elem`` and
the step to the value), as the 6.18 kernel shows them.

What is normalised: map ids, and the helper call targets.  bpftool names a call through
/proc/kallsyms (the imm is an address relative to __bpf_call_base); the target of the runner
reads the host's /proc/kallsyms, whose addresses an unprivileged reader sees as 0, so the call
lines are compared without their target (``call ?``).
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


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fk-xlated-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def progs_obj(workdir):
    """tests/e2e/libbpf/progs.bpf.c built with clang (as test_runner_bpftool_progs.py does)."""
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None or shutil.which("bpftool", path=ENV["PATH"]) is None:
        unavailable("clang and bpftool are needed")
    obj = workdir / "progs.bpf.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(HERE / "libbpf" / "progs.bpf.c"), "-o", str(obj)], check=True)
    os.chmod(obj, 0o644)
    return obj

PROGS = ("xdp_pass", "tc_ok", "sock_all", "cg_in")


def script(obj, pins: str) -> str:
    return "\n".join([f"mkdir {pins}", f"bpftool prog loadall {obj} {pins}/all"]
                     + [f"bpftool prog dump xlated pinned {pins}/all/{p}" for p in PROGS]
                     + [f"rm -r {pins}", ""])


def normalise(out: str) -> str:
    out = re.sub(r"map\[id:\d+\]", "map[id:M]", out)
    out = re.sub(r"call \S+#-?\d+", "call ?", out)
    return out


def test_bpftool_prog_dump_xlated_matches_real_kernel(workdir, progs_obj):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    pins = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    try:
        real = subprocess.run(["sh", "-c", script(progs_obj, pins)], capture_output=True, text=True,
                              env=ENV, timeout=120)
    finally:
        subprocess.run(["rm", "-rf", pins])
    assert real.returncode == 0, real.stderr
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    emu = subprocess.run([sys.executable, str(AS_USER), "--", "sh", "-c", script(progs_obj, pins)],
                         cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert emu.returncode == 0, emu.stderr
    assert (normalise(emu.stdout), emu.stderr) == (normalise(real.stdout), real.stderr)
    # the rewrites the comparison covers: skb->len, xdp_buff loads, the inlined hash lookup
    assert "r1 = *(u32 *)(r1 +112)" in real.stdout or "*(u32 *)(r6 +112)" in real.stdout
    assert "r0 += 56" in real.stdout
