"""The runner's ptrace fallback (runner/ptrace.py) serving statically linked targets as uid
65534: forced (`--ptrace`, RET_TRACE filter), and auto-selected where seccomp notification
cannot reach bpf() -- behind a Docker-like outer filter answering bpf() with EPERM (ERRNO
outranks TRACE: every syscall stops) and behind an outer listener (EBUSY; its USER_NOTIF
outranks TRACE too).  The static C client prints what it prints on the real kernel as root
(runner_client.expected, checked by test_runner.py) and what it prints under seccomp
notification; the static Go binary (threads) likewise.  Where ptrace itself is refused
the runner says so (exit 125).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from backends import unavailable

pytestmark = pytest.mark.e2e

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
AS_USER = HERE / "runner_as_user.py"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
       "PYTHONPATH": str(REPO)}
C_EXPECTED = (HERE / "runner_client.expected").read_text()
GO_EXPECTED = """\
map_create: ok
lookup 39: no such file or directory
entries: 32 sum: 112048
get_next_key bad fd: -1 bad file descriptor
unknown command: -1 invalid argument
"""

# an outer seccomp filter (installed as root, before dropping to nobody in runner_as_user)
# returning ERRNO(EPERM) for the syscalls named in argv[1] -- Docker's default profile does
# that for bpf(), and for ptrace() without CAP_SYS_PTRACE on old kernels
OUTER_FILTER = """
import runpy, sys
from uapi.seccomp import (Cbpf, NR_X86_64, PR_SET_NO_NEW_PRIVS, SeccompOp, SeccompRet, ffi,
                          libc, sock_filter_bytes)
from uapi.errno import Errno
nrs = [int(x) for x in sys.argv[1].split(",")]
prog = [(Cbpf.LD | Cbpf.W | Cbpf.ABS, 0, 0, ffi.offsetof("struct seccomp_data", "nr"))]
for i, nr in enumerate(nrs):
    prog.append((Cbpf.JMP | Cbpf.JEQ | Cbpf.K, len(nrs) - i, 0, nr))
prog += [(Cbpf.RET | Cbpf.K, 0, 0, SeccompRet.ALLOW),
         (Cbpf.RET | Cbpf.K, 0, 0, SeccompRet.ERRNO | Errno.EPERM)]
