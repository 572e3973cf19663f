/*
 * engine/packer.c - packs closed small files (packer.h).
 *
 * Most files of a home directory are small, and a container of 900 bytes
 * still takes a whole 4 KiB block of the backing filesystem.  So a small
 * file's container image is moved into a shared pack file (pack_store.h),
 * and the container itself is truncated to a stub with an xattr saying
 * where its image lies.  Reads of a packed file take the image from the
 * pack (into memory); the first write unpacks it again (file.c).
 *
 * Packing runs as a job on the background queue, a little after a file's
 * last close (cp -a, tar and rsync set times, owners and xattrs right
 * after closing):
 *
 *   1. read each small container (inode lock held, nothing open),
 *   2. append the images to the pack and fdatasync it,
 *   3. per file, under its inode lock again and only if the container is
 *      unchanged: set the xattr, truncate the container, restore its mtime.
 *
 * A crash anywhere leaves every file readable: before 3 the images are
 * garbage in the pack; a non-empty container with the xattr (between the
 * setxattr and the truncate) is read as the container, the xattr being
 * stale.
 */
#include "engine/packer.h"

#include "engine/attr.h"
#include "engine/engine.h"
#include "engine/inode.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/pack.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

/* A file waits PACK_DELAY after its last close (cp -a, tar and rsync set
 * times, owners and xattrs right after closing, and temporary files go
 * away); once the oldest waited that long, every file closed at least
 * PACK_SETTLE ago goes too: one fdatasync of the pack for all of them. */
#define PACK_DELAY_NS 1000000000ull
#define PACK_SETTLE_NS 200000000ull
#define PACK_BATCH 1024			/* at most, per fdatasync */
#define PACK_QUEUE_MAX 4096		/* pinned inodes, each holds an fd */
#define PACK_TRIES 4			/* a file still busy is retried */

/* A closed file waiting for its turn; its inode pinned. */
struct pending {
	struct pending *next;
	struct sq_inode *ino;
	uint64_t due_ns;		/* sq_wq_now_ns() clock */
	int tries;
};

struct sq_packer {
	/* Immutable after sq_packer_start(). */
	struct sq_fs *fs;
	struct sq_wq *wq;		/* fs->bg, borrowed */

	pthread_mutex_t lock;		/* a leaf */
	/* Guarded by lock. */
	struct pending *head, **tail;	/* due order (all wait alike) */
	size_t qlen;
	bool pass_queued;		/* pass is on the queue */
	struct sq_wq_job pass;
	/* pass_run()'s (one runs at a time: it is one job). */
	struct pending *batch[PACK_BATCH];
};

/* How many inodes may wait: each keeps its fd, and the front end must
 * still keep the table within the fd limit (which can change while
 * mounted). */
static size_t queue_max(struct sq_fs *fs)
{
	size_t b = atomic_load(&fs->inode_budget) / 8;

	if (b == 0 || b > PACK_QUEUE_MAX)
		b = PACK_QUEUE_MAX;
	return b < 16 ? 16 : b;
}

/* Arms the pass for when the head falls due.  lock held. */
static void arm(struct sq_packer *pk)
{
	uint64_t now = sq_wq_now_ns();

	if (!pk->head || pk->pass_queued)
		return;
	pk->pass_queued = true;
	sq_wq_push_after(pk->wq, &pk->pass,
			 pk->head->due_ns > now ? pk->head->due_ns - now : 0);
}

/* Queues @it (its inode pinned); false when the queue is full. */
static bool enqueue(struct sq_packer *pk, struct pending *it)
{
	size_t max = queue_max(pk->fs);
	bool ok;

	pthread_mutex_lock(&pk->lock);
	ok = !sq_wq_stopping(pk->wq) && pk->qlen < max;
	if (ok) {
		it->next = NULL;
		*pk->tail = it;
		pk->tail = &it->next;
		pk->qlen++;
		arm(pk);
	}
	pthread_mutex_unlock(&pk->lock);
	return ok;
}

/* Gives up on @it: a new close queues its file again. */
static void drop(struct sq_fs *fs, struct pending *it)
{
	sq_inode_put(fs, it->ino, SQ_IREF_PIN, 1);
	free(it);
}

