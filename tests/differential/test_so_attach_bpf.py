"""setsockopt(SOL_SOCKET, SO_ATTACH_BPF / SO_ATTACH_REUSEPORT_EBPF / SO_DETACH_BPF /
SO_DETACH_REUSEPORT_BPF / SO_ATTACH_FILTER / SO_LOCK_FILTER) with BPF program fds
(runner/sockopt.py): a C client prints the same lines on the real kernel as root and under
`fakekernel run` as uid 65534 (emulated programs on the host's sockets) -- under seccomp
notification and under the ptrace fallback.  Covers the non-program fds (EINVAL, EBADF),
optlen/pointer errors, wrong program types, non-sockets (ENOTSOCK), replace, detach
(ENOENT), a classic filter replacing an eBPF one and vice versa, SO_LOCK_FILTER (EPERM),
getsockopt(SO_GET_FILTER) (EACCES for an eBPF filter), and the reuseport variants (EINVAL without SO_REUSEPORT, ENOTSUPP for SK_REUSEPORT on
AF_UNIX).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from backends import host_unavailable_reason, unavailable

pytestmark = pytest.mark.differential

HERE = pathlib.Path(__file__).resolve().parent
AS_USER = HERE.parent / "e2e" / "runner_as_user.py"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
CLIENT = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }

static int load(int type, int ret)
{
	struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = ret},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.prog_type = type;
	a.insns = (unsigned long)insns;
	a.insn_cnt = 2;
	a.license = (unsigned long)"GPL";
	return sys_bpf(BPF_PROG_LOAD, &a);
}

static const char *res(int r)
{
	static char buf[64];
	if (r >= 0)
		snprintf(buf, sizeof buf, "%d", r);
	else if (errno == 524)
		snprintf(buf, sizeof buf, "-1 ENOTSUPP");
	else
		snprintf(buf, sizeof buf, "-1 %s", strerrorname_np(errno));
	return buf;
}

static const char *so(int s, int opt, int fd)
{
	return res(setsockopt(s, SOL_SOCKET, opt, &fd, sizeof fd));
}

int main(void)
{
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = a.value_size = 4;
	a.max_entries = 1;
	int map = sys_bpf(BPF_MAP_CREATE, &a);
	int sf = load(BPF_PROG_TYPE_SOCKET_FILTER, 0), sf2 = load(BPF_PROG_TYPE_SOCKET_FILTER, 64);
	int xdp = load(BPF_PROG_TYPE_XDP, 2), rp = load(BPF_PROG_TYPE_SK_REUSEPORT, 1);
	printf("objects: %d %d %d %d %d\n", map >= 0, sf >= 0, sf2 >= 0, xdp >= 0, rp >= 0);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	int devnull = open("/dev/null", O_RDONLY);
	printf("attach /dev/null: %s\n", so(s, SO_ATTACH_BPF, devnull));
	printf("attach closed fd: %s\n", so(s, SO_ATTACH_BPF, 900));
	printf("attach map: %s\n", so(s, SO_ATTACH_BPF, map));
	printf("attach xdp prog: %s\n", so(s, SO_ATTACH_BPF, xdp));
	printf("attach optlen 2: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &sf, 2)));
	long long wide = sf;
	printf("attach optlen 8: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &wide, 8)));
	printf("attach bad pointer: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, (void *)8, 4)));
	printf("attach on a pipe: %s\n", so(devnull, SO_ATTACH_BPF, sf));
	printf("attach on fd 901: %s\n", so(901, SO_ATTACH_BPF, sf));
	printf("detach none: %s\n", so(s, SO_DETACH_BPF, 0));
	socklen_t l0 = 0;
	int g0 = getsockopt(s, SOL_SOCKET, SO_GET_FILTER, NULL, &l0);
	printf("get filter (none): %s len %u\n", res(g0), l0);
	printf("attach socket filter: %s\n", so(s, SO_ATTACH_BPF, sf));
	printf("replace: %s\n", so(s, SO_ATTACH_BPF, sf2));
	printf("detach: %s\n", so(s, SO_DETACH_BPF, 0));
	printf("detach again: %s\n", so(s, SO_DETACH_FILTER, 0));
	struct sock_filter ok[] = {BPF_STMT(BPF_RET | BPF_K, 0xffff)};
	struct sock_fprog fp = {.len = 1, .filter = ok}, empty = {.len = 0, .filter = ok};
	printf("attach ebpf: %s\n", so(s, SO_ATTACH_BPF, sf));
	struct sock_filter dump[4];
	socklen_t dl = 4;
	printf("get filter (ebpf): %s\n", res(getsockopt(s, SOL_SOCKET, SO_GET_FILTER, dump, &dl)));
	printf("classic over it, bad: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &empty, sizeof empty)));
	printf("classic over it, short optlen: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &fp, 8)));
	printf("classic over it: %s\n", res(setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp)));
	dl = 4;
	int gr = getsockopt(s, SOL_SOCKET, SO_GET_FILTER, dump, &dl);
	printf("get filter (classic): %s len %u\n", res(gr), dl);
	printf("ebpf over classic: %s\n", so(s, SO_ATTACH_BPF, sf));
	printf("detach: %s\n", so(s, SO_DETACH_FILTER, 0));
	printf("detach again: %s\n", so(s, SO_DETACH_FILTER, 0));
	printf("attach ebpf: %s\n", so(s, SO_ATTACH_BPF, sf));
	printf("lock: %s\n", so(s, SO_LOCK_FILTER, 1));
	int v = 0;
	socklen_t vl = sizeof v;
	int r = getsockopt(s, SOL_SOCKET, SO_LOCK_FILTER, &v, &vl);
	printf("locked: %s %d\n", res(r), v);
	printf("attach locked: %s\n", so(s, SO_ATTACH_BPF, sf2));
	printf("attach locked, not ours: %s\n", so(s, SO_ATTACH_BPF, 900));
	printf("detach locked: %s\n", so(s, SO_DETACH_BPF, 0));
	printf("unlock: %s\n", so(s, SO_LOCK_FILTER, 0));
	close(s);
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	printf("reuseport ebpf, no SO_REUSEPORT: %s\n", so(u, SO_ATTACH_REUSEPORT_EBPF, sf));
	printf("reuseport detach, no group: %s\n", so(u, SO_DETACH_REUSEPORT_BPF, 0));
	int one = 1;
	setsockopt(u, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	printf("reuseport detach, none: %s\n", so(u, SO_DETACH_REUSEPORT_BPF, 0));
	printf("reuseport xdp: %s\n", so(u, SO_ATTACH_REUSEPORT_EBPF, xdp));
	printf("reuseport socket filter: %s\n", so(u, SO_ATTACH_REUSEPORT_EBPF, sf));
	printf("reuseport sk_reuseport: %s\n", so(u, SO_ATTACH_REUSEPORT_EBPF, rp));
	printf("reuseport detach: %s\n", so(u, SO_DETACH_REUSEPORT_BPF, 0));
	printf("reuseport detach again: %s\n", so(u, SO_DETACH_REUSEPORT_BPF, 0));
	int un = socket(AF_UNIX, SOCK_DGRAM, 0);
	setsockopt(un, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	printf("reuseport sk_reuseport on unix: %s\n", so(un, SO_ATTACH_REUSEPORT_EBPF, rp));
	printf("socket filter on unix: %s\n", so(un, SO_ATTACH_BPF, sf));
	return 0;
}
"""


@pytest.fixture(scope="module")
def client():
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fk-soattach-"))
    os.chmod(d, 0o777)
    (d / "so_attach.c").write_text(CLIENT)
    subprocess.run([cc, "-O1", "-o", str(d / "so_attach"), str(d / "so_attach.c")], check=True)
    yield d, d / "so_attach"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def on_host(client):
    reason = host_unavailable_reason()
    if reason is not None:
        unavailable(f"real kernel unavailable: {reason}")
    r = subprocess.run([str(client[1])], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0
    return r.stdout


@pytest.mark.parametrize("flags", [(), ("--ptrace",)], ids=["seccomp", "ptrace"])
def test_so_attach_bpf_matches_real_kernel(client, on_host, flags):
    d, exe = client
    env = {**ENV, "HOME": str(d), "XDG_CACHE_HOME": str(d / "xdg")}
    r = subprocess.run([sys.executable, str(AS_USER), *flags, "--", str(exe)], cwd=d,
                       capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == on_host
    assert "objects: 1 1 1 1 1" in r.stdout and "attach socket filter: 0" in r.stdout
