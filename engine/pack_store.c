/*
 * engine/pack_store.c - the pack store (docs/FORMAT.md section 13): the
 * pack files, reading and freeing images, appending new ones, the index.
 *
 * Most files of a home directory are small, and a container of 900 bytes
 * still takes a whole 4 KiB block of the backing filesystem.  So a small
 * file's container image is moved into a shared pack file, and the
 * container itself is truncated to nothing but an xattr saying where its
 * image lies.  Reads of a packed file take the image from the pack (into
 * memory); the first write unpacks it again.
 *
 * How files get packed is the packer's business (packer.c); the store
 * only keeps the packs and the index, and is all that fsck and export
 * need.  Dead images are punched out of the pack, and a page of it whose
 * images are all dead is freed.
 */
#include "engine/pack_store.h"

#include "engine/engine.h"
#include "engine/log.h"
#include "engine/workq.h"
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PACK_ROLL (1ull << 30)		/* a new pack past 1 GiB */
#define WILLNEED_GAP (64u << 10)	/* read across smaller gaps */

struct sq_pack {
	int dirfd;		/* BACKING/.squeezefs/packs, or -1 */
	bool write;		/* packs open read-write: images may be freed */
	bool append;		/* and added */
	char *backing;		/* BACKING's path (index records), or NULL */

	pthread_mutex_t lock;	/* the fds, cur and end; appends and
				 * punches of the packs are serialized */
	int *fds;		/* by pack id; -1: not open yet */
	uint32_t nfds;
	uint32_t cur;		/* pack images are appended to; 0: none */
	uint64_t end;		/* its length */
	int idxfd;		/* the pack index (O_APPEND), or -1 */
	const char *xname;	/* the reference's xattr name when packing */
	pthread_mutex_t idxlock; /* a leaf but for the rename it brackets
				  * (sq_pack_index_lock()): orders records
				  * as the paths they name changed */
};

static const char *const ref_names[] = { SQ_PACK_XATTR, SQ_PACK_XATTR_USER };

/* ---- packs ---- */

static int pack_name(char *buf, size_t n, uint32_t id)
{
	return snprintf(buf, n, "%08" PRIx32 SQ_PACK_SUFFIX, id);
}

/* The fd of pack @id (opened on first use).  p->lock held. */
static int pack_fd(struct sq_pack *p, uint32_t id)
{
	char name[32];
	uint8_t hdr[SQ_PACK_HDR_LEN];
	int fd;

	if (p->dirfd < 0)
		return -ENOENT;
	if (id == 0 || id > SQ_PACK_ID_MAX)
		return -EBADMSG;
	if (id >= p->nfds) {
		uint32_t n = id + 16;
		int *fds = realloc(p->fds, n * sizeof(*fds));

		if (!fds)
			return -ENOMEM;
		for (uint32_t k = p->nfds; k < n; k++)
			fds[k] = -1;
		p->fds = fds;
		p->nfds = n;
	}
	if (p->fds[id] >= 0)
		return p->fds[id];
	pack_name(name, sizeof(name), id);
	fd = openat(p->dirfd, name, (p->write ? O_RDWR : O_RDONLY) |
		    O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && p->write && (errno == EACCES || errno == EROFS))
		fd = openat(p->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    sq_pack_hdr_check(hdr, sizeof(hdr), id)) {
		close(fd);
		return -EBADMSG;
	}
	p->fds[id] = fd;
	return fd;
}

/* Starts pack @id (none exists yet).  p->lock held. */
static int pack_create(struct sq_pack *p, uint32_t id)
{
	char name[32];
	uint8_t hdr[SQ_PACK_HDR_LEN];
	int fd, r;

	pack_name(name, sizeof(name), id);
	fd = openat(p->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	sq_pack_hdr_encode(id, hdr);
	if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    fdatasync(fd) || fsync(p->dirfd)) {
		r = errno ? -errno : -EIO;
		close(fd);
		unlinkat(p->dirfd, name, 0);
		return r;
	}
	close(fd);
	r = pack_fd(p, id);
	if (r < 0)
		return r;
	p->cur = id;
	p->end = SQ_PACK_HDR_LEN;
	return 0;
}

