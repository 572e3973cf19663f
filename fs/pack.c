/*
 * fs/pack.c - packed containers (docs/FORMAT.md section 13).
 *
 * Most files of a home directory are small, and a container of 900 bytes
 * still takes a whole 4 KiB block of the backing filesystem.  So a small
 * file's container image is moved into a shared pack file, and the
 * container itself is truncated to nothing but an xattr saying where its
 * image lies.  Reads of a packed file take the image from the pack (into
 * memory); the first write unpacks it again.
 *
 * Packing runs in a thread of its own, a little after a file's last close
 * (cp -a, tar and rsync set times, owners and xattrs right after closing):
 *
 *   1. read each small container (inode lock held, nothing open),
 *   2. append the images to the pack and fdatasync it,
 *   3. per file, under its inode lock again and only if the container is
 *      unchanged: set the xattr, truncate the container, restore its mtime.
 *
 * A crash anywhere leaves every file readable: before 3 the images are
 * garbage in the pack; a non-empty container with the xattr (between the
 * setxattr and the truncate) is read as the container, the xattr being
 * stale.  Dead images are punched out of the pack, and a page of it whose
 * images are all dead is freed.
 */
#include "fs/fs_i.h"

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

/* A file waits PACK_DELAY after its last close (cp -a, tar and rsync set
 * times, owners and xattrs right after closing, and temporary files go
 * away); once the oldest waited that long, every file closed at least
 * PACK_SETTLE ago goes too: one fdatasync of the pack for all of them. */
#define PACK_DELAY_NS 1000000000L
#define PACK_SETTLE_NS 200000000L
#define PACK_BATCH 1024			/* at most, per fdatasync */
#define PACK_QUEUE_MAX 4096		/* pinned inodes, each holds an fd */
#define PACK_TRIES 4			/* a file still busy is retried */
#define PACK_ROLL (1ull << 30)		/* a new pack past 1 GiB */
#define WILLNEED_GAP (64u << 10)	/* read across smaller gaps */

struct item {
	struct item *next;
	struct sq_inode *ino;
	struct timespec due;
	int tries;
};

/* An image to punch out, queued by a request for the packer thread. */
struct pfree {
	struct pfree *next;
	struct sq_pack_ref ref;
};

struct sq_pack {
	int dirfd;		/* BACKING/.squeezefs/packs, or -1 */
	bool write;		/* packs open read-write: images may be freed */
	bool append;		/* and added */

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

	/* The packer thread (packing on only). */
	struct sq_fs *fs;
	pthread_t thread;
	bool running;
	pthread_mutex_t qlock;	/* a leaf: guards the queue and stop */
	pthread_cond_t qcond;
	struct item *head, **tail;
	size_t qlen;
	struct pfree *frees;
	bool stop;
};

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

int sq_pack_open(int backing_fd, bool write, struct sq_pack **out)
{
	struct sq_pack *p = calloc(1, sizeof(*p));
	int r = 0;

	if (!p)
		return -ENOMEM;
	p->dirfd = -1;
	p->idxfd = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->idxlock, NULL);
	pthread_mutex_init(&p->qlock, NULL);
	pthread_cond_init(&p->qcond, NULL);
	p->tail = &p->head;
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

bool sq_pack_packing(const struct sq_pack *p)
{
	return p && p->running;
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
	pthread_mutex_destroy(&p->qlock);
	pthread_cond_destroy(&p->qcond);
	free(p);
}

/* ---- reading ---- */

static const char *const ref_names[] = { SQ_PACK_XATTR, SQ_PACK_XATTR_USER };

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

static void run_frees(struct sq_pack *p, struct pfree *fl)
{
	while (fl) {
		struct pfree *next = fl->next;

		sq_pack_free(p, &fl->ref);
		free(fl);
		fl = next;
	}
}

