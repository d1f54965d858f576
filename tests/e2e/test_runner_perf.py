"""perf events under `fakekernel run` (fakekernel/runner/perf.py, vfiles.py): a C client attaches a
TRACEPOINT program the libbpf/bcc way (tracefs id file, perf_event_open, PERF_EVENT_IOC_SET_BPF,
ENABLE, QUERY_BPF, a perf link) next to a real cpu-clock event, unprivileged under the runner,
and a counting program on syscalls:sys_enter_openat sees the client's own openat calls;
the same client run as root on the real kernel (with a tracefs mounted for it) prints the same.
A second client reads a perf buffer (mmap + epoll) that an XDP program's
bpf_perf_event_output fills during PROG_TEST_RUN, on both kernels.
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


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fk-perf-")
    os.chmod(d, 0o755)
    if os.getuid() == 0:
        os.chown(d, NOBODY, NOBODY)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def _compile(workdir, name: str) -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    exe = workdir / name
    subprocess.run([cc, "-O1", "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    os.chmod(exe, 0o755)
    return str(exe)


@pytest.fixture(scope="module")
def client(workdir):
    return _compile(workdir, "runner_perf_client")


@pytest.fixture(scope="module")
def output_client(workdir):
    return _compile(workdir, "runner_perf_output")


def run_under(workdir, cmd, *, trace=False):
    tracefile = workdir / "trace.txt"
    argv = [sys.executable, str(AS_USER)] + (["--trace", str(tracefile)] if trace else [])
    env = {**ENV, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
    r = subprocess.run(argv + ["--", *cmd], cwd=workdir, capture_output=True, text=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)
    return r, (tracefile.read_text() if trace and tracefile.exists() else "")


@pytest.fixture(scope="module")
def real_tracefs():
    """A tracefs mount for the real-kernel run (this machine does not mount one)."""
    if os.getuid() != 0:
        unavailable("mounting tracefs needs root")
    d = tempfile.mkdtemp(prefix="fk-tracefs-")
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", d], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        unavailable(f"cannot mount tracefs: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", d], check=False)
    os.rmdir(d)


@pytest.fixture(scope="module")
def runner_output(workdir, client):
    r, trace = run_under(workdir, [client, "/sys/kernel/tracing"], trace=True)
    assert "internal error" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, trace


def test_runner_perf_tracepoint_attach(runner_output):
    out, _ = runner_output
    lines = out.splitlines()
    assert lines[0] == "id: 782"
    for want in ("perf_event_open tracepoint: ok", "SET_BPF tracepoint prog: ok",
                 "SET_BPF again: -1 EEXIST", "SET_BPF socket filter: -1 EINVAL",
                 "QUERY_BPF: ok prog_cnt 1 ids[1] 0", "perf link: ok",
                 "SET_BPF on linked event: -1 EEXIST", "SET_BPF after link close: ok",
                 "bpf output event: ok, in perf array: ok", "cpu-clock: ok, ENABLE ok",
                 "perf ioctl on stdin: -1 ENOTTY",
                 "openat count: ok 3"):        # syscalls:sys_enter_openat fired for the target
        assert want in lines, (want, out)


def test_runner_perf_trace_shows_emulated_and_real_events(runner_output):
    _, trace = runner_output
    # the tracepoint and BPF output events are the emulated kernel's; cpu-clock and the
    # ioctl on stdin went to the real kernel (no trace line for them)
    assert "perf_event_open({type=2, config=0x30e}, -1, 0, -1, 0x8) = " in trace
    assert "perf_event_open({type=1, config=0xa}" in trace
    assert "perf_event_open({type=1, config=0x0}" not in trace
    assert "ioctl(0, " not in trace


def test_runner_perf_matches_real_kernel(runner_output, client, real_tracefs):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    r = subprocess.run([client, real_tracefs], capture_output=True, text=True, env=ENV, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert runner_output[0] == r.stdout


OUTPUT_EXPECTED = """\
event ok mmap ok
update: 0
epoll_ctl: 0
epoll_wait before: 0
progs: ok ok
run: 0
epoll_wait after: 1 data 0xabc
run empty slot: -2
data_head 32 data_offset 4096 data_size 8192
ring:0900000001002000140000008877665544000102030405060708090a0b0c0d00
run again: 0
data_head 64
"""


def test_runner_perf_buffer_mmap_epoll(workdir, output_client):
    r, trace = run_under(workdir, [output_client], trace=True)
    assert "internal error" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == OUTPUT_EXPECTED
    assert "epoll_ctl(" in trace            # the emulated event went through the epoll bridge


def test_runner_perf_buffer_real_kernel_agrees(output_client):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    r = subprocess.run([output_client], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == OUTPUT_EXPECTED
