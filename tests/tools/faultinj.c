/*
 * tests/tools/faultinj.c - an LD_PRELOAD shim that makes the daemon's
 * backing I/O fail on demand (or kills the daemon at that point), so the
 * tests can check what users see under EIO, ENOSPC and crashes.
 *
 * Configuration (environment, or KEY=VALUE lines in the control file):
 *
 *	SQ_FAULT_OP=pwrite|pwritev|fsync|fdatasync|fallocate|ftruncate|
 *		    renameat|openat   one or more, comma-separated; "all"
 *	SQ_FAULT_NTH=N            the Nth matching call fails (default 1)
 *	SQ_FAULT_MODE=once|sticky sticky: the Nth and every later call fail
 *	SQ_FAULT_ERRNO=EIO|ENOSPC|EDQUOT|EROFS|number (default EIO)
 *	SQ_FAULT_PATH_SUBSTR=S    only calls on paths containing S
 *	SQ_FAULT_KILL=1           raise(SIGKILL) at that call instead
 *	SQ_FAULT_CTL=FILE         (environment only) re-read FILE whenever its
 *				  inode, size or mtime changes; its content
 *				  replaces the whole configuration and resets
 *				  the counter; a missing or empty FILE disarms
 *
 * Calls on files under /dev/ and on BACKING/.squeezefs/lock are never counted or
 * failed.  Each injected fault is logged to stderr as "faultinj: inject ...",
 * each (re)load as "faultinj: armed ..." or "faultinj: disarmed".
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
	OP_PWRITE = 1 << 0,
	OP_PWRITEV = 1 << 1,
	OP_FSYNC = 1 << 2,
	OP_FDATASYNC = 1 << 3,
	OP_FALLOCATE = 1 << 4,
	OP_FTRUNCATE = 1 << 5,
	OP_RENAMEAT = 1 << 6,
	OP_OPENAT = 1 << 7,
};

static const struct {
	const char *name;
	unsigned bit;
} op_names[] = {
	{ "pwrite", OP_PWRITE },	 { "pwritev", OP_PWRITEV },
	{ "fsync", OP_FSYNC },		 { "fdatasync", OP_FDATASYNC },
	{ "fallocate", OP_FALLOCATE },	 { "ftruncate", OP_FTRUNCATE },
	{ "renameat", OP_RENAMEAT },	 { "openat", OP_OPENAT },
};

struct config {
	unsigned ops;		/* 0: disarmed */
	unsigned long long nth;
	bool sticky;
	bool kill;
	int err;
	char substr[512];
};

/* All guarded by lock; the real calls run outside it. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct config cfg;
static unsigned long long count;	/* matching calls since (re)arming */
static bool inited;
static const char *ctl_path;
static struct stat ctl_st;
static bool ctl_seen;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	/* fd 2 is the daemon log; write(2) is not intercepted. */
	if (write(2, buf, (size_t)n) < 0)
		return;
}

static int parse_errno(const char *s)
{
	if (!strcmp(s, "EIO"))
		return EIO;
	if (!strcmp(s, "ENOSPC"))
		return ENOSPC;
	if (!strcmp(s, "EDQUOT"))
		return EDQUOT;
	if (!strcmp(s, "EROFS"))
		return EROFS;
	if (atoi(s) > 0)
		return atoi(s);
	return EIO;
}

static unsigned parse_ops(const char *s)
{
	unsigned bits = 0;
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ", ", &save); tok;
	     tok = strtok_r(NULL, ", ", &save)) {
		if (!strcmp(tok, "all")) {
			bits = ~0u;
			continue;
		}
		for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]);
		     i++)
			if (!strcmp(tok, op_names[i].name))
				bits |= op_names[i].bit;
	}
	return bits;
}

static void set_key(struct config *c, const char *key, const char *val)
{
	if (!strcmp(key, "SQ_FAULT_OP"))
		c->ops = parse_ops(val);
	else if (!strcmp(key, "SQ_FAULT_NTH"))
		c->nth = strtoull(val, NULL, 10);
	else if (!strcmp(key, "SQ_FAULT_MODE"))
		c->sticky = !strcmp(val, "sticky");
	else if (!strcmp(key, "SQ_FAULT_ERRNO"))
		c->err = parse_errno(val);
	else if (!strcmp(key, "SQ_FAULT_PATH_SUBSTR"))
		snprintf(c->substr, sizeof(c->substr), "%s", val);
	else if (!strcmp(key, "SQ_FAULT_KILL"))
		c->kill = atoi(val) != 0;
}

