"""Starting a target under the runner's ptrace fallback — the trampoline and the tracer thread.

The trampoline (`fakekernel-ptrace-exec`, C compiled on first use like launch.py's; a
Python script without a compiler):

1. waits for one byte on an inherited pipe -- by then the tracer has PTRACE_SEIZEd it
   (PTRACE_O_TRACESYSGOOD|TRACEFORK|TRACEVFORK|TRACECLONE|TRACEEXEC|TRACESECCOMP|EXITKILL)
   and the supervisor is ready;
2. prctl(PR_SET_NO_NEW_PRIVS) + seccomp(SET_MODE_FILTER) of the RET_TRACE filter (failures
   are not fatal: the tracer then stops on every syscall);
3. the probe bpf(PROBE_CMD): a PTRACE_EVENT_SECCOMP stop for it means our filter decides
   ("seccomp" mode); reaching its exit stop means an outer filter answered first
   ("syscall" mode) -- see ptrace.py;
4. execvp(CMD).

ptrace requests are only accepted from the thread that attached, and __WNOTHREAD waits
only see that thread's children and tracees, so one dedicated thread starts the
trampoline (subprocess.Popen), attaches and serves every stop.  The command's exit status
comes from that thread's waits: `TracedProc` stands in for the Popen object.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from fakekernel.runner.filter import build_filter
from fakekernel.runner.launch import HEX_FILTER_C, PROBE_CMD, PROBE_MAGIC, Launched, LaunchError, compiled_c
from fakekernel.runner.ptrace import PtraceGone, PtraceListener, ptrace
from uapi.ptrace import WALL, Ptrace, PtraceOpt
from uapi.errno import Errno
from uapi.seccomp import NR_X86_64, PR_SET_NO_NEW_PRIVS, SeccompOp, SeccompRet, ffi

__all__ = ["launch_ptrace", "TracedProc", "OPTIONS"]

OPTIONS = (PtraceOpt.TRACESYSGOOD | PtraceOpt.TRACEFORK | PtraceOpt.TRACEVFORK
           | PtraceOpt.TRACECLONE | PtraceOpt.TRACEEXEC | PtraceOpt.TRACESECCOMP
           | PtraceOpt.EXITKILL)

_C_SOURCE = r"""
/* fakekernel-ptrace-exec: wait for the tracer, install the RET_TRACE filter, probe, exec.
 * argv: GOFD SECCOMP_NR BPF_NR SET_MODE_FILTER FILTER_HEX PROBE_CMD CMD ARGS... */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>

