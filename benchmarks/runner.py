"""`fakekernel run` overhead: an intercepted bpf() vs the real syscall, and bpftool wall time.

    python3 benchmarks/runner.py [--calls N] [--repeat R]

1. A C client (compiled here with cc) does N MAP_LOOKUP_ELEMs on a 1-entry ARRAY map and
   N calls of an unknown command (EINVAL: the cheapest answer, i.e. the interception
   floor), N open+close of /dev/null and N stat of it (every open and stat is trapped to
   answer virtual files and bpffs paths, and CONTINUEd), timed inside the client with CLOCK_MONOTONIC -- under the runner
   (seccomp notification, and the ptrace fallback: `run(ptrace=True)`, SECCOMP_RET_TRACE
   stops), and on the real kernel (skipped when bpf() is not available to this user).
2. Wall time of `bpftool map create PIN type hash key 4 value 4 entries 8 name m` and of
   `bpftool prog load` of a clang-built XDP object (BTF, global data, a ring buffer):
   under the runner (whole `fakekernel run` process, and the in-process `run()` alone,
   i.e. without interpreter start-up and imports) and on the real kernel.
Medians of R repetitions are printed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fakekernel.runner import run  # noqa: E402
from uapi.backend import HostKernel  # noqa: E402

C_BENCH = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <linux/bpf.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    union bpf_attr a; memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_ARRAY; a.key_size = 4; a.value_size = 8; a.max_entries = 1;
    int fd = syscall(321, BPF_MAP_CREATE, &a, sizeof(a));
    if (fd < 0) { perror("map_create"); return 1; }
    unsigned int key = 0; unsigned long long val = 0;
    memset(&a, 0, sizeof(a)); a.map_fd = fd; a.key = (unsigned long)&key; a.value = (unsigned long)&val;
    double t0 = now();
    for (long i = 0; i < n; i++)
        if (syscall(321, BPF_MAP_LOOKUP_ELEM, &a, sizeof(a))) { perror("lookup"); return 1; }
    double t1 = now();
    for (long i = 0; i < n; i++)
        syscall(321, 9999, &a, sizeof(a));
    double t2 = now();
    for (long i = 0; i < n; i++)    /* every open is trapped (paths are invisible to cBPF) */
        close(open("/dev/null", O_RDONLY));
    double t3 = now();
    struct stat st;
    for (long i = 0; i < n; i++)    /* so is every stat (bpffs paths are answered) */
        stat("/dev/null", &st);
    double t4 = now();
    printf("%.3f %.3f %.3f %.3f\n", (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t4 - t3) / n);
    return 0;
}
"""


def _compile(tmp: pathlib.Path) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("benchmarks/runner.py needs a C compiler")
    src, exe = tmp / "bench.c", tmp / "bench"
    src.write_text(C_BENCH)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return str(exe)


def _client(argv: list[str], under_runner: bool, ptrace: bool = False) -> tuple[float, ...]:
    with tempfile.TemporaryFile("w+") as out:
        if under_runner:
            rc = run(argv, stdout=out, ptrace=ptrace)
        else:
            rc = subprocess.run(argv, stdout=out).returncode
        if rc != 0:
            raise SystemExit(f"bench client failed ({rc})")
        out.seek(0)
        return tuple(float(x) for x in out.read().split())


def _map_create(pin: str) -> list[str]:
    return ["map", "create", pin, "type", "hash", "key", "4", "value", "4", "entries", "8",
            "name", "m"]


def _prog_load(obj: str):
    return lambda pin: ["prog", "load", obj, pin]


def _real(bpftool: str, args) -> float:
    pin = f"/sys/fs/bpf/fkbench-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    subprocess.run([bpftool, *args(pin)], check=True, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    os.unlink(pin)
    return dt


def _runner_inprocess(bpftool: str, args) -> float:
    with open(os.devnull, "w") as null:
        t0 = time.perf_counter()
        rc = run([bpftool, *args("/sys/fs/bpf/m")], stdout=null)
        dt = time.perf_counter() - t0
    assert rc == 0
    return dt


def _runner_process(bpftool: str, args) -> float:
    code = ("import sys; from fakekernel.runner import main; sys.exit(main(sys.argv[1:]))")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, "--", bpftool, *args("/sys/fs/bpf/m")],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _bpf_object(tmp: pathlib.Path) -> str | None:
    """The libbpf e2e test's XDP object (ring buffer, global data, BTF), built with clang."""
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None:
        return None
    obj = tmp / "xdp_events.bpf.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(REPO / "tests/e2e/libbpf/xdp_events.bpf.c"), "-o", str(obj)], check=True)
    return str(obj)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = args_ = ap.parse_args()
    host = HostKernel.available()
    med = statistics.median
    with tempfile.TemporaryDirectory() as d:
        exe = _compile(pathlib.Path(d))
        emu = [_client([exe, str(args.calls)], True) for _ in range(args.repeat)]
        traced = [_client([exe, str(args.calls)], True, ptrace=True) for _ in range(args.repeat)]
        real = [_client([exe, str(args.calls)], False) for _ in range(args.repeat)] if host else []
    print(f"per-call latency, {args.calls} calls, median of {args.repeat} (us/call)")
    print(f"  {'':34s} {'runner':>10s} {'ptrace':>10s} {'real':>10s}")
    for i, name in enumerate(["MAP_LOOKUP_ELEM (ARRAY)", "unknown command (EINVAL)",
                              "open+close /dev/null (CONTINUE)", "stat /dev/null (CONTINUE)"]):
        r = f"{med(x[i] for x in real):10.2f}" if real else f"{'n/a':>10s}"
        print(f"  {name:34s} {med(x[i] for x in emu):10.2f} {med(x[i] for x in traced):10.2f} {r}")
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        print("bpftool not installed: wall-time rows skipped")
        return 0
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        obj = _bpf_object(pathlib.Path(d))
        commands = [("bpftool map create", _map_create)]
        if obj is not None:
            commands.append(("bpftool prog load (clang XDP object)", _prog_load(obj)))
        rows = [("fakekernel run (whole process)", _runner_process),
                ("run() in-process (no py start-up)", _runner_inprocess)]
        if host and os.path.ismount("/sys/fs/bpf"):
            rows.append(("real kernel (root)", _real))
        for title, args in commands:
            print(f"`{title}` wall time, median of {args_.repeat} (ms)")
            for name, fn in rows:
                fn(bpftool, args)                  # warm caches (trampoline, page cache)
                times = [fn(bpftool, args) for _ in range(args_.repeat)]
                print(f"  {name:34s} {1000 * med(times):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