raw = sock_filter_bytes(prog)
buf = ffi.new("char[]", raw)
fprog = ffi.new("struct sock_fprog *")
fprog.len = len(raw) // ffi.sizeof("struct sock_filter")
fprog.filter = ffi.cast("struct sock_filter *", buf)
assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
L = lambda v: ffi.cast("long", v)
assert libc.syscall(L(NR_X86_64.seccomp), L(SeccompOp.SET_MODE_FILTER), L(0), fprog) == 0
sys.argv = [sys.argv[2]] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
NR_BPF, NR_PTRACE = 321, 101
# 4 threads + a forked child each create/update/lookup/close 50 maps at once: new fds are
# installed in one thread (socket/bind/recvmsg/dup3/close run inside it) while the others
# run; afterwards no fd is left behind (the lowest free fd is 3 again)
MT_CLIENT = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/bpf.h>
static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(321, cmd, a, sizeof(*a)); }
static int errors;
static void *worker(void *arg)
{
	for (int i = 0; i < 50; i++) {
		union bpf_attr a; memset(&a, 0, sizeof a);
		a.map_type = BPF_MAP_TYPE_ARRAY; a.key_size = 4; a.value_size = 4; a.max_entries = 1;
		int fd = sys_bpf(BPF_MAP_CREATE, &a);
		if (fd < 0) { __sync_fetch_and_add(&errors, 1); continue; }
		unsigned int k = 0, v = i;
		memset(&a, 0, sizeof a); a.map_fd = fd; a.key = (unsigned long)&k; a.value = (unsigned long)&v;
		if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a)) __sync_fetch_and_add(&errors, 1);
		v = 99;
		if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) || v != (unsigned)i) __sync_fetch_and_add(&errors, 1);
		close(fd);
	}
	return NULL;
}
int main(void)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
	pid_t p = fork();
	if (p == 0) { worker(NULL); _exit(errors); }
	for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
	int st; waitpid(p, &st, 0);
	printf("errors %d child %d\n", errors, WEXITSTATUS(st));
	int fd = open("/dev/null", 0);
	printf("lowest fd after: %d\n", fd);
	return 0;
}
"""


@pytest.fixture(scope="module")
def static():
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-ptrace-"))
    os.chmod(d, 0o777)                      # nobody writes its traces and caches here
    exe = d / "client-static"
    r = subprocess.run([cc, "-O1", "-static", "-o", str(exe), str(HERE / "runner_client.c")],
                       capture_output=True)
    if r.returncode != 0:
        shutil.rmtree(d)
        unavailable("no static libc to link a static client (libc6-dev)")
    go = shutil.which("go", path=ENV["PATH"])
    gobin = None
    if go is not None:
        gobin = d / "bpfraw"
        genv = {**ENV, "CGO_ENABLED": "0", "HOME": str(d), "GOCACHE": str(d / "cache"),
                "GOPATH": str(d / "gopath"), "GOFLAGS": "-mod=mod"}
        subprocess.run([go, "build", "-o", str(gobin), str(HERE / "go" / "bpfraw.go")],
                       check=True, env=genv, cwd=d, capture_output=True)
        os.chmod(gobin, 0o755)
    mt = d / "mt"
    (d / "mt.c").write_text(MT_CLIENT)
    subprocess.run([cc, "-O1", "-static", "-pthread", "-o", str(mt), str(d / "mt.c")],
                   check=True)
    yield d, exe, gobin
    shutil.rmtree(d, ignore_errors=True)


def _run(d, *argv, outer: list[int] | None = None, timeout=180):
    env = {**ENV, "HOME": str(d), "XDG_CACHE_HOME": str(d / "xdg")}
    head = [sys.executable, str(AS_USER)]
    if outer is not None:
        head = [sys.executable, "-c", OUTER_FILTER, ",".join(map(str, outer)), str(AS_USER)]
    return subprocess.run([*head, *argv], capture_output=True, text=True, env=env, cwd=d,
                          timeout=timeout)


def test_forced_ptrace_serves_the_static_c_client(static):
    d, exe, _ = static
    r = _run(d, "--ptrace", "--trace", str(d / "t1"), "--", str(exe))
    assert (r.returncode, r.stdout, r.stderr) == (0, C_EXPECTED, "")
    assert "SECCOMP_RET_TRACE" in (d / "t1").read_text()


def test_ptrace_output_equals_seccomp_notify_output(static):
    d, exe, _ = static
    notify = _run(d, "--", str(exe))
    traced = _run(d, "--ptrace", "--", str(exe))
    assert notify.returncode == traced.returncode == 0
    assert traced.stdout == notify.stdout == C_EXPECTED


def test_docker_like_eperm_filter_falls_back_to_ptrace_syscall_stops(static):
    """ERRNO outranks TRACE: the probe gets EPERM from the outer filter, so the tracer
    stops at every syscall entry, before seccomp, and answers bpf() there."""
    d, exe, _ = static
    r = _run(d, "--trace", str(d / "t2"), "--", str(exe), outer=[NR_BPF])
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED
    assert "Docker" in r.stderr and "falling back to ptrace interception" in r.stderr
    assert "PTRACE_SYSCALL" in (d / "t2").read_text()


def test_nested_listener_ebusy_falls_back_to_ptrace(static):
    """An outer listener's USER_NOTIF outranks TRACE for bpf(): syscall-stop mode too.
    (Run as the invoking user: nobody could not exec this interpreter.)"""
    d, exe, _ = static
    run = [sys.executable, "-m", "fakekernel.cli", "run"]      # as test_runner_fallback.py
    r = subprocess.run([*run, "--", *run, "--trace", str(d / "t3"), "--", str(exe)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == C_EXPECTED
    assert "Device or resource busy" in r.stderr
    assert "falling back to ptrace interception" in r.stderr
    assert "PTRACE_SYSCALL" in (d / "t3").read_text()


def test_ptrace_forks_and_execs_share_one_kernel(static):
    """sh forks and execs the static client twice; the first run's maps are gone before the
    second starts (same output twice), and the second exec gets a fresh scratch page."""
    d, exe, _ = static
    r = _run(d, "--ptrace", "--", "/bin/sh", "-c", f"{exe}; {exe}")
    assert (r.returncode, r.stdout, r.stderr) == (0, C_EXPECTED * 2, "")


def test_ptrace_static_go_binary_threads(static):
    d, _, gobin = static
    if gobin is None:
        unavailable("go is not installed (Debian package golang-go)")
    r = _run(d, "--ptrace", "--", str(gobin))
    assert (r.returncode, r.stdout, r.stderr) == (0, GO_EXPECTED, "")


def test_static_go_binary_behind_eperm_filter(static):
    d, _, gobin = static
    if gobin is None:
        unavailable("go is not installed (Debian package golang-go)")
    r = _run(d, "--", str(gobin), outer=[NR_BPF])
    assert (r.returncode, r.stdout) == (0, GO_EXPECTED), r.stderr


def test_ptrace_refused_static_target_names_both_causes(static):
    d, exe, _ = static
    r = _run(d, "--", str(exe), outer=[NR_BPF, NR_PTRACE])
    assert r.returncode == 125
    assert r.stdout == ""
    assert "LD_PRELOAD fallback cannot serve it either" in r.stderr
    assert "ptrace is not permitted here" in r.stderr


def test_forced_ptrace_refused_exit_125(static):
    d, exe, _ = static
    r = _run(d, "--ptrace", "--", str(exe), outer=[NR_PTRACE])
    assert (r.returncode, r.stdout) == (125, "")
    assert "ptrace is not permitted here (Operation not permitted)" in r.stderr


def test_ptrace_exit_status_and_signal_death(static):
    d, _, _ = static
    r = _run(d, "--ptrace", "--", "/bin/sh", "-c", "exit 7")
    assert r.returncode == 7
    r = _run(d, "--ptrace", "--", "/bin/sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15


@pytest.mark.parametrize("outer", [None, [NR_BPF]], ids=["ret-trace", "syscall-stops"])
def test_ptrace_threads_and_fork_install_fds_concurrently(static, outer):
    d, _, _ = static
    flags = ("--ptrace",) if outer is None else ()
    r = _run(d, *flags, "--", str(d / "mt"), outer=outer)
    assert (r.returncode, r.stdout) == (0, "errors 0 child 0\nlowest fd after: 3\n"), r.stderr


def test_ptrace_group_stop_waits_for_sigcont(static):
    """A traced shell stopping itself stays stopped (PTRACE_LISTEN) until its child's
    SIGCONT: "sent" is printed before "resumed"."""
    d, _, _ = static
    r = _run(d, "--ptrace", "--", "/bin/sh", "-c",
             '(sleep 0.3; echo sent; kill -CONT $$) & kill -STOP $$; echo resumed; wait')
    assert (r.returncode, r.stdout, r.stderr) == (0, "sent\nresumed\n", "")


def test_ptrace_python_trampoline_without_compiler(static):
    """FAKEKERNEL_TRAMPOLINE=python: the trampoline's steps run in a fresh interpreter
    (as the invoking user: nobody could not exec this interpreter)."""
    d, exe, _ = static
    r = subprocess.run([sys.executable, "-m", "fakekernel.cli", "run", "--ptrace", "--",
                        str(exe)], capture_output=True, text=True, timeout=180,
                       env={**ENV, "FAKEKERNEL_TRAMPOLINE": "python"})
    assert (r.returncode, r.stdout, r.stderr) == (0, C_EXPECTED, "")