/* Finds the newest pack, images go on there.  Empty dir: none yet. */
static int pack_scan(struct sq_pack *p)
{
	DIR *d;
	struct dirent *de;
	uint32_t best = 0;
	struct stat st;
	int fd = openat(p->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		char *e;
		unsigned long v = strtoul(de->d_name, &e, 16);

		if (e == de->d_name + 8 && !strcmp(e, SQ_PACK_SUFFIX) &&
		    v > best && v <= SQ_PACK_ID_MAX)
			best = (uint32_t)v;
	}
	closedir(d);
	if (!best)
		return 0;
	p->cur = best;
	fd = pack_fd(p, best);
	if (fd == -EBADMSG) {
		/* Damaged, or a crash while creating it left it without
		 * its header: the next images go into a new pack. */
		p->end = PACK_ROLL;
		return 0;
	}
	if (fd < 0)
		return fd;
	if (fstat(fd, &st))
		return -errno;
	p->end = (uint64_t)st.st_size;
	return 0;
}

int sq_pack_open(int backing_fd, const char *backing, bool write,
		 struct sq_pack **out)
{
	struct sq_pack *p = calloc(1, sizeof(*p));
	int r = 0;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->dirfd = -1;
	p->idxfd = -1;
	if (backing && !(p->backing = strdup(backing))) {
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->idxlock, NULL);
	if (write) {
		int dfd = openat(backing_fd, SQ_RESERVED_NAME,
				 O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (dfd < 0 || (mkdirat(dfd, SQ_PACK_DIR, 0700) &&
				errno != EEXIST))
			write = false;
		if (dfd >= 0)
			close(dfd);
	}
	p->write = write;
	{
		char path[64];

		snprintf(path, sizeof(path), "%s/%s", SQ_RESERVED_NAME,
			 SQ_PACK_DIR);
		p->dirfd = openat(backing_fd, path, O_RDONLY | O_DIRECTORY |
				  O_NOFOLLOW | O_CLOEXEC);
	}
	if (p->dirfd < 0) {
		/* No packs: nothing packed can be read either (each read
		 * then fails with ENOENT), and none is made. */
		p->write = false;
	} else if (p->write) {
		/* Without a pack to append to, images are still freed. */
		r = pack_scan(p);
		p->append = r == 0;
		r = 0;
	}
	*out = p;
	return 0;
}

void sq_pack_close(struct sq_pack *p)
{
	if (!p)
		return;
	for (uint32_t k = 0; k < p->nfds; k++)
		if (p->fds[k] >= 0)
			close(p->fds[k]);
	free(p->fds);
	if (p->dirfd >= 0)
		close(p->dirfd);
	if (p->idxfd >= 0)
		close(p->idxfd);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->idxlock);
	free(p->backing);
	free(p);
}

/* ---- reading ---- */

int sq_pack_get_ref(int fd, const char *path, struct sq_pack_ref *ref)
{
	uint8_t buf[SQ_PACK_REF_LEN + 1];
	ssize_t n = -1;

	for (size_t k = 0; k < 2 && n < 0; k++) {
		n = path ? getxattr(path, ref_names[k], buf, sizeof(buf))
			 : fgetxattr(fd, ref_names[k], buf, sizeof(buf));
		/* An unprivileged reader sees no trusted.* name at all. */
		if (n < 0 && errno != ENODATA && errno != ENOTSUP &&
		    errno != EPERM)
			break;
	}
	if (n < 0) {
		if (errno == ENODATA || errno == ENOTSUP || errno == EPERM ||
		    errno == ERANGE)
			return errno == ERANGE ? -EBADMSG : -ENODATA;
		return -errno;
	}
	return sq_pack_ref_decode(buf, (size_t)n, ref);
}

int sq_pack_drop_ref(int fd)
{
	for (size_t k = 0; k < 2; k++)
		if (fremovexattr(fd, ref_names[k]) && errno != ENODATA &&
		    errno != ENOTSUP && errno != EPERM)
			return -errno;
	return 0;
}

int sq_pack_load(struct sq_pack *p, const struct sq_pack_ref *ref,
		 void *image)
{
	uint64_t size;
	ssize_t n;
	int fd;

	pthread_mutex_lock(&p->lock);
	fd = pack_fd(p, ref->pack);
	pthread_mutex_unlock(&p->lock);
	if (fd == -ENOENT || fd == -EBADMSG)
		return -EBADMSG;	/* the file is damaged, not the mount */
	if (fd < 0)
		return fd;
	n = pread(fd, image, ref->len, (off_t)ref->off);
	if (n < 0)
		return -errno;
	if ((size_t)n != ref->len ||
	    sq_pack_image_sum(image, ref->len) != ref->sum ||
	    sq_ctr_image_size(image, ref->len, &size) || size != ref->size)
		return -EBADMSG;
	return 0;
}

