"""The runner's LD_PRELOAD fallback — the same supervisor, fed by a preloaded library instead
of seccomp user notification.

Where a target cannot be put under our seccomp listener — an outer filter answers bpf()
first (Docker's default profile: EPERM), or another supervisor already owns the listener
(EBUSY: LXD/Incus/sysbox, a nested `fakekernel run`) — a dynamically linked target can
still be served: `preload_shim.c` (compiled on first use, cached like the trampoline) is
put in LD_PRELOAD, interposes the libc entry points loaders use, and sends each call to
the supervisor on a SOCK_SEQPACKET socket.  `PreloadListener` stands in for
`notify.Listener`, so `Supervisor.handle` answers these calls exactly as notifications:
the reply is a value, CONTINUE (the library makes the real call) or an fd passed with
SCM_RIGHTS (lowest free number, O_CLOEXEC as asked, like ADDFD).

Limits, by construction: statically linked programs (Go, musl-static) and raw `syscall`
instructions bypass libc, so they are not served (the runner uses its ptrace fallback,
runner/ptrace.py, for those); epoll_wait is not forwarded, so epoll on emulated ring
buffers stays edge-triggered (runner/epoll.py); paths are only
forwarded under the prefixes in FAKEKERNEL_PRELOAD_PATHS (the bpffs mount, /proc, /sys),
so relative paths inside the emulated bpffs are not seen; a child process that clears
its environment (LD_PRELOAD) leaves the emulated kernel.
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile


from fakekernel.runner.launch import Launched, LaunchError, compiled_c
from fakekernel.runner.notify import NotifError, Notif, NotifData
from uapi.errno import Errno
from uapi.seccomp import AuditArch

__all__ = ["PreloadListener", "launch_preload", "is_dynamic", "shim_path"]

_SHIM_SOURCE = (pathlib.Path(__file__).parent / "preload_shim.c").read_text()
_REQ_SIZE = 8 + 6 * 8                   # struct fk_req: nr, tid, args[6]
_REP_RET, _REP_CONTINUE, _REP_FD = 0, 1, 2
_ELF_MAGIC = b"\x7fELF"
_PT_INTERP = 3


def shim_path() -> str | None:
    """The compiled preload library; None without a C compiler."""
    return compiled_c(_SHIM_SOURCE, "libfakekernel-preload", ("-shared", "-fPIC"))


def is_dynamic(path: str) -> bool:
    """Will LD_PRELOAD reach it: a script (its interpreter decides; assume yes) or an ELF
    with a PT_INTERP program header (a dynamic loader)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:2] == b"#!":
                return True
            if head[:4] != _ELF_MAGIC or head[4] != 2:          # ELFCLASS64 only
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return any(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") == _PT_INTERP
               for i in range(phnum))


