"""`fakekernel run [--trace FILE] -- CMD ARGS...` — run an unmodified loader against a simulated kernel.

Every process the command starts shares ONE simulated kernel (maps created by one
bpftool invocation are visible to the next one in the same `sh -c`).  The exit status is
the command's (128+N when killed by signal N); 125 when the runner itself cannot start.
"""
from __future__ import annotations

import argparse
import os
import signal
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
    ap.add_argument("--trace", metavar="FILE",
                    help="write one line per intercepted syscall to FILE ('-' = stderr)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        _parser().error("no command given (fakekernel run [--trace FILE] -- CMD ARGS...)")
    trace_out = None
    if args.trace == "-":
        trace_out = sys.stderr
    elif args.trace:
        trace_out = open(args.trace, "w")
    try:
        return run(cmd, tracer=Tracer(trace_out) if trace_out is not None else None)
    finally:
        if trace_out is not None and trace_out is not sys.stderr:
            trace_out.close()


def run(cmd: list[str], *, kern=None, tracer: Tracer | None = None, **popen_kw) -> int:
    """Run `cmd` under the runner with `kern` (a fresh Kernel by default); its exit status."""
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
    sup = Supervisor(kern, launched.listener, tracer=tracer)
    status: list[int] = []

    def reap():
        status.append(proc.wait())

    def forward(signum, frame):
        if proc.returncode is None:
            proc.send_signal(signum)

    # The terminal's SIGINT/SIGQUIT reach the whole foreground group, the target included;
    # the supervisor must outlive the target (else its trapped calls fail with ENOSYS).
    old = {}
    if threading.current_thread() is threading.main_thread():    # signal.signal's rule
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
        old.update({s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)})
    pidfd = os.pidfd_open(proc.pid)
    try:
        sup.serve(pidfd=pidfd, on_child_exit=reap)
    finally:
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
    rc = status[0]
    return 128 - rc if rc < 0 else rc
