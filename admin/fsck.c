/*
 * admin/fsck.c - `squeezefs fsck [--repair] [--reclaim] BACKING`: verifies
 * every container under BACKING (header, size records, every block's
 * checksum and decoding) without writing anything.  Walks with openat() so
 * any depth works.  Then it finds the bytes of the packs no packed file
 * refers to (orphans a crash left, docs/FORMAT.md 13.5); --reclaim punches
 * them out, freeing every page that holds nothing else.  A packed file's
 * stub without its reference (a copy of BACKING that dropped xattrs) is
 * damaged; --repair finds its image through the pack index (13.7) and
 * makes the file a container of its own again.
 * Exit: 0 clean (everything found repaired), 1 damage left, 2 usage or
 * I/O error.
 */
#include "admin/admin.h"

#include "engine/engine.h"
#include "engine/lock.h"
#include "engine/pack_store.h"

#include "codec/codec.h"
#include "meta/container.h"
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
#include <unistd.h>

enum { FSCK_CLEAN = 0, FSCK_DAMAGE = 1, FSCK_ERROR = 2 };

/* Where a packed file's image lies: its bytes are live. */
struct live {
	uint32_t pack, len;
	uint64_t off;
};

/* The pack index, read whole for --repair. */
struct index {
	uint8_t *buf;
	struct sq_pack_idx *recs;	/* in file order: newest last */
	char **cur;		/* an image record's path after the moves that
				 * follow it; NULL for a move record */
	size_t n;
};

/* A lost stub with more than one link, repaired under one name (@path
 * the container that replaced it) or waiting for one to be. */
struct lost_link {
	dev_t dev;
	ino_t ino;
	char *path;
};

struct fsck {
	struct sq_codec_ctx *cctx;
	bool repair;
	struct index idx;
	uint64_t lost, repaired;
	struct lost_link *done, *waiting;	/* --repair's hard links */
	size_t ndone, nwaiting;
	struct sq_pack *pack;	/* BACKING's packs, read-only */
	uint64_t files, damaged_files, blocks, stale, raw, stored;
	struct sq_vol vol;	/* BACKING's (plain files are not ours) */
	uint64_t plain_files, plain_bytes, lookalikes;
	bool error;
	bool unknown_ref;	/* a packed file whose image we cannot place */
	const char *path;	/* of the file being checked */
	const char *rel;	/* the same, relative to BACKING */
	size_t backing_len;
	struct live *live;	/* every reference found, in walk order */
	size_t nlive, cap_live;
	uint64_t orphan_bytes, orphan_pages, freed_pages;
};

static void add_live(struct fsck *c, const struct sq_pack_ref *ref)
{
	if (c->nlive == c->cap_live) {
		size_t cap = c->cap_live ? 2 * c->cap_live : 1024;
		struct live *n = realloc(c->live, cap * sizeof(*n));

		if (!n) {
			/* Without the whole list nothing may be reclaimed. */
			c->unknown_ref = true;
			return;
		}
		c->live = n;
		c->cap_live = cap;
	}
	c->live[c->nlive++] = (struct live){ ref->pack, ref->len, ref->off };
}

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

/* Reads BACKING's pack index (@root) whole.  A missing one is empty. */
static int index_load(int root, struct index *x)
{
	struct stat st;
	size_t cap = 0, pos = 0;
	ssize_t got;
	int fd, r = 0;

	fd = openat(root, SQ_RESERVED_NAME "/" SQ_PACK_DIR "/" SQ_PACK_INDEX,
		    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st)) {
		r = -errno;
		goto out;
	}
	x->buf = malloc((size_t)st.st_size + 1);
	if (!x->buf) {
		r = -ENOMEM;
		goto out;
	}
	got = pread(fd, x->buf, (size_t)st.st_size, 0);
	if (got < 0) {
		r = -errno;
		goto out;
	}
	while (pos + SQ_PACK_MOVE_FIXED + 8 <= (size_t)got) {
		struct sq_pack_idx rec;
		int n = sq_pack_idx_decode(x->buf + pos, (size_t)got - pos,
					   &rec);

		if (n < 0) {
			pos++;	/* a torn record: find the next one */
			continue;
		}
		if (x->n == cap) {
			struct sq_pack_idx *nr;

			cap = cap ? 2 * cap : 256;
			nr = realloc(x->recs, cap * sizeof(*nr));
			if (!nr) {
				r = -ENOMEM;
				goto out;
			}
			x->recs = nr;
		}
		x->recs[x->n++] = rec;
		pos += (size_t)n;
	}
