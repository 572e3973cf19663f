/*
 * engine/lock.c - BACKING's lock (lock.h).
 */
#include "engine/lock.h"

#include "engine/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void sq_lock_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* The protocol of the two locks is in lock.h. */
#define SQ_LOCK_GRACE_SECS 3	/* from umount to letting go of byte 0 */

static bool lock_serving(int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
			    .l_start = 0, .l_len = 1 };

	/* A failed query counts as a live mount: refusing is safe. */
	if (fcntl(fd, F_OFD_GETLK, &fl))
		return true;
	return fl.l_type != F_UNLCK;
}

/*
 * Whether this mount namespace has a squeezefs mount of @backing (its
 * fsname, see main()).  The daemon lets go of the serving lock a moment
 * after umount returns: a mount that is gone is only finishing.
 */
static bool backing_mounted(const char *backing)
{
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return true;	/* cannot tell: assume it is */
	while (!found && getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - "), *type, *src, *save;

		if (!sep)
			continue;
		type = strtok_r(sep + 3, " \n", &save);
		src = type ? strtok_r(NULL, " \n", &save) : NULL;
		if (!src || strcmp(type, "fuse.squeezefs") ||
		    strncmp(src, "squeezefs:", 10))
			continue;
		sq_lock_unescape(src);
		found = strcmp(src + 10, backing) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

int sq_lock_serve(int fd, bool on)
{
	struct flock fl = { .l_type = on ? F_WRLCK : F_UNLCK,
			    .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

	return fcntl(fd, F_OFD_SETLK, &fl) ? -errno : 0;
}

int sq_lock_take(int root_fd, const char *backing, const char *who)
{
	struct timespec start, now;
	bool said = false;
	int dfd, fd;

	if (mkdirat(root_fd, SQ_RESERVED_NAME, 0700) && errno != EEXIST)
		return -errno;
	dfd = openat(root_fd, SQ_RESERVED_NAME,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	fd = openat(dfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	close(dfd);
	if (fd < 0)
		return -errno;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (flock(fd, LOCK_EX | LOCK_NB)) {
		int e = -errno;
		double waited;

		if (e != -EWOULDBLOCK) {
			close(fd);
			return e;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		waited = (double)(now.tv_sec - start.tv_sec) +
			 (double)(now.tv_nsec - start.tv_nsec) / 1e9;
		/* Serving, and mounted here (or, past a few seconds, in
		 * another namespace): a live mount. */
		if (lock_serving(fd) &&
		    (backing_mounted(backing) || waited > SQ_LOCK_GRACE_SECS)) {
			close(fd);
			return -EWOULDBLOCK;
		}
		if (waited > SQ_LOCK_WAIT_SECS) {
			close(fd);
			return -ETIMEDOUT;
		}
		if (waited > 1.0 && !said && who) {
			fprintf(stderr, "%s: waiting for the squeezefs that "
				"last mounted this BACKING (or an fsck) to "
				"finish storing and let go of it\n", who);
			said = true;
		}
		usleep(10000);
	}
	if (said)
		fprintf(stderr, "%s: BACKING free, going on\n", who);
	return fd;
}