class PreloadListener:
    """`notify.Listener`'s interface over the preload library's connections."""

    def __init__(self, path: str):
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server.bind(path)
        self.server.listen(128)
        self.server.setblocking(False)
        self.fd = self.server.fileno()
        self.addfd_send = True
        self.sup = None                     # set by `attach`
        self._conns: dict[int, socket.socket] = {}
        self._current: socket.socket | None = None
        self._next_id = 0
        self.snapdir: str | None = None     # the supervisor's bpffs snapshot root

    def attach(self, sup) -> None:
        self.sup = sup
        sup.epoll.sees_waits = False        # epoll_wait is not forwarded: edge-triggered only
        if self.snapdir is not None:
            sup.vfiles.use_snapshot_root(self.snapdir)

    def idle(self) -> bool:
        """No process is connected (the serve loop may end once the command is gone)."""
        return not self._conns

    # ---- the Listener interface the supervisor uses ----
    def recv(self):
        """The server socket is readable: accept; requests come through `sup.watch`."""
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            raise NotifError(Errno.ENOENT, "no connection") from None
        conn.setblocking(True)
        self._conns[conn.fileno()] = conn
        self.sup.watch(conn.fileno(), self._readable)
        raise NotifError(Errno.ENOENT, "a new connection, no request yet")

    def _readable(self, fd: int, events: int) -> None:
        conn = self._conns[fd]
        try:
            raw = conn.recv(_REQ_SIZE)
        except OSError:
            raw = b""
        if len(raw) != _REQ_SIZE:           # closed (exit, exec) or garbage: forget it
            self.sup.unwatch(fd)
            del self._conns[fd]
            conn.close()
            return
        nr = int.from_bytes(raw[0:4], "little", signed=True)
        tid = int.from_bytes(raw[4:8], "little", signed=True)
        args = tuple(int.from_bytes(raw[8 + 8 * i:16 + 8 * i], "little") for i in range(6))
        self._next_id += 1
        self._current = conn
        try:
            with self.sup.lock:
                self.sup.handle(Notif(id=self._next_id, pid=tid,
                                       data=NotifData(arch=AuditArch.X86_64, nr=nr, args=args)))
        finally:
            self._current = None

    def _reply(self, kind: int, ret: int = 0, cloexec: bool = False, fds=()) -> None:
        rep = (kind.to_bytes(4, "little") + int(cloexec).to_bytes(4, "little")
               + (ret & (1 << 64) - 1).to_bytes(8, "little"))
        if fds:
            socket.send_fds(self._current, [rep], list(fds))
        else:
            self._current.send(rep)

    def id_valid(self, notif_id: int) -> bool:
        return self._current is not None

    def send(self, notif_id: int, ret: int) -> None:
        self._reply(_REP_RET, ret)

    def send_continue(self, notif_id: int) -> None:
        self._reply(_REP_CONTINUE)

    def addfd(self, notif_id: int, srcfd: int, *, send: bool, cloexec: bool = True) -> int:
        """The fd travels with the reply; the library reports the number it got."""
        try:
            self._reply(_REP_FD, cloexec=cloexec, fds=(srcfd,))
            raw = self._current.recv(4)
        except OSError as e:
            raise NotifError(Errno.ENOENT, f"the target went away: {e}") from None
        fd = int.from_bytes(raw, "little", signed=True) if len(raw) == 4 else -1
        if fd < 0:
            raise NotifError(Errno.EMFILE, "the target could not receive the fd")
        return fd

    def set_sync_wakeup(self) -> None:
        pass

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self.server.close()
        try:
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass


def launch_preload(cmd: list[str], *, bpffs_mount: str = "/sys/fs/bpf", popen=None,
                   env=None, **popen_kw) -> Launched:
    """Start `cmd` with the preload library; the listener serves its connections."""
    shim = shim_path()
    if shim is None:
        raise LaunchError("the LD_PRELOAD fallback needs a C compiler (cc) to build its "
                          "library")
    d = tempfile.mkdtemp(prefix="fakekernel-preload-")
    os.chmod(d, 0o711)
    path = os.path.join(d, "sock")
    listener = PreloadListener(path)
    os.chmod(path, 0o777)                   # a target may drop privileges after exec
    env = dict(os.environ if env is None else env)
    env["LD_PRELOAD"] = ":".join(p for p in (shim, env.get("LD_PRELOAD", "")) if p)
    env["FAKEKERNEL_PRELOAD_SOCK"] = path
    # the bpffs snapshot directories the supervisor hands out for open(O_DIRECTORY) of
    # bpffs directories live under one root; calls inside them are the emulator's too
    listener.snapdir = tempfile.mkdtemp(prefix="fakekernel-bpffs-")
    os.chmod(listener.snapdir, 0o755)
    env["FAKEKERNEL_PRELOAD_PATHS"] = f"{bpffs_mount}:/proc:/sys:{listener.snapdir}"
    popen = popen if popen is not None else subprocess.Popen
    try:
        proc = popen(cmd, env=env, **popen_kw)
    except OSError as e:
        listener.close()
        raise LaunchError(f"cannot start {cmd[0]}: {e}") from None
    return Launched(proc=proc, listener=listener, flags=0)