static int cmp_ref_pos(const void *a, const void *b)
{
	const struct sq_pack_ref *x = a, *y = b;

	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

void sq_pack_willneed(struct sq_pack *p, struct sq_pack_ref *refs, size_t n)
{
	size_t k = 0;

	if (!p || n == 0)
		return;
	qsort(refs, n, sizeof(*refs), cmp_ref_pos);
	while (k < n) {
		uint32_t id = refs[k].pack;
		uint64_t off = refs[k].off, end = off + refs[k].len;
		int fd;

		/* One request for images close together: the pages between
		 * them cost less than another seek. */
		for (k++; k < n && refs[k].pack == id &&
		     refs[k].off <= end + WILLNEED_GAP; k++)
			if (refs[k].off + refs[k].len > end)
				end = refs[k].off + refs[k].len;
		pthread_mutex_lock(&p->lock);
		fd = pack_fd(p, id);
		pthread_mutex_unlock(&p->lock);
		if (fd >= 0)
			(void)posix_fadvise(fd, (off_t)off, (off_t)(end - off),
					    POSIX_FADV_WILLNEED);
	}
}

int sq_pack_memfd(const void *image, uint32_t len)
{
	int fd = memfd_create("squeezefs-packed", MFD_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	if (pwrite(fd, image, len, 0) != (ssize_t)len) {
		r = errno ? -errno : -EIO;
		close(fd);
		return r;
	}
	return fd;
}

/* ---- freeing ---- */

void sq_pack_free(struct sq_pack *p, const struct sq_pack_ref *ref)
{
	uint8_t page[SQ_PACK_PAGE];
	uint64_t base = ref->off / SQ_PACK_PAGE * SQ_PACK_PAGE;
	size_t in = (size_t)(ref->off - base);
	uint64_t start = ref->off, len = ref->len;
	ssize_t n;
	int fd;

	if (!p || !p->write)
		return;		/* read-only: the image stays */
	pthread_mutex_lock(&p->lock);
	fd = pack_fd(p, ref->pack);
	if (fd < 0)
		goto out;
	n = pread(fd, page, sizeof(page), (off_t)base);
	/* Only our own image goes: a reference that does not match what
	 * lies there (damage, a copy of a packed file made in BACKING by
	 * hand) must not destroy somebody else's. */
	if (n < (ssize_t)(in + ref->len) ||
	    sq_pack_image_sum(page + in, ref->len) != ref->sum)
		goto out;
	memset(page + in, 0, ref->len);
	/* The rest of the page is zero (dead images, padding, not written
	 * yet): free the whole page.  Appends take p->lock too, so none is
	 * in flight there. */
	if (base > 0) {
		size_t k = 0;

		while (k < (size_t)n && !page[k])
			k++;
		if (k == (size_t)n) {
			start = base;
			len = SQ_PACK_PAGE;
		}
	}
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)start, (off_t)len))
		sq_log(SQ_LOG_WARN, "pack %08" PRIx32 ": cannot free %" PRIu32
		       " bytes at %" PRIu64 ": %s", ref->pack, ref->len,
		       ref->off, strerror(errno));
out:
	pthread_mutex_unlock(&p->lock);
}


/* An image to punch out, queued by a request for a background thread. */
struct free_job {
	struct sq_wq_job job;
	struct sq_pack *p;
	struct sq_pack_ref ref;
};

static void free_run(struct sq_wq_job *job)
{
	struct free_job *f = sq_container_of(job, struct free_job, job);

	sq_pack_free(f->p, &f->ref);
	free(f);
}

void sq_pack_free_later(struct sq_pack *p, struct sq_wq *wq,
			const struct sq_pack_ref *ref)
{
	struct free_job *f;

	if (!p || !p->write)
		return;
	f = wq ? malloc(sizeof(*f)) : NULL;
	if (!f) {
		sq_pack_free(p, ref);
		return;
	}
	f->job.run = free_run;
	f->p = p;
	f->ref = *ref;
	sq_wq_push(wq, &f->job);
}

/* ---- adding ---- */

static int cmp_len_desc(const void *a, const void *b)
{
	const struct sq_pack_image *x = *(struct sq_pack_image *const *)a;
	const struct sq_pack_image *y = *(struct sq_pack_image *const *)b;

	return x->ref.len < y->ref.len ? 1 : x->ref.len > y->ref.len ? -1 : 0;
}

/*
 * Gives each image (cs[k]->data) its place in pack @id, which ends
 * at @end: largest first, each into the first page with room (the last,
 * partly used page of the pack included), so that little of a page is
 * left over when no image may cross into the next.  Sets [*@first,
 * *@last) to the range written; false when there is nothing to place.
 */
