"""Starting a target under the runner's seccomp filter — the exec trampoline and its handshake.

Why a trampoline and not `preexec_fn`: code run between fork and exec in a Python process
that may have threads (pytest plugins, a library caller) can deadlock on locks another
thread held at fork time; a separate small program has no such state.  The trampoline
(`fakekernel-exec`) does, in order:

1. prctl(PR_SET_NO_NEW_PRIVS) -- required to install a filter unprivileged;
2. seccomp(SET_MODE_FILTER, NEW_LISTENER | WAIT_KILLABLE_RECV, filter), retrying without
   WAIT_KILLABLE_RECV on EINVAL (kernels < 5.19);
3. sendmsg(SCM_RIGHTS) of the listener fd to the supervisor over an inherited
   SOCK_SEQPACKET socket ("listener <flags>"), then closes it;
4. a probe bpf(PROBE_CMD, NULL, 0): the supervisor answers PROBE_MAGIC.  Any other result
   means an outer filter decided first (e.g. Docker's default profile returns EPERM for
   bpf()); the result is reported ("probe <ret> <errno>") and the trampoline exits
   without running CMD;
5. execvp(CMD).

It is C, compiled on first use with the system `cc` into a per-user cache directory
(keyed by the source hash).  Without a C compiler the same protocol is run by
`fakekernel/runner/_trampoline.py` in a fresh interpreter (slower to start, ~0.1 s).
`FAKEKERNEL_TRAMPOLINE=python` forces that fallback.
"""
from __future__ import annotations

import hashlib
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import attrs

from fakekernel.runner.filter import build_filter
from fakekernel.runner.notify import Listener, NotifError
from uapi.errno import Errno
from uapi.seccomp import FilterFlag, NR_X86_64, SeccompOp

__all__ = ["Launched", "LaunchError", "launch", "trampoline_argv", "PROBE_CMD", "PROBE_MAGIC"]

_POPEN = subprocess.Popen       # bound at import: the pytest plugin may stand in for it later
PROBE_CMD = 0x46414B45          # "FAKE": not a bpf command; only ever sent before exec
PROBE_MAGIC = 0x4B45524E        # the supervisor's answer to it

#: C shared by the exec trampolines: the seccomp filter handed over in argv as hex (`hex`),
#: decoded into the struct sock_fprog `prog`
HEX_FILTER_C = r"""
	size_t n = strlen(hex) / 2;
	unsigned char *buf = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++) {
		unsigned int b;
		sscanf(hex + 2 * i, "%2x", &b);
		buf[i] = (unsigned char)b;
	}
	struct sock_fprog prog = { .len = n / sizeof(struct sock_filter), .filter = (void *)buf };
"""

_C_SOURCE = r"""
/* fakekernel-exec: install the runner's seccomp filter, hand over the listener, exec.
 * argv: SOCKFD SECCOMP_NR BPF_NR SET_MODE_FILTER FLAGS OPTIONAL_FLAGS FILTER_HEX PROBE_CMD
 *       PROBE_MAGIC CMD ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/filter.h>

static void report(int sock, const char *msg, int fd)
{
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	sendmsg(sock, &mh, 0);
}

int main(int argc, char **argv)
{
	char msg[128];
	if (argc < 11) {
		fprintf(stderr, "fakekernel-exec: internal use only\n");
		return 127;
	}
	int sock = atoi(argv[1]);
	long nr_seccomp = strtol(argv[2], 0, 0), nr_bpf = strtol(argv[3], 0, 0);
	unsigned long op = strtoul(argv[4], 0, 0), flags = strtoul(argv[5], 0, 0);
	unsigned long optional = strtoul(argv[6], 0, 0);
	const char *hex = argv[7];
	long probe_cmd = strtol(argv[8], 0, 0), probe_magic = strtol(argv[9], 0, 0);
	/*HEX_FILTER*/
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		snprintf(msg, sizeof(msg), "error prctl %d", errno);
		report(sock, msg, -1);
		return 126;
	}
	long fd = syscall(nr_seccomp, op, flags, &prog);
	if (fd < 0 && errno == EINVAL && (flags & optional)) {
		flags &= ~optional;
		fd = syscall(nr_seccomp, op, flags, &prog);
	}
	if (fd < 0) {
		snprintf(msg, sizeof(msg), "error seccomp %d", errno);
		report(sock, msg, -1);
		return 126;
	}
	snprintf(msg, sizeof(msg), "listener %lu", flags);
	report(sock, msg, (int)fd);
	close((int)fd);
	long r = syscall(nr_bpf, probe_cmd, NULL, 0);
	snprintf(msg, sizeof(msg), "probe %ld %d", r, r < 0 ? errno : 0);
	report(sock, msg, -1);
	close(sock);
	if (r != probe_magic)
		return 126;	/* the supervisor explains */
	execvp(argv[10], argv + 10);
	int e = errno;
	fprintf(stderr, "fakekernel run: %s: %s\n", argv[10], strerror(e));
	return e == ENOENT ? 127 : 126;
}
""".replace("\t/*HEX_FILTER*/\n", HEX_FILTER_C)