void sq_pack_free_later(struct sq_pack *p, const struct sq_pack_ref *ref)
{
	struct pfree *f;
	bool queued = false;

	if (!p || !p->write)
		return;
	f = malloc(sizeof(*f));
	pthread_mutex_lock(&p->qlock);
	if (f && p->running && !p->stop) {
		f->ref = *ref;
		f->next = p->frees;
		p->frees = f;
		pthread_cond_signal(&p->qcond);
		queued = true;
	}
	pthread_mutex_unlock(&p->qlock);
	if (!queued) {
		free(f);
		sq_pack_free(p, ref);
	}
}

/* ---- the packer ---- */

static void due_in(struct timespec *ts, long ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_nsec += ns;
	while (ts->tv_nsec >= 1000000000L) {
		ts->tv_nsec -= 1000000000L;
		ts->tv_sec++;
	}
}

/* Whether @due is at most @ahead nanoseconds from now (or past). */
static bool is_due(const struct timespec *due, long ahead)
{
	struct timespec now;

	due_in(&now, ahead);
	return now.tv_sec > due->tv_sec ||
	       (now.tv_sec == due->tv_sec && now.tv_nsec >= due->tv_nsec);
}

/* How many inodes may wait: each keeps its fd, and the pruner must still
 * keep the table within the fd limit (which can change while mounted). */
static size_t queue_max(struct sq_fs *fs)
{
	size_t b = atomic_load(&fs->inode_budget) / 8;

	if (b == 0 || b > PACK_QUEUE_MAX)
		b = PACK_QUEUE_MAX;
	return b < 16 ? 16 : b;
}

/* Queues @it (its inode pinned); false when the queue is full. */
static bool enqueue(struct sq_pack *p, struct item *it)
{
	size_t max = queue_max(p->fs);
	bool ok;

	pthread_mutex_lock(&p->qlock);
	ok = !p->stop && p->qlen < max;
	if (ok) {
		it->next = NULL;
		*p->tail = it;
		p->tail = &it->next;
		if (p->qlen++ == 0)
			pthread_cond_signal(&p->qcond);
	}
	pthread_mutex_unlock(&p->qlock);
	return ok;
}

void sq_pack_note(struct sq_fs *fs, struct sq_inode *i)
{
	struct sq_pack *p = fs->pack;
	struct item *it;
	bool fresh;

	if (!p || !p->running)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	fresh = !i->pack_queued;
	if (fresh) {
		i->pack_queued = true;
		i->npin++;
	}
	pthread_mutex_unlock(&fs->itable_lock);
	if (!fresh)
		return;		/* its turn comes: it checks it anew then */
	it = malloc(sizeof(*it));
	if (it) {
		it->ino = i;
		it->tries = 0;
		due_in(&it->due, PACK_DELAY_NS);
		if (enqueue(p, it))
			return;
		free(it);
	}
	/* No room: this file simply stays unpacked. */
	pthread_mutex_lock(&fs->itable_lock);
	i->pack_queued = false;
	pthread_mutex_unlock(&fs->itable_lock);
	sq_inode_unpin(fs, i);
}

/* One file of a batch. */
struct cand {
	struct item *it;
	uint8_t *image;
	struct stat st;		/* of the container when read */
	uint64_t wgen;		/* the inode's then */
	struct sq_pack_ref ref;
	bool placed;		/* its image is in the pack */
	bool retry;
	bool upgrade;		/* packed by version 3: give it a stub */
	bool indexed;		/* a record went to the index */
};

/*
 * Where @fd (an O_PATH or open fd) lies, relative to BACKING, into @out,
 * followed by "/@name" when @name is not NULL.  Returns its length, or 0
 * when it is not below BACKING as this mount sees it (unlinked, or out of
 * this namespace's view).
 */
