/*
 * admin/export.c - `squeezefs export [--progress|--no-progress] BACKING DEST`:
 * moving out.  Writes the plain tree an unmounted BACKING holds to DEST:
 * every regular file decoded from its container (packed or not) with its
 * holes left holes, directories, symlinks and special files, with modes,
 * owners, times, xattrs (a file's capability back under its own name) and
 * hard links.  A progress line (bytes, rate, ETA) goes to stderr.
 * Exit: 0 done, 1 some file or block could not be read (named; its bytes
 * are zeros in DEST), 2 usage or I/O error.
 */
#include "admin/admin.h"

#include "engine/engine.h"
#include "engine/lock.h"
#include "engine/pack_store.h"
#include "engine/xattr.h"

#include "codec/codec.h"
#include "meta/container.h"
#include "meta/format.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum { EXPORT_OK = 0, EXPORT_DAMAGE = 1, EXPORT_ERROR = 2 };

/* A file with more than one link, written once: its other names link. */
struct seen {
	dev_t dev;
	ino_t ino;
	char *dest;		/* its path under DEST */
};

struct export {
	struct sq_codec_ctx *cctx;
	struct sq_pack *pack;
	struct sq_vol vol;	/* BACKING's: plain files are copied as is */
	void *buf;		/* one block, of the largest size */
	bool root;
	struct sq_progress p;	/* bytes of files written */
	uint64_t files, damaged;
	bool error;
	struct seen *seen;
	size_t nseen;
};

static void fail(struct export *x, const char *path, int err)
{
	sq_progress_break(&x->p);
	fprintf(stderr, "squeezefs export: %s: %s\n", path, strerror(err));
	x->error = true;
}

/* Opens the container of the regular file @fd (@st): an image from the
 * pack for a packed file.  -EBADMSG (after naming it) when damaged. */
static int open_ctr(struct export *x, int fd, const struct stat *st,
		    const char *path, struct sq_ctr **ctr)
{
	struct sq_pack_ref ref;
	uint8_t *image;
	int r;

	if (st->st_size > SQ_PACK_STUB_LEN)
		return sq_ctr_open_vol(fd, SQ_DEFAULT_BLOCK_SHIFT, &x->vol, ctr);
	r = sq_pack_get_ref(fd, NULL, &ref);
	if (r == -ENODATA && (st->st_size == 0 ||
			      sq_ctr_kind(fd, &x->vol) == SQ_KIND_PLAIN))
		return sq_ctr_open_vol(fd, SQ_DEFAULT_BLOCK_SHIFT, &x->vol, ctr);
	if (r == -ENODATA) {
		printf("%s: packed file lost its pack reference (copied "
		       "without xattrs?): squeezefs fsck --repair may restore "
		       "it; not exported\n", path);
		return -EBADMSG;
	}
	if (r)
		return r;
	image = malloc(ref.len);
	if (!image)
		return -ENOMEM;
	r = sq_pack_load(x->pack, &ref, image);
	if (r) {
		free(image);
		if (r == -EBADMSG)
			printf("%s: packed image in pack %08x is damaged or "
			       "missing; not exported\n", path, ref.pack);
		return r;
	}
	return sq_ctr_open_image(image, ref.len, ctr);
}

/* Writes the logical content of @ctr to @out, holes as holes. */
static int copy_data(struct export *x, struct sq_ctr *ctr, int out,
		     const char *path)
{
	uint64_t size = sq_ctr_size(ctr), bs = sq_ctr_block_size(ctr);
	uint64_t n = (size + bs - 1) / bs, idx = 0;
	int r = 0;

	while (idx < n) {
		int64_t next = sq_ctr_next_data(ctr, idx);
		uint64_t len;
		ssize_t got;

		if (next < 0)
			return (int)next;
		x->p.done += ((uint64_t)next - idx) * bs;
		idx = (uint64_t)next;
		if (idx >= n)
			break;
		sq_ctr_prefetch(ctr, idx, 8);
		got = sq_ctr_read_block(ctr, x->cctx, idx, x->buf);
		if (got == -EBADMSG) {
			printf("%s: block %" PRIu64 " is damaged: exported as "
			       "zeros\n", path, idx);
			x->damaged++;
			r = -EBADMSG;
			memset(x->buf, 0, bs);
		} else if (got < 0) {
			return (int)got;
		}
		len = size - idx * bs < bs ? size - idx * bs : bs;
		if (pwrite(out, x->buf, len, (off_t)(idx * bs)) != (ssize_t)len)
			return errno ? -errno : -EIO;
		x->p.done += len;
		idx++;
		sq_progress_show(&x->p, false);
	}
	if (ftruncate(out, (off_t)size))
		return -errno;
	return r;
}

/*
 * The xattrs of @src (a path through /proc for @fd) on @dst: squeezefs's
 * own names left out, a file's capability (format 2) back under
 * security.capability.  Set before the times and after the mode.
 */
