"""pytest plugin: a simulated kernel per test, and subprocesses run against it.

Registered through the ``pytest11`` entry point (``pip install fakekernel`` enables it;
``-p fakekernel.pytest_plugin`` does the same from a checkout).

Fixtures
    ``fakekernel``      a fresh `fakekernel.Kernel`.  At teardown the leak check runs
                        (`check_leaks`): an fd the test left open in the kernel's tasks, or
                        an object still alive once every process has exited and that no
                        pin or attachment holds, fails the test.  Mark a test
                        ``@pytest.mark.keep_objects`` to skip it.
    ``fakekernel_run``  ``fakekernel_run(cmd, *, input=None, timeout=None, check=False,
                        text=True, cwd=None, env=None, trace=None)`` runs ``cmd`` like
                        ``fakekernel run -- cmd`` against the test's ``fakekernel`` kernel
                        and returns a `subprocess.CompletedProcess` with its output.
    ``fakekernel_syscall``  `fakekernel.syscall_shim` over the test's kernel: a
                        ``syscall(nr, *args)`` for ctypes-based loaders run in-process.

Marker / option
    ``@pytest.mark.fakekernel_subprocess`` (or ``--fakekernel-subprocess`` for every test):
    while the test runs, ``subprocess.Popen`` -- and so ``subprocess.run``,
    ``check_output``, ``asyncio`` subprocesses -- starts commands under the runner, all
    answered by the test's ``fakekernel`` kernel.  ``os.system``/``os.posix_spawn`` and
    modules that bound ``Popen`` before the test are not covered.  A command that cannot
    be executed exits with 127 (from the runner's trampoline) instead of raising
    FileNotFoundError.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import weakref

import pytest

from fakekernel.kernel import Kernel
from fakekernel.shim import syscall_shim

__all__ = ["check_leaks", "kernel_lock", "LeakError", "runner_popen"]

_MARKERS = (
    "keep_objects: the test deliberately leaves objects alive in its Kernel",
    "fakekernel_subprocess: the test's subprocesses run under `fakekernel run`, answered by "
    "the test's `fakekernel` kernel",
)
_JOIN_TIMEOUT = 30.0
_LOCKS: "weakref.WeakKeyDictionary[Kernel, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class LeakError(AssertionError):
    """A test left fds open or objects alive in its simulated kernel."""


def check_leaks(kern: Kernel) -> None:
    """Every process of `kern` exits (`Kernel.shutdown`); then nothing may be left.

    Raises LeakError naming the fds the tasks still had open (terminals aside) and the
    objects still alive that no bpffs pin or attachment holds (directly, or as a map a
    pinned/attached program uses).
    """
    open_fds = [fd for t in kern.tasks for fd, f in t.files.items() if f.kind != "tty"]
    kern.shutdown()
    live = {k: v for k, v in kern.live_objects().items() if v}
    held = set(kern.bpffs.pinned_objects() if kern.bpffs is not None else ())
    held |= kern.world.attached_objects() if kern.world is not None else set()
    # a held program holds the maps it uses (prog->aux->used_maps)
    held |= {m for o in list(held) for m in getattr(getattr(o, "aux", None), "used_maps", ())}
    # ... and held maps and programs hold their BTF (map->btf, prog->aux->btf)
    held |= {b for o in list(held) for b in (getattr(o, "btf", None), getattr(getattr(o, "aux", None), "btf", None))
             if b is not None}
    unexpected = {k: [o for o in v if o not in held] for k, v in live.items()}
    unexpected = {k: v for k, v in unexpected.items() if v}
    if open_fds:
        raise LeakError(f"test left fds open in its Kernel: {open_fds}")
    if unexpected:
        raise LeakError(f"objects still alive after every process exited: {unexpected}")


def kernel_lock(kern: Kernel) -> threading.RLock:
    """The lock every user of `kern` from several threads holds (supervisor threads, shims)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(kern)
        if lock is None:
            lock = _LOCKS[kern] = threading.RLock()
        return lock


# ---------------------------------------------------------------- hooks

def pytest_addoption(parser) -> None:
    group = parser.getgroup("fakekernel")
    group.addoption("--fakekernel-subprocess", action="store_true", default=False,
                    help="run every test's subprocesses under `fakekernel run`, each test "
                         "with a fresh simulated kernel (as @pytest.mark.fakekernel_subprocess)")