static void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->nth = 1;
	c->err = EIO;
}

static void log_config(const char *from)
{
	if (!cfg.ops) {
		say("faultinj: disarmed (%s)\n", from);
		return;
	}
	say("faultinj: armed (%s): ops=0x%x nth=%llu mode=%s %s=%d path~'%s'\n",
	    from, cfg.ops, cfg.nth, cfg.sticky ? "sticky" : "once",
	    cfg.kill ? "kill" : "errno", cfg.kill ? SIGKILL : cfg.err,
	    cfg.substr);
}

/* Reads the control file with raw syscalls: open() is intercepted. */
static void load_ctl(void)
{
	char buf[4096], *line, *save = NULL;
	ssize_t n = -1;
	int fd;

	config_defaults(&cfg);
	count = 0;
	fd = (int)syscall(SYS_openat, AT_FDCWD, ctl_path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = syscall(SYS_read, fd, buf, sizeof(buf) - 1);
		syscall(SYS_close, fd);
	}
	if (n <= 0) {
		log_config("control file missing or empty");
		return;
	}
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');

		if (!eq || line[0] == '#')
			continue;
		*eq = 0;
		set_key(&cfg, line, eq + 1);
	}
	log_config("control file");
}

/* Caller holds lock. */
static void refresh(void)
{
	struct stat st;
	bool have;

	if (!inited) {
		static const char *keys[] = {
			"SQ_FAULT_OP", "SQ_FAULT_NTH", "SQ_FAULT_MODE",
			"SQ_FAULT_ERRNO", "SQ_FAULT_PATH_SUBSTR",
			"SQ_FAULT_KILL",
		};

		inited = true;
		config_defaults(&cfg);
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			const char *v = getenv(keys[i]);

			if (v)
				set_key(&cfg, keys[i], v);
		}
		ctl_path = getenv("SQ_FAULT_CTL");
		if (ctl_path && !*ctl_path)
			ctl_path = NULL;
		if (cfg.ops)
			log_config("environment");
	}
	if (!ctl_path)
		return;
	have = stat(ctl_path, &st) == 0;
	if (!have && !ctl_seen)
		return;		/* absent: keep the current configuration */
	if (have && ctl_seen && st.st_ino == ctl_st.st_ino &&
	    st.st_size == ctl_st.st_size &&
	    st.st_mtim.tv_sec == ctl_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == ctl_st.st_mtim.tv_nsec &&
	    st.st_ctim.tv_nsec == ctl_st.st_ctim.tv_nsec)
		return;
	if (have) {
		ctl_st = st;
		ctl_seen = true;
		load_ctl();
	} else {
		memset(&ctl_st, 0, sizeof(ctl_st));
		ctl_seen = false;	/* stays disarmed until it reappears */
		config_defaults(&cfg);
		count = 0;
		log_config("control file removed");
	}
}

static void fd_path(int fd, char *out, size_t len)
{
	char link[64];
	ssize_t n;

	if (fd == AT_FDCWD) {
		if (!getcwd(out, len))
			snprintf(out, len, "?");
		return;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, len - 1);
	if (n < 0)
		n = 0;
	out[n] = 0;
}

/* The path named by (dirfd, name); /proc/self/fd/N is resolved. */
static void at_path(int dirfd, const char *name, char *out, size_t len)
{
	char dir[4096];
	ssize_t n;

	if (!name) {
		snprintf(out, len, "?");
		return;
	}
	if (!strncmp(name, "/proc/self/fd/", 14)) {
		n = readlink(name, out, len - 1);
		if (n >= 0) {
			out[n] = 0;
			return;
		}
	}
	if (name[0] == '/') {
		snprintf(out, len, "%s", name);
		return;
	}
	fd_path(dirfd, dir, sizeof(dir));
	/* A cut path only matters for matching: never longer than PATH_MAX. */
	if (snprintf(out, len, "%.2048s/%s", dir, name) < 0)
		out[0] = 0;
}