class LaunchError(RuntimeError):
    """The target could not be started under the runner; the message names cause and fix.
    `seccomp_unavailable`: the cause is that seccomp notification cannot reach bpf() here
    (the LD_PRELOAD fallback may serve a dynamically linked target instead)."""

    def __init__(self, message: str, *, seccomp_unavailable: bool = False):
        super().__init__(message)
        self.seccomp_unavailable = seccomp_unavailable


@attrs.define
class Launched:
    proc: subprocess.Popen
    listener: Listener
    flags: int                  # the SECCOMP_FILTER_FLAG_* the filter was installed with


def _cache_dirs() -> list[str]:
    out = []
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(os.path.join(base, "fakekernel"))
    out.append(os.path.join(tempfile.gettempdir(), f"fakekernel-{os.getuid()}"))
    return out


def _private_dir(path: str) -> bool:
    """Create `path` (0700) if needed; True if it is ours and nobody else can write it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and os.access(path, os.W_OK))


def compiled_trampoline() -> str | None:
    """The path of the C trampoline, compiling it on first use; None without a compiler."""
    if os.environ.get("FAKEKERNEL_TRAMPOLINE") == "python":
        return None
    return compiled_c(_C_SOURCE, "fakekernel-exec")


def compiled_c(source: str, stem: str, cc_args: tuple[str, ...] = ()) -> str | None:
    """`source` built with the system C compiler into the per-user cache (named by `stem`
    and the source's hash, built once, atomically); None without a compiler."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    tag = hashlib.sha256(source.encode() + repr(cc_args).encode()).hexdigest()[:16]
    for d in _cache_dirs():
        exe = os.path.join(d, f"{stem}-{tag}")
        if os.access(exe, os.X_OK) and _private_dir(d):
            return exe
    if cc is None:
        return None
    for d in _cache_dirs():
        if not _private_dir(d):
            continue
        exe = os.path.join(d, f"{stem}-{tag}")
        src = os.path.join(d, f"{stem}-{tag}.{os.getpid()}.c")
        tmp = exe + f".{os.getpid()}.tmp"
        try:
            with open(src, "w") as fh:
                fh.write(source)
            with _POPEN([cc, "-O2", *cc_args, "-o", tmp, src], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE) as cc_proc:
                cc_proc.communicate()
            if cc_proc.returncode != 0:
                return None
            os.replace(tmp, exe)            # atomic: concurrent first uses are fine
            return exe
        except OSError:
            continue
        finally:
            for p in (src, tmp):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
    return None


def trampoline_argv(sock_fd: int, flags: int, optional: int, cmd: list[str]) -> list[str]:
    exe = compiled_trampoline()
    head = ([exe] if exe is not None else
            [sys.executable, os.path.join(os.path.dirname(__file__), "_trampoline.py")])
    return head + [str(sock_fd), str(int(NR_X86_64.seccomp)), str(int(NR_X86_64.bpf)),
                   str(int(SeccompOp.SET_MODE_FILTER)), str(int(flags)), str(int(optional)),
                   build_filter().hex(), str(PROBE_CMD), str(PROBE_MAGIC)] + list(cmd)


_SECCOMP_ERRORS = {
    Errno.EBUSY: "another seccomp listener already supervises this process (LXD/Incus/sysbox "
                 "or a nested `fakekernel run`); run outside it, or disable that supervisor's "
                 "syscall interception",
    Errno.EINVAL: "the kernel lacks SECCOMP_FILTER_FLAG_NEW_LISTENER (Linux >= 5.0 needed, "
                  "5.19+ recommended)",
    Errno.EFAULT: "the seccomp filter could not be read (internal error)",
    Errno.EACCES: "installing a seccomp filter was refused (no_new_privs not set?)",
    Errno.EPERM: "installing a seccomp filter is not permitted here",
    Errno.ENOSYS: "the kernel has no seccomp() (CONFIG_SECCOMP_FILTER is off)",
}


def launch(cmd: list[str], *, pass_fds=(), popen=None, **popen_kw) -> Launched:
    """Start `cmd` under the filter; returns once the probe went through the supervisor.

    `popen(argv, **kw)` starts the trampoline (default `subprocess.Popen`; the pytest
    plugin passes its own when it stands in for `subprocess.Popen`).
    """
    popen = popen if popen is not None else _POPEN
    if os.uname().machine != "x86_64":
        raise LaunchError(f"fakekernel run supports x86_64 hosts only (this is "
                          f"{os.uname().machine})")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    flags = FilterFlag.NEW_LISTENER | FilterFlag.WAIT_KILLABLE_RECV
    try:
        argv = trampoline_argv(theirs.fileno(), flags, FilterFlag.WAIT_KILLABLE_RECV, cmd)
        try:
            proc = popen(argv, pass_fds=(theirs.fileno(), *pass_fds), **popen_kw)
        except OSError as e:
            raise LaunchError(f"cannot start the trampoline {argv[0]}: {e}") from None
        theirs.close()
        return _handshake(ours, proc)
    finally:
        theirs.close()
        ours.close()


def _recv(sock: socket.socket) -> tuple[list[str], list[int]]:
    msg, fds, _, _ = socket.recv_fds(sock, 256, 1)
    return msg.decode().split(), fds


def _handshake(sock: socket.socket, proc: subprocess.Popen) -> Launched:
    words, fds = _recv(sock)
    if not words:
        proc.wait()
        raise LaunchError(f"the trampoline exited ({proc.returncode}) before installing the "
                          f"seccomp filter")
    if words[0] == "error":
        proc.wait()
        err = int(words[2])
        why = _SECCOMP_ERRORS.get(err, os.strerror(err)) if words[1] == "seccomp" else \
            f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}"
        raise LaunchError(f"cannot install the seccomp listener ({words[1]}: "
                          f"{os.strerror(err)}): {why}", seccomp_unavailable=True)
    listener = Listener(fds[0])
    flags = int(words[1])
    listener.set_sync_wakeup()
    # the probe: the trampoline's bpf(PROBE_CMD) must reach us
    p = select.poll()
    p.register(listener.fd, select.POLLIN)
    p.register(sock.fileno(), select.POLLIN)
    answered = False
    while True:
        ready = dict(p.poll())
        if listener.fd in ready and not ready[listener.fd] & select.POLLIN:
            p.unregister(listener.fd)           # POLLHUP: the trampoline is gone
            answered = True
            continue
        if listener.fd in ready and not answered:
            try:
                n = listener.recv()
            except NotifError:
                continue                        # withdrawn (the trampoline was killed)
            if n.data.args[0] & 0xFFFFFFFF != PROBE_CMD or n.pid != proc.pid:
                raise LaunchError("unexpected first notification from the target")
            listener.send(n.id, PROBE_MAGIC)
            answered = True
            p.unregister(listener.fd)
            continue
        if sock.fileno() in ready:
            break
    words, _ = _recv(sock)
    ret = int(words[1]) if len(words) == 3 and words[0] == "probe" else None
    if ret != PROBE_MAGIC:
        err = int(words[2]) if ret is not None else 0
        proc.kill()
        proc.wait()
        listener.close()
        raise LaunchError(
            f"bpf() never reached the runner (probe returned {ret}, errno "
            f"{Errno(err).name if err in Errno._value2member_map_ else err}): an outer seccomp "
            f"filter answers bpf() first -- Docker's default profile returns EPERM for it. "
            f"Run the container with `--security-opt seccomp=unconfined` (or a profile that "
            f"allows bpf), or `--cap-add BPF`", seccomp_unavailable=True)
    return Launched(proc=proc, listener=listener, flags=flags)