out:
	close(fd);
	return r;
}

/* Whether @p is @prefix (@n bytes) or lies below it. */
static bool under(const char *p, const char *prefix, size_t n)
{
	return !strncmp(p, prefix, n) && (p[n] == '\0' || p[n] == '/');
}

/*
 * Moves every image record's path along the move records after it: each
 * image's path as of the last record.  A rename replaces what its target
 * held: the records of the target (and below it) are dropped first, or an
 * image renamed over would still claim its old path.
 */
static int index_replay(struct index *x)
{
	x->cur = calloc(x->n ? x->n : 1, sizeof(*x->cur));
	if (!x->cur)
		return -ENOMEM;
	for (size_t k = 0; k < x->n; k++) {
		const struct sq_pack_idx *m = &x->recs[k];
		char *from, *to;

		if (!m->move) {
			x->cur[k] = strndup(m->path, m->path_len);
			if (!x->cur[k])
				return -ENOMEM;
			continue;
		}
		from = strndup(m->path, m->path_len);
		to = strndup(m->to, m->to_len);
		if (!from || !to) {
			free(from);
			free(to);
			return -ENOMEM;
		}
		for (size_t j = 0; j < k; j++) {
			if (x->cur[j] && under(x->cur[j], to, m->to_len) &&
			    !under(x->cur[j], from, m->path_len)) {
				free(x->cur[j]);
				x->cur[j] = NULL;
			}
		}
		for (size_t j = 0; j < k; j++) {
			char *p = x->cur[j], *np;

			if (!p || !under(p, from, m->path_len))
				continue;
			if (asprintf(&np, "%s%s", to, p + m->path_len) < 0) {
				free(from);
				free(to);
				return -ENOMEM;
			}
			free(p);
			x->cur[j] = np;
		}
		free(from);
		free(to);
	}
	return 0;
}

static void index_free(struct index *x)
{
	for (size_t k = 0; x->cur && k < x->n; k++)
		free(x->cur[k]);
	free(x->cur);
	free(x->recs);
	free(x->buf);
}

/* Whether the record's mtime is the stub's: to the nanosecond, or to the
 * second when the copy kept only seconds (GNU tar's default format). */
static bool same_mtime(const struct sq_pack_idx *x, const struct timespec *mt)
{
	if (x->mtime_sec != mt->tv_sec)
		return false;
	return mt->tv_nsec == 0 || x->mtime_nsec == (uint32_t)mt->tv_nsec;
}

/*
 * The image a lost stub at @rel (mtime @mt) had, into @image: the newest
 * record of that path, if its image is still intact; else the one record
 * whose mtime is the stub's to the nanosecond (a file renamed after it was
 * packed; a copy that keeps times).  Never a guess between two.
 */
static int index_find(struct fsck *c, const char *rel,
		      const struct timespec *mt, uint8_t *image,
		      struct sq_pack_ref *ref)
{
	const struct sq_pack_idx *hit = NULL;

	/* The path first: the newest image that lay there.  Renames and
	 * links through the mount are recorded, so an older record of the
	 * path is a file that is gone or moved on. */
	for (size_t k = c->idx.n; k-- > 0;) {
		if (!c->idx.cur[k] || strcmp(c->idx.cur[k], rel))
			continue;
		if (sq_pack_load(c->pack, &c->idx.recs[k].ref, image) == 0)
			hit = &c->idx.recs[k];
		break;
	}
	/* Else the one image whose file had the stub's mtime. */
	for (size_t k = 0; !hit && k < c->idx.n; k++) {
		const struct sq_pack_idx *x = &c->idx.recs[k];

		if (x->move || !same_mtime(x, mt) ||
		    sq_pack_load(c->pack, &x->ref, image))
			continue;
		for (size_t j = k + 1; j < c->idx.n; j++) {
			const struct sq_pack_idx *y = &c->idx.recs[j];

			if (!y->move && same_mtime(y, mt) &&
			    y->ref.sum != x->ref.sum)
				return -ENOENT;	/* two candidates */
		}
		hit = x;
	}
	if (!hit)
		return -ENOENT;
	/* @image holds hit's image, checked against its sum by the load. */
	*ref = hit->ref;
	return 0;
}