static bool excluded(const char *path)
{
	return !strncmp(path, "/dev/", 5) || strstr(path, "/.squeezefs/lock");
}

/*
 * Decides whether this call of @op fails.  The call names a file by @fd,
 * or by (@dirfd, @name) and optionally a second one (@dirfd2, @name2);
 * paths are only resolved while armed for @op.  Returns 0 to go ahead, or
 * the errno to fail with; in kill mode the process dies here.
 */
static int should_fail(unsigned op, const char *opname, int fd,
		       int dirfd, const char *name, int dirfd2,
		       const char *name2)
{
	char path[4096], path2[4096] = "";
	unsigned long long n;
	int err = 0;
	bool kill_now = false;

	pthread_mutex_lock(&lock);
	refresh();
	if (!(cfg.ops & op)) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	if (name)
		at_path(dirfd, name, path, sizeof(path));
	else
		fd_path(fd, path, sizeof(path));
	if (name2)
		at_path(dirfd2, name2, path2, sizeof(path2));
	if (excluded(path) || (path2[0] && excluded(path2)) ||
	    (cfg.substr[0] && !strstr(path, cfg.substr) &&
	     !(path2[0] && strstr(path2, cfg.substr)))) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	n = ++count;
	if (n == cfg.nth || (cfg.sticky && n > cfg.nth)) {
		kill_now = cfg.kill;
		err = cfg.err;
		say("faultinj: inject %s #%llu on %s%s%s: %s\n", opname, n, path,
		    path2[0] ? " -> " : "", path2,
		    kill_now ? "SIGKILL" : strerror(err));
	}
	pthread_mutex_unlock(&lock);
	if (kill_now) {
		raise(SIGKILL);
		for (;;)
			pause();
	}
	return err;
}

#define REAL(name, type)                                                     \
	static type real_##name;                                             \
	if (!real_##name)                                                    \
		real_##name = (type)dlsym(RTLD_NEXT, #name)

#define FAIL_IF(...)                                                         \
	do {                                                                 \
		int e_ = should_fail(__VA_ARGS__);                           \
		if (e_) {                                                    \
			errno = e_;                                          \
			return -1;                                           \
		}                                                            \
	} while (0)

/* ---- the intercepted calls ---- */

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*fd_fn)(int);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off);
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off);
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off,
		 int flags);
ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off,
		    int flags);
