"""uapi/seccomp.py and uapi/vfs.py (hand-written) against the system's C headers."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from uapi import seccomp, vfs

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler and kernel headers")

# (python value, C expression)
CHECKS = [
    (seccomp.FilterFlag.NEW_LISTENER, "SECCOMP_FILTER_FLAG_NEW_LISTENER"),
    (seccomp.FilterFlag.WAIT_KILLABLE_RECV, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
    (seccomp.SeccompOp.SET_MODE_FILTER, "SECCOMP_SET_MODE_FILTER"),
    (seccomp.SeccompRet.USER_NOTIF, "SECCOMP_RET_USER_NOTIF"),
    (seccomp.SeccompRet.ALLOW, "SECCOMP_RET_ALLOW"),
    (seccomp.SeccompRet.ERRNO, "SECCOMP_RET_ERRNO"),
    (seccomp.NotifFlag.CONTINUE, "SECCOMP_USER_NOTIF_FLAG_CONTINUE"),
    (seccomp.AddfdFlag.SEND, "SECCOMP_ADDFD_FLAG_SEND"),
    (seccomp.AddfdFlag.SETFD, "SECCOMP_ADDFD_FLAG_SETFD"),
    (seccomp.Ioctl.NOTIF_RECV, "SECCOMP_IOCTL_NOTIF_RECV"),
    (seccomp.Ioctl.NOTIF_SEND, "SECCOMP_IOCTL_NOTIF_SEND"),
    (seccomp.Ioctl.NOTIF_ID_VALID, "SECCOMP_IOCTL_NOTIF_ID_VALID"),
    (seccomp.Ioctl.NOTIF_ADDFD, "SECCOMP_IOCTL_NOTIF_ADDFD"),
    (seccomp.AuditArch.X86_64, "AUDIT_ARCH_X86_64"),
    (seccomp.AuditArch.I386, "AUDIT_ARCH_I386"),
    (seccomp.NR_X86_64.bpf, "__NR_bpf"),
    (seccomp.NR_X86_64.statfs, "__NR_statfs"),
    (seccomp.NR_X86_64.fstatfs, "__NR_fstatfs"),
    (seccomp.NR_X86_64.mkdir, "__NR_mkdir"),
    (seccomp.NR_X86_64.mkdirat, "__NR_mkdirat"),
    (seccomp.NR_X86_64.unlink, "__NR_unlink"),
    (seccomp.NR_X86_64.unlinkat, "__NR_unlinkat"),
    (seccomp.NR_X86_64.rmdir, "__NR_rmdir"),
    (seccomp.NR_X86_64.seccomp, "__NR_seccomp"),
    (seccomp.PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS"),
    (seccomp.ffi.sizeof("struct seccomp_notif"), "sizeof(struct seccomp_notif)"),
    (seccomp.ffi.sizeof("struct seccomp_notif_resp"), "sizeof(struct seccomp_notif_resp)"),
    (seccomp.ffi.sizeof("struct seccomp_notif_addfd"), "sizeof(struct seccomp_notif_addfd)"),
    (seccomp.ffi.offsetof("struct seccomp_notif", "data"), "offsetof(struct seccomp_notif, data)"),
    (seccomp.ffi.offsetof("struct seccomp_data", "args"), "offsetof(struct seccomp_data, args)"),
    (vfs.FsMagic.BPF_FS_MAGIC, "BPF_FS_MAGIC"),
    (vfs.FsMagic.ANON_INODE_FS_MAGIC, "ANON_INODE_FS_MAGIC"),
    (vfs.InMask.CLOSE_WRITE, "IN_CLOSE_WRITE"),
    (vfs.InMask.CLOSE_NOWRITE, "IN_CLOSE_NOWRITE"),
    (vfs.InMask.Q_OVERFLOW, "IN_Q_OVERFLOW"),
    (vfs.IN_NONBLOCK, "IN_NONBLOCK"),
    (vfs.IN_CLOEXEC, "IN_CLOEXEC"),
    (vfs.AT_FDCWD, "AT_FDCWD"),
    (vfs.AT_REMOVEDIR, "AT_REMOVEDIR"),
    (vfs.ffi.sizeof("struct statfs"), "sizeof(struct statfs)"),
    (vfs.ffi.offsetof("struct statfs", "f_flags"), "offsetof(struct statfs, f_flags)"),
    (vfs.ffi.sizeof("struct inotify_event"), "sizeof(struct inotify_event)"),
]

PROLOGUE = """
#define _GNU_SOURCE
#include <stdio.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
int main(void) {
"""


def test_constants_and_layouts_match_headers(tmp_path):
    body = "".join(f'    printf("%lld\\n", (long long)({c}));\n' for _, c in CHECKS)
    src = tmp_path / "c.c"
    src.write_text(PROLOGUE + body + "    return 0;\n}\n")
    exe = tmp_path / "c"
    subprocess.run([CC, "-o", str(exe), str(src)], check=True)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    for (value, expr), c in zip(CHECKS, got):
        assert int(value) == c, expr
