/*
 * admin/import.c - `squeezefs import [--policy P] [--progress|--no-progress]
 * BACKING`: moving in, offline.  Converts every plain file of an unmounted
 * BACKING (a directory of ordinary files pointed at, docs/FORMAT.md 2.1)
 * into a container in place, a file per core at a time, crash-safely
 * (engine/convert.h): interrupted, it leaves every file either plain or
 * converted, and runs again from where it stopped.  A mount serves plain
 * files as they are and converts them itself in the background; import is
 * for doing it all now, with a progress line (bytes, rate, ETA).
 * Hard-linked plain files stay plain (a container per name would split
 * them), and so, without --all, do plain files that begin like a
 * container (see open_plain()).
 * Exit: 0 done, 1 some file could not be converted (named; it is left as
 * it was), 2 usage or I/O error, or BACKING mounted.
 */
#include "admin/admin.h"

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/convert.h"
#include "engine/engine.h"
#include "engine/lock.h"
#include "engine/pack_store.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { IMPORT_OK = 0, IMPORT_FAILED = 1, IMPORT_ERROR = 2 };

/* Files converted at once: one per core (a file is compressed by one
 * thread), and twice that waiting, each holding its directory open. */
#define MAX_THREADS 16

struct import {
	struct sq_vol vol;
	struct sq_convert cv;	/* shared part; each job has its cctx */
	struct sq_wq *wq;
	unsigned nthreads;
	char path[PATH_MAX];	/* of the walk */
	bool counting;		/* the first walk: totals only */
	bool all;		/* --all: look-alikes too */
	uint64_t lookalikes;	/* left plain (counted in the first walk) */

	/* Held across each exchange: a directory's times are put back from
	 * what they were before it, so two in one directory must not
	 * overlap (the second would put back the first's change). */
	pthread_mutex_t swap_lock;
	pthread_mutex_t lock;	/* a leaf */
	/* Guarded by lock. */
	pthread_cond_t room;
	unsigned inflight;
	struct sq_codec_ctx *cctx[2 * MAX_THREADS];	/* free ones */
	unsigned ncctx;
	struct sq_progress p;	/* bytes of plain files */
	uint64_t files, bytes, stored, linked, linked_bytes;
	unsigned failed;
	bool error;
};

/* One plain file to convert, on a thread of im->wq. */
struct job {
	struct sq_wq_job wq;
	struct import *im;
	struct sq_codec_ctx *cctx;
	int dirfd, fd;
	struct stat st;
	char *path;		/* for messages */
	uint64_t counted;	/* bytes pace() added to the progress */
	char name[];
};

/* Says on stderr that @path could not be done (@what, or errno @err). */
static void report(struct import *im, const char *path, int err)
{
	pthread_mutex_lock(&im->lock);
	sq_progress_break(&im->p);
	fprintf(stderr, "squeezefs import: %s: %s\n", path, strerror(err));
	im->error = true;
	pthread_mutex_unlock(&im->lock);
}

static bool pace(void *arg, uint64_t bytes)
{
	struct job *j = arg;
	struct import *im = j->im;

	pthread_mutex_lock(&im->lock);
	im->p.done += bytes;
	j->counted += bytes;
	sq_progress_show(&im->p, false);
	pthread_mutex_unlock(&im->lock);
	return false;
}

static bool swap_begin(void *arg)
{
	struct job *j = arg;

	pthread_mutex_lock(&j->im->swap_lock);
	return true;
}

static void swap_end(void *arg, bool swapped)
{
	struct job *j = arg;

	(void)swapped;
	pthread_mutex_unlock(&j->im->swap_lock);
}

static void convert_job(struct sq_wq_job *w)
{
	struct job *j = sq_container_of(w, struct job, wq);
	struct import *im = j->im;
	struct sq_convert cv = im->cv;
	uint64_t stored = 0;
	ino_t ino;
	int r;

	cv.cctx = j->cctx;
	cv.arg = j;
	r = sq_convert_file(&cv, j->dirfd, j->name, j->fd, &j->st, &stored,
			    &ino);
	pthread_mutex_lock(&im->lock);
	/* Holes were skipped, not counted: the file is done either way. */
	if ((uint64_t)j->st.st_size > j->counted)
		im->p.done += (uint64_t)j->st.st_size - j->counted;
	if (r) {
		sq_progress_break(&im->p);
		fprintf(stderr, "squeezefs import: %s: %s; left as it was\n",
			j->path, r == -EBUSY ? "changed while converted" :
			strerror(-r));
		im->failed++;
	} else {
		im->files++;
		im->bytes += (uint64_t)j->st.st_size;
		im->stored += stored;
	}
	im->cctx[im->ncctx++] = j->cctx;
	im->inflight--;
	pthread_cond_signal(&im->room);
	pthread_mutex_unlock(&im->lock);
	close(j->fd);
	close(j->dirfd);
	free(j->path);
	free(j);
}

