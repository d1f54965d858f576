"""`fakekernel run --state DIR`: pins outlive one command, as bpffs pins outlive a process.

Each bpftool command runs in its own `fakekernel run --state` (as uid 65534) and, on the
real kernel, as its own root process; the outputs must agree (ids normalised).
"""
from __future__ import annotations

import json
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
CLANG = shutil.which("clang-19") or shutil.which("clang")

COUNTER_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32);
         __type(value, __u64); } counts SEC(".maps");
SEC("xdp") int count_pkts(struct xdp_md *ctx)
{
	__u32 k = 1;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fk-state-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def bpftool():
    exe = shutil.which("bpftool", path=ENV["PATH"])
    if exe is None:
        pytest.skip("bpftool not installed (Debian package `bpftool`)")
    return exe


def run_state(workdir: pathlib.Path, state: pathlib.Path, cmd: list[str]):
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    return subprocess.run([sys.executable, str(AS_USER), "--state", str(state), "--", *cmd],
                          cwd=workdir, capture_output=True, text=True, env=env, timeout=300)


def run_real(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def norm(out: str) -> str:
    out = re.sub(r"^\d+: ", "ID: ", out, flags=re.M)
    out = re.sub(r'"id":\d+', '"id":ID', out)
    return out


def map_commands(pin: str) -> list[list[str]]:
    return [
        ["bpftool", "map", "create", pin, "type", "hash", "key", "4", "value", "4", "entries", "8",
         "name", "m", "flags", "64"],
        ["bpftool", "map", "update", "pinned", pin, "key", "1", "0", "0", "0", "value", "2", "0",
         "0", "0"],
        ["bpftool", "map", "update", "pinned", pin, "key", "7", "0", "0", "0", "value", "9", "0",
         "0", "0"],
        ["bpftool", "map", "dump", "pinned", pin],
        ["bpftool", "map", "show", "pinned", pin],
        ["bpftool", "-j", "map", "show", "pinned", pin],
        ["rm", pin],
        ["bpftool", "map", "show", "pinned", pin],
    ]


def test_state_pins_outlive_each_command(workdir, bpftool):
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    outs = []
    for cmd in map_commands(pin):
        r = run_state(workdir, state, cmd)
        outs.append((r.returncode, norm(r.stdout), r.stderr))
    # (the real kernel's order for these keys in a zero-seed 8-bucket table)
    assert outs[3][:2] == (0, "key: 07 00 00 00  value: 09 00 00 00\n"
                              "key: 01 00 00 00  value: 02 00 00 00\nFound 2 elements\n")
    assert outs[-1][0] != 0 and "No such file or directory" in outs[-1][2]
    doc = json.loads((state / "state.json").read_text())
    assert doc["bpffs"]["children"] == {} and doc["maps"] == []     # unpinned: gone


def test_state_matches_real_kernel_command_by_command(workdir, bpftool):
    reason = host_unavailable_reason()
    if reason is not None:
        pytest.skip(f"real kernel unavailable: {reason}")
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    try:
        real = [run_real(c) for c in map_commands(pin)]
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
    emu = [run_state(workdir, state, c) for c in map_commands(pin)]
    for c, r, e in zip(map_commands(pin), real, emu):
        assert (e.returncode, norm(e.stdout), e.stderr) == (r.returncode, norm(r.stdout), r.stderr), c


@pytest.fixture(scope="module")
def counter_obj(workdir):
    if CLANG is None:
        pytest.skip("clang not installed")
    src = workdir / "counter.bpf.c"
    src.write_text(COUNTER_C)
    obj = workdir / "counter.bpf.o"
    r = subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a BPF object: {r.stderr[:200]}")
    os.chmod(obj, 0o644)
    return str(obj)


def _prog_head(out: str) -> str:
    """`ID: xdp  name count_pkts  tag ...  gpl` -- the line both kernels print alike."""
    return norm(out).splitlines()[0]


def test_state_pinned_prog_reloads_same_program(workdir, bpftool, counter_obj):
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    pin = f"/sys/fs/bpf/fk-{uuid.uuid4().hex[:8]}"
    r1 = run_state(workdir, state, ["sh", "-c", f"bpftool prog load {counter_obj} {pin} && "
                                                f"bpftool prog show pinned {pin}"])
    assert r1.returncode == 0, r1.stderr
    r2 = run_state(workdir, state, ["bpftool", "prog", "show", "pinned", pin])
    assert r2.returncode == 0, r2.stderr
    assert _prog_head(r2.stdout) == _prog_head(r1.stdout)
    assert re.search(r"^\d+: xdp  name count_pkts  tag [0-9a-f]{16}  gpl$", r2.stdout, re.M)
    # the map it uses came back too (unpinned, reachable from the program), same id
    ids1 = re.search(r"map_ids (\d+)", r1.stdout).group(1)
    r3 = run_state(workdir, state, ["bpftool", "map", "dump", "id", ids1])
    assert r3.returncode == 0, r3.stderr
    # the map came back with its BTF: bpftool prints the elements BTF-formatted
    assert '"key": 3,' in r3.stdout
    if host_unavailable_reason() is None:
        map_id = ("$(bpftool prog show pinned " + pin + " -j | python3 -c "
                  "'import json,sys; print(json.load(sys.stdin)[\"map_ids\"][0])')")
        try:
            real = run_real(["sh", "-c", f"bpftool prog load {counter_obj} {pin} && "
                                         f"bpftool prog show pinned {pin} && echo --- && "
                                         f"bpftool map dump id {map_id}"])
        finally:
            if os.path.exists(pin):
                os.unlink(pin)
        assert real.returncode == 0, real.stderr
        head, dump = real.stdout.split("---\n")
        assert _prog_head(head) == _prog_head(r2.stdout)     # same name and tag
        assert dump == r3.stdout                              # the restored map dumps alike
    assert run_state(workdir, state, ["rm", pin]).returncode == 0


def test_state_bad_file_is_reported(workdir):
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    state.mkdir()
    os.chmod(state, 0o777)
    (state / "state.json").write_text('{"format": "fakekernel-state", "version": 99}')
    r = run_state(workdir, state, ["true"])
    assert r.returncode == 125
    assert "state format version 99" in r.stderr