def pytest_configure(config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def fakekernel(request):
    """A fresh simulated kernel; the leak check runs at teardown (see `check_leaks`)."""
    kern = Kernel()
    yield kern
    if request.node.get_closest_marker("keep_objects") is None:
        check_leaks(kern)


@pytest.fixture
def fakekernel_syscall(fakekernel):
    """``syscall(nr, *args)`` answered by the test's kernel (fakekernel.syscall_shim)."""
    return syscall_shim(fakekernel, lock=kernel_lock(fakekernel))


@pytest.fixture
def fakekernel_run(fakekernel):
    """Run a command under the runner against the test's kernel; a CompletedProcess."""
    from fakekernel.runner.cli import run
    from fakekernel.runner.trace import Tracer

    def runner(cmd, *, input=None, timeout=None, check=False, text=True, cwd=None, env=None,
               trace=None) -> subprocess.CompletedProcess:
        cmd = [os.fspath(c) for c in cmd]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.TemporaryFile() as inp:
            if input is not None:
                inp.write(input.encode() if isinstance(input, str) else input)
                inp.seek(0)
            tracer = Tracer(trace) if trace is not None else None
            rc = run(cmd, kern=fakekernel, tracer=tracer, timeout=timeout,
                     lock=kernel_lock(fakekernel), stdin=inp, stdout=out, stderr=err,
                     cwd=cwd, env=env)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if text:
            stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        res = subprocess.CompletedProcess(cmd, rc, stdout, stderr)
        if check:
            res.check_returncode()
        return res

    return runner


@pytest.fixture(autouse=True)
def _fakekernel_subprocess(request):
    """The marker/option: stand in for subprocess.Popen while the test runs."""
    if request.node.get_closest_marker("fakekernel_subprocess") is None \
            and not request.config.getoption("fakekernel_subprocess", False):
        yield
        return
    kern = request.getfixturevalue("fakekernel")
    from fakekernel.runner.launch import compiled_trampoline
    compiled_trampoline()                   # compile (if needed) before Popen is replaced
    sessions: list = []
    popen_cls = _runner_popen_class(kern, kernel_lock(kern), sessions)
    mp = pytest.MonkeyPatch()
    mp.setattr(subprocess, "Popen", popen_cls)
    try:
        yield
    finally:
        mp.undo()
        _finish_sessions(sessions)


# ---------------------------------------------------------------- Popen under the runner

def _command(args, kw: dict) -> list[str]:
    """The argv Popen would exec (shell=True and executable= folded in)."""
    shell = kw.pop("shell", False)
    executable = kw.pop("executable", None)
    if isinstance(args, (str, bytes, os.PathLike)):
        args = [args]
    args = [os.fsdecode(a) for a in args]
    if shell:
        return [os.fsdecode(executable) if executable else "/bin/sh", "-c", *args]
    if executable:
        args[0] = os.fsdecode(executable)
    return args


@contextlib.contextmanager
def runner_popen(kern: Kernel):
    """A `subprocess.Popen` look-alike whose commands run under the runner against `kern`
    (what the ``fakekernel_subprocess`` marker installs, for tests that want it explicitly
    — e.g. to fire hooks in `kern.world` while the process waits).  Leaving the block
    reaps the processes and their supervisors (processes still running are killed)."""
    from fakekernel.runner.launch import compiled_trampoline
    compiled_trampoline()
    sessions: list = []
    try:
        yield _runner_popen_class(kern, kernel_lock(kern), sessions)
    finally:
        _finish_sessions(sessions)


def _runner_popen_class(kern, lock, sessions: list):
    from fakekernel.runner.launch import launch
    from fakekernel.runner.supervisor import Supervisor

    base = subprocess.Popen

    class RunnerPopen(base):
        """subprocess.Popen, with the command started under the runner's seccomp filter."""

        def __init__(self, args, *a, **kw):
            cmd = _command(args, kw)

            def start(argv, **popen_kw):
                base.__init__(self, argv, *a, **popen_kw)
                return self

            launched = launch(cmd, popen=start, **kw)
            self.args = args
            sup = Supervisor(kern, launched.listener, lock=lock)
            t = threading.Thread(target=_serve, args=(sup, launched.listener),
                                 name=f"fakekernel-supervisor-{self.pid}", daemon=True)
            t.start()
            sessions.append((self, t))

    return RunnerPopen


def _serve(sup, listener) -> None:
    try:
        sup.serve()             # until every process of the tree is gone (listener HUP)
    finally:
        sup.close()
        listener.close()


def _finish_sessions(sessions: list) -> None:
    stuck = []
    for proc, t in sessions:
        if proc.poll() is None:     # the test left it running: as a terminal hangup would
            proc.kill()
            proc.wait()
        t.join(_JOIN_TIMEOUT)
        if t.is_alive():
            stuck.append(proc.args)
    if stuck:
        pytest.fail(f"processes started under fakekernel outlived the test (their children "
                    f"still run): {stuck}", pytrace=False)