/* Opens @name in @dirfd for reading if it is a plain file (not a
 * container, a packed stub or an empty file): its fd, or -1. */
static int open_plain(struct import *im, int dirfd, const char *name,
		      const struct stat *st)
{
	bool lookalike;
	int fd = sq_convert_open(dirfd, name, st, &im->vol, &lookalike);

	if (fd == -ENODATA)
		return -1;
	if (fd < 0) {
		report(im, im->path, -fd);
		return -1;
	}
	/* Most likely a container of another BACKING, or of this one copied
	 * without .squeezefs/volume: compressed already, and left as it is
	 * it is still a container when the right volume file comes back. */
	if (lookalike && !im->all) {
		if (im->counting)
			im->lookalikes++;
		close(fd);
		return -1;
	}
	return fd;
}

static void do_file(struct import *im, int dirfd, const char *name,
		    const struct stat *st)
{
	struct job *j;
	int fd = open_plain(im, dirfd, name, st);

	if (fd < 0)
		return;
	if (st->st_nlink > 1) {
		if (im->counting) {
			im->linked++;
			im->linked_bytes += (uint64_t)st->st_size;
		}
		close(fd);
		return;
	}
	if (im->counting) {
		im->p.total += (uint64_t)st->st_size;
		close(fd);
		return;
	}
	j = calloc(1, sizeof(*j) + strlen(name) + 1);
	if (j) {
		j->path = strdup(im->path);
		j->dirfd = dup(dirfd);
	}
	if (!j || !j->path || j->dirfd < 0) {
		report(im, im->path, errno ? errno : ENOMEM);
		if (j) {
			free(j->path);
			if (j->dirfd >= 0)
				close(j->dirfd);
		}
		free(j);
		close(fd);
		return;
	}
	strcpy(j->name, name);
	j->im = im;
	j->fd = fd;
	j->st = *st;
	j->wq.run = convert_job;
	pthread_mutex_lock(&im->lock);
	while (im->inflight >= 2 * im->nthreads || !im->ncctx)
		pthread_cond_wait(&im->room, &im->lock);
	im->inflight++;
	j->cctx = im->cctx[--im->ncctx];
	pthread_mutex_unlock(&im->lock);
	sq_wq_push(im->wq, &j->wq);
}

/* Walks the directory @dirfd (borrowed) whose path is im->path. */
static void walk(struct import *im, int dirfd, bool top, int depth)
{
	size_t len = strlen(im->path);
	struct dirent *de;
	int fd = dup(dirfd);
	DIR *d;

	if (fd < 0 || depth > 256 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		report(im, im->path, depth > 256 ? ELOOP : errno);
		return;
	}
	/* The dup shares its position with @dirfd, which a walk before
	 * this one left at the end. */
	rewinddir(d);
	while ((de = readdir(d))) {
		struct stat st;
		int w;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (top && !strcmp(de->d_name, SQ_RESERVED_NAME)))
			continue;
		w = snprintf(im->path + len, sizeof(im->path) - len, "/%s",
			     de->d_name);
		if (w < 0 || (size_t)w >= sizeof(im->path) - len)
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
			im->path[len] = '\0';
			continue;	/* gone meanwhile */
		}
		if (S_ISREG(st.st_mode)) {
			do_file(im, dirfd, de->d_name, &st);
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0) {
				walk(im, sub, false, depth + 1);
				close(sub);
			} else {
				report(im, im->path, errno);
			}
		}
		im->path[len] = '\0';
	}
	closedir(d);
}

