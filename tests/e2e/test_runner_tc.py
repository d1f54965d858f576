"""tc on lo through `fakekernel run` (as uid 65534) and as root on the real kernel: libbpf's
tc API (bpf_tc_hook_create / bpf_tc_attach / bpf_tc_query / bpf_tc_detach /
bpf_tc_hook_destroy, tests/e2e/tc/tc_loader.c) and iproute2's `tc qdisc add dev lo clsact`,
`tc filter add/show/get/del ... bpf (da) pinned`, `tc -s qdisc show` and `bpftool net show`
(rtnetlink RTM_*QDISC / RTM_*TFILTER / RTM_GETTCLASS over the runner's emulated
NETLINK_ROUTE socket).  Outputs must agree once program ids and the JIT marker are
normalised.  Programs are loaded and pinned with bpftool, and by tc itself from an object
file (`tc ... bpf obj FILE`), which makes iproute2 set up its bpffs work directory
(/sys/fs/bpf/tc/globals and the xdp -> tc symlink: mkdir, symlink, lstat, readlink on bpffs).
"""
from __future__ import annotations

import os
import pathlib
import re
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


def _tools() -> dict:
    tools = {"clang": shutil.which("clang-19") or shutil.which("clang"), "gcc": shutil.which("gcc"),
             "tc": shutil.which("tc", path=ENV["PATH"]),
             "bpftool": shutil.which("bpftool", path=ENV["PATH"])}
    missing = [k for k, v in tools.items() if v is None]
    if missing or not pathlib.Path("/usr/include/bpf/libbpf.h").exists():
        unavailable(f"needs clang, gcc, tc, bpftool and libbpf-dev (missing: {missing})")
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    return tools


@pytest.fixture(scope="module")
def workdir():
    tools = _tools()
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-tc-"))
    os.chmod(d, 0o755)
    subprocess.run([tools["clang"], "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(HERE / "tc" / "tc_cls.bpf.c"), "-o", str(d / "tc_cls.bpf.o")], check=True)
    subprocess.run([tools["gcc"], "-O1", "-o", str(d / "tc_loader"), str(HERE / "tc" / "tc_loader.c"),
                    "-lbpf"], check=True)
    for f in d.iterdir():
        os.chmod(f, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d)


def _cleanup_lo():
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "clsact"], capture_output=True, env=ENV)


def both_ways(workdir: pathlib.Path, cmd: list[str], mode: tuple = ()):
    """(real, emulated) CompletedProcess of `cmd` in `workdir`; `mode` ("--preload",) picks
    the runner's LD_PRELOAD fallback over seccomp notification."""
    _cleanup_lo()
    try:
        real = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        _cleanup_lo()
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    emu = subprocess.run([sys.executable, str(AS_USER), *mode, "--", *cmd], cwd=workdir,
                         capture_output=True, text=True, env=env, timeout=300)
    return real, emu


def test_libbpf_tc_api_on_lo_matches_real_kernel(workdir):
    real, emu = both_ways(workdir, ["./tc_loader"])
    assert real.returncode == 0, real.stderr
    assert emu.returncode == 0, emu.stderr
    assert (emu.stdout, emu.stderr) == (real.stdout, real.stderr)
    assert "attach auto: 0 handle 1 priority 49152 prog prog2" in real.stdout


SCRIPT = """
P=/sys/fs/bpf/fk-tc-$$
mkdir $P
bpftool prog load tc_cls.bpf.o $P/cls type classifier
tc qdisc add dev lo clsact
tc qdisc show dev lo
tc qdisc add dev lo clsact || echo refused
tc qdisc add dev lo handle ffff: ingress || echo refused
tc filter add dev lo ingress bpf da pinned $P/cls
tc filter add dev lo egress prio 7 handle 3 bpf pinned $P/cls classid 1:2
tc filter add dev lo egress prio 7 handle 3 bpf pinned $P/cls classid 1:2 || echo refused
tc filter replace dev lo egress prio 7 handle 3 bpf da pinned $P/cls
tc filter add dev lo ingress prio 5 protocol ip bpf da pinned $P/cls
tc filter add dev lo ingress prio 5 protocol ipv6 bpf da pinned $P/cls || echo refused
tc filter show dev lo ingress
tc filter show dev lo egress
tc filter get dev lo egress prio 7 handle 3 protocol all bpf
tc filter get dev lo egress prio 8 handle 3 protocol all bpf || echo refused
tc -s qdisc show dev lo | sed 's/Sent.*/Sent N/;s/backlog.*/backlog N/'
bpftool net show dev lo
bpftool -j net show dev lo
tc filter del dev lo ingress prio 5
tc filter del dev lo ingress prio 5 || echo refused
tc filter del dev lo ingress
tc filter show dev lo ingress
tc qdisc del dev lo clsact
tc qdisc del dev lo clsact || echo refused
tc qdisc show dev lo
bpftool net show dev lo
rm -r $P
"""


def normalise(out: str) -> str:
    out = re.sub(r"\bid \d+", "id N", out)
    out = re.sub(r'"id":\d+', '"id":N', out)
    return out.replace(" jited ", " ")


@pytest.mark.parametrize("mode", [(), ("--preload",)], ids=["seccomp", "preload"])
def test_tc_and_bpftool_net_on_lo_match_real_kernel(workdir, mode):
    real, emu = both_ways(workdir, ["sh", "-c", SCRIPT], mode)
    assert real.returncode == 0, real.stderr
    assert emu.returncode == 0, emu.stderr
    assert (normalise(emu.stdout), emu.stderr) == (normalise(real.stdout), real.stderr)
    assert "lo(1) clsact/ingress cls:[*fsobj] id" in real.stdout
    assert "direct-action not_in_hw" in real.stdout


OBJ_SCRIPT = """
tc qdisc add dev lo clsact
tc filter add dev lo ingress bpf da obj tc_cls.bpf.o sec tc
tc filter show dev lo ingress
test -d /sys/fs/bpf/tc/globals && echo globals
test -L /sys/fs/bpf/xdp && echo link
readlink /sys/fs/bpf/xdp
stat -c '%F %s' /sys/fs/bpf/xdp
stat -L -c '%F' /sys/fs/bpf/xdp
tc qdisc del dev lo clsact
"""


def test_tc_loads_an_object_file_on_lo_like_real_kernel(workdir):
    real, emu = both_ways(workdir, ["sh", "-c", OBJ_SCRIPT])
    assert real.returncode == 0, real.stderr
    assert emu.returncode == 0, emu.stderr
    assert (normalise(emu.stdout), emu.stderr) == (normalise(real.stdout), real.stderr)
    assert "tc_cls.bpf.o:[tc] direct-action not_in_hw id" in real.stdout
    assert "link\n/sys/fs/bpf/tc/\nsymbolic link" in real.stdout