static int copy_xattrs(const char *src, const char *dst, bool is_link)
{
	char list[65536], val[65536];
	ssize_t n, v;
	int r = 0;

	n = is_link ? llistxattr(src, list, sizeof(list))
		    : listxattr(src, list, sizeof(list));
	if (n < 0)
		return errno == ENOTSUP ? 0 : -errno;
	for (char *p = list; p < list + n; p += strlen(p) + 1) {
		const char *to = sq_xattr_shown(p);

		if (!to)
			continue;
		v = is_link ? lgetxattr(src, p, val, sizeof(val))
			    : getxattr(src, p, val, sizeof(val));
		if (v < 0)
			continue;	/* gone meanwhile */
		if ((is_link ? lsetxattr(dst, to, val, (size_t)v, 0)
			     : setxattr(dst, to, val, (size_t)v, 0)) &&
		    errno != ENOTSUP && errno != EPERM)
			r = -errno;
	}
	return r;
}

/* Owner, mode, xattrs, times of @st on @dst (a path; a symlink itself). */
static void copy_meta(struct export *x, const char *src, const char *dst,
		      const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	bool link = S_ISLNK(st->st_mode);
	int r;

	if (x->root && lchown(dst, st->st_uid, st->st_gid))
		fail(x, dst, errno);
	/* After the owner: a chown clears setuid and setgid. */
	if (!link && chmod(dst, st->st_mode & 07777))
		fail(x, dst, errno);
	r = copy_xattrs(src, dst, link);
	if (r)
		fail(x, dst, -r);
	if (utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW))
		fail(x, dst, errno);
}

static const char *seen_dest(struct export *x, const struct stat *st)
{
	for (size_t k = 0; k < x->nseen; k++)
		if (x->seen[k].dev == st->st_dev && x->seen[k].ino == st->st_ino)
			return x->seen[k].dest;
	return NULL;
}

static void export_file(struct export *x, int dirfd, const char *name,
			const char *src, const char *dst,
			const struct stat *st)
{
	struct sq_ctr *ctr = NULL;
	const char *first;
	int fd, out, r;

	if (st->st_nlink > 1 && (first = seen_dest(x, st))) {
		if (link(first, dst))
			fail(x, dst, errno);
		return;
	}
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fail(x, src, errno);
		return;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		   0600);
	if (out < 0) {
		fail(x, dst, errno);
		close(fd);
		return;
	}
	x->files++;
	r = open_ctr(x, fd, st, src, &ctr);
	if (r == -EBADMSG && !ctr) {
		x->damaged++;	/* named; DEST keeps an empty file */
	} else if (r) {
		fail(x, src, -r);
	} else {
		r = copy_data(x, ctr, out, src);
		if (r && r != -EBADMSG)
			fail(x, src, -r);
	}
	sq_ctr_close(ctr);
	if (fsync(out))
		fail(x, dst, errno);
	close(out);
	close(fd);
	if (st->st_nlink > 1) {
		struct seen *n = realloc(x->seen, (x->nseen + 1) * sizeof(*n));

		if (n) {
			x->seen = n;
			n[x->nseen].dev = st->st_dev;
			n[x->nseen].ino = st->st_ino;
			n[x->nseen].dest = strdup(dst);
			if (n[x->nseen].dest)
				x->nseen++;
		}
	}
}

static void walk(struct export *x, int dirfd, const char *src,
		 const char *dst, bool top)
{
	struct dirent *de;
	DIR *dp;
	int fd = dup(dirfd);

	if (fd < 0 || !(dp = fdopendir(fd))) {
		fail(x, src, errno);
		if (fd >= 0)
			close(fd);
		return;
	}
	/* A dup shares the offset: another walk of @dirfd may have left it
	 * at the end. */
	rewinddir(dp);
	while ((errno = 0, de = readdir(dp))) {
		char *s = NULL, *d = NULL;
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (top && !strcmp(de->d_name, SQ_RESERVED_NAME)))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;	/* vanished meanwhile */
		if (asprintf(&s, "%s/%s", src, de->d_name) < 0 ||
		    asprintf(&d, "%s/%s", dst, de->d_name) < 0) {
			free(s);
			x->error = true;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sfd = openat(dirfd, de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sfd < 0 || mkdir(d, 0700)) {
				fail(x, sfd < 0 ? s : d, errno);
			} else {
				walk(x, sfd, s, d, false);
				copy_meta(x, s, d, &st);
			}
			if (sfd >= 0)
				close(sfd);
		} else if (S_ISREG(st.st_mode)) {
			export_file(x, dirfd, de->d_name, s, d, &st);
			const char *first = st.st_nlink > 1 ?
					    seen_dest(x, &st) : NULL;

			/* Another name of a file already written: the
			 * inode's attributes are set. */
			if (!first || !strcmp(first, d))
				copy_meta(x, s, d, &st);
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX + 1];
			ssize_t n = readlinkat(dirfd, de->d_name, target,
					       PATH_MAX);

			if (n < 0 || (target[n] = '\0', symlink(target, d)))
				fail(x, d, errno);
			else
				copy_meta(x, s, d, &st);
		} else if (mknod(d, st.st_mode, st.st_rdev)) {
			fail(x, d, errno);
		} else {
			copy_meta(x, s, d, &st);
		}
		free(s);
		free(d);
	}
	if (errno)
		fail(x, src, errno);
	closedir(dp);
}

