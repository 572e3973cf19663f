/*
 * engine/usage.c - the walk behind the usage figures (usage.h).
 */
#include "engine/usage.h"

#include "engine/engine.h"
#include "engine/pack_store.h"
#include "meta/container.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void add_block(struct sq_usage *u, const struct sq_ctr_block_info *b)
{
	if (b->zero)
		return;		/* reads as zeros, takes nothing */
	u->blocks++;
	for (size_t k = 0; k < u->ncodecs; k++) {
		struct sq_usage_codec *c = &u->codecs[k];

		if (c->codec == b->codec && c->level == b->level) {
			c->blocks++;
			c->raw_bytes += b->raw_len;
			c->stored_bytes += b->stored_len;
			return;
		}
	}
	if (u->ncodecs == SQ_USAGE_CODECS) {
		u->other_codec_blocks++;
		return;
	}
	u->codecs[u->ncodecs++] = (struct sq_usage_codec){
		.codec = b->codec, .level = b->level, .blocks = 1,
		.raw_bytes = b->raw_len, .stored_bytes = b->stored_len };
}

/* Counts the blocks of @ctr; false when a header cannot be read.  Holes
 * are skipped as SEEK_DATA finds them: a sparse file costs its data. */
static bool add_blocks(struct sq_ctr *ctr, struct sq_usage *u)
{
	uint64_t n = (sq_ctr_size(ctr) + sq_ctr_block_size(ctr) - 1) >>
		     sq_ctr_block_shift(ctr);
	uint64_t idx = 0;

	while (idx < n) {
		struct sq_ctr_block_info info;
		int64_t next = sq_ctr_next_data(ctr, idx);

		if (next < 0)
			return false;
		if ((uint64_t)next >= n)
			break;
		idx = (uint64_t)next;
		if (sq_ctr_block_info(ctr, idx, &info))
			return false;
		if (info.present)
			add_block(u, &info);
		idx++;
	}
	return true;
}

int sq_usage_file(struct sq_fs *fs, int fd, const struct stat *st,
		  struct sq_usage *u)
{
	struct sq_ctr *ctr = NULL;
	struct sq_pack_ref ref;
	uint8_t *image = NULL;
	int r;

	u->files++;
	u->allocated_bytes += (uint64_t)st->st_blocks * 512;
	if (st->st_size <= SQ_PACK_STUB_LEN) {
		r = sq_pack_get_ref(fd, NULL, &ref);
		if (r == -ENODATA && st->st_size &&
		    sq_ctr_kind(fd, &fs->vol) == SQ_KIND_PLAIN) {
			u->plain_files++;
			u->plain_bytes += (uint64_t)st->st_size;
			u->logical_bytes += (uint64_t)st->st_size;
			return 0;
		}
		if (r == -ENODATA) {
			/* Empty, or a stub that lost its reference. */
			if (st->st_size)
				u->damaged_files++;
			return 0;
		}
		if (r) {
			u->damaged_files++;
			return 0;
		}
		u->packed_files++;
		u->allocated_bytes += ref.len;
		u->packed_bytes += ref.len;
		u->logical_bytes += ref.size;
		image = malloc(ref.len);
		if (!image)
			return -ENOMEM;
		if (!fs->pack || sq_pack_load(fs->pack, &ref, image) ||
		    sq_ctr_open_image(image, ref.len, &ctr)) {
			free(image);
			u->damaged_files++;
			return 0;
		}
		/* The handle owns the image now. */
	} else if (sq_ctr_open_vol(fd, 0, &fs->vol, &ctr)) {
		u->damaged_files++;
		return 0;
	} else if (sq_ctr_is_plain(ctr)) {
		u->plain_files++;
		u->plain_bytes += sq_ctr_size(ctr);
		u->logical_bytes += sq_ctr_size(ctr);
		sq_ctr_close(ctr);
		return 0;
	} else {
		u->logical_bytes += sq_ctr_size(ctr);
	}
	if (!add_blocks(ctr, u))
		u->damaged_files++;
	sq_ctr_close(ctr);
	return 0;
}

/* Inode numbers of hard-linked files already counted (open addressing). */
struct seen {
	ino_t *tab;
	size_t cap, n;
};