int fsync(int fd);
int fdatasync(int fd);
int fallocate(int fd, int mode, off_t off, off_t len);
int fallocate64(int fd, int mode, off_t off, off_t len);
int ftruncate(int fd, off_t len);
int ftruncate64(int fd, off_t len);
int renameat(int od, const char *on, int nd, const char *nn);
int renameat2(int od, const char *on, int nd, const char *nn, unsigned fl);
int rename(const char *on, const char *nn);
int open(const char *path, int flags, ...);
int open64(const char *path, int flags, ...);
int openat(int dirfd, const char *path, int flags, ...);
int openat64(int dirfd, const char *path, int flags, ...);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, pwrite_fn);
	FAIL_IF(OP_PWRITE, "pwrite", fd, 0, NULL, 0, NULL);
	return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64, pwrite_fn);
	FAIL_IF(OP_PWRITE, "pwrite", fd, 0, NULL, 0, NULL);
	return real_pwrite64(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev, pwritev_fn);
	FAIL_IF(OP_PWRITEV, "pwritev", fd, 0, NULL, 0, NULL);
	return real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev64, pwritev_fn);
	FAIL_IF(OP_PWRITEV, "pwritev", fd, 0, NULL, 0, NULL);
	return real_pwritev64(fd, iov, cnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off,
		 int flags)
{
	REAL(pwritev2, pwritev2_fn);
	FAIL_IF(OP_PWRITEV, "pwritev", fd, 0, NULL, 0, NULL);
	return real_pwritev2(fd, iov, cnt, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off,
		    int flags)
{
	REAL(pwritev64v2, pwritev2_fn);
	FAIL_IF(OP_PWRITEV, "pwritev", fd, 0, NULL, 0, NULL);
	return real_pwritev64v2(fd, iov, cnt, off, flags);
}

int fsync(int fd)
{
	REAL(fsync, fd_fn);
	FAIL_IF(OP_FSYNC, "fsync", fd, 0, NULL, 0, NULL);
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	REAL(fdatasync, fd_fn);
	FAIL_IF(OP_FDATASYNC, "fdatasync", fd, 0, NULL, 0, NULL);
	return real_fdatasync(fd);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(fallocate, fallocate_fn);
	FAIL_IF(OP_FALLOCATE, "fallocate", fd, 0, NULL, 0, NULL);
	return real_fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	REAL(fallocate64, fallocate_fn);
	FAIL_IF(OP_FALLOCATE, "fallocate", fd, 0, NULL, 0, NULL);
	return real_fallocate64(fd, mode, off, len);
}

int ftruncate(int fd, off_t len)
{
	REAL(ftruncate, ftruncate_fn);
	FAIL_IF(OP_FTRUNCATE, "ftruncate", fd, 0, NULL, 0, NULL);
	return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len)
{
	REAL(ftruncate64, ftruncate_fn);
	FAIL_IF(OP_FTRUNCATE, "ftruncate", fd, 0, NULL, 0, NULL);
	return real_ftruncate64(fd, len);
}

int renameat(int od, const char *on, int nd, const char *nn)
{
	REAL(renameat, renameat_fn);
	FAIL_IF(OP_RENAMEAT, "renameat", -1, od, on, nd, nn);
	return real_renameat(od, on, nd, nn);
}

int renameat2(int od, const char *on, int nd, const char *nn, unsigned fl)
{
	REAL(renameat2, renameat2_fn);
	FAIL_IF(OP_RENAMEAT, "renameat", -1, od, on, nd, nn);
	return real_renameat2(od, on, nd, nn, fl);
}

int rename(const char *on, const char *nn)
{
	REAL(rename, rename_fn);
	FAIL_IF(OP_RENAMEAT, "renameat", -1, AT_FDCWD, on, AT_FDCWD, nn);
	return real_rename(on, nn);
}

/* open(2) takes a mode only with O_CREAT or O_TMPFILE. */
#define GET_MODE(flags, last)                                                \
	mode_t mode = 0;                                                     \
	if ((flags) & (O_CREAT | __O_TMPFILE)) {                             \
		va_list ap;                                                  \
		va_start(ap, last);                                          \
		mode = va_arg(ap, mode_t);                                   \
		va_end(ap);                                                  \
	}

int open(const char *path, int flags, ...)
{
	REAL(open, open_fn);
	GET_MODE(flags, flags);
	FAIL_IF(OP_OPENAT, "openat", -1, AT_FDCWD, path, 0, NULL);
	return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	REAL(open64, open_fn);
	GET_MODE(flags, flags);
	FAIL_IF(OP_OPENAT, "openat", -1, AT_FDCWD, path, 0, NULL);
	return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	REAL(openat, openat_fn);
	GET_MODE(flags, flags);
	FAIL_IF(OP_OPENAT, "openat", -1, dirfd, path, 0, NULL);
	return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	REAL(openat64, openat_fn);
	GET_MODE(flags, flags);
	FAIL_IF(OP_OPENAT, "openat", -1, dirfd, path, 0, NULL);
	return real_openat64(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	REAL(__open_2, open2_fn);
	FAIL_IF(OP_OPENAT, "openat", -1, AT_FDCWD, path, 0, NULL);
	return real___open_2(path, flags);
}

int __open64_2(const char *path, int flags)
{
	REAL(__open64_2, open2_fn);
	FAIL_IF(OP_OPENAT, "openat", -1, AT_FDCWD, path, 0, NULL);
	return real___open64_2(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	REAL(__openat_2, openat2_fn);
	FAIL_IF(OP_OPENAT, "openat", -1, dirfd, path, 0, NULL);
	return real___openat_2(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	REAL(__openat64_2, openat2_fn);
	FAIL_IF(OP_OPENAT, "openat", -1, dirfd, path, 0, NULL);
	return real___openat64_2(dirfd, path, flags);
}