/* A repair leaves the directory's times as they were (a copy kept them). */
static void dir_times(int dirfd, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };

	futimens(dirfd, ts);
}

/*
 * A name beside @name of @dirfd for what is to replace it (a crashed
 * repair's leftover of that name is removed), and the directory's
 * attributes in @dst, to set its times back afterwards.
 */
static int repair_start(int dirfd, const char *name, char tmp[NAME_MAX + 1],
			struct stat *dst)
{
	if (snprintf(tmp, NAME_MAX + 1, ".%.200s.sqrepair", name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (fstat(dirfd, dst))
		return -errno;
	unlinkat(dirfd, tmp, 0);
	return 0;
}

/* Renames @tmp over @name (@r: how making @tmp went; on failure it is
 * removed instead), syncs the directory and sets its times back. */
static int repair_finish(int dirfd, const char *tmp, const char *name,
			 const struct stat *dst, int r)
{
	if (!r && renameat(dirfd, tmp, dirfd, name))
		r = -errno;
	if (r)
		unlinkat(dirfd, tmp, 0);
	else if (fsync(dirfd))
		r = -errno;
	dir_times(dirfd, dst);
	return r;
}

/*
 * Makes the lost stub @name of @dirfd (attributes @st) a container again,
 * holding @image: written beside it and renamed over it, so that a crash
 * leaves either the stub or the whole container.
 */
static int restore(int dirfd, const char *name, const struct stat *st,
		   const uint8_t *image, uint32_t len)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	char tmp[NAME_MAX + 1];
	struct stat dst;
	int fd, r;

	r = repair_start(dirfd, name, tmp, &dst);
	if (r)
		return r;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	errno = ENOSPC;
	if (write(fd, image, len) != (ssize_t)len)
		r = -errno;
	/* The owner is kept where we may (root); the mode after it, since
	 * a chown clears setuid. */
	if (!r && fchown(fd, st->st_uid, st->st_gid) && errno != EPERM)
		r = -errno;
	if (!r && (fchmod(fd, st->st_mode & 07777) || futimens(fd, ts) ||
		   fsync(fd)))
		r = -errno;
	close(fd);
	return repair_finish(dirfd, tmp, name, &dst, r);
}

/*
 * @name of @dirfd, a lost stub with another name already repaired as
 * @path: linked to that container, so that the names stay one file.
 */
static int relink(int dirfd, const char *name, const char *path)
{
	char tmp[NAME_MAX + 1];
	struct stat dst;
	int r;

	r = repair_start(dirfd, name, tmp, &dst);
	if (r)
		return r;
	r = linkat(AT_FDCWD, path, dirfd, tmp, 0) ? -errno : 0;
	return repair_finish(dirfd, tmp, name, &dst, r);
}

static int add_link(struct lost_link **v, size_t *n, const struct stat *st,
		    const char *path)
{
	struct lost_link *nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n].dev = st->st_dev;
	nv[*n].ino = st->st_ino;
	nv[*n].path = strdup(path);
	if (!nv[*n].path)
		return -ENOMEM;
	(*n)++;
	return 0;
}

static const char *find_link(const struct lost_link *v, size_t n,
			     const struct stat *st)
{
	for (size_t k = 0; k < n; k++)
		if (v[k].dev == st->st_dev && v[k].ino == st->st_ino)
			return v[k].path;
	return NULL;
}

/*
 * A stub without its reference: the file was packed, and a copy of BACKING
 * dropped its xattr (rsync -a without -X, tar without --xattrs, cp -r).
 * Damaged, named, and with --repair made whole again from the pack index.
 * Returns 0 when repaired (*@fd then the restored container), -EBADMSG.
 */