/* Whether @ino was counted; remembers it.  -ENOMEM as a failure. */
static int seen_add(struct seen *s, ino_t ino)
{
	size_t k;

	if (2 * (s->n + 1) > s->cap) {
		size_t ncap = s->cap ? 2 * s->cap : 256;
		ino_t *nt = calloc(ncap, sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		for (size_t j = 0; j < s->cap; j++) {
			if (!s->tab[j])
				continue;
			k = (size_t)(s->tab[j] * 0x9E3779B97F4A7C15ull) &
			    (ncap - 1);
			while (nt[k])
				k = (k + 1) & (ncap - 1);
			nt[k] = s->tab[j];
		}
		free(s->tab);
		s->tab = nt;
		s->cap = ncap;
	}
	/* Inode 0 is never a file's: it marks a free slot. */
	k = (size_t)(ino * 0x9E3779B97F4A7C15ull) & (s->cap - 1);
	while (s->tab[k]) {
		if (s->tab[k] == ino)
			return 1;
		k = (k + 1) & (s->cap - 1);
	}
	s->tab[k] = ino;
	s->n++;
	return 0;
}

/* Deeper directories are not walked (said in the walk's error): a
 * request thread's stack must not run out on a tree made to do that. */
#define WALK_DEPTH_MAX 256

struct walk {
	struct sq_fs *fs;
	struct sq_usage *u;
	struct seen links;
	dev_t dev;
	int64_t meta;	/* BACKING/.squeezefs's du */
	bool in_meta;
	int err;	/* the first error met; the walk goes on */
};

static void walk_error(struct walk *w, int err)
{
	if (!w->err)
		w->err = err;
}

static void walk_dir(struct walk *w, int fd, const struct stat *dst,
		     bool top, unsigned depth);

static void walk_entry(struct walk *w, int dirfd, const char *name,
		       bool top, unsigned depth)
{
	struct stat st;
	int fd, r;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		if (errno != ENOENT)
			walk_error(w, -errno);
		return;
	}
	if (st.st_dev != w->dev)
		return;	/* another filesystem: not ours */
	if (st.st_nlink > 1 && !S_ISDIR(st.st_mode)) {
		r = seen_add(&w->links, st.st_ino);
		if (r < 0)
			walk_error(w, r);
		if (r)
			return;
	}
	if (w->in_meta) {
		w->meta += (int64_t)st.st_blocks * 512;
		if (!S_ISDIR(st.st_mode))
			return;
	}
	if (S_ISDIR(st.st_mode)) {
		bool meta = top && !strcmp(name, SQ_RESERVED_NAME);

		if (meta) {
			w->in_meta = true;
			w->meta += (int64_t)st.st_blocks * 512;
		} else if (!w->in_meta) {
			w->u->dirs++;
			w->u->dir_bytes += (uint64_t)st.st_blocks * 512;
		}
		if (depth >= WALK_DEPTH_MAX) {
			walk_error(w, -ELOOP);
		} else {
			fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY |
				    O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				walk_dir(w, fd, &st, false, depth + 1);
			else if (errno != ENOENT)
				walk_error(w, -errno);
		}
		if (meta)
			w->in_meta = false;
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		w->u->others++;
		w->u->other_bytes += (uint64_t)st.st_blocks * 512;
		return;
	}
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOATIME |
		    O_CLOEXEC);
	if (fd < 0 && errno == EPERM)	/* O_NOATIME on another's file */
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return;
		/* Unreadable: its space still counts. */
		w->u->files++;
		w->u->damaged_files++;
		w->u->allocated_bytes += (uint64_t)st.st_blocks * 512;
		return;
	}
	r = sq_usage_file(w->fs, fd, &st, w->u);
	if (r)
		walk_error(w, r);
	close(fd);
}

/* Walks the directory open as @fd (consumed: one descriptor per level). */
static void walk_dir(struct walk *w, int fd, const struct stat *dst,
		     bool top, unsigned depth)
{
	struct dirent *de;
	DIR *dp;

	(void)dst;
	dp = fdopendir(fd);
	if (!dp) {
		walk_error(w, -errno);
		close(fd);
		return;
	}
	while ((errno = 0, de = readdir(dp))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		walk_entry(w, dirfd(dp), de->d_name, top, depth);
	}
	if (errno)
		walk_error(w, -errno);
	closedir(dp);
}

int sq_usage_tree(struct sq_fs *fs, int dirfd, bool whole,
		  struct sq_usage *u)
{
	struct walk w = { .fs = fs, .u = u };
	uint64_t packed = u->packed_bytes;
	struct stat st;
	int fd;

	if (fstat(dirfd, &st))
		return -errno;
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	w.dev = st.st_dev;
	u->dirs++;
	u->dir_bytes += (uint64_t)st.st_blocks * 512;
	walk_dir(&w, fd, &st, whole, 0);
	free(w.links.tab);
	/* The packs hold the images counted with their files. */
	if (whole)
		u->meta_bytes += w.meta - (int64_t)(u->packed_bytes - packed);
	return w.err;
}

uint64_t sq_usage_backing_bytes(const struct sq_usage *u)
{
	return u->allocated_bytes + u->dir_bytes + u->other_bytes +
	       (uint64_t)u->meta_bytes;
}
