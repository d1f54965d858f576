"""`fakekernel run` overhead: an intercepted bpf() vs the real syscall, and bpftool wall time.

    python3 benchmarks/runner.py [--calls N] [--repeat R]

1. A C client (compiled here with cc) does N MAP_LOOKUP_ELEMs on a 1-entry ARRAY map and
   N calls of an unknown command (EINVAL: the cheapest answer, i.e. the interception
   floor), and N open+close of /dev/null (every open is trapped to answer virtual files
   and CONTINUEd), timed inside the client with CLOCK_MONOTONIC -- under the runner, and
   on the real kernel (skipped when bpf() is not available to this user).
2. Wall time of `bpftool map create PIN type hash key 4 value 4 entries 8 name m`:
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
    printf("%.3f %.3f %.3f\n", (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n);
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


def _client(argv: list[str], under_runner: bool) -> tuple[float, float, float]:
    with tempfile.TemporaryFile("w+") as out:
        if under_runner:
            rc = run(argv, stdout=out)
        else:
            rc = subprocess.run(argv, stdout=out).returncode
        if rc != 0:
            raise SystemExit(f"bench client failed ({rc})")
        out.seek(0)
        return tuple(float(x) for x in out.read().split())


def _bpftool_real(bpftool: str) -> float:
    pin = f"/sys/fs/bpf/fkbench-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    subprocess.run([bpftool, "map", "create", pin, "type", "hash", "key", "4", "value", "4",
                    "entries", "8", "name", "m"], check=True)
    dt = time.perf_counter() - t0
    os.unlink(pin)
    return dt


def _bpftool_runner_inprocess(bpftool: str) -> float:
    t0 = time.perf_counter()
    rc = run([bpftool, "map", "create", "/sys/fs/bpf/m", "type", "hash", "key", "4", "value",
              "4", "entries", "8", "name", "m"])
    dt = time.perf_counter() - t0
    assert rc == 0
    return dt


def _bpftool_runner_process(bpftool: str) -> float:
    code = ("import sys; from fakekernel.runner import main; sys.exit(main(sys.argv[1:]))")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, "--", bpftool, "map", "create", "/sys/fs/bpf/m",
                    "type", "hash", "key", "4", "value", "4", "entries", "8", "name", "m"],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    host = HostKernel.available()
    med = statistics.median
    with tempfile.TemporaryDirectory() as d:
        exe = _compile(pathlib.Path(d))
        emu = [_client([exe, str(args.calls)], True) for _ in range(args.repeat)]
        real = [_client([exe, str(args.calls)], False) for _ in range(args.repeat)] if host else []
    print(f"per-call latency, {args.calls} calls, median of {args.repeat} (us/call)")
    print(f"  {'':34s} {'runner':>10s} {'real':>10s}")
    for i, name in enumerate(["MAP_LOOKUP_ELEM (ARRAY)", "unknown command (EINVAL)",
                              "open+close /dev/null (CONTINUE)"]):
        r = f"{med(x[i] for x in real):10.2f}" if real else f"{'n/a':>10s}"
        print(f"  {name:34s} {med(x[i] for x in emu):10.2f} {r}")
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        print("bpftool not installed: wall-time rows skipped")
        return 0
    rows = [("fakekernel run (whole process)", _bpftool_runner_process),
            ("run() in-process (no py start-up)", _bpftool_runner_inprocess)]
    if host and os.path.ismount("/sys/fs/bpf"):
        rows.append(("real kernel (root)", _bpftool_real))
    print(f"`bpftool map create` wall time, median of {args.repeat} (ms)")
    for name, fn in rows:
        fn(bpftool)                        # warm caches (trampoline compile, page cache)
        print(f"  {name:34s} {1000 * med(fn(bpftool) for _ in range(args.repeat)):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