static bool place(struct sq_pack_image **cs, size_t n, uint32_t id, uint64_t end,
		  uint64_t *first, uint64_t *last)
{
	struct sq_pack_image **order = malloc(n * sizeof(*order));
	/* Per page in use: its offset and where its free room starts. */
	uint64_t *base = malloc((n + 1) * sizeof(*base));
	uint64_t *fill = malloc((n + 1) * sizeof(*fill));
	size_t m = 0, np = 0;

	if (!order || !base || !fill) {
		/* One after the other, then. */
		free(order);
		free(base);
		free(fill);
		*first = UINT64_MAX;
		for (size_t k = 0; k < n; k++) {
			if (!cs[k]->data)
				continue;
			cs[k]->ref.pack = id;
			cs[k]->ref.off = sq_pack_place(end, cs[k]->ref.len);
			if (*first == UINT64_MAX)
				*first = cs[k]->ref.off;
			end = cs[k]->ref.off + cs[k]->ref.len;
		}
		*last = end;
		return *first != UINT64_MAX;
	}
	for (size_t k = 0; k < n; k++)
		if (cs[k]->data)
			order[m++] = cs[k];
	qsort(order, m, sizeof(*order), cmp_len_desc);
	if (end % SQ_PACK_PAGE) {
		/* The pack's last page, in part. */
		base[np] = end / SQ_PACK_PAGE * SQ_PACK_PAGE;
		fill[np++] = end;
	}
	*first = UINT64_MAX;
	*last = end;
	for (size_t k = 0; k < m; k++) {
		uint32_t len = order[k]->ref.len;
		size_t pg = 0;

		while (pg < np && fill[pg] + len > base[pg] + SQ_PACK_PAGE)
			pg++;
		if (pg == np) {
			base[np] = (*last + SQ_PACK_PAGE - 1) / SQ_PACK_PAGE *
				   SQ_PACK_PAGE;
			fill[np++] = base[pg];
		}
		order[k]->ref.pack = id;
		order[k]->ref.off = fill[pg];
		fill[pg] += len;
		if (order[k]->ref.off < *first)
			*first = order[k]->ref.off;
		if (fill[pg] > *last)
			*last = fill[pg];
	}
	free(order);
	free(base);
	free(fill);
	return m > 0;
}

int sq_pack_append(struct sq_pack *p, struct sq_pack_image **cs, size_t n)
{
	uint64_t first = 0, end;
	uint8_t *buf = NULL;
	bool any = false;
	int fd, r = 0;

	pthread_mutex_lock(&p->lock);
	if (!p->cur || p->end >= PACK_ROLL) {
		/* An id taken by a pack we cannot use is skipped. */
		for (int k = 0; k < 8; k++) {
			r = pack_create(p, p->cur + 1);
			if (r != -EEXIST)
				break;
			p->cur++;
		}
		if (r)
			goto out;
	}
	fd = pack_fd(p, p->cur);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	any = place(cs, n, p->cur, p->end, &first, &end);
	if (!any)
		goto out;
	buf = calloc(1, (size_t)(end - first));
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < n; k++)
		if (cs[k]->data)
			memcpy(buf + (cs[k]->ref.off - first), cs[k]->data,
			       cs[k]->ref.len);
	errno = 0;	/* a short write sets none: the disk is full */
	if (pwrite(fd, buf, (size_t)(end - first), (off_t)first) !=
	    (ssize_t)(end - first)) {
		r = errno ? -errno : -ENOSPC;
		goto out;
	}
	p->end = end;
	pthread_mutex_unlock(&p->lock);
	/* The images must be on disk before any container lets go of its
	 * own copy. */
	if (fdatasync(fd))
		r = -errno;
	free(buf);
	if (!r)
		for (size_t k = 0; k < n; k++)
			cs[k]->placed = cs[k]->data != NULL;
	return r;
out:
	pthread_mutex_unlock(&p->lock);
	free(buf);
	return r;
}


/* ---- the index ---- */

/*
 * Where @fd (an O_PATH or open fd) lies, relative to BACKING, into @out,
 * followed by "/@name" when @name is not NULL.  Returns its length, or 0
 * when it is not below BACKING as this mount sees it (unlinked, or out of
 * this namespace's view).
 */
