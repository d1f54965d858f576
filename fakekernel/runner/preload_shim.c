/* libfakekernel-preload: the runner's LD_PRELOAD fallback, for dynamically linked targets
 * where seccomp user notification is unavailable (an outer filter answers bpf() first, or
 * another supervisor owns the listener).
 *
 * It interposes the libc entry points loaders reach the emulated kernel through --
 * syscall(SYS_bpf / SYS_perf_event_open), ioctl('$' perf requests), statfs/fstatfs,
 * mkdir/unlink/rmdir, open/openat, the stat family and access (paths under the prefixes in
 * FAKEKERNEL_PRELOAD_PATHS only), epoll_ctl, socket(AF_NETLINK, *, NETLINK_ROUTE) and
 * bind/getsockname/setsockopt(SOL_NETLINK) -- and sends each call, as (nr, tid, six
 * arguments), to the supervisor on the SOCK_SEQPACKET socket FAKEKERNEL_PRELOAD_SOCK.
 * The supervisor answers the same way it answers a seccomp notification: a return value,
 * CONTINUE (this library then makes the real call), or a new fd passed with SCM_RIGHTS
 * (whose number is reported back so the trace can show it).  Arguments that are pointers
 * are read and written by the supervisor in this process's memory (process_vm_readv).
 * One connection per process (re-made after fork), one request at a time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>

#define REP_RET 0
#define REP_CONTINUE 1
#define REP_FD 2
#define AF_NETLINK_ 16
#define SOL_NETLINK_ 270

struct fk_req { int32_t nr; int32_t tid; int64_t args[6]; };
struct fk_rep { int32_t kind; int32_t cloexec; int64_t ret; };

static int conn = -1;
static pid_t conn_pid;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *next(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
	if (conn >= 0)
		close(conn);		/* the parent's connection stays the parent's */
	conn = -1;
	pthread_mutex_unlock(&mu);
}

__attribute__((constructor)) static void fk_init(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int fk_connect(void)
{
	const char *path = getenv("FAKEKERNEL_PRELOAD_SOCK");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct rlimit rl;
	int s;

	if (!path || strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s);
		return -1;
	}
	/* out of the way of the target's fd numbers: the kernel hands out the lowest free
	 * fd, and our connection must not take one the target would have got */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 128) {
		int hi = fcntl(s, F_DUPFD_CLOEXEC, (int)(rl.rlim_cur > 4096 ? 4096 : rl.rlim_cur) - 64);

		if (hi >= 0) {
			close(s);
			s = hi;
		}
	}
	conn = s;
	conn_pid = getpid();
	return 0;
}

/* 1: answered (*ret is the result, or -errno); 0: make the real call */
static int fk_call(long nr, const long a[6], long *ret)
{
	struct fk_req req = { .nr = (int32_t)nr, .tid = (int32_t)syscall(SYS_gettid) };
	struct fk_rep rep;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	int saved = errno, answered = 0, i;
	ssize_t n;

	for (i = 0; i < 6; i++)
		req.args[i] = a[i];
	pthread_mutex_lock(&mu);
	if ((conn < 0 || conn_pid != getpid()) && fk_connect() < 0) {
		pthread_mutex_unlock(&mu);
		errno = saved;
		if (nr == SYS_bpf) {		/* as when a seccomp supervisor is gone */
			*ret = -ENOSYS;
			return 1;
		}
		return 0;
	}
	if (send(conn, &req, sizeof(req), MSG_NOSIGNAL) != sizeof(req))
		goto lost;
	do
		n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n != sizeof(rep))
		goto lost;
	if (rep.kind == REP_FD) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		int fd = -1;
		int32_t num;

		if (c && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
		if (fd >= 0 && !rep.cloexec)
			fcntl(fd, F_SETFD, 0);
		num = fd;
		send(conn, &num, sizeof(num), MSG_NOSIGNAL);
		*ret = fd >= 0 ? fd : -EMFILE;
		answered = 1;
	} else if (rep.kind == REP_RET) {
		*ret = rep.ret;
		answered = 1;
	}
	pthread_mutex_unlock(&mu);
	errno = saved;
	return answered;
lost:
	close(conn);
	conn = -1;
	pthread_mutex_unlock(&mu);
	*ret = -ENOSYS;
	return 1;
}