static int lost_stub(struct fsck *c, int dirfd, const char *name, int *fd,
		     const struct stat *st)
{
	uint8_t image[SQ_PACK_IMAGE_MAX];
	struct sq_pack_ref ref;
	int r, nfd;

	c->lost++;
	if (!c->repair) {
		printf("%s: packed file lost its pack reference (BACKING "
		       "copied without xattrs?): squeezefs fsck --repair may "
		       "restore it\n", c->path);
		return -EBADMSG;
	}
	/* Its other name may have been repaired already (its count of links
	 * has dropped by one then). */
	if (find_link(c->done, c->ndone, st)) {
		/* Another name of this file was repaired: it is that file. */
		r = relink(dirfd, name, find_link(c->done, c->ndone, st));
		if (r) {
			printf("%s: packed file lost its pack reference; linking "
			       "it to its repaired other name failed: %s\n",
			       c->path, strerror(-r));
			return -EBADMSG;
		}
		printf("%s: packed file lost its pack reference: repaired as "
		       "a link to %s\n", c->path,
		       find_link(c->done, c->ndone, st));
		goto reopen;
	}
	r = index_find(c, c->rel, &st->st_mtim, image, &ref);
	if (r && st->st_nlink > 1 && !add_link(&c->waiting, &c->nwaiting, st,
						c->path)) {
		/* Another name of it, later in the walk, may be known. */
		return -EBADMSG;
	}
	if (r) {
		printf("%s: packed file lost its pack reference, and the pack "
		       "index knows no intact image for it: not repaired\n",
		       c->path);
		return -EBADMSG;
	}
	r = restore(dirfd, name, st, image, ref.len);
	if (r) {
		printf("%s: packed file lost its pack reference; restoring "
		       "its image from pack %08x failed: %s\n", c->path,
		       ref.pack, strerror(-r));
		return -EBADMSG;
	}
	printf("%s: packed file lost its pack reference: repaired from pack "
	       "%08x (%u bytes)\n", c->path, ref.pack, ref.len);
	if (st->st_nlink > 1)
		add_link(&c->done, &c->ndone, st, c->path);
reopen:
	nfd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	close(*fd);
	*fd = nfd;
	c->lost--;
	c->repaired++;
	return 0;
}

/*
 * After the walk: names of hard-linked lost stubs that the index did not
 * know, linked to the container another of their names was repaired as.
 */
