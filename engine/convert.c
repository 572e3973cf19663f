/*
 * engine/convert.c - plain file to container (convert.h).
 */
#include "engine/convert.h"

#include "analyzer/analyzer.h"
#include "engine/attr.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/xattr.h"
#include "meta/container.h"
#include "meta/format.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

int sq_convert_open(int dirfd, const char *name, const struct stat *st,
		    const struct sq_vol *vol, bool *lookalike)
{
	struct sq_pack_ref ref;
	int fd, k;

	if (vol->legacy || st->st_size == 0)
		return -ENODATA;
	/* Reading it to convert it is no access: its atime stays. */
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOATIME |
		    O_CLOEXEC);
	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	k = sq_ctr_kind(fd, vol);
	/* A stub carries its reference; a plain file never does. */
	if ((k != SQ_KIND_PLAIN && k != SQ_KIND_LOOKALIKE) ||
	    (st->st_size <= SQ_PACK_STUB_LEN &&
	     sq_pack_get_ref(fd, NULL, &ref) == 0)) {
		close(fd);
		return -ENODATA;
	}
	*lookalike = k == SQ_KIND_LOOKALIKE;
	return fd;
}

int sq_convert_tmp_open(int root_fd)
{
	struct dirent *de;
	DIR *d;
	int fd, dup_fd;

	if (mkdirat(root_fd, SQ_CONVERT_TMP, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(root_fd, SQ_CONVERT_TMP, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Leftovers of a conversion a crash or kill cut short: the plain
	 * file (or, after the exchange, the container) is at its name. */
	dup_fd = dup(fd);
	if (dup_fd >= 0 && (d = fdopendir(dup_fd))) {
		while ((de = readdir(d)))
			if (!strncmp(de->d_name, "convert.", 8))
				unlinkat(fd, de->d_name, 0);
		closedir(d);
	} else if (dup_fd >= 0) {
		close(dup_fd);
	}
	return fd;
}

/* Copies the xattrs of @from to @to; security.capability goes to our own
 * name (FORMAT.md 12: the kernel drops it on every write to the
 * container), where we may set it. */
static int copy_xattrs(int from, int to)
{
	char *names = NULL, *val = NULL;
	ssize_t n, len;
	size_t cap = 0;
	int ret = 0;

	n = flistxattr(from, NULL, 0);
	if (n <= 0)
		return n < 0 && errno != ENOTSUP ? -errno : 0;
	names = malloc((size_t)n);
	if (!names)
		return -ENOMEM;
	n = flistxattr(from, names, (size_t)n);
	if (n < 0) {
		ret = -errno;	/* ERANGE: one was added: try again later */
		goto out;
	}
	for (char *p = names; p < names + n; p += strlen(p) + 1) {
		const char *to_name = p;

		len = fgetxattr(from, p, NULL, 0);
		if (len < 0)
			continue;	/* gone meanwhile */
		if ((size_t)len > cap) {
			char *nv = realloc(val, (size_t)len);

			if (!nv) {
				ret = -ENOMEM;
				goto out;
			}
			val = nv;
			cap = (size_t)len;
		}
		len = fgetxattr(from, p, val, cap);
		if (len < 0) {
			ret = errno == ERANGE ? -EBUSY : 0;
			if (ret)
				goto out;
			continue;
		}
		if (!strcmp(p, SQ_XATTR_CAPS_SHOWN) && geteuid() == 0)
			to_name = SQ_XATTR_CAPS;
		if (fsetxattr(to, to_name, val, (size_t)len, 0) < 0) {
			ret = -errno;
			goto out;
		}
	}
out:
	free(names);
	free(val);
	return ret;
}

/* Gives the container @tfd the plain file's owner, xattrs, mode and
 * times (@st), in an order none of them undoes. */
static int copy_meta(int pfd, int tfd, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	int ret;

	/* chown first: it clears setuid and setgid. */
	if (fchown(tfd, st->st_uid, st->st_gid) < 0 && errno != EPERM)
		return -errno;
	ret = copy_xattrs(pfd, tfd);
	if (ret)
		return ret;
	if (fchmod(tfd, st->st_mode & 07777) < 0)
		return -errno;
	if (futimens(tfd, ts) < 0)
		return -errno;
	return 0;
}

/* Writes the plain file's blocks into the container @ctr. */
static int fill(const struct sq_convert *cv, int pfd, uint64_t size,
		struct sq_ctr *ctr)
{
	struct sq_an_file *af = NULL;
	uint32_t bs = (uint32_t)1 << cv->block_shift;
	uint8_t *buf = malloc(bs), *scratch = malloc(bs);
	uint64_t off = 0;
	int ret;

	ret = buf && scratch ? sq_an_file_new(&af) : -ENOMEM;
	if (!ret)
		ret = sq_ctr_set_size(ctr, size);
	while (!ret && off < size) {
		struct sq_an_result res;
		size_t want = size - off < bs ? (size_t)(size - off) : bs;
		off_t d;
		ssize_t n;

		/* Holes stay holes. */
		d = lseek(pfd, (off_t)off, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			break;
		if (d >= 0 && (uint64_t)d >= off + bs) {
			off = (uint64_t)d & ~((uint64_t)bs - 1);
			continue;
		}
		n = pread(pfd, buf, want, (off_t)off);
		if (n < 0) {
			ret = -errno;
			break;
		}
		if ((size_t)n < want) {
			ret = -EBUSY;	/* cut short meanwhile */
			break;
		}
		ret = sq_an_store(cv->an, af, off / bs, cv->cctx, buf, want,
				  scratch, bs, &res);
		if (!ret && !res.zero)
			ret = sq_ctr_write_block(ctr, off / bs, res.codec,
						 res.level, (uint32_t)want,
						 res.payload,
						 (uint32_t)res.len);
		off += want;
		if (!ret && cv->pace && cv->pace(cv->arg, want))
			ret = -EINTR;
	}
	if (!ret)
		ret = sq_ctr_sync(ctr);
	sq_an_file_free(af);
	free(buf);
	free(scratch);
	return ret;
}

/* Puts the container @tmp in place of the plain file @name (@st), the
 * directory's times kept.  0, -EBUSY when @name is no longer the plain
 * file, or -errno. */
static int swap(const struct sq_convert *cv, const char *tmp, int dirfd,
		const char *name, const struct stat *st)
{
	struct stat dst, now;
	struct timespec ts[2];
	int ret = 0;

	if (fstat(dirfd, &dst) < 0)
		return -errno;
	/* An exchange, not a rename over: if the name was renamed away
	 * meanwhile, what we replaced is found and put back. */
	if (renameat2(cv->tmp_fd, tmp, dirfd, name, RENAME_EXCHANGE) == 0) {
		if (fstatat(cv->tmp_fd, tmp, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
		    now.st_ino != st->st_ino || now.st_dev != st->st_dev) {
			renameat2(cv->tmp_fd, tmp, dirfd, name,
				  RENAME_EXCHANGE);
			return -EBUSY;
		}
		unlinkat(cv->tmp_fd, tmp, 0);
	} else if (errno == EINVAL || errno == ENOSYS) {
		/* No exchange here: the name is checked, then replaced. */
		if (fstatat(dirfd, name, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
		    now.st_ino != st->st_ino || now.st_dev != st->st_dev)
			return -EBUSY;
		if (renameat(cv->tmp_fd, tmp, dirfd, name) < 0)
			return -errno;
	} else {
		return -errno;
	}
	if (fsync(dirfd) < 0)
		ret = -errno;
	/* The mount shows the directory's times: nothing in it changed. */
	ts[0] = dst.st_atim;
	ts[1] = dst.st_mtim;
	(void)futimens(dirfd, ts);
	return ret;
}

int sq_convert_file(const struct sq_convert *cv, int dirfd, const char *name,
		    int pfd, const struct stat *st, uint64_t *stored,
		    ino_t *new_ino)
{
	struct sq_ctr *ctr = NULL;
	struct stat now, tst;
	char tmp[64];
	bool begun = false, swapped = false;
	int tfd, ret;

	if (st->st_nlink > 1)
		return -EMLINK;
	snprintf(tmp, sizeof(tmp), "convert.%llu.%ld",
		 (unsigned long long)st->st_ino, (long)getpid());
	tfd = openat(cv->tmp_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
		     O_CLOEXEC, 0600);
	if (tfd < 0)
		return -errno;
	ret = sq_ctr_open_vol(tfd, cv->block_shift, cv->vol, &ctr);
	if (!ret)
		ret = fill(cv, pfd, (uint64_t)st->st_size, ctr);
	sq_ctr_close(ctr);
	if (!ret)
		ret = copy_meta(pfd, tfd, st);
	if (!ret && fsync(tfd) < 0)
		ret = -errno;
	if (!ret && fstat(tfd, &tst) < 0)
		ret = -errno;
	if (ret)
		goto out;
	begun = !cv->begin || cv->begin(cv->arg);
	if (!begun) {
		ret = -EBUSY;
		goto out;
	}
	/* Changed behind the mount's back (or by it, before begin()). */
	if (fstat(pfd, &now) < 0 || !sq_attr_same(st, &now)) {
		ret = -EBUSY;
		goto out;
	}
	ret = swap(cv, tmp, dirfd, name, st);
	swapped = ret == 0 || (ret != -EBUSY &&
			       fstatat(dirfd, name, &now,
				       AT_SYMLINK_NOFOLLOW) == 0 &&
			       now.st_ino == tst.st_ino);
	if (swapped) {
		*stored = (uint64_t)tst.st_blocks * 512;
		*new_ino = tst.st_ino;
	}
out:
	if (begun && cv->end)
		cv->end(cv->arg, swapped);
	close(tfd);
	if (!swapped)
		unlinkat(cv->tmp_fd, tmp, 0);
	return swapped ? 0 : ret;
}
