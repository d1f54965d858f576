"""`fakekernel run [--state DIR] [--trace FILE] -- CMD ARGS...` — run an unmodified loader against a simulated kernel.

Every process the command starts shares ONE simulated kernel (maps created by one
bpftool invocation are visible to the next one in the same `sh -c`).  With `--state DIR`
the bpffs pins (and the maps and programs they reach) are loaded from DIR before and
saved to it after the command, so they outlive it as pins outlive processes on Linux
(fakekernel/state.py); runs sharing DIR take turns.  The exit status is
the command's (128+N when killed by signal N); 125 when the runner itself cannot start.
Where seccomp notification cannot reach bpf() (an outer filter or listener), a
dynamically linked command is served through LD_PRELOAD and a statically linked one
through ptrace (`--preload` / `--ptrace` force either).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading

from fakekernel.runner.launch import LaunchError, launch
from fakekernel.runner.preload import PreloadListener, is_dynamic, launch_preload
from fakekernel.runner.ptrace import PtraceListener
from fakekernel.runner.ptrace_launch import launch_ptrace
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
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--preload", dest="preload", action="store_true", default=None,
                      help="serve the command through LD_PRELOAD instead of seccomp "
                           "notification (dynamically linked commands only)")
    mode.add_argument("--no-preload", dest="preload", action="store_false",
                      help="never fall back to LD_PRELOAD when seccomp notification is "
                           "unavailable")
    mode.add_argument("--ptrace", action="store_true",
                      help="serve the command through ptrace instead of seccomp notification "
                           "(the fallback for statically linked commands; slower)")
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
            return run(cmd, tracer=tracer, preload=args.preload, ptrace=args.ptrace)
        return _run_with_state(cmd, args.state, tracer, args.preload, args.ptrace)
    finally:
        if trace_out is not None and trace_out is not sys.stderr:
            trace_out.close()


def _run_with_state(cmd: list[str], directory: str, tracer, preload=None, ptrace=False) -> int:
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
        rc = run(cmd, kern=kern, tracer=tracer, preload=preload, ptrace=ptrace)
        try:
            warnings = save_dir(kern, directory)
        except (OSError, StateError) as e:
            sys.stderr.write(f"fakekernel run: --state {directory}: not saved: {e}\n")
            return rc if rc else EXIT_RUNNER_FAILED
        for w in warnings:
            sys.stderr.write(f"fakekernel run: --state: {w}\n")
    return rc


def run(cmd: list[str], *, kern=None, tracer: Tracer | None = None, timeout: float | None = None,
        lock=None, preload: bool | None = None, ptrace: bool = False, **popen_kw) -> int:
    """Run `cmd` under the runner with `kern` (a fresh Kernel by default); its exit status.

    `timeout` (seconds): kill the command then and raise subprocess.TimeoutExpired once its
    process tree is gone.  `lock` is held whenever `kern` is used (share one Kernel between
    threads).  `preload`: True serves the command through LD_PRELOAD (runner/preload.py),
    False never does, None (default) falls back to it only when seccomp notification is
    unavailable and the command is dynamically linked.  `ptrace`: True serves it through
    ptrace (runner/ptrace.py), which is also the fallback for a statically linked command
    where seccomp notification is unavailable.  Other keywords go to
    subprocess.Popen (stdin/stdout/stderr, cwd, env...).
    """
    from fakekernel import Kernel
    kern = kern if kern is not None else Kernel()
    try:
        if ptrace:
            launched = launch_ptrace(cmd, **popen_kw)
        elif preload:
            exe = shutil.which(cmd[0]) or cmd[0]
            if not is_dynamic(exe):
                raise LaunchError(f"{exe} is statically linked (or not an executable): the "
                                  f"LD_PRELOAD interception cannot serve it; run it without "
                                  f"--preload (seccomp notification)")
            launched = launch_preload(cmd, bpffs_mount=kern.bpffs_mount, **popen_kw)
        else:
            launched = _launch_or_fall_back(cmd, kern, preload, popen_kw)
    except LaunchError as e:
        sys.stderr.write(f"fakekernel run: {e}\n")
        return EXIT_RUNNER_FAILED
    if launched.flags and not launched.flags & FilterFlag.WAIT_KILLABLE_RECV:
        sys.stderr.write("fakekernel run: warning: kernel < 5.19 (no WAIT_KILLABLE_RECV): a "
                         "bpf() interrupted by a signal may have its side effects repeated\n")
    proc = launched.proc
    if isinstance(launched.listener, PtraceListener) and lock is None:
        lock = threading.RLock()            # the tracer thread serves stops in parallel
    sup = Supervisor(kern, launched.listener, tracer=tracer, lock=lock)
    if isinstance(launched.listener, (PreloadListener, PtraceListener)):
        launched.listener.attach(sup)
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


def _launch_or_fall_back(cmd: list[str], kern, preload, popen_kw):
    """seccomp notification first; where it cannot reach bpf() here, ptrace for a
    statically linked command and LD_PRELOAD for a dynamically linked one (unless
    `preload` is False), saying so; else the seccomp error with its fix."""
    try:
        return launch(cmd, **popen_kw)
    except LaunchError as e:
        if not e.seccomp_unavailable:
            raise
        exe = shutil.which(cmd[0]) or cmd[0]
        if not is_dynamic(exe):
            try:
                launched = launch_ptrace(cmd, **popen_kw)
            except LaunchError as pe:
                raise LaunchError(f"{e}; {exe} is statically linked, so the LD_PRELOAD "
                                  f"fallback cannot serve it either, and {pe}") from None
            sys.stderr.write(f"fakekernel run: {e}\nfakekernel run: {exe} is statically "
                             f"linked: falling back to ptrace interception\n")
            return launched
        if preload is False:
            raise
        sys.stderr.write(f"fakekernel run: {e}\nfakekernel run: falling back to LD_PRELOAD "
                         f"interception (libc calls of dynamically linked programs only)\n")
        return launch_preload(cmd, bpffs_mount=kern.bpffs_mount, **popen_kw)
