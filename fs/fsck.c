/*
 * fs/fsck.c - `squeezefs fsck BACKING`: verifies every container under
 * BACKING (header, size records, every block's checksum and decoding)
 * without writing anything.  Walks with openat() so any depth works.
 * Exit: 0 clean, 1 damage found, 2 usage or I/O error.
 */
#include "fs/fs_i.h"

#include "codec/codec.h"
#include "meta/container.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { FSCK_CLEAN = 0, FSCK_DAMAGE = 1, FSCK_ERROR = 2 };

struct fsck {
	struct sq_codec_ctx *cctx;
	struct sq_pack *pack;	/* BACKING's packs, read-only */
	uint64_t files, damaged_files, blocks, stale, raw, stored;
	bool error;
	const char *path;	/* of the file being checked */
};

static void problem(void *arg, uint64_t block, const char *msg)
{
	struct fsck *c = arg;

	/* Messages from meta/ may name the block already. */
	if (block == UINT64_MAX || strncmp(msg, "block ", 6) == 0)
		printf("%s: %s\n", c->path, msg);
	else
		printf("%s: block %llu: %s\n", c->path,
		       (unsigned long long)block, msg);
}

/*
 * An empty container may be a packed one (docs/FORMAT.md section 13):
 * then *@fd becomes a memfd holding its image, checked like a container.
 * Returns 0, or -EBADMSG after reporting a damaged packed file.
 */
static int check_packed(struct fsck *c, int *fd)
{
	uint8_t image[SQ_PACK_IMAGE_MAX];
	struct sq_pack_ref ref;
	struct stat st;
	uint64_t size;
	int r, mfd;

	if (fstat(*fd, &st) || st.st_size != 0)
		return 0;
	r = sq_pack_get_ref(*fd, NULL, &ref);
	if (r == -ENODATA)
		return 0;
	if (r) {
		printf("%s: packed: bad reference: %s\n", c->path,
		       strerror(-r));
		return -EBADMSG;
	}
	r = sq_pack_load(c->pack, &ref, image);
	if (r) {
		printf("%s: packed: image in pack %08x at %llu: %s\n", c->path,
		       ref.pack, (unsigned long long)ref.off,
		       r == -EBADMSG ? "missing or damaged" : strerror(-r));
		return -EBADMSG;
	}
	mfd = sq_pack_memfd(image, ref.len);
	if (mfd < 0)
		return mfd;
	close(*fd);
	*fd = mfd;
	r = sq_ctr_peek_size(mfd, &size);
	if (r == 0 && size != ref.size) {
		printf("%s: packed: image holds %llu bytes, reference says "
		       "%llu\n", c->path, (unsigned long long)size,
		       (unsigned long long)ref.size);
		return -EBADMSG;
	}
	return 0;
}

static void check_file(struct fsck *c, int dirfd, const char *name,
		       const char *path)
{
	struct sq_ctr_check rep;
	int fd, r;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path,
			strerror(errno));
		c->error = true;
		return;
	}
	memset(&rep, 0, sizeof(rep));
	c->path = path;
	r = check_packed(c, &fd);
	if (!r)
		r = sq_ctr_check_fd(fd, c->cctx, &rep, problem, c);
	close(fd);
	c->files++;
	c->blocks += rep.blocks;
	c->stale += rep.stale_slots;
	c->raw += rep.raw_bytes;
	c->stored += rep.stored_bytes;
	if (r == -EBADMSG) {
		c->damaged_files++;
	} else if (r) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path, strerror(-r));
		c->error = true;
	}
}

static void walk(struct fsck *c, int dirfd, const char *path, bool top)
{
	DIR *dp;
	struct dirent *de;
	int fd = dup(dirfd);

	if (fd < 0 || !(dp = fdopendir(fd))) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		c->error = true;
		return;
	}
	while ((errno = 0, de = readdir(dp))) {
		struct stat st;
		char *sub;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (top && !strcmp(de->d_name, SQ_RESERVED_NAME))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;	/* vanished meanwhile */
		if (asprintf(&sub, "%s/%s", path, de->d_name) < 0) {
			c->error = true;
			break;
		}
		if (S_ISREG(st.st_mode)) {
			check_file(c, dirfd, de->d_name, sub);
		} else if (S_ISDIR(st.st_mode)) {
			int sfd = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
						 O_CLOEXEC);

			if (sfd < 0) {
				fprintf(stderr, "squeezefs fsck: %s: %s\n", sub,
					strerror(errno));
				c->error = true;
			} else {
				walk(c, sfd, sub, false);
				close(sfd);
			}
		}
		free(sub);
	}
	if (errno) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path,
			strerror(errno));
		c->error = true;
	}
	closedir(dp);
}

int sq_fsck_main(int argc, char **argv)
{
	struct fsck c;
	int fd, r;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: squeezefs fsck BACKING\n");
		return FSCK_ERROR;
	}
	memset(&c, 0, sizeof(c));
	fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", argv[1],
			strerror(errno));
		return FSCK_ERROR;
	}
	r = sq_codec_ctx_new(&c.cctx);
	if (r) {
		close(fd);
		fprintf(stderr, "squeezefs fsck: %s\n", strerror(-r));
		return FSCK_ERROR;
	}
	r = sq_pack_open(fd, false, &c.pack);
	if (r) {
		close(fd);
		sq_codec_ctx_free(c.cctx);
		fprintf(stderr, "squeezefs fsck: %s\n", strerror(-r));
		return FSCK_ERROR;
	}
	walk(&c, fd, argv[1], true);
	sq_pack_close(c.pack);
	close(fd);
	sq_codec_ctx_free(c.cctx);
	printf("%llu files, %llu blocks, %llu damaged files, %llu obsolete "
	       "slots; %llu bytes stored as %llu\n",
	       (unsigned long long)c.files, (unsigned long long)c.blocks,
	       (unsigned long long)c.damaged_files,
	       (unsigned long long)c.stale, (unsigned long long)c.raw,
	       (unsigned long long)c.stored);
	if (c.damaged_files)
		return FSCK_DAMAGE;
	return c.error ? FSCK_ERROR : FSCK_CLEAN;
}
