/*
 * meta/volume.c - BACKING/.squeezefs/volume (docs/FORMAT.md 12.1): the
 * random id that tells this BACKING's containers from plain files.
 *
 * Why an id and not a checksum: a plain file can hold any bytes, a valid
 * container header included (a copy of another BACKING moved in, a test
 * file).  Only something a file of this BACKING alone can carry tells
 * them apart, and 64 random bits chosen here are that.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "meta/container_i.h"

#define RESERVED_DIR ".squeezefs"
#define VOL_PATH RESERVED_DIR "/" SQ_VOL_FILE

static int parse(const uint8_t *b, struct sq_vol *out)
{
	uint16_t flags = sq_get_le16(b + SQ_VOL_OFF_FLAGS);

	if (memcmp(b, SQ_VOL_MAGIC, 8) ||
	    sq_get_le16(b + SQ_VOL_OFF_VERSION) != SQ_VOL_VERSION ||
	    (flags & ~SQ_VOL_FLAG_LEGACY) ||
	    XXH3_64bits(b, SQ_VOL_OFF_SUM) != sq_get_le64(b + SQ_VOL_OFF_SUM) ||
	    sq_get_le64(b + SQ_VOL_OFF_ID) == 0)
		return -EBADMSG;
	out->id = sq_get_le64(b + SQ_VOL_OFF_ID);
	out->legacy = flags & SQ_VOL_FLAG_LEGACY;
	return 0;
}

static int read_vol(int root_fd, struct sq_vol *out)
{
	uint8_t b[SQ_VOL_LEN + 1];
	ssize_t n;
	int fd, ret;

	fd = openat(root_fd, VOL_PATH, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = sq_pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n < 0)
		return (int)n;
	ret = n == SQ_VOL_LEN ? parse(b, out) : -EBADMSG;
	return ret;
}

/* Writes a new volume file: a temporary one, synced, renamed into place,
 * the directory synced.  -EEXIST when another made one first. */
static int write_vol(int root_fd, const struct sq_vol *v)
{
	char tmp[64];
	uint8_t b[SQ_VOL_LEN];
	int dfd, fd = -1, ret;

	memset(b, 0, sizeof(b));
	memcpy(b, SQ_VOL_MAGIC, 8);
	sq_put_le16(b + SQ_VOL_OFF_VERSION, SQ_VOL_VERSION);
	sq_put_le16(b + SQ_VOL_OFF_FLAGS, v->legacy ? SQ_VOL_FLAG_LEGACY : 0);
	sq_put_le64(b + SQ_VOL_OFF_ID, v->id);
	sq_put_le64(b + SQ_VOL_OFF_SUM, XXH3_64bits(b, SQ_VOL_OFF_SUM));

	dfd = openat(root_fd, RESERVED_DIR, O_RDONLY | O_DIRECTORY |
		     O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	snprintf(tmp, sizeof(tmp), "%s.%ld", SQ_VOL_FILE, (long)getpid());
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
		    O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = sq_pwrite_full(fd, b, sizeof(b), 0);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	/* Never over one that exists: its id is what the containers carry. */
	if (!ret && renameat2(dfd, tmp, dfd, SQ_VOL_FILE, RENAME_NOREPLACE))
		ret = -errno;
	if (ret)
		unlinkat(dfd, tmp, 0);
	else if (fsync(dfd) < 0)
		ret = -errno;
out:
	close(dfd);
	return ret;
}

int sq_vol_load(int root_fd, struct sq_vol *out, bool *found)
{
	struct stat st;
	int ret;

	memset(out, 0, sizeof(*out));
	*found = false;
	ret = read_vol(root_fd, out);
	if (ret != -ENOENT) {
		*found = ret == 0;
		return ret;
	}
	/* Written by a release before volumes (or its file was lost): every
	 * file is a container there, as it always was. */
	out->legacy = fstatat(root_fd, RESERVED_DIR, &st,
			      AT_SYMLINK_NOFOLLOW) == 0;
	return 0;
}

int sq_vol_create(int root_fd, bool legacy, struct sq_vol *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	out->legacy = legacy;
	if (mkdirat(root_fd, RESERVED_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	do {
		if (getrandom(&out->id, sizeof(out->id), 0) !=
		    (ssize_t)sizeof(out->id))
			return errno ? -errno : -EIO;
	} while (!out->id);
	ret = write_vol(root_fd, out);
	if (ret == -EEXIST)
		return read_vol(root_fd, out);
	return ret;
}

int sq_vol_setup(int root_fd, bool write_legacy, struct sq_vol *out)
{
	bool found;
	int ret;

	ret = sq_vol_load(root_fd, out, &found);
	if (ret || found || (out->legacy && !write_legacy))
		return ret;
	/* Whatever first makes .squeezefs/ (a mount, or fsck's lock) makes
	 * the volume file with it: .squeezefs/ without one then always means
	 * a BACKING of a release before volumes. */
	ret = sq_vol_create(root_fd, out->legacy, out);
	if (ret == -EROFS || ret == -EACCES || ret == -EPERM) {
		/* A read-only BACKING: nothing is written, nothing locked. */
		out->id = 0;
		return 0;
	}
	return ret;
}
