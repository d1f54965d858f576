/* Emulated fds across processes, run under `fakekernel run` and on the real kernel; both
 * must print the same lines: a map fd passed with SCM_RIGHTS to a forked child (which
 * updates through it and closes it), an mmap()ed BPF_F_MMAPABLE array shared with a child
 * through fork, and the map ids dying with the last reference. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/bpf.h>

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(321, cmd, a, sizeof(*a));
}

static int map_create(int type, int flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 4;
	a.map_flags = flags;
	return sys_bpf(BPF_MAP_CREATE, &a);
}

static long elem(int cmd, int fd, unsigned int key, unsigned long long *value)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (unsigned long)&key;
	a.value = (unsigned long)value;
	return sys_bpf(cmd, &a);
}

static unsigned int map_id(int fd)
{
	struct bpf_map_info info;
	union bpf_attr a;
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (unsigned long)&info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) ? 0 : info.id;
}

static long get_fd_by_id(unsigned int id)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_id = id;
	return sys_bpf(BPF_MAP_GET_FD_BY_ID, &a);
}

static int send_fd(int sock, int fd)
{
	char buf[CMSG_SPACE(sizeof(int))] = {0}, byte = 'x';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
			    .msg_controllen = sizeof(buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char buf[CMSG_SPACE(sizeof(int))] = {0}, byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
			    .msg_controllen = sizeof(buf) };
	int fd = -1;
	if (recvmsg(sock, &m, 0) != 1 || !CMSG_FIRSTHDR(&m))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

int main(void)
{
	unsigned long long v = 0;
	int sv[2], fd, status;
	unsigned int id;
	long r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* 1. SCM_RIGHTS to a child */
	fd = map_create(BPF_MAP_TYPE_HASH, 0);
	id = map_id(fd);
	socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
	if (fork() == 0) {
		int got = recv_fd(sv[1]);
		unsigned long long val = 42;
		printf("child got an fd: %d\n", got >= 0);
		printf("child update via passed fd: %ld\n", elem(BPF_MAP_UPDATE_ELEM, got, 1, &val));
		close(got);
		_exit(0);
	}
	send_fd(sv[0], fd);
	wait(&status);
	r = elem(BPF_MAP_LOOKUP_ELEM, fd, 1, &v);
	printf("parent lookup after child: %ld value %llu\n", r, v);
	close(fd);
	usleep(100000);
	r = get_fd_by_id(id);
	printf("get_fd_by_id after last close: %s\n", r < 0 ? strerrorname_np(errno) : "fd");

	/* 2. an mmap()ed array shared through fork */
	fd = map_create(BPF_MAP_TYPE_ARRAY, BPF_F_MMAPABLE);
	id = map_id(fd);
	unsigned long long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	printf("mmap: %s\n", p == MAP_FAILED ? strerrorname_np(errno) : "ok");
	if (p == MAP_FAILED)
		return 1;
	p[2] = 7;
	if (fork() == 0) {
		p[3] = p[2] * 6;
		_exit(0);
	}
	wait(&status);
	r = elem(BPF_MAP_LOOKUP_ELEM, fd, 3, &v);
	printf("lookup of a value the child wrote through the mapping: %ld value %llu\n", r, v);
	v = 99;
	elem(BPF_MAP_UPDATE_ELEM, fd, 0, &v);
	printf("mapping sees an update: %llu\n", p[0]);
	close(fd);
	usleep(100000);
	r = get_fd_by_id(id);
	printf("get_fd_by_id while mapped: %s\n", r < 0 ? strerrorname_np(errno) : "fd");
	if (r >= 0)
		close(r);
	munmap(p, 4096);
	usleep(100000);
	r = get_fd_by_id(id);
	printf("get_fd_by_id after munmap: %s\n", r < 0 ? strerrorname_np(errno) : "fd");
	return 0;
}