static void relink_waiting(struct fsck *c)
{
	for (size_t k = 0; k < c->nwaiting; k++) {
		struct lost_link *w = &c->waiting[k];
		struct stat st = { .st_dev = w->dev, .st_ino = w->ino };
		const char *to = find_link(c->done, c->ndone, &st);
		char *slash = strrchr(w->path, '/');
		int dfd, r = -ENOENT;

		if (to && slash) {
			*slash = '\0';
			dfd = open(w->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			*slash = '/';
			r = dfd < 0 ? -errno : relink(dfd, slash + 1, to);
			if (dfd >= 0)
				close(dfd);
		}
		if (r) {
			printf("%s: packed file lost its pack reference, and the "
			       "pack index knows no intact image for it: not "
			       "repaired\n", w->path);
			continue;
		}
		printf("%s: packed file lost its pack reference: repaired as "
		       "a link to %s\n", w->path, to);
		c->lost--;
		c->repaired++;
		c->damaged_files--;
	}
}

/*
 * An empty container may be a packed one (docs/FORMAT.md section 13):
 * then *@fd becomes a memfd holding its image, checked like a container.
 * Returns 0, or -EBADMSG after reporting a damaged packed file.
 */
static int check_packed(struct fsck *c, int dirfd, const char *name, int *fd)
{
	uint8_t image[SQ_PACK_IMAGE_MAX];
	struct sq_pack_ref ref;
	struct stat st;
	uint64_t size;
	int r, mfd;

	if (fstat(*fd, &st) || st.st_size > SQ_PACK_STUB_LEN)
		return 0;
	r = sq_pack_get_ref(*fd, NULL, &ref);
	if (r == -ENODATA && st.st_size == 0)
		return 0;	/* an empty file */
	if (r == -ENODATA && sq_ctr_kind(*fd, &c->vol) == SQ_KIND_PLAIN)
		return 0;	/* one byte of a plain file */
	if (r == -ENODATA)
		return lost_stub(c, dirfd, name, fd, &st);
	if (r) {
		printf("%s: packed: bad reference: %s\n", c->path,
		       strerror(-r));
		c->unknown_ref = true;
		return -EBADMSG;
	}
	/* Live even when damaged: its bytes are all that is left of it. */
	add_live(c, &ref);
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
	r = sq_ctr_peek_size(mfd, NULL, &size);
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
	c->rel = path + c->backing_len + 1;
	r = check_packed(c, dirfd, name, &fd);
	if (!r)
		r = sq_ctr_check_fd(fd, &c->vol, c->cctx, &rep, problem, c);
	if (!r && rep.plain) {
		struct stat st;

		c->plain_files++;
		if (!fstat(fd, &st))
			c->plain_bytes += (uint64_t)st.st_size;
	}
	/* Served as it is, but it may be a container whose header (both
	 * copies of the volume id) was damaged: say so. */
	if (!r && rep.lookalike) {
		c->lookalikes++;
		printf("%s: a plain file that begins like a squeezefs "
		       "container (one of another BACKING, or one of this "
		       "BACKING whose header is damaged): read as it is\n",
		       path);
	}
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

static int cmp_live(const void *a, const void *b)
{
	const struct live *x = a, *y = b;

	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return 0;
}

/* Frees [@off, @off + @len) of a pack: a hole reads as zeros. */
static int punch(int fd, uint64_t off, uint64_t len)
{
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (off_t)off, (off_t)len) ? -errno : 0;
}

/*
 * One pack: every nonzero byte that is neither its header nor inside a
 * live image (@live, @n of them, sorted by offset) is an orphan.  With
 * @reclaim they are punched out, whole pages where nothing else is.
 */
static void scan_pack(struct fsck *c, int fd, const char *path,
		      const struct live *live, size_t n, bool reclaim)
{
	uint8_t page[SQ_PACK_PAGE], used[SQ_PACK_PAGE];
	uint64_t bytes = 0, pages = 0, freed = 0, pos;
	struct stat st;
	size_t i = 0;
	int r = 0;

	if (fstat(fd, &st)) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path,
			strerror(errno));
		c->error = true;
		return;
	}
	for (pos = 0; pos < (uint64_t)st.st_size && !r; pos += SQ_PACK_PAGE) {
		uint64_t obytes = 0, start = pos ? 0 : SQ_PACK_HDR_LEN;
		bool has_live = false;
		ssize_t got;

		/* A regular file reads whole pages, short only at its end. */
		got = pread(fd, page, sizeof(page), (off_t)pos);
		if (got < 0) {
			r = -errno;
			break;
		}
		memset(page + got, 0, sizeof(page) - (size_t)got);
		memset(used, 0, sizeof(used));
		for (; i < n && live[i].off < pos + SQ_PACK_PAGE; i++) {
			/* Never across a page (sq_pack_ref_decode()). */
			memset(used + (live[i].off - pos), 1, live[i].len);
			has_live = true;
		}
		for (size_t b = start; b < SQ_PACK_PAGE; b++)
			obytes += !used[b] && page[b];
		if (!obytes)
			continue;
		bytes += obytes;
		pages += !has_live;
		if (!reclaim)
			continue;
		if (!has_live) {
			/* Page 0 keeps its header. */
			r = punch(fd, pos + start, SQ_PACK_PAGE - start);
			freed += !r && pos;
			continue;
		}
		/* Shared with live images: zero the orphans' bytes only. */
		for (size_t b = start; b < SQ_PACK_PAGE && !r;) {
			size_t e;

			if (used[b]) {
				b++;
				continue;
			}
			for (e = b; e < SQ_PACK_PAGE && !used[e]; e++)
				;
			r = punch(fd, pos + b, e - b);
			b = e;
		}
	}
	if (r) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", path, strerror(-r));
		c->error = true;
	}
	if (bytes)
		printf("%s: %" PRIu64 " bytes in no file's image, %" PRIu64
		       " pages with nothing else%s\n", path, bytes, pages,
		       reclaim ? (r ? "; reclaim stopped" : "; reclaimed")
			       : "");
	c->orphan_bytes += bytes;
	c->orphan_pages += pages;
	c->freed_pages += freed;
}

