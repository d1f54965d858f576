/* A bpf() client using raw syscalls, run under `fakekernel run` and on the real kernel;
 * both runs must print the same lines (no ids or addresses are printed). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/bpf.h>

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(321, cmd, a, sizeof(*a));
}

static const char *res(long r)
{
	static char buf[64];
	if (r >= 0)
		snprintf(buf, sizeof(buf), "%ld", r);
	else
		snprintf(buf, sizeof(buf), "-1 %s", strerrorname_np(errno));
	return buf;
}

static int map_create(int type, int key, int value, int max)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.key_size = key;
	a.value_size = value;
	a.max_entries = max;
	strcpy(a.map_name, "client");
	return sys_bpf(BPF_MAP_CREATE, &a);
}

static long elem(int cmd, int fd, unsigned int key, unsigned int *value, int flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (unsigned long)&key;
	a.value = (unsigned long)value;
	a.flags = flags;
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
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a))
		return 0;
	return info.id;
}

static long get_fd_by_id(unsigned int id)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_id = id;
	return sys_bpf(BPF_MAP_GET_FD_BY_ID, &a);
}

int main(void)
{
	unsigned int v = 0;
	char path[64], link[256];
	int fd = map_create(BPF_MAP_TYPE_HASH, 4, 4, 8);
	printf("map_create hash: %s\n", res(fd));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	memset(link, 0, sizeof(link));
	readlink(path, link, sizeof(link) - 1);
	printf("readlink has bpf-map: %d\n", strstr(link, "bpf-map") != NULL);
	v = 2;
	printf("update 1->2: %s\n", res(elem(BPF_MAP_UPDATE_ELEM, fd, 1, &v, BPF_ANY)));
	printf("update 1 NOEXIST: %s\n", res(elem(BPF_MAP_UPDATE_ELEM, fd, 1, &v, BPF_NOEXIST)));
	v = 0;
	long r = elem(BPF_MAP_LOOKUP_ELEM, fd, 1, &v, 0);
	printf("lookup 1: %s value %u\n", res(r), v);
	printf("lookup 7 (missing): %s\n", res(elem(BPF_MAP_LOOKUP_ELEM, fd, 7, &v, 0)));
	int devnull = open("/dev/null", O_RDONLY);
	printf("lookup on /dev/null fd: %s\n", res(elem(BPF_MAP_LOOKUP_ELEM, devnull, 1, &v, 0)));
	close(devnull);
	printf("lookup on closed fd 900: %s\n", res(elem(BPF_MAP_LOOKUP_ELEM, 900, 1, &v, 0)));
	printf("unknown command 9999: %s\n", res(syscall(321, 9999, NULL, 0)));

	/* dup + close: the map lives while any description is open */
	unsigned int id = map_id(fd);
	int fd2 = dup(fd);
	int fd3 = fcntl(fd, F_DUPFD_CLOEXEC, 10);
	printf("dup: %d, F_DUPFD_CLOEXEC 10: %d\n", fd2, fd3);
	close(fd);
	close(fd3);
	v = 0;
	r = elem(BPF_MAP_LOOKUP_ELEM, fd2, 1, &v, 0);
	printf("lookup through dup after close: %s value %u\n", res(r), v);
	long byid = get_fd_by_id(id);
	printf("get_fd_by_id while open: %s\n", byid >= 0 ? "fd" : res(byid));
	if (byid >= 0)
		close(byid);
	close(fd2);
	printf("get_fd_by_id after last close: %s\n", res(get_fd_by_id(id)));

	/* fork: the child uses the inherited fd; the parent sees the child's update */
	fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 4);
	printf("map_create array: %s\n", res(fd));
	v = 5;
	elem(BPF_MAP_UPDATE_ELEM, fd, 0, &v, BPF_ANY);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		unsigned int cv = 0;
		long cr = elem(BPF_MAP_LOOKUP_ELEM, fd, 0, &cv, 0);
		printf("child lookup 0: %s value %u\n", res(cr), cv);
		cv = 6;
		printf("child update 1->6: %s\n", res(elem(BPF_MAP_UPDATE_ELEM, fd, 1, &cv, BPF_ANY)));
		fflush(stdout);
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	v = 0;
	r = elem(BPF_MAP_LOOKUP_ELEM, fd, 1, &v, 0);
	printf("parent lookup 1 after child: %s value %u\n", res(r), v);
	printf("array lookup 4 (out of range): %s\n", res(elem(BPF_MAP_LOOKUP_ELEM, fd, 4, &v, 0)));
	close(fd);
	return 0;
}
