"""`fakekernel run [--state DIR] [--trace FILE] -- CMD ARGS...` — run an unmodified loader against a simulated kernel.

Every process the command starts shares ONE simulated kernel (maps created by one
bpftool invocation are visible to the next one in the same `sh -c`).  With `--state DIR`
the bpffs pins (and the maps and programs they reach) are loaded from DIR before and
saved to it after the command, so they outlive it as pins outlive processes on Linux
(fakekernel/state.py); runs sharing DIR take turns.  The exit status is
the command's (128+N when killed by signal N); 125 when the runner itself cannot start.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

from fakekernel.runner.launch import LaunchError, launch
from fakekernel.runner.supervisor import Supervisor
from fakekernel.runner.trace import Tracer
from uapi.seccomp import FilterFlag

__all__ = ["main", "run", "EXIT_RUNNER_FAILED"]

EXIT_RUNNER_FAILED = 125        # as `env`/`timeout`: the runner, not the command, failed


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fakekernel run",
                                 description="Run CMD with its bpf() answered by a simulated "
                                             "Linux 6.18 kernel (no privileges needed).")
    ap.add_argument("--state", metavar="DIR",
                    help="load the pinned objects from DIR before the command and save them "
                         "there after it")
    ap.add_argument("--trace", metavar="FILE",
                    help="write one line per intercepted syscall to FILE ('-' = stderr)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        _parser().error("no command given (fakekernel run [--state DIR] [--trace FILE] -- "
                        "CMD ARGS...)")
    trace_out = None
    if args.trace == "-":
        trace_out = sys.stderr
    elif args.trace:
        trace_out = open(args.trace, "w")
    tracer = Tracer(trace_out) if trace_out is not None else None
    try:
        if args.state is None:
            return run(cmd, tracer=tracer)
        return _run_with_state(cmd, args.state, tracer)
    finally:
        if trace_out is not None and trace_out is not sys.stderr:
            trace_out.close()


def _run_with_state(cmd: list[str], directory: str, tracer) -> int:
    from fakekernel import Kernel
    from fakekernel.state import StateError, StateLock, load_dir, save_dir
    try:
        lock = StateLock(directory)
    except OSError as e:
        sys.stderr.write(f"fakekernel run: --state {directory}: {e}\n")
        return EXIT_RUNNER_FAILED
    with lock:
        kern = Kernel()
        try:
            load_dir(kern, directory)
        except StateError as e:
            sys.stderr.write(f"fakekernel run: --state {directory}: {e}\n")
            return EXIT_RUNNER_FAILED
        rc = run(cmd, kern=kern, tracer=tracer)
        try:
            warnings = save_dir(kern, directory)
        except (OSError, StateError) as e:
            sys.stderr.write(f"fakekernel run: --state {directory}: not saved: {e}\n")
            return rc if rc else EXIT_RUNNER_FAILED
        for w in warnings:
            sys.stderr.write(f"fakekernel run: --state: {w}\n")
    return rc


def run(cmd: list[str], *, kern=None, tracer: Tracer | None = None, timeout: float | None = None,
        lock=None, **popen_kw) -> int:
    """Run `cmd` under the runner with `kern` (a fresh Kernel by default); its exit status.

    `timeout` (seconds): kill the command then and raise subprocess.TimeoutExpired once its
    process tree is gone.  `lock` is held whenever `kern` is used (share one Kernel between
    threads).  Other keywords go to subprocess.Popen (stdin/stdout/stderr, cwd, env...).
    """
    from fakekernel import Kernel
    kern = kern if kern is not None else Kernel()
    try:
        launched = launch(cmd, **popen_kw)
    except LaunchError as e:
        sys.stderr.write(f"fakekernel run: {e}\n")
        return EXIT_RUNNER_FAILED
    if not launched.flags & FilterFlag.WAIT_KILLABLE_RECV:
        sys.stderr.write("fakekernel run: warning: kernel < 5.19 (no WAIT_KILLABLE_RECV): a "
                         "bpf() interrupted by a signal may have its side effects repeated\n")
    proc = launched.proc
    sup = Supervisor(kern, launched.listener, tracer=tracer, lock=lock)
    status: list[int] = []
    expired: list[bool] = []

    def reap():
        status.append(proc.wait())

    def forward(signum, frame):
        if proc.returncode is None:
            proc.send_signal(signum)

    def kill():
        expired.append(True)
        if proc.returncode is None:
            proc.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    # The terminal's SIGINT/SIGQUIT reach the whole foreground group, the target included;
    # the supervisor must outlive the target (else its trapped calls fail with ENOSYS).
    old = {}
    if threading.current_thread() is threading.main_thread():    # signal.signal's rule
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
        old.update({s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)})
    pidfd = os.pidfd_open(proc.pid)
    try:
        if timer is not None:
            timer.start()
        sup.serve(pidfd=pidfd, on_child_exit=reap)
    finally:
        if timer is not None:
            timer.cancel()
        os.close(pidfd)
        for s, h in old.items():
            signal.signal(s, h)
        sup.close()
        launched.listener.close()
        if not status:
            proc.kill()
            status.append(proc.wait())
    if sup.internal_errors:
        sys.stderr.write(f"fakekernel run: {sup.internal_errors} internal error(s) in the "
                         f"emulator (see above)\n")
    if expired:
        raise subprocess.TimeoutExpired(cmd, timeout)
    rc = status[0]
    return 128 - rc if rc < 0 else rc