/* Every pack of BACKING (@root): their orphans, freed with @reclaim. */
static void scan_packs(struct fsck *c, int root, const char *backing,
		       bool reclaim)
{
	struct dirent *de;
	DIR *dp;
	int dfd;

	dfd = openat(root, SQ_RESERVED_NAME "/" SQ_PACK_DIR,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		if (errno != ENOENT) {
			fprintf(stderr, "squeezefs fsck: %s/%s/%s: %s\n",
				backing, SQ_RESERVED_NAME, SQ_PACK_DIR,
				strerror(errno));
			c->error = true;
		}
		return;
	}
	dp = fdopendir(dfd);
	if (!dp) {
		close(dfd);
		c->error = true;
		return;
	}
	if (c->nlive)	/* qsort() wants an array, even of none */
		qsort(c->live, c->nlive, sizeof(*c->live), cmp_live);
	while ((errno = 0, de = readdir(dp))) {
		uint8_t hdr[SQ_PACK_HDR_LEN];
		unsigned id;
		char path[4096], tail[8];
		size_t lo = 0, hi;
		int fd;

		if (strlen(de->d_name) != 8 + strlen(SQ_PACK_SUFFIX) ||
		    sscanf(de->d_name, "%8x%7s", &id, tail) != 2 ||
		    strcmp(tail, SQ_PACK_SUFFIX) || id == 0 ||
		    id > SQ_PACK_ID_MAX)
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s/%s", backing,
			 SQ_RESERVED_NAME, SQ_PACK_DIR, de->d_name);
		fd = openat(dfd, de->d_name, (reclaim ? O_RDWR : O_RDONLY) |
			    O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "squeezefs fsck: %s: %s\n", path,
				strerror(errno));
			c->error = true;
			continue;
		}
		/* A pack that is not what its name says is left alone. */
		if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
		    sq_pack_hdr_check(hdr, sizeof(hdr), id)) {
			printf("%s: not pack %08x, left alone\n", path, id);
			close(fd);
			continue;
		}
		while (lo < c->nlive && c->live[lo].pack < id)
			lo++;
		for (hi = lo; hi < c->nlive && c->live[hi].pack == id; hi++)
			;
		scan_pack(c, fd, path, hi > lo ? c->live + lo : NULL, hi - lo,
			  reclaim);
		close(fd);
	}
	if (errno) {
		fprintf(stderr, "squeezefs fsck: %s/%s/%s: %s\n", backing,
			SQ_RESERVED_NAME, SQ_PACK_DIR, strerror(errno));
		c->error = true;
	}
	closedir(dp);
}