static size_t rel_path(struct sq_fs *fs, int fd, const char *name,
		       char out[PATH_MAX])
{
	char link[64], path[PATH_MAX];
	size_t blen = strlen(fs->backing), n;
	ssize_t got;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	got = readlink(link, path, sizeof(path) - 1);
	if (got <= 0)
		return 0;
	path[got] = '\0';
	n = (size_t)got;
	if (strncmp(path, fs->backing, blen) ||
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

/* An image record for @ref: the file @name of @fd (or @fd itself). */
static bool index_image(struct sq_fs *fs, int fd, const char *name,
			const struct sq_pack_ref *ref,
			const struct timespec *mtime)
{
	struct sq_pack *p = fs->pack;
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
	x.path_len = (uint32_t)rel_path(fs, fd, name, path);
	if (x.path_len)
		done = index_put(p, &x);
	pthread_mutex_unlock(&p->idxlock);
	return done;
}

/*
 * Appends @ref's record to the pack index: where the file open as @fd
 * lies in BACKING now, and its mtime.  Best effort (see idxfd); synced
 * once per batch.
 */
static bool index_add(struct sq_fs *fs, int fd, const struct sq_pack_ref *ref,
		      const struct timespec *mtime)
{
	return index_image(fs, fd, NULL, ref, mtime);
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

void sq_pack_index_move(struct sq_fs *fs, int from_dir, const char *from,
			int to_dir, const char *to)
{
	char a[PATH_MAX], b[PATH_MAX];
	struct sq_pack_idx x;

	memset(&x, 0, sizeof(x));
	x.move = true;
	x.path = a;
	x.to = b;
	x.path_len = (uint32_t)rel_path(fs, from_dir, from, a);
	x.to_len = (uint32_t)rel_path(fs, to_dir, to, b);
	if (x.path_len && x.to_len && !index_put(fs->pack, &x))
		sq_log(SQ_LOG_WARN, "pack index: cannot record a rename: %s",
		       strerror(errno));
}

void sq_pack_index_link(struct sq_fs *fs, int dir, const char *name,
			const struct sq_pack_ref *ref,
			const struct timespec *mtime)
{
	if (sq_pack_indexing(fs->pack))
		index_image(fs, dir, name, ref, mtime);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static bool busy(struct sq_fs *fs, struct sq_inode *i)
{
	bool r;

	if (i->file)
		return true;
	pthread_mutex_lock(&fs->itable_lock);
	r = i->nopen > 0;
	pthread_mutex_unlock(&fs->itable_lock);
	return r;
}

/* Step 1: reads the container of @c if it is to be packed. */
static void read_one(struct sq_fs *fs, struct cand *c)
{
	struct sq_inode *i = c->it->ino;
	ssize_t n;
	int fd;

	pthread_mutex_lock(&i->lock);
	if (busy(fs, i)) {
		c->retry = true;
		goto out;
	}
	c->wgen = i->wgen;
	fd = sq_inode_open(i, O_RDONLY | O_NOATIME);
	if (fd < 0)
		goto out;
	if (fstat(fd, &c->st) || !S_ISREG(c->st.st_mode) ||
	    c->st.st_nlink == 0)
		goto close;
	if (c->st.st_size == 0 && sq_pack_get_ref(fd, NULL, &c->ref) == 0) {
		/* Packed by version 3: empty, nothing shows it was packed
		 * once the xattr is gone.  It gets a stub and a record. */
		c->upgrade = true;
		goto close;
	}
	/* Without CAP_FSETID (a user's mount, under user.* names) the
	 * truncations clear setuid and setgid: such files stay as they
	 * are. */
	if (fs->pack->xname != ref_names[0] &&
	    (c->st.st_mode & (S_ISUID | S_ISGID)))
		goto close;
	/* Truncating the container would make the kernel drop a version 1
	 * container's own security.capability: such a file stays as it is. */
	if (c->st.st_size <= SQ_PACK_STUB_LEN ||
	    c->st.st_blocks > SQ_PACK_SMALL_BLOCKS ||
	    fgetxattr(fd, "security.capability", NULL, 0) >= 0)
		goto close;
	c->image = malloc(SQ_PACK_IMAGE_MAX);
	if (!c->image)
		goto close;
	if (c->st.st_size <= SQ_PACK_IMAGE_MAX)
		n = pread(fd, c->image, (size_t)c->st.st_size, 0) ==
		    c->st.st_size ? c->st.st_size : -1;
	else	/* rewritten in place: its record is in slot 1 */
		n = sq_ctr_compact_image(fd, c->image, SQ_PACK_IMAGE_MAX);
	if (n <= 0 || sq_ctr_image_size(c->image, (size_t)n, &c->ref.size)) {
		/* Too big, damaged or changing: leave it as it is. */
		free(c->image);
		c->image = NULL;
		goto close;
	}
	c->ref.len = (uint32_t)n;
	c->ref.sum = sq_pack_image_sum(c->image, c->ref.len);
close:
	close(fd);
out:
	pthread_mutex_unlock(&i->lock);
}

static int cmp_len_desc(const void *a, const void *b)
{
	const struct cand *x = *(struct cand *const *)a;
	const struct cand *y = *(struct cand *const *)b;

	return x->ref.len < y->ref.len ? 1 : x->ref.len > y->ref.len ? -1 : 0;
}

/*
 * Gives each image read (cs[k].image) its place in pack @id, which ends
 * at @end: largest first, each into the first page with room (the last,
 * partly used page of the pack included), so that little of a page is
 * left over when no image may cross into the next.  Sets [*@first,
 * *@last) to the range written; false when there is nothing to place.
 */
static bool place(struct cand *cs, size_t n, uint32_t id, uint64_t end,
		  uint64_t *first, uint64_t *last)
{
	struct cand **order = malloc(n * sizeof(*order));
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
			if (!cs[k].image)
				continue;
			cs[k].ref.pack = id;
			cs[k].ref.off = sq_pack_place(end, cs[k].ref.len);
			if (*first == UINT64_MAX)
				*first = cs[k].ref.off;
			end = cs[k].ref.off + cs[k].ref.len;
		}
		*last = end;
		return *first != UINT64_MAX;
	}
	for (size_t k = 0; k < n; k++)
		if (cs[k].image)
			order[m++] = &cs[k];
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

/* Step 2: appends the images read to the pack and makes them durable. */
static int append(struct sq_pack *p, struct cand *cs, size_t n)
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
		if (cs[k].image)
			memcpy(buf + (cs[k].ref.off - first), cs[k].image,
			       cs[k].ref.len);
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
			cs[k].placed = cs[k].image != NULL;
	return r;
out:
	pthread_mutex_unlock(&p->lock);
	free(buf);
	return r;
}

/* Step 3: turns the container of @c into a reference to its image. */
static bool swap_one(struct sq_fs *fs, struct cand *c)
{
	struct sq_inode *i = c->it->ino;
	uint8_t val[SQ_PACK_REF_LEN];
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT } };
	struct stat st;
	bool done = false;
	int fd;

	pthread_mutex_lock(&i->lock);
	if (busy(fs, i)) {
		c->retry = true;
		goto out;
	}
	fd = sq_inode_open(i, O_RDWR | O_NOATIME);
	if (fd < 0)
		goto out;
	if (fstat(fd, &st) || st.st_nlink == 0)
		goto close;
	if (!same_file(&st, &c->st) || i->wgen != c->wgen) {
		c->retry = true;	/* changed since: read it again */
		goto close;
	}
	sq_pack_ref_encode(&c->ref, val);
	if (fsetxattr(fd, fs->pack->xname, val, sizeof(val), 0))
		goto close;
	if (ftruncate(fd, 0)) {
		/* Still the container: the xattr would be ignored, but it
		 * would confuse a reader of BACKING. */
		fremovexattr(fd, fs->pack->xname);
		goto close;
	}
	done = true;
	/* Packed from here on (empty, with the reference: version 3's
	 * way); the stub's hole makes it visible without the xattr too. */
	if (ftruncate(fd, SQ_PACK_STUB_LEN))
		sq_log(SQ_LOG_WARN, "packed file: no stub: %s",
		       strerror(errno));
	ts[1] = c->st.st_mtim;
	if (futimens(fd, ts))
		sq_log(SQ_LOG_WARN, "packed file: cannot restore mtime: %s",
		       strerror(errno));
	c->indexed = index_add(fs, fd, &c->ref, &c->st.st_mtim);
	/* The next stat and unlink then need not read the xattr back. */
	i->size_cached = false;
	if (fstat(fd, &st) == 0) {
		sq_inode_cache_size(i, &st, c->ref.size,
				    (blkcnt_t)((c->ref.len + 511) / 512));
		i->cached_ref = c->ref;
	}
close:
	close(fd);
out:
	pthread_mutex_unlock(&i->lock);
	return done;
}