int main(int argc, char **argv)
{
	char c;
	if (argc < 8) {
		fprintf(stderr, "fakekernel-ptrace-exec: internal use only\n");
		return 127;
	}
	int go = atoi(argv[1]);
	ssize_t r;
	do
		r = read(go, &c, 1);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		return 126;	/* the supervisor went away */
	close(go);
	const char *hex = argv[5];
	/*HEX_FILTER*/
	if (n && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
		syscall(strtol(argv[2], 0, 0), strtoul(argv[4], 0, 0), 0UL, &prog);
	syscall(strtol(argv[3], 0, 0), strtol(argv[6], 0, 0), NULL, 0);
	execvp(argv[7], argv + 7);
	int e = errno;
	fprintf(stderr, "fakekernel run: %s: %s\n", argv[7], strerror(e));
	return e == ENOENT ? 127 : 126;
}
""".replace("\t/*HEX_FILTER*/\n", HEX_FILTER_C)

_PY_SOURCE = r"""
import ctypes, os, sys
a = sys.argv
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if os.read(int(a[1]), 1) != b"g":
    sys.exit(126)
os.close(int(a[1]))
filt = bytes.fromhex(a[5])
class FProg(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
prog = FProg(len(filt) // SOCK_FILTER_SIZE, filt)
if filt and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
    libc.syscall(ctypes.c_long(int(a[2])), ctypes.c_long(int(a[4])), ctypes.c_long(0),
                 ctypes.byref(prog))
libc.syscall(ctypes.c_long(int(a[3])), ctypes.c_long(int(a[6])), None, ctypes.c_long(0))
try:
    os.execvp(a[7], a[7:])
except OSError as e:
    sys.stderr.write(f"fakekernel run: {a[7]}: {e.strerror}\n")
    sys.exit(127 if e.errno == ENOENT else 126)
""".replace("PR_SET_NO_NEW_PRIVS", str(PR_SET_NO_NEW_PRIVS)).replace(
    "SOCK_FILTER_SIZE", str(ffi.sizeof("struct sock_filter"))).replace("ENOENT", str(Errno.ENOENT))


class TracedProc:
    """The part of subprocess.Popen the runner uses, for a command whose waits belong to
    the tracer thread."""

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid
        self.args = popen.args
        self.returncode: int | None = None
        self.thread: threading.Thread | None = None     # the tracer
        self._done = threading.Event()

    def reaped(self, status: int) -> None:
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        self._done.set()

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1):
            if self.thread is not None and not self.thread.is_alive():
                try:                        # the tracer died: its tracees were killed
                    self.reaped(os.waitpid(self.pid, 0)[1])
                except ChildProcessError:
                    self.reaped(signal.SIGKILL)
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _trampoline_argv(gofd: int, cmd: list[str]) -> list[str]:
    exe = None if os.environ.get("FAKEKERNEL_TRAMPOLINE") == "python" else \
        compiled_c(_C_SOURCE, "fakekernel-ptrace-exec")
    head = [exe] if exe is not None else [sys.executable, "-c", _PY_SOURCE]
    return head + [str(gofd), str(int(NR_X86_64.seccomp)), str(int(NR_X86_64.bpf)),
                   str(int(SeccompOp.SET_MODE_FILTER)),
                   build_filter(action=SeccompRet.TRACE).hex(), str(PROBE_CMD)] + list(cmd)


def launch_ptrace(cmd: list[str], *, popen=None, **popen_kw) -> Launched:
    """Start `cmd` traced; returns once it is attached (the tracer thread waits for
    `listener.attach(supervisor)` before letting it exec)."""
    if os.uname().machine != "x86_64":
        raise LaunchError(f"the ptrace fallback supports x86_64 hosts only (this is "
                          f"{os.uname().machine})")
    listener = PtraceListener()
    listener.probe = (PROBE_CMD, PROBE_MAGIC)
    ready = threading.Event()
    attach = listener.attach

    def attach_and_go(sup):
        attach(sup)
        ready.set()
    listener.attach = attach_and_go
    result: queue.Queue = queue.Queue()
    t = threading.Thread(target=_tracer_main, name="fakekernel-ptrace", daemon=True,
                         args=(listener, cmd, popen or subprocess.Popen, popen_kw, result, ready))
    t.start()
    got = result.get()
    if isinstance(got, LaunchError):
        t.join()
        listener.close()
        raise got
    listener.thread = got.thread = t
    return Launched(proc=got, listener=listener, flags=0)


def _tracer_main(listener: PtraceListener, cmd, popen, popen_kw, result, ready) -> None:
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        argv = _trampoline_argv(go_r, cmd)
        try:
            p = popen(argv, pass_fds=(go_r, *popen_kw.pop("pass_fds", ())), **popen_kw)
        except OSError as e:
            result.put(LaunchError(f"cannot start the trampoline {argv[0]}: {e}"))
            return
        finally:
            os.close(go_r)
        try:
            ptrace(Ptrace.SEIZE, p.pid, 0, int(OPTIONS))
            ptrace(Ptrace.INTERRUPT, p.pid)
            os.waitpid(p.pid, WALL)                 # the PTRACE_EVENT_STOP of INTERRUPT
            ptrace(Ptrace.SYSCALL, p.pid)           # syscall stops until the probe
        except (OSError, PtraceGone) as e:
            p.kill()
            p.wait()
            result.put(LaunchError(f"ptrace is not permitted here ({os.strerror(e.errno)}): the ptrace "
                                   f"fallback cannot serve the command (a Yama ptrace_scope "
                                   f"of 3, a container without ptrace, or the command is "
                                   f"already traced)"))
            return
        proc = TracedProc(p)
        listener.main_pid = p.pid
        listener.on_main_exit = proc.reaped
        listener.tracees.add(p.pid)
        result.put(proc)
        ready.wait()
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        listener.trace_loop()
    finally:
        if go_w >= 0:
            os.close(go_w)
        if listener._hup >= 0:
            os.close(listener._hup)
            listener._hup = -1