int sq_admin_import(int argc, char **argv)
{
	enum sq_an_policy policy = SQ_AN_POLICY_BALANCED;
	struct import *im = calloc(1, sizeof(*im));
	struct sq_an *an = NULL;
	struct timespec t0, t1;
	const char *backing;
	char real[PATH_MAX];
	bool progress = isatty(2);
	int fd = -1, lock = -1, k = 1, r, ret = IMPORT_ERROR;

	if (!im)
		return IMPORT_ERROR;
	im->cv.tmp_fd = -1;
	pthread_mutex_init(&im->lock, NULL);
	pthread_mutex_init(&im->swap_lock, NULL);
	pthread_cond_init(&im->room, NULL);
	for (; k < argc && argv[k][0] == '-'; k++) {
		if (!strcmp(argv[k], "--progress"))
			progress = true;
		else if (!strcmp(argv[k], "--no-progress"))
			progress = false;
		else if (!strcmp(argv[k], "--all"))
			im->all = true;
		else if (!strcmp(argv[k], "--policy") && k + 1 < argc &&
			 sq_an_policy_parse(argv[k + 1], &policy) == 0)
			k++;
		else
			goto usage;
	}
	if (argc - k != 1)
		goto usage;
	backing = argv[k];
	fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !realpath(backing, real)) {
		fprintf(stderr, "squeezefs import: %s: %s\n", backing,
			strerror(errno));
		goto out;
	}
	/* Before the lock, which makes .squeezefs/ (meta/volume.c). */
	r = sq_vol_setup(fd, false, &im->vol);
	if (r) {
		fprintf(stderr, "squeezefs import: %s/.squeezefs/volume: %s\n",
			backing, r == -EBADMSG ? "damaged" : strerror(-r));
		goto out;
	}
	if (im->vol.legacy) {
		/* Everything in it is a container, as it always was. */
		printf("%s was written by squeezefs before format 5: every "
		       "file in it is a container; nothing to import\n",
		       backing);
		ret = IMPORT_OK;
		goto out;
	}
	lock = sq_lock_take(fd, real, "squeezefs import");
	if (lock < 0) {
		fprintf(stderr, "squeezefs import: %s: %s\n", backing,
			lock == -EWOULDBLOCK ? "mounted: unmount it first (a "
			"mount converts plain files itself, in the background)"
			: strerror(-lock));
		goto out;
	}
	if (!im->vol.id) {
		fprintf(stderr, "squeezefs import: %s: cannot write "
			".squeezefs/volume\n", backing);
		goto out;
	}
	r = sq_an_new("auto", policy, SQ_AN_MIN_SAVING_DEFAULT, &an);
	{
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		im->nthreads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS :
			       (unsigned)n;
	}
	while (!r && im->ncctx < 2 * im->nthreads)
		r = sq_codec_ctx_new(&im->cctx[im->ncctx++]);
	if (!r)
		r = sq_wq_new("sq-import", im->nthreads, &im->wq);
	if (!r) {
		im->cv.tmp_fd = sq_convert_tmp_open(fd);
		r = im->cv.tmp_fd < 0 ? im->cv.tmp_fd : 0;
	}
	if (r) {
		fprintf(stderr, "squeezefs import: %s\n", strerror(-r));
		goto out;
	}
	sq_an_set_payoff(an, false);	/* there is time for every block */
	im->cv.vol = &im->vol;
	im->cv.block_shift = SQ_DEFAULT_BLOCK_SHIFT;
	im->cv.an = an;
	im->cv.pace = pace;
	im->cv.begin = swap_begin;
	im->cv.end = swap_end;

	snprintf(im->path, sizeof(im->path), "%s", backing);
	im->counting = true;
	walk(im, fd, true, 0);
	im->counting = false;
	sq_progress_start(&im->p, "import", progress, im->p.total);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	walk(im, fd, true, 0);
	/* Every file handed out is done once the threads are gone. */
	sq_wq_free(im->wq, -1);
	im->wq = NULL;
	sq_progress_show(&im->p, true);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%" PRIu64 " plain files converted, %" PRIu64 " bytes stored "
	       "as %" PRIu64 " in %.1f s; %u failed\n", im->files, im->bytes,
	       im->stored, (double)(t1.tv_sec - t0.tv_sec) +
			    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	       im->failed);
	if (im->linked)
		printf("%" PRIu64 " hard-linked plain files (%" PRIu64 " bytes) "
		       "left as they are\n", im->linked, im->linked_bytes);
	if (im->lookalikes)
		printf("%" PRIu64 " plain files that begin like a squeezefs "
		       "container left as they are (containers of another "
		       "BACKING, or of this one copied without "
		       ".squeezefs/volume?  squeezefs fsck names them; "
		       "import --all converts them)\n", im->lookalikes);
	ret = im->error ? IMPORT_ERROR : im->failed ? IMPORT_FAILED
						     : IMPORT_OK;
	goto out;
usage:
	fprintf(stderr, "usage: squeezefs import [--all] [--policy "
		"fast|balanced|max] [--progress|--no-progress] BACKING\n");
out:
	sq_wq_free(im->wq, -1);
	sq_an_free(an);
	for (unsigned c = 0; c < im->ncctx; c++)
		sq_codec_ctx_free(im->cctx[c]);
	if (im->cv.tmp_fd >= 0)
		close(im->cv.tmp_fd);
	if (lock >= 0)
		close(lock);
	if (fd >= 0)
		close(fd);
	free(im);
	return ret;
}