/* A file packed by version 3 (read_one()) gets its stub and its record. */
static void upgrade_one(struct sq_fs *fs, struct cand *c)
{
	struct sq_inode *i = c->it->ino;
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT } };
	struct sq_pack_ref ref;
	struct stat st;
	int fd;

	pthread_mutex_lock(&i->lock);
	if (busy(fs, i))
		goto out;	/* opened meanwhile: packed anew at close */
	fd = sq_inode_open(i, O_RDWR | O_NOATIME);
	if (fd < 0)
		goto out;
	if (fstat(fd, &st) || st.st_nlink == 0 || !same_file(&st, &c->st) ||
	    sq_pack_get_ref(fd, NULL, &ref) || ref.sum != c->ref.sum ||
	    (fs->pack->xname != ref_names[0] &&
	     (st.st_mode & (S_ISUID | S_ISGID))))
		goto close;
	if (ftruncate(fd, SQ_PACK_STUB_LEN))
		goto close;
	ts[1] = st.st_mtim;
	if (futimens(fd, ts))
		sq_log(SQ_LOG_WARN, "packed file: cannot restore mtime: %s",
		       strerror(errno));
	c->indexed = index_add(fs, fd, &ref, &st.st_mtim);
	i->size_cached = false;
	if (fstat(fd, &st) == 0) {
		sq_inode_cache_size(i, &st, ref.size,
				    (blkcnt_t)((ref.len + 511) / 512));
		i->cached_ref = ref;
	}