void sq_packer_note(struct sq_packer *pk, struct sq_inode *i)
{
	struct sq_fs *fs;
	struct pending *it;
	bool fresh;

	if (!pk)
		return;
	fs = pk->fs;
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
		it->due_ns = sq_wq_now_ns() + PACK_DELAY_NS;
		if (enqueue(pk, it))
			return;
		free(it);
	}
	/* No room: this file simply stays unpacked. */
	pthread_mutex_lock(&fs->itable_lock);
	i->pack_queued = false;
	pthread_mutex_unlock(&fs->itable_lock);
	sq_inode_put(fs, i, SQ_IREF_PIN, 1);
}

/* One file of a batch. */
struct candidate {
	struct pending *it;
	uint8_t *image;
	struct stat st;		/* of the container when read */
	uint64_t wgen;		/* the inode's then */
	struct sq_pack_ref ref;
	bool placed;		/* its image is in the pack */
	bool retry;
	bool upgrade;		/* packed by version 3: give it a stub */
	bool indexed;		/* a record went to the index */
};

static bool busy(struct sq_fs *fs, struct sq_inode *i)
{
	bool r;

	if (i->file || i->settling)
		return true;
	pthread_mutex_lock(&fs->itable_lock);
	r = i->nopen > 0;
	pthread_mutex_unlock(&fs->itable_lock);
	return r;
}