int sq_admin_fsck(int argc, char **argv)
{
	struct fsck c;
	bool reclaim = false, repair = false;
	const char *backing = argv[argc - 1];
	int fd, lock = -1, r;

	for (int k = 1; k < argc - 1; k++) {
		if (!strcmp(argv[k], "--reclaim"))
			reclaim = true;
		else if (!strcmp(argv[k], "--repair"))
			repair = true;
		else
			backing = "-";
	}
	if (argc < 2 || backing[0] == '-') {
		fprintf(stderr, "usage: squeezefs fsck [--repair] [--reclaim] "
			"BACKING\n");
		return FSCK_ERROR;
	}
	memset(&c, 0, sizeof(c));
	c.repair = repair;
	c.backing_len = strlen(backing);
	fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "squeezefs fsck: %s: %s\n", backing,
			strerror(errno));
		return FSCK_ERROR;
	}
	/* Before the lock, which would make .squeezefs/ (meta/volume.c). */
	{
		bool found;

		/* Only a run that takes the lock may make .squeezefs/. */
		r = reclaim || repair ? sq_vol_setup(fd, false, &c.vol) :
		    sq_vol_load(fd, &c.vol, &found);
		if (r) {
			fprintf(stderr, "squeezefs fsck: %s/.squeezefs/volume: "
				"%s\n", backing, r == -EBADMSG ? "damaged "
				"(remove it to check BACKING as one of "
				"squeezefs before format 5)" : strerror(-r));
			close(fd);
			return FSCK_ERROR;
		}
	}
	if (reclaim || repair) {
		/* A mount frees and appends images meanwhile: what looks
		 * orphaned to a walk may be live by its end; and a repair
		 * writes files. */
		char real[PATH_MAX];

		lock = realpath(backing, real) ?
			       sq_lock_take(fd, real, "squeezefs fsck") : -errno;
		if (lock < 0) {
			fprintf(stderr, "squeezefs fsck: %s: %s\n", backing,
				lock == -EWOULDBLOCK ? "mounted: unmount it "
				"before --reclaim or --repair" :
				strerror(-lock));
			close(fd);
			return FSCK_ERROR;
		}
	}
	r = sq_codec_ctx_new(&c.cctx);
	if (r) {
		close(fd);
		fprintf(stderr, "squeezefs fsck: %s\n", strerror(-r));
		return FSCK_ERROR;
	}
	r = sq_pack_open(fd, NULL, false, &c.pack);
	if (r) {
		close(fd);
		sq_codec_ctx_free(c.cctx);
		fprintf(stderr, "squeezefs fsck: %s\n", strerror(-r));
		return FSCK_ERROR;
	}
	if (repair) {
		r = index_load(fd, &c.idx);
		if (!r)
			r = index_replay(&c.idx);
		if (r) {
			fprintf(stderr, "squeezefs fsck: %s: pack index: %s\n",
				backing, strerror(-r));
			c.error = true;
		}
	}
	walk(&c, fd, backing, true);
	relink_waiting(&c);
	sq_pack_close(c.pack);
	index_free(&c.idx);
	for (size_t k = 0; k < c.ndone; k++)
		free(c.done[k].path);
	for (size_t k = 0; k < c.nwaiting; k++)
		free(c.waiting[k].path);
	free(c.done);
	free(c.waiting);
	if (c.lost) {
		/* Their images look orphaned: they must not be freed. */
		c.unknown_ref = true;
		printf("%llu packed files lost their pack references%s\n",
		       (unsigned long long)c.lost, repair ? " and could not "
		       "be repaired" : " (squeezefs fsck --repair restores "
		       "them from the pack index)");
	}
	if (c.repaired)
		printf("%llu packed files repaired: each is a container of its "
		       "own again; the pack space their images take is freed "
		       "by squeezefs fsck --reclaim\n",
		       (unsigned long long)c.repaired);
	if (reclaim && (c.error || c.unknown_ref)) {
		/* A file the walk could not read may refer to any image. */
		fprintf(stderr, "squeezefs fsck: not every file could be "
			"read: nothing reclaimed\n");
		reclaim = false;
	}
	scan_packs(&c, fd, backing, reclaim);
	if (lock >= 0)
		close(lock);
	close(fd);
	free(c.live);
	sq_codec_ctx_free(c.cctx);
	printf("%llu files, %llu blocks, %llu damaged files, %llu obsolete "
	       "slots; %llu bytes stored as %llu\n",
	       (unsigned long long)c.files, (unsigned long long)c.blocks,
	       (unsigned long long)c.damaged_files,
	       (unsigned long long)c.stale, (unsigned long long)c.raw,
	       (unsigned long long)c.stored);
	if (c.plain_files)
		printf("%" PRIu64 " plain files (%" PRIu64 " bytes) not yet "
		       "converted into containers%s\n", c.plain_files,
		       c.plain_bytes, c.lookalikes ? ", some named above" : "");
	if (c.orphan_bytes)
		printf("packs: %" PRIu64 " orphaned bytes, %" PRIu64 " pages "
		       "with nothing else", c.orphan_bytes, c.orphan_pages);
	if (c.orphan_bytes && reclaim)
		printf("; punched out, %" PRIu64 " pages freed\n",
		       c.freed_pages);
	else if (c.orphan_bytes)
		printf(" (squeezefs fsck --reclaim frees them)\n");
	if (c.damaged_files)
		return FSCK_DAMAGE;
	return c.error ? FSCK_ERROR : FSCK_CLEAN;
}