close:
	close(fd);
out:
	pthread_mutex_unlock(&i->lock);
}

static void pack_batch(struct sq_fs *fs, struct item **items, size_t n)
{
	struct sq_pack *p = fs->pack;
	struct cand *cs = calloc(n, sizeof(*cs));
	int r;

	for (size_t k = 0; k < n; k++) {
		struct sq_inode *i = items[k]->ino;

		/* From now on a new close queues it again. */
		pthread_mutex_lock(&fs->itable_lock);
		i->pack_queued = false;
		pthread_mutex_unlock(&fs->itable_lock);
		if (cs) {
			cs[k].it = items[k];
			read_one(fs, &cs[k]);
		}
	}
	if (cs) {
		r = append(p, cs, n);
		if (r && r != -ENOSPC && r != -EDQUOT)
			sq_log(SQ_LOG_WARN, "cannot write a pack: %s",
			       strerror(-r));
		bool indexed = false;

		for (size_t k = 0; k < n; k++) {
			if (cs[k].placed && !swap_one(fs, &cs[k]))
				sq_pack_free(p, &cs[k].ref);
			if (cs[k].upgrade)
				upgrade_one(fs, &cs[k]);
			indexed |= cs[k].indexed;
			free(cs[k].image);
		}
		/* One sync for the batch's records: a repair needs them
		 * only after a copy, and a copy comes after an unmount. */
		if (indexed && fdatasync(p->idxfd))
			sq_log(SQ_LOG_WARN, "pack index: %s", strerror(errno));
	}
	for (size_t k = 0; k < n; k++) {
		struct item *it = items[k];
		bool again = cs && cs[k].retry && ++it->tries < PACK_TRIES;

		if (again) {
			pthread_mutex_lock(&fs->itable_lock);
			again = !it->ino->pack_queued;
			if (again)
				it->ino->pack_queued = true;
			pthread_mutex_unlock(&fs->itable_lock);
		}
		if (again) {
			due_in(&it->due, PACK_DELAY_NS);
			if (enqueue(p, it))
				continue;
			pthread_mutex_lock(&fs->itable_lock);
			it->ino->pack_queued = false;
			pthread_mutex_unlock(&fs->itable_lock);
		}
		sq_inode_unpin(fs, it->ino);
		free(it);
	}
	free(cs);
}