/* Step 1: reads the container of @c if it is to be packed. */
static void read_one(struct sq_fs *fs, struct candidate *c)
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
	if (!sq_pack_trusted(fs->pack) &&
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
		n = sq_ctr_compact_image(fd, &fs->vol, c->image,
					  SQ_PACK_IMAGE_MAX);
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

/* Step 3: turns the container of @c into a reference to its image. */
static bool swap_one(struct sq_fs *fs, struct candidate *c)
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
	if (!sq_attr_same(&st, &c->st) || i->wgen != c->wgen) {
		c->retry = true;	/* changed since: read it again */
		goto close;
	}
	sq_pack_ref_encode(&c->ref, val);
	if (fsetxattr(fd, sq_pack_xname(fs->pack), val, sizeof(val), 0))
		goto close;
	if (ftruncate(fd, 0)) {
		/* Still the container: the xattr would be ignored, but it
		 * would confuse a reader of BACKING. */
		fremovexattr(fd, sq_pack_xname(fs->pack));
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
	c->indexed = sq_pack_index_image(fs->pack, fd, NULL, &c->ref,
					     &c->st.st_mtim);
	/* The next stat and unlink then need not read the xattr back. */
	i->size_cached = false;
	if (fstat(fd, &st) == 0) {
		sq_attr_cache_size(i, &st, c->ref.size,
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
static void upgrade_one(struct sq_fs *fs, struct candidate *c)
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
	if (fstat(fd, &st) || st.st_nlink == 0 || !sq_attr_same(&st, &c->st) ||
	    sq_pack_get_ref(fd, NULL, &ref) || ref.sum != c->ref.sum ||
	    (!sq_pack_trusted(fs->pack) &&
	     (st.st_mode & (S_ISUID | S_ISGID))))
		goto close;
	if (ftruncate(fd, SQ_PACK_STUB_LEN))
		goto close;
	ts[1] = st.st_mtim;
	if (futimens(fd, ts))
		sq_log(SQ_LOG_WARN, "packed file: cannot restore mtime: %s",
		       strerror(errno));
	c->indexed = sq_pack_index_image(fs->pack, fd, NULL, &ref,
					     &st.st_mtim);
	i->size_cached = false;
	if (fstat(fd, &st) == 0) {
		sq_attr_cache_size(i, &st, ref.size,
				    (blkcnt_t)((ref.len + 511) / 512));
		i->cached_ref = ref;
	}
close:
	close(fd);
out:
	pthread_mutex_unlock(&i->lock);
}

static void pack_batch(struct sq_packer *pk, struct pending **items,
		       size_t n)
{
	struct sq_fs *fs = pk->fs;
	struct sq_pack *p = fs->pack;
	struct candidate *cs = calloc(n, sizeof(*cs));
	struct sq_pack_image *imgs = calloc(n, sizeof(*imgs));
	struct sq_pack_image **iv = calloc(n, sizeof(*iv));
	bool ok = cs && imgs && iv;
	int r;

	for (size_t k = 0; k < n; k++) {
		struct sq_inode *i = items[k]->ino;

		/* From now on a new close queues it again. */
		pthread_mutex_lock(&fs->itable_lock);
		i->pack_queued = false;
		pthread_mutex_unlock(&fs->itable_lock);
		if (ok) {
			cs[k].it = items[k];
			read_one(fs, &cs[k]);
			imgs[k].data = cs[k].image;
			imgs[k].ref = cs[k].ref;
			iv[k] = &imgs[k];
		}
	}
	if (ok) {
		bool indexed = false;

		r = sq_pack_append(p, iv, n);
		if (r && r != -ENOSPC && r != -EDQUOT)
			sq_log(SQ_LOG_WARN, "cannot write a pack: %s",
			       strerror(-r));
		for (size_t k = 0; k < n; k++) {
			if (imgs[k].placed) {
				cs[k].ref = imgs[k].ref;
				if (!swap_one(fs, &cs[k]))
					sq_pack_free(p, &cs[k].ref);
			}
			if (cs[k].upgrade)
				upgrade_one(fs, &cs[k]);
			indexed |= cs[k].indexed;
			free(cs[k].image);
		}
		/* One sync for the batch's records: a repair needs them
		 * only after a copy, and a copy comes after an unmount. */
		if (indexed && (r = sq_pack_index_sync(p)))
			sq_log(SQ_LOG_WARN, "pack index: %s", strerror(-r));
	}
	for (size_t k = 0; k < n; k++) {
		struct pending *it = items[k];
		bool again = ok && cs[k].retry && ++it->tries < PACK_TRIES;

		if (again) {
			pthread_mutex_lock(&fs->itable_lock);
			again = !it->ino->pack_queued;
			if (again)
				it->ino->pack_queued = true;
			pthread_mutex_unlock(&fs->itable_lock);
		}
		if (again) {
			it->due_ns = sq_wq_now_ns() + PACK_DELAY_NS;
			if (enqueue(pk, it))
				continue;
			pthread_mutex_lock(&fs->itable_lock);
			it->ino->pack_queued = false;
			pthread_mutex_unlock(&fs->itable_lock);
		}
		drop(fs, it);
	}
	free(iv);
	free(imgs);
	free(cs);
}

/*
 * The packing pass, a job on the background queue: once the oldest file
 * is due, packs it with every file closed at least PACK_SETTLE ago (at
 * most PACK_BATCH at once), then arms itself for the next.  While the
 * queue stops, packs everything, due or not: an unmount is when people
 * look at how much space their files take.
 */
static void pass_run(struct sq_wq_job *job)
{
	struct sq_packer *pk = sq_container_of(job, struct sq_packer, pass);
	struct pending **batch = pk->batch;

	pthread_mutex_lock(&pk->lock);
	pk->pass_queued = false;
	for (;;) {
		bool stop = sq_wq_stopping(pk->wq);
		uint64_t now = sq_wq_now_ns();
		size_t n = 0;

		if (!pk->head || (!stop && pk->head->due_ns > now))
			break;
		while (n < PACK_BATCH && pk->head &&
		       (stop || pk->head->due_ns <=
					now + PACK_DELAY_NS - PACK_SETTLE_NS)) {
			struct pending *it = pk->head;

			pk->head = it->next;
			if (!pk->head)
				pk->tail = &pk->head;
			pk->qlen--;
			batch[n++] = it;
		}
		pthread_mutex_unlock(&pk->lock);
		pack_batch(pk, batch, n);
		pthread_mutex_lock(&pk->lock);
	}
	arm(pk);
	pthread_mutex_unlock(&pk->lock);
}

int sq_packer_start(struct sq_fs *fs, struct sq_wq *wq,
		    struct sq_packer **out)
{
	struct sq_packer *pk;
	int r;

	*out = NULL;
	r = sq_pack_enable(fs->pack, fs->lock_fd);
	if (r)
		return r;
	pk = calloc(1, sizeof(*pk));
	if (!pk)
		return -ENOMEM;
	pk->fs = fs;
	pk->wq = wq;
	pthread_mutex_init(&pk->lock, NULL);
	pk->tail = &pk->head;
	pk->pass.run = pass_run;
	*out = pk;
	return 0;
}

void sq_packer_free(struct sq_packer *pk)
{
	if (!pk)
		return;
	/* Whatever the stopped queue left (out of memory): unpinned. */
	while (pk->head) {
		struct pending *it = pk->head;

		pk->head = it->next;
		drop(pk->fs, it);
	}
	pthread_mutex_destroy(&pk->lock);
	free(pk);
}