static long result(long r)
{
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static int ours(const char *path)
{
	const char *prefixes = getenv("FAKEKERNEL_PRELOAD_PATHS");
	const char *p;
	size_t len;

	if (!path || path[0] != '/' || !prefixes)
		return 0;
	for (p = prefixes; *p; p += len + (p[len] == ':')) {
		len = strcspn(p, ":");
		if (len && strncmp(path, p, len) == 0 && (path[len] == '/' || path[len] == 0))
			return 1;
	}
	return 0;
}

/* a path relative to `dfd`: forwarded when dfd is a directory fd (the supervisor resolves
 * it, and CONTINUEs what is not its), or when the cwd is under a prefix */
static int ours_at(int dfd, const char *path)
{
	char cwd[4096];

	if (!path)
		return 0;
	if (path[0] == '/')
		return ours(path);
	if (dfd != AT_FDCWD)
		return 1;
	return getcwd(cwd, sizeof(cwd)) && ours(cwd);
}

#define ARGS(...) ((const long[6]){ __VA_ARGS__ })

long syscall(long nr, ...)
{
	static long (*real)(long, ...);
	long a[6], r;
	va_list ap;
	int i;

	va_start(ap, nr);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if ((nr == SYS_bpf || nr == SYS_perf_event_open) && fk_call(nr, a, &r))
		return result(r);
	if (!real)
		real = next("syscall");
	return real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int ioctl(int fd, unsigned long req, ...)
{
	static int (*real)(int, unsigned long, ...);
	void *arg;
	long r;
	va_list ap;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (((req >> 8) & 0xff) == '$' && fk_call(SYS_ioctl, ARGS(fd, (long)req, (long)arg), &r))
		return result(r);
	if (!real)
		real = next("ioctl");
	return real(fd, req, arg);
}

#define PATH_CALL(ret_t, name, nr, test, real_args, proto, ...)			\
ret_t name proto								\
{										\
	static ret_t (*real) proto;						\
	long r;									\
	if ((test) && fk_call(nr, ARGS(__VA_ARGS__), &r))			\
		return (ret_t)result(r);					\
	if (!real)								\
		real = next(#name);						\
	return real real_args;							\
}

PATH_CALL(int, statfs, SYS_statfs, ours_at(AT_FDCWD, path), (path, buf),
	  (const char *path, struct statfs *buf), (long)path, (long)buf)
PATH_CALL(int, statfs64, SYS_statfs, ours_at(AT_FDCWD, path), (path, buf),
	  (const char *path, struct statfs64 *buf), (long)path, (long)buf)
PATH_CALL(int, fstatfs, SYS_fstatfs, 1, (fd, buf), (int fd, struct statfs *buf), fd, (long)buf)
PATH_CALL(int, fstatfs64, SYS_fstatfs, 1, (fd, buf), (int fd, struct statfs64 *buf), fd,
	  (long)buf)
PATH_CALL(int, mkdir, SYS_mkdir, ours_at(AT_FDCWD, path), (path, mode), (const char *path, mode_t mode),
	  (long)path, mode)
PATH_CALL(int, mkdirat, SYS_mkdirat, ours_at(dfd, path),
	  (dfd, path, mode), (int dfd, const char *path, mode_t mode), dfd, (long)path, mode)
PATH_CALL(int, unlink, SYS_unlink, ours_at(AT_FDCWD, path), (path), (const char *path), (long)path)
PATH_CALL(int, unlinkat, SYS_unlinkat, ours_at(dfd, path),
	  (dfd, path, flags), (int dfd, const char *path, int flags), dfd, (long)path, flags)
PATH_CALL(int, rmdir, SYS_rmdir, ours_at(AT_FDCWD, path), (path), (const char *path), (long)path)
PATH_CALL(int, stat, SYS_stat, ours_at(AT_FDCWD, path), (path, buf), (const char *path, struct stat *buf),
	  (long)path, (long)buf)
PATH_CALL(int, stat64, SYS_stat, ours_at(AT_FDCWD, path), (path, buf),
	  (const char *path, struct stat64 *buf), (long)path, (long)buf)
PATH_CALL(int, lstat, SYS_lstat, ours_at(AT_FDCWD, path), (path, buf), (const char *path, struct stat *buf),
	  (long)path, (long)buf)
PATH_CALL(int, lstat64, SYS_lstat, ours_at(AT_FDCWD, path), (path, buf),
	  (const char *path, struct stat64 *buf), (long)path, (long)buf)
PATH_CALL(int, fstatat, SYS_newfstatat, ours_at(dfd, path), (dfd, path, buf, flags),
	  (int dfd, const char *path, struct stat *buf, int flags), dfd, (long)path, (long)buf,
	  flags)
PATH_CALL(int, fstatat64, SYS_newfstatat, ours_at(dfd, path), (dfd, path, buf, flags),
	  (int dfd, const char *path, struct stat64 *buf, int flags), dfd, (long)path,
	  (long)buf, flags)
PATH_CALL(int, statx, SYS_statx, ours_at(dfd, path), (dfd, path, flags, mask, buf),
	  (int dfd, const char *path, int flags, unsigned int mask, struct statx *buf), dfd,
	  (long)path, flags, mask, (long)buf)
PATH_CALL(int, access, SYS_access, ours_at(AT_FDCWD, path), (path, mode), (const char *path, int mode),
	  (long)path, mode)
PATH_CALL(int, faccessat, SYS_faccessat, ours_at(dfd, path), (dfd, path, mode, flags),
	  (int dfd, const char *path, int mode, int flags), dfd, (long)path, mode)
PATH_CALL(int, epoll_ctl, SYS_epoll_ctl, 1, (epfd, op, fd, ev),
	  (int epfd, int op, int fd, struct epoll_event *ev), epfd, op, fd, (long)ev)
PATH_CALL(int, socket, SYS_socket, domain == AF_NETLINK_ && protocol == 0,
	  (domain, type, protocol), (int domain, int type, int protocol), domain, type, protocol)
PATH_CALL(int, bind, SYS_bind, 1, (fd, addr, len),
	  (int fd, const struct sockaddr *addr, socklen_t len), fd, (long)addr, len)
PATH_CALL(int, getsockname, SYS_getsockname, 1, (fd, addr, len),
	  (int fd, struct sockaddr *addr, socklen_t *len), fd, (long)addr, (long)len)
PATH_CALL(int, setsockopt, SYS_setsockopt, level == SOL_NETLINK_, (fd, level, opt, val, len),
	  (int fd, int level, int opt, const void *val, socklen_t len), fd, level, opt,
	  (long)val, len)

static int open_common(const char *name, long nr, int dfd, const char *path, int flags,
		       mode_t mode)
{
	long r;
	const long a[6] = { nr == SYS_open ? (long)path : dfd,
			    nr == SYS_open ? flags : (long)path,
			    nr == SYS_open ? (long)mode : flags, mode };

	if (ours_at(dfd, path) && fk_call(nr, a, &r))
		return (int)result(r);
	if (nr == SYS_open) {
		int (*real)(const char *, int, ...) = next(name);
		return real(path, flags, mode);
	} else {
		int (*real)(int, const char *, int, ...) = next(name);
		return real(dfd, path, flags, mode);
	}
}

#define OPEN(name)								\
int name(const char *path, int flags, ...)					\
{										\
	mode_t mode = 0;							\
	va_list ap;								\
	va_start(ap, flags);							\
	if (flags & (O_CREAT | O_TMPFILE))					\
		mode = va_arg(ap, mode_t);					\
	va_end(ap);								\
	return open_common(#name, SYS_open, AT_FDCWD, path, flags, mode);	\
}
#define OPENAT(name)								\
int name(int dfd, const char *path, int flags, ...)				\
{										\
	mode_t mode = 0;							\
	va_list ap;								\
	va_start(ap, flags);							\
	if (flags & (O_CREAT | O_TMPFILE))					\
		mode = va_arg(ap, mode_t);					\
	va_end(ap);								\
	return open_common(#name, SYS_openat, dfd, path, flags, mode);		\
}
OPEN(open)
OPEN(open64)
OPENAT(openat)
OPENAT(openat64)

int __open_2(const char *path, int flags) { return open_common("open", SYS_open, AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { return open_common("open64", SYS_open, AT_FDCWD, path, flags, 0); }
int __openat_2(int dfd, const char *path, int flags) { return open_common("openat", SYS_openat, dfd, path, flags, 0); }
int __openat64_2(int dfd, const char *path, int flags) { return open_common("openat64", SYS_openat, dfd, path, flags, 0); }

/* libc opens these internally (no PLT): interposed whole for the emulator's paths */
#include <dirent.h>
#include <stdio.h>

DIR *opendir(const char *path)
{
	static DIR *(*real)(const char *);
	long r;

	if (ours_at(AT_FDCWD, path) &&
	    fk_call(SYS_open, ARGS((long)path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0), &r)) {
		if (result(r) < 0)
			return NULL;
		return fdopendir((int)r);
	}
	if (!real)
		real = next("opendir");
	return real(path);
}

static int fopen_flags(const char *mode)
{
	int flags = strchr(mode, '+') ? O_RDWR : (mode[0] == 'r' ? O_RDONLY : O_WRONLY);

	if (mode[0] == 'w')
		flags |= O_CREAT | O_TRUNC;
	else if (mode[0] == 'a')
		flags |= O_CREAT | O_APPEND;
	if (strchr(mode, 'e'))
		flags |= O_CLOEXEC;
	return flags;
}

#define FOPEN(name)								\
FILE *name(const char *path, const char *mode)					\
{										\
	static FILE *(*real)(const char *, const char *);			\
	long r;									\
	if (ours_at(AT_FDCWD, path) &&						\
	    fk_call(SYS_open, ARGS((long)path, fopen_flags(mode), 0666), &r)) {	\
		if (result(r) < 0)						\
			return NULL;						\
		return fdopen((int)r, mode);					\
	}									\
	if (!real)								\
		real = next(#name);						\
	return real(path, mode);						\
}
FOPEN(fopen)
FOPEN(fopen64)