static void *packer(void *arg)
{
	struct sq_fs *fs = arg;
	struct sq_pack *p = fs->pack;
	struct item *batch[PACK_BATCH];

	pthread_mutex_lock(&p->qlock);
	for (;;) {
		bool go = p->head && (p->stop || is_due(&p->head->due, 0));
		size_t n = 0;

		if (p->frees) {
			struct pfree *fl = p->frees;

			p->frees = NULL;
			pthread_mutex_unlock(&p->qlock);
			run_frees(p, fl);
			pthread_mutex_lock(&p->qlock);
			continue;
		}
		while (go && n < PACK_BATCH && p->head &&
		       (p->stop || is_due(&p->head->due,
					  PACK_DELAY_NS - PACK_SETTLE_NS))) {
			struct item *it = p->head;

			p->head = it->next;
			if (!p->head)
				p->tail = &p->head;
			p->qlen--;
			batch[n++] = it;
		}
		if (n) {
			pthread_mutex_unlock(&p->qlock);
			pack_batch(fs, batch, n);
			pthread_mutex_lock(&p->qlock);
			continue;
		}
		if (p->stop && !p->head)
			break;	/* and the queue is empty */
		if (p->head) {
			struct timespec due = p->head->due;

			pthread_cond_timedwait(&p->qcond, &p->qlock, &due);
		} else {
			pthread_cond_wait(&p->qcond, &p->qlock);
		}
	}
	pthread_mutex_unlock(&p->qlock);
	return NULL;
}

int sq_pack_start(struct sq_fs *fs, bool enable)
{
	struct sq_pack *p;
	pthread_condattr_t ca;
	int r;

	/* Writable whenever BACKING is: a mount that does not pack still
	 * frees the images of packed files it deletes or unpacks. */
	r = sq_pack_open(fs->root_fd, fs->lock_fd >= 0, &p);
	if (r)
		return r;
	fs->pack = p;
	/* Kept by every mount that writes BACKING, packing or not: a rename
	 * through a mount that does not pack moves packed files too.
	 * Without it packing goes on: only a repair of a copy that lost the
	 * xattrs would miss its records. */
	if (p->write && !fs->ro) {
		p->idxfd = openat(p->dirfd, SQ_PACK_INDEX, O_WRONLY | O_APPEND |
				  O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (p->idxfd < 0)
			sq_log(SQ_LOG_WARN, "pack index: %s: packed files copied "
			       "without xattrs could not be repaired",
			       strerror(errno));
	}
	if (!enable)
		return 0;
	if (!p->write)
		return -EROFS;
	if (!p->append)
		return -EIO;
	/* Packing needs an xattr on the files (trusted.*: root; else
	 * user.*, which BACKING's owner may set) and hole punching. */
	p->xname = NULL;
	for (size_t k = 0; k < 2 && !p->xname; k++) {
		if (fsetxattr(fs->lock_fd, ref_names[k], "", 0, 0) == 0 &&
		    fremovexattr(fs->lock_fd, ref_names[k]) == 0)
			p->xname = ref_names[k];
		else
			r = -errno;
	}
	if (!p->xname)
		goto off;
	if (fallocate(fs->lock_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      1 << 20, SQ_PACK_PAGE)) {
		r = -errno;
		goto off;
	}
	p->fs = fs;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_destroy(&p->qcond);
	pthread_cond_init(&p->qcond, &ca);
	pthread_condattr_destroy(&ca);
	r = pthread_create(&p->thread, NULL, packer, fs);
	if (r) {
		r = -r;
		goto off;
	}
	p->running = true;
	return 0;
off:
	return r;
}

void sq_pack_stop(struct sq_fs *fs)
{
	struct sq_pack *p = fs->pack;

	if (!p || !p->running)
		return;
	/* Packs what is queued (due or not) first: an unmount is when
	 * people look at how much space their files take. */
	pthread_mutex_lock(&p->qlock);
	p->stop = true;
	pthread_cond_signal(&p->qcond);
	pthread_mutex_unlock(&p->qlock);
	pthread_join(p->thread, NULL);
	p->running = false;
}