/* The logical bytes BACKING holds, for the progress line. */
static uint64_t count(struct export *x, int dirfd, bool top)
{
	uint64_t sum = 0;
	struct dirent *de;
	DIR *dp;
	int fd = dup(dirfd);

	if (fd < 0 || !(dp = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	rewinddir(dp);
	while ((de = readdir(dp))) {
		struct sq_pack_ref ref;
		struct stat st;
		uint64_t size;
		int f;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (top && !strcmp(de->d_name, SQ_RESERVED_NAME)) ||
		    fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			continue;
		f = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW |
			   O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
		if (f < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			sum += count(x, f, false);
		else if (st.st_size <= SQ_PACK_STUB_LEN &&
			 !sq_pack_get_ref(f, NULL, &ref))
			sum += ref.size;
		else if (sq_ctr_peek_size(f, &x->vol, &size) == 0)
			sum += size;
		close(f);
	}
	closedir(dp);
	return sum;
}

int sq_admin_export(int argc, char **argv)
{
	struct export x;
	const char *backing, *dest;
	struct stat st;
	struct timespec t0, t1;
	char real[PATH_MAX];
	bool progress = isatty(2);
	int fd, lock, k = 1, r;

	memset(&x, 0, sizeof(x));
	for (; k < argc && argv[k][0] == '-'; k++) {
		if (!strcmp(argv[k], "--progress"))
			progress = true;
		else if (!strcmp(argv[k], "--no-progress"))
			progress = false;
		else
			break;
	}
	if (argc - k != 2 || argv[k][0] == '-') {
		fprintf(stderr, "usage: squeezefs export [--progress|"
			"--no-progress] BACKING DEST\n");
		return EXPORT_ERROR;
	}
	backing = argv[k];
	dest = argv[k + 1];
	fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !realpath(backing, real)) {
		fprintf(stderr, "squeezefs export: %s: %s\n", backing,
			strerror(errno));
		return EXPORT_ERROR;
	}
	/* Before the lock, which would make .squeezefs/ (meta/volume.c). */
	{
		r = sq_vol_setup(fd, false, &x.vol);
		if (r) {
			fprintf(stderr, "squeezefs export: %s/.squeezefs/"
				"volume: %s\n", backing, r == -EBADMSG ?
				"damaged" : strerror(-r));
			close(fd);
			return EXPORT_ERROR;
		}
	}
	/* A mount changes files while they are read: refused, as fsck
	 * --reclaim is (it waits for a daemon just unmounted). */
	lock = sq_lock_take(fd, real, "squeezefs export");
	/* A read-only BACKING (a snapshot, a backup) has no writer to fear
	 * and cannot take the lock file. */
	if (lock == -EROFS)
		lock = -1;
	else if (lock < 0) {
		fprintf(stderr, "squeezefs export: %s: %s\n", backing,
			lock == -EWOULDBLOCK ? "mounted: unmount it first" :
			strerror(-lock));
		close(fd);
		return EXPORT_ERROR;
	}
	if (mkdir(dest, 0700) && (errno != EEXIST || stat(dest, &st) ||
				  !S_ISDIR(st.st_mode) ||
				  rmdir(dest) || mkdir(dest, 0700))) {
		/* An existing empty directory is taken (rmdir succeeds only
		 * then); anything else is left alone. */
		fprintf(stderr, "squeezefs export: %s: %s (want a new or "
			"empty directory)\n", dest, strerror(errno));
		if (lock >= 0)
			close(lock);
		close(fd);
		return EXPORT_ERROR;
	}
	x.root = geteuid() == 0;
	x.buf = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
	r = x.buf ? sq_codec_ctx_new(&x.cctx) : -ENOMEM;
	if (!r)
		r = sq_pack_open(fd, NULL, false, &x.pack);
	if (r) {
		fprintf(stderr, "squeezefs export: %s\n", strerror(-r));
		free(x.buf);
		sq_codec_ctx_free(x.cctx);
		if (lock >= 0)
			close(lock);
		close(fd);
		return EXPORT_ERROR;
	}
	sq_progress_start(&x.p, "export", progress,
			  progress ? count(&x, fd, true) : 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	walk(&x, fd, backing, dest, true);
	if (fstat(fd, &st) == 0)
		copy_meta(&x, backing, dest, &st);
	sq_progress_show(&x.p, true);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%" PRIu64 " files exported to %s, %" PRIu64 " bytes in %.1f s; "
	       "%" PRIu64 " damaged\n", x.files, dest, x.p.done,
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, x.damaged);
	sq_pack_close(x.pack);
	sq_codec_ctx_free(x.cctx);
	for (size_t i = 0; i < x.nseen; i++)
		free(x.seen[i].dest);
	free(x.seen);
	free(x.buf);
	if (lock >= 0)
		close(lock);
	close(fd);
	if (x.error)
		return EXPORT_ERROR;
	return x.damaged ? EXPORT_DAMAGE : EXPORT_OK;
}