static size_t rel_path(const struct sq_pack *p, int fd, const char *name,
		       char out[PATH_MAX])
{
	char link[64], path[PATH_MAX];
	size_t blen, n;
	ssize_t got;

	if (!p->backing)
		return 0;
	blen = strlen(p->backing);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	got = readlink(link, path, sizeof(path) - 1);
	if (got <= 0)
		return 0;
	path[got] = '\0';
	n = (size_t)got;
	if (strncmp(path, p->backing, blen) ||
	    (path[blen] != '/' && path[blen] != '\0') ||
	    (n > 10 && !strcmp(path + n - 10, " (deleted)")))
		return 0;
	n = (size_t)snprintf(out, PATH_MAX, "%s%s%s",
			     path[blen] ? path + blen + 1 : "",
			     name && path[blen] ? "/" : "", name ? name : "");
	return n > 0 && n < PATH_MAX ? n : 0;
}

/* Appends @x to the pack index.  idxlock held. */
static bool index_put(struct sq_pack *p, const struct sq_pack_idx *x)
{
	uint8_t rec[SQ_PACK_IDX_MAX];
	int len;

	if (p->idxfd < 0)
		return false;
	len = sq_pack_idx_encode(x, rec);
	return len > 0 && write(p->idxfd, rec, (size_t)len) == len;
}

bool sq_pack_index_image(struct sq_pack *p, int fd, const char *name,
			 const struct sq_pack_ref *ref,
			 const struct timespec *mtime)
{
	char path[PATH_MAX];
	struct sq_pack_idx x;
	bool done = false;

	memset(&x, 0, sizeof(x));
	x.ref = *ref;
	x.mtime_sec = mtime->tv_sec;
	x.mtime_nsec = (uint32_t)mtime->tv_nsec;
	x.path = path;
	/* The path is read and written under the lock a rename holds, so
	 * that a move record never precedes the record it should move. */
	pthread_mutex_lock(&p->idxlock);
	x.path_len = (uint32_t)rel_path(p, fd, name, path);
	if (x.path_len)
		done = index_put(p, &x);
	pthread_mutex_unlock(&p->idxlock);
	return done;
}

bool sq_pack_indexing(const struct sq_pack *p)
{
	return p && p->idxfd >= 0;
}

void sq_pack_index_lock(struct sq_pack *p)
{
	pthread_mutex_lock(&p->idxlock);
}

void sq_pack_index_unlock(struct sq_pack *p)
{
	pthread_mutex_unlock(&p->idxlock);
}

void sq_pack_index_move(struct sq_pack *p, int from_dir, const char *from,
			int to_dir, const char *to)
{
	char a[PATH_MAX], b[PATH_MAX];
	struct sq_pack_idx x;

	memset(&x, 0, sizeof(x));
	x.move = true;
	x.path = a;
	x.to = b;
	if (!sq_pack_indexing(p))
		return;
	x.path_len = (uint32_t)rel_path(p, from_dir, from, a);
	x.to_len = (uint32_t)rel_path(p, to_dir, to, b);
	if (x.path_len && x.to_len && !index_put(p, &x))
		sq_log(SQ_LOG_WARN, "pack index: cannot record a rename: %s",
		       strerror(errno));
}

int sq_pack_index_open(struct sq_pack *p)
{
	if (!p->write)
		return -EROFS;
	if (p->idxfd >= 0)
		return 0;
	p->idxfd = openat(p->dirfd, SQ_PACK_INDEX, O_WRONLY | O_APPEND |
			  O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	return p->idxfd < 0 ? -errno : 0;
}

int sq_pack_index_sync(struct sq_pack *p)
{
	if (p->idxfd >= 0 && fdatasync(p->idxfd))
		return -errno;
	return 0;
}


/* ---- packing ---- */

int sq_pack_enable(struct sq_pack *p, int probe_fd)
{
	int r = -EOPNOTSUPP;

	if (!p->write)
		return -EROFS;
	if (!p->append)
		return -EIO;
	/* Packing needs an xattr on the files (trusted.*: root; else
	 * user.*, which BACKING's owner may set) and hole punching. */
	p->xname = NULL;
	for (size_t k = 0; k < 2 && !p->xname; k++) {
		if (fsetxattr(probe_fd, ref_names[k], "", 0, 0) == 0 &&
		    fremovexattr(probe_fd, ref_names[k]) == 0)
			p->xname = ref_names[k];
		else
			r = -errno;
	}
	if (!p->xname)
		return r;
	if (fallocate(probe_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      1 << 20, SQ_PACK_PAGE)) {
		p->xname = NULL;
		return -errno;
	}
	return 0;
}

const char *sq_pack_xname(const struct sq_pack *p)
{
	return p->xname;
}

bool sq_pack_trusted(const struct sq_pack *p)
{
	return p->xname == ref_names[0];
}
