/*
 * engine/file.c - the data path of an open regular file: coalesces writes per
 * block in memory, compresses a block when it is complete or on flush,
 * reads through the shared block cache, and keeps the logical size and
 * mtime that the container stores.  One sq_file per inode, shared by
 * every open handle of it; all of it is guarded by sq_inode.lock.
 */
#include "engine/file.h"

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/attr.h"
#include "engine/cache.h"
#include "engine/dirty.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/pin.h"
#include "engine/track.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/format.h"
#include "meta/pack.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* A last block this small is stored by the thread at hand, see queue(). */
#define SQ_INLINE_STORE_MAX 4096

/* Largest file whose container fits in one 4 KiB page with its block raw
 * (a record header is about 40 bytes; 64 leaves room). */
#define SQ_TINY_FILE_MAX (4096 - SQ_FMT_HDR_SIZE - SQ_FMT_REC_PREFIX - 64)

/* Blocks past a sequential read whose slot headers it fetches early. */
#define SQ_READ_AHEAD 8

/* Largest logical size: block indexes times slot size must fit in off_t. */
#define SQ_MAX_FILE_SIZE (1ull << 50)

struct sq_file {
	int fd;			/* the container, O_RDWR or O_RDONLY */
	bool writable;
	struct sq_ctr *ctr;
	uint32_t bsize;
	unsigned bshift;
	struct timespec mtime;	/* the logical mtime */
	bool mtime_dirty;	/* mtime newer than the container's */
	bool touched;		/* container written since mtime was restored */
	struct sq_dirty dirty;	/* blocks not stored yet */
	struct sq_an_file *af;	/* the analyzer's view (thread-safe) */
	unsigned inflight;	/* blocks queued to the workers */
	unsigned readers;	/* reading the container without the lock */
	uint64_t ra_next;	/* block after the last read request */
	pthread_cond_t idle;	/* signalled as queued blocks complete and
				 * as readers leave */
	int wb_err;		/* first failure of a queued block, for flush */
	blkcnt_t packed_blocks;	/* > 0: a packed file read from memory */
	bool lazy_write;	/* ... opened for writing: make_writable() */
	bool modified;		/* written, truncated, punched or unpacked */
	uint64_t rewrites;	/* blocks stored that were changed in part */
	/* Stores blocks instead of the mount's policy when set: a
	 * recompression's codec (sq_file_recompress()), else the file's
	 * pin (pin.h), read when it is opened for writing. */
	/* Atomic: workers read them without the lock, a setxattr or a
	 * recompression changes them. */
	const struct sq_an *_Atomic force;
	const struct sq_an *_Atomic pin;
};

/* ---- per-thread codec state ---- */

struct tstate {
	struct sq_codec_ctx *cctx;
	void *scratch;		/* compression output, one max block */
};

static pthread_key_t tkey;
static pthread_once_t tonce = PTHREAD_ONCE_INIT;

static void tstate_free(void *p)
{
	struct tstate *t = p;

	sq_codec_ctx_free(t->cctx);
	free(t->scratch);
	free(t);
}

static void tkey_init(void)
{
	if (pthread_key_create(&tkey, tstate_free))
		abort();
}

static struct tstate *tstate_get(void)
{
	struct tstate *t;

	pthread_once(&tonce, tkey_init);
	t = pthread_getspecific(tkey);
	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (sq_codec_ctx_new(&t->cctx)) {
		tstate_free(t);
		return NULL;
	}
	pthread_setspecific(tkey, t);
	return t;
}

/* This thread's compression scratch buffer, allocated on first use: FUSE
 * threads that only decompress never need one. */
static void *tscratch(struct tstate *t)
{
	if (!t->scratch)
		t->scratch = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
	return t->scratch;
}

static struct sq_codec_ctx *thread_cctx(void)
{
	struct tstate *t = tstate_get();

	return t ? t->cctx : NULL;
}

/* ---- helpers ---- */

void sq_file_report(struct sq_inode *ino, int64_t block, const char *what,
		    int err)
{
	char link[64], path[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", ino->fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		snprintf(path, sizeof(path), "inode %llu",
			 (unsigned long long)ino->src_ino);
	else
		path[n] = '\0';
	if (block >= 0)
		sq_log(SQ_LOG_ERR, "%s: block %lld: %s: %s", path,
		       (long long)block, what, strerror(-err));
	else
		sq_log(SQ_LOG_ERR, "%s: %s: %s", path, what, strerror(-err));
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static uint64_t fsize(const struct sq_file *f)
{
	return sq_ctr_size(f->ctr);
}

static struct sq_dirty_block *dirty_find(struct sq_file *f, uint64_t idx)
{
	return sq_dirty_find(&f->dirty, idx);
}

/* Frees a dirty block the table no longer holds, its data unstored. */
static void dirty_free(struct sq_fs *fs, struct sq_file *f,
		       struct sq_dirty_block *d)
{
	atomic_fetch_sub(&fs->dirty_bytes, f->bsize);
	sq_cache_buf_put(fs->cache, d->buf, f->bsize);
	free(d);
}

/* Drops block @d: cut off by a truncate or punch, or the file closes. */
static void dirty_drop(struct sq_fs *fs, struct sq_file *f,
		       struct sq_dirty_block *d)
{
	sq_dirty_remove(&f->dirty, d);
	dirty_free(fs, f, d);
}

struct dirty_cut {
	struct sq_fs *fs;
	struct sq_file *f;
};

static void dirty_cut_one(void *arg, struct sq_dirty_block *d)
{
	struct dirty_cut *c = arg;

	dirty_free(c->fs, c->f, d);
}

/* Drops every dirty block of index >= @from. */
static void dirty_cut(struct sq_fs *fs, struct sq_file *f, uint64_t from)
{
	struct dirty_cut c = { fs, f };

	sq_dirty_cut(&f->dirty, from, dirty_cut_one, &c);
}

/* Bytes of block @idx inside the logical size (0: past the end). */
static uint32_t valid_len(struct sq_file *f, uint64_t idx)
{
	uint64_t start = idx << f->bshift, size = fsize(f);

	if (start >= size)
		return 0;
	return size - start < f->bsize ? (uint32_t)(size - start) : f->bsize;
}

/*
 * Zeroes the bytes of block @idx's buffer that lie past @size; those from
 * @zeroed on are zero already (a small file's block is mostly past its
 * end, and zeroing it twice showed in profiles).
 */
static void zero_past(struct sq_file *f, uint64_t idx, uint8_t *buf,
		      uint64_t size, size_t zeroed)
{
	uint64_t start = idx << f->bshift;
	size_t from;

	if (size >= start + f->bsize)
		return;
	from = size <= start ? 0 : (size_t)(size - start);
	if (zeroed > f->bsize)
		zeroed = f->bsize;
	if (from < zeroed)
		memset(buf + from, 0, zeroed - from);
}

/*
 * Fills @buf with the current content of block @idx from the cache or the
 * container (zero past the logical size).  Returns 0 or -errno; -EIO for
 * a damaged block, already logged.
 */
static int load(struct sq_fs *fs, struct sq_inode *ino, uint64_t idx,
		uint8_t *buf)
{
	struct sq_file *f = ino->file;
	struct sq_codec_ctx *cctx;
	uint8_t *cached;
	ssize_t r;

	if ((idx << f->bshift) >= fsize(f)) {
		memset(buf, 0, f->bsize);
		return 0;
	}
	cached = sq_cache_take(fs->cache, ino->serial, idx);
	if (cached) {
		memcpy(buf, cached, f->bsize);
		sq_cache_buf_put(fs->cache, cached, f->bsize);
		return 0;
	}
	cctx = thread_cctx();
	if (!cctx)
		return -ENOMEM;
	r = sq_ctr_read_block(f->ctr, cctx, idx, buf);
	if (r < 0) {
		sq_file_report(ino, (int64_t)idx, "cannot read", (int)r);
		return r == -EBADMSG ? -EIO : (int)r;
	}
	zero_past(f, idx, buf, fsize(f), (size_t)r);
	return 0;
}

/*
 * load() for reads that miss the cache: the payload is read, checked and
 * decompressed with the inode lock dropped, so the kernel's readahead
 * requests and other readers of the file run on every core.  Lock held on
 * entry and on return; the file's state may have changed in between.
 * Only the first *@valid bytes of @buf are set: the block is zero past
 * them (see sq_cache_put()).
 */
static int load_unlocked(struct sq_fs *fs, struct sq_inode *ino,
			 uint64_t idx, uint8_t *buf, size_t *valid)
{
	struct sq_file *f = ino->file;
	struct sq_codec_ctx *cctx;
	struct sq_ctr_loc loc;
	uint8_t *zbuf = NULL;
	char why[160] = "";
	uint64_t seq;
	ssize_t n;
	int r;

	*valid = 0;
	if ((idx << f->bshift) >= fsize(f))
		return 0;
	cctx = thread_cctx();
	if (!cctx)
		return -ENOMEM;
	r = sq_ctr_locate(f->ctr, idx, &loc);
	if (r) {
		sq_file_report(ino, (int64_t)idx, "cannot read", r);
		return r == -EBADMSG ? -EIO : r;
	}
	if (loc.data && loc.codec != SQ_CODEC_NONE) {
		zbuf = sq_cache_buf_get(fs->cache, f->bsize);
		if (!zbuf)
			return -ENOMEM;
	}
	seq = sq_ctr_seq(f->ctr);
	/* Keeps f->fd open: an upgrade to read-write waits for us. */
	f->readers++;
	pthread_mutex_unlock(&ino->lock);
	n = sq_ctr_read_loc_head(&loc, cctx, zbuf, buf, why, sizeof(why));
	pthread_mutex_lock(&ino->lock);
	if (--f->readers == 0)
		pthread_cond_broadcast(&f->idle);
	sq_cache_buf_put(fs->cache, zbuf, f->bsize);
	/* A store, punch, resize or sync meanwhile may have reused or freed
	 * the slot we read, good bytes or bad: read again, locked. */
	if (sq_ctr_seq(f->ctr) != seq) {
		*valid = f->bsize;
		return load(fs, ino, idx, buf);
	}
	if (n < 0) {
		char what[200];

		snprintf(what, sizeof(what), "cannot read%s%s",
			 why[0] ? ": " : "", why);
		sq_file_report(ino, (int64_t)idx, what, (int)n);
		return n == -EBADMSG ? -EIO : (int)n;
	}
	/* Past the logical size (a truncate kept the block) is zero. */
	*valid = valid_len(f, idx) < (size_t)n ? valid_len(f, idx) : (size_t)n;
	return 0;
}

/*
 * Returns the dirty buffer of block @idx, creating it (and loading the
 * current content unless @fill_zero) when absent.  With @fill_zero the
 * bytes [@keep_off, @keep_off + @keep_len) are left as they are: the
 * caller writes them at once.
 */
static int dirty_get(struct sq_fs *fs, struct sq_inode *ino, uint64_t idx,
		     bool fill_zero, size_t keep_off, size_t keep_len,
		     struct sq_dirty_block **out)
{
	struct sq_file *f = ino->file;
	struct sq_dirty_block *d = dirty_find(f, idx);
	int r;

	if (d) {
		*out = d;
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->buf = sq_cache_buf_get(fs->cache, f->bsize);
	if (!d->buf) {
		free(d);
		return -ENOMEM;
	}
	if (fill_zero) {
		/* Fully overwritten: whatever was cached is obsolete. */
		sq_cache_buf_put(fs->cache,
				 sq_cache_take(fs->cache, ino->serial, idx),
				 f->bsize);
		memset(d->buf, 0, keep_off);
		memset(d->buf + keep_off + keep_len, 0,
		       f->bsize - keep_off - keep_len);
	} else {
		r = load(fs, ino, idx, d->buf);
		if (r) {
			sq_cache_buf_put(fs->cache, d->buf, f->bsize);
			free(d);
			return r;
		}
	}
	d->idx = idx;
	d->queued = false;
	/* A stored block changed in part: random writes (databases, VM
	 * images) pay a read and a compression per write, so such blocks
	 * are stored with the fast policy; cold data can be recompressed
	 * later. */
	d->rewrite = !fill_zero && (idx << f->bshift) < fsize(f);
	d->len = 0;
	sq_dirty_add(&f->dirty, d);
	atomic_fetch_add(&fs->dirty_bytes, f->bsize);
	*out = d;
	return 0;
}

/*
 * Stores block *@pp as @res describes (lock held), then hands its buffer
 * to the clean cache.  On failure the block stays dirty, so a later flush
 * retries and nothing the user wrote is dropped silently.
 */
static int store(struct sq_fs *fs, struct sq_inode *ino,
		 struct sq_dirty_block *d, const struct sq_an_result *res,
		 uint32_t n)
{
	struct sq_file *f = ino->file;
	int r;

	if (res->zero)
		r = sq_ctr_zero_block(f->ctr, d->idx);
	else
		r = sq_ctr_write_block(f->ctr, d->idx, res->codec, res->level,
				       n, res->payload, (uint32_t)res->len);
	if (r) {
		if (r == -ENOSPC || r == -EDQUOT) {
			/* Said once: a full disk fails every store. */
			if (!atomic_exchange(&fs->backing_full, true))
				sq_file_report(ino, (int64_t)d->idx,
					       "backing filesystem full", r);
		} else
			sq_file_report(ino, (int64_t)d->idx, "cannot store", r);
		return r;
	}
	if (atomic_load(&fs->backing_full))
		atomic_store(&fs->backing_full, false);
	f->touched = true;
	if (d->rewrite)
		f->rewrites++;
	sq_dirty_remove(&f->dirty, d);
	atomic_fetch_sub(&fs->dirty_bytes, f->bsize);
	if (res->zero)
		sq_cache_buf_put(fs->cache, d->buf, f->bsize);
	else
		sq_cache_put(fs->cache, ino->serial, d->idx, d->buf, f->bsize,
			     f->bsize);
	free(d);
	return 0;
}

/*
 * Which analyzer stores block @d, @n bytes of it in use.  A file whose
 * container fits in one page of the backing filesystem with the block raw
 * (block 0 and the file ends in it) takes that page compressed as well:
 * compressing it would cost CPU on every write and read and save no
 * allocated byte, so it is stored raw (unless a codec was forced).
 */
static const struct sq_an *an_for(struct sq_fs *fs, struct sq_file *f,
				  const struct sq_dirty_block *d, uint32_t n)
{
	const struct sq_an *pin = atomic_load(&f->force);

	/* A plain file stays as it is until converted (settle.h). */
	if (sq_ctr_is_plain(f->ctr))
		return fs->an_raw;
	if (pin)
		return pin;
	pin = atomic_load(&f->pin);
	if (pin)
		return pin;
	if (fs->an_tiny && d->idx == 0 && n < f->bsize &&
	    n <= SQ_TINY_FILE_MAX)
		return fs->an_tiny;
	return d->rewrite ? fs->an_hot : fs->an;
}

/* Compresses and stores one dirty block in the calling thread. */
static int writeback(struct sq_fs *fs, struct sq_inode *ino,
		     struct sq_dirty_block *d)
{
	struct sq_file *f = ino->file;
	struct tstate *t = tstate_get();
	struct sq_an_result res;
	uint32_t n = valid_len(f, d->idx);
	int r;

	if (!t || !tscratch(t))
		return -ENOMEM;
	if (!n) {
		/* Cut off by a truncate after it was dirtied. */
		dirty_drop(fs, f, d);
		return 0;
	}
	r = sq_an_store(an_for(fs, f, d, n), f->af, d->idx, t->cctx, d->buf,
			n, t->scratch, f->bsize, &res);
	return r ? r : store(fs, ino, d, &res, n);
}

static void store_job(struct sq_wq_job *job);

/*
 * Hands block @d to the workers (or stores it here when there are
 * none).  Its buffer must not change until the job completes: writers
 * wait in wait_block().
 */
static int queue(struct sq_fs *fs, struct sq_inode *ino,
		 struct sq_dirty_block *d)
{
	struct sq_file *f = ino->file;
	uint32_t n;

	if (d->queued)
		return 0;
	/* With the backing disk full, store here: the error then reaches
	 * the write() or close() at hand, as on a local filesystem, instead
	 * of a later fsync only.  A small last block (a small file) too: it
	 * compresses in less time than handing it to a worker costs (two
	 * thread switches), which dominated creating many small files. */
	n = valid_len(f, d->idx);
	if (!fs->wq || atomic_load(&fs->backing_full) ||
	    (n < f->bsize && n <= SQ_INLINE_STORE_MAX))
		return writeback(fs, ino, d);
	d->len = n;
	if (!d->len) {
		dirty_drop(fs, f, d);
		return 0;
	}
	d->queued = true;
	d->fs = fs;
	d->ino = ino;
	d->job.run = store_job;
	f->inflight++;
	sq_wq_push(fs->wq, &d->job);
	return 0;
}

/* A compression worker's job: compresses and stores one queued block. */
static void store_job(struct sq_wq_job *job)
{
	struct sq_dirty_block *d =
		sq_container_of(job, struct sq_dirty_block, job);
	struct sq_fs *fs = d->fs;
	struct sq_inode *ino = d->ino;
	struct tstate *t = tstate_get();
	struct sq_an_result res;
	struct sq_file *f = ino->file;
	int r = -ENOMEM;

	/* Not under the inode lock: the buffer is frozen while queued, the
	 * file cannot close before its jobs are done, and the scratch
	 * buffer is this thread's. */
	if (t && tscratch(t))
		r = sq_an_store(an_for(fs, f, d, d->len), f->af,
				d->idx, t->cctx, d->buf, d->len,
				t->scratch, (size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT,
				&res);
	pthread_mutex_lock(&ino->lock);
	if (!r)
		r = store(fs, ino, d, &res, d->len);
	if (r) {
		d->queued = false;
		if (!f->wb_err)
			f->wb_err = r;
	}
	f->inflight--;
	pthread_cond_broadcast(&f->idle);
	pthread_mutex_unlock(&ino->lock);
}

/* Waits (lock held, released meanwhile) until block @idx is not queued. */
static void wait_block(struct sq_inode *ino, uint64_t idx)
{
	struct sq_file *f = ino->file;
	struct sq_dirty_block *d;

	while ((d = dirty_find(f, idx)) && d->queued)
		pthread_cond_wait(&f->idle, &ino->lock);
}

/* Waits until every queued block of the file is stored (or failed). */
static void drain(struct sq_inode *ino)
{
	struct sq_file *f = ino->file;

	while (f->inflight)
		pthread_cond_wait(&f->idle, &ino->lock);
}

/*
 * Hands every dirty block to the workers (in block order: sequential
 * backing I/O) without waiting.  Returns the first error of a block stored
 * here, or one a worker met since the last call.
 */
static int queue_all(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;
	uint64_t *idx;
	size_t i, n = 0;
	int r = 0;

	/* Queued blocks are the in-flight ones: nothing else to hand over
	 * (past the soft limits this runs on every write). */
	if (sq_dirty_count(&f->dirty) <= f->inflight)
		goto out;
	idx = malloc(sq_dirty_count(&f->dirty) * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	n = sq_dirty_pending(&f->dirty, idx);
	for (i = 0; i < n; i++) {
		struct sq_dirty_block *d = dirty_find(f, idx[i]);
		int e = d ? queue(fs, ino, d) : 0;

		if (e && !r)
			r = e;	/* keep going: store all that can be */
	}
	free(idx);
out:
	if (!r)
		r = f->wb_err;
	f->wb_err = 0;
	return r;
}

/* Stores every dirty block and waits for them; errors as queue_all(). */
static int writeback_all(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;
	int r;

	r = queue_all(fs, ino);
	drain(ino);
	if (!r)
		r = f->wb_err;
	f->wb_err = 0;
	return r;
}

/* Puts the logical mtime back after squeezefs itself wrote the container. */
static int restore_mtime(struct sq_file *f)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, f->mtime };

	if (!f->touched && !f->mtime_dirty)
		return 0;
	if (futimens(f->fd, ts))
		return -errno;
	f->touched = false;
	f->mtime_dirty = false;
	return 0;
}

/*
 * Makes sure the bytes of the block holding @old_size that lie past it read
 * as zeros once the file grows: a shrink only cuts the size, so the stored
 * block may still hold the old tail.
 */
static int clear_tail(struct sq_fs *fs, struct sq_inode *ino,
		      uint64_t old_size)
{
	struct sq_file *f = ino->file;
	uint64_t idx = old_size >> f->bshift;
	uint32_t keep = (uint32_t)(old_size & (f->bsize - 1));
	struct sq_ctr_block_info info;
	struct sq_dirty_block *d;
	int r;

	if (!keep)
		return 0;
	wait_block(ino, idx);
	d = dirty_find(f, idx);
	if (d) {
		memset(d->buf + keep, 0, f->bsize - keep);
		return 0;
	}
	r = sq_ctr_block_info(f->ctr, idx, &info);
	if (r == -EBADMSG)
		return 0;	/* damaged: reads report it; nothing to clear */
	if (r)
		return r;
	if (!info.present || info.zero || info.raw_len <= keep)
		return 0;
	/* load() zeroes past the (old) size: storing it clears the tail. */
	return dirty_get(fs, ino, idx, false, 0, 0, &d);
}

static int flush_locked(struct sq_fs *fs, struct sq_inode *ino);

/* ---- open / close ---- */

/* The image @ref points at, read from the pack and checked, into *@out
 * (malloc'd).  -EBADMSG: missing or damaged. */
static int load_image(struct sq_fs *fs, const struct sq_pack_ref *ref,
		      uint8_t **out)
{
	uint8_t *image;
	int r;

	if (!fs->pack)
		return -EBADMSG;
	image = malloc(ref->len);
	if (!image)
		return -ENOMEM;
	r = sq_pack_load(fs->pack, ref, image);
	if (r) {
		free(image);
		return r;
	}
	*out = image;
	return 0;
}

/*
 * The container in *@fd is empty: if the file is packed, *@fd becomes its
 * image, read from the pack and checked.  With @unpack the image goes back
 * into the container first (made durable before the pack lets go of it),
 * or with @discard too, is dropped; without, it goes into memory: *@pimage
 * (malloc'd), *@plen bytes.
 * Returns 1 when the image went back into the container, 0 otherwise (also
 * for a file that is not packed), or -errno.
 */
static int unpack(struct sq_fs *fs, struct sq_inode *ino, int *fd,
		  bool unpack, bool discard, const struct stat *st,
		  uint8_t **pimage, uint32_t *plen)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, st->st_mtim };
	struct sq_pack_ref ref;
	uint8_t *image = NULL;
	int r;

	r = sq_pack_get_ref(*fd, NULL, &ref);
	if (r == -ENODATA && st->st_size == 0)
		return 0;	/* an empty file */
	/* One byte that is not a stub's zero: a plain file (FORMAT.md 2.1). */
	if (r == -ENODATA && sq_ctr_kind(*fd, &fs->vol) == SQ_KIND_PLAIN)
		return 0;
	if (r == -ENODATA) {
		/* A stub whose reference is gone: BACKING (or this file)
		 * was copied without its xattrs.  Its data is still in a
		 * pack, and only `fsck --repair` can tell which image. */
		if (!(unpack && discard))
			sq_file_report(ino, -1, "packed file lost its pack "
				       "reference (copied without xattrs?): "
				       "run squeezefs fsck --repair", -EIO);
		if (!unpack || !discard)
			return -EIO;
	}
	if (unpack && discard) {
		/* The content goes anyway (O_TRUNC): the file becomes the
		 * empty container it already is, once the stub and then the
		 * xattr are gone (empty with the xattr is still packed). */
		int e;

		if (ftruncate(*fd, 0))
			return -errno;
		e = sq_pack_drop_ref(*fd);
		if (e)
			return e;
		if (!r)
			sq_pack_free(fs->pack, &ref);
		/* Freed here: not again when an unlinked inode dies. */
		ino->doomed = false;
		ino->size_cached = false;
		return 0;
	}
	if (!r)
		r = load_image(fs, &ref, &image);
	if (r) {
		sq_file_report(ino, -1, "packed image unreadable", r);
		return r == -EBADMSG ? -EIO : r;
	}
	if (!unpack) {
		*pimage = image;
		*plen = ref.len;
		return 0;
	}
	errno = ENOSPC;		/* a short write sets none */
	r = pwrite(*fd, image, ref.len, 0) == (ssize_t)ref.len &&
	    !fdatasync(*fd) ? 0 : -errno;
	free(image);
	if (r) {
		/* Packed as before: the image is still in the pack, and the
		 * backing file's mtime is still the file's. */
		if (ftruncate(*fd, 0) || ftruncate(*fd, SQ_PACK_STUB_LEN) ||
		    futimens(*fd, ts))
			sq_file_report(ino, -1, "cannot undo an unpack", -errno);
		return r;
	}
	/* From here on the container is the file (the xattr of a non-empty
	 * container is ignored), so a failure below costs only the image's
	 * space in the pack. */
	if (futimens(*fd, ts) ||
	    sq_pack_drop_ref(*fd))
		sq_file_report(ino, -1, "unpacking", -errno);
	sq_pack_free(fs->pack, &ref);
	ino->doomed = false;
	ino->size_cached = false;
	return 1;
}

/*
 * With @lazy, a packed file opened for writing (not truncated) is read
 * from memory like a read-only one until its first change: see
 * make_writable().
 */
static int open_locked(struct sq_fs *fs, struct sq_inode *ino, int mode,
		       int rwfd, bool lazy)
{
	bool want_write = mode & SQ_OPEN_WRITE;
	bool trunc = (mode & SQ_OPEN_TRUNC) == SQ_OPEN_TRUNC;
	struct sq_file *f = ino->file;
	struct sq_pack_ref ref;
	struct sq_ctr *ctr;
	struct stat st;
	uint8_t *image = NULL;
	uint32_t plen = 0;
	int fd, r;
	bool rw = true, unpacked = false;

	/* Converted (settle.h): the kernel must look the name up anew. */
	if (atomic_load(&ino->stale)) {
		if (rwfd >= 0)
			close(rwfd);
		return -ESTALE;
	}

	if (want_write)
		ino->wgen++;

	if (f && (f->writable || !want_write ||
		  (lazy && f->packed_blocks && !trunc))) {
		if (rwfd >= 0)
			close(rwfd);
		if (want_write && !f->writable) {
			/* A lazy open for writing of a file already read from
			 * memory, whose image is the file's: only check that
			 * its container can be written, as an open would. */
			fd = sq_inode_open(ino, O_RDWR);
			if (fd < 0)
				return -errno;
			close(fd);
			f->lazy_write = true;
		}
		return 0;
	}
	if (!want_write && rwfd < 0 && fs->pack &&
	    sq_attr_cached_ref(ino, &st, &ref) == 0) {
		/* A packed file the attribute cache knows (a stat or
		 * readdir read its reference) is read without opening its
		 * container: only its image, from the pack.  Any problem
		 * is left to the way below, which reports it. */
		if (load_image(fs, &ref, &image) == 0) {
			plen = ref.len;
			rw = false;
			fd = -1;
			goto open_ctr;
		}
	}
	fd = rwfd >= 0 ? rwfd : sq_inode_open(ino, O_RDWR);
	/* A reader makes do with a container it may not write (EPERM: an
	 * immutable or append-only one). */
	if (fd < 0 && !want_write &&
	    (errno == EACCES || errno == EROFS || errno == EPERM)) {
		rw = false;
		fd = sq_inode_open(ino, O_RDONLY);
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		r = -errno;
		close(fd);
		return r;
	}
	if (st.st_size <= SQ_PACK_STUB_LEN && rwfd < 0) {
		/* A read takes a packed file's image into memory; only a
		 * change needs it back in its container. */
		r = unpack(fs, ino, &fd, want_write && rw && (!lazy || trunc),
			   trunc, &st, &image, &plen);
		if (r < 0) {
			close(fd);
			return r;
		}
		/* Pack it again at the last close, changed or not. */
		unpacked = r == 1;
		if (plen) {
			/* Read from memory: the container is not needed. */
			rw = false;
			close(fd);
			fd = -1;
		}
	}
open_ctr:
	if (f) {
		/* Upgrade a read-only state: nothing is dirty in it. */
		while (f->readers)
			pthread_cond_wait(&f->idle, &ino->lock);
		/* Another open may have upgraded it while we waited, and
		 * written since: its state must stay. */
		if (f->writable) {
			free(image);
			if (fd >= 0)
				close(fd);
			return 0;
		}
	}
	/* The handle takes the image, also when it fails. */
	r = image ? sq_ctr_open_image(image, plen, &ctr)
		  : sq_ctr_open_vol(fd, fs->block_shift, &fs->vol, &ctr);
	if (r) {
		/* An upgrade leaves the state other handles share in place,
		 * so that it is never freed under them; a container unpacked
		 * meanwhile (the same bytes as the image) is packed again at
		 * the last close. */
		sq_file_report(ino, -1, "not a valid squeezefs container", r);
		if (fd >= 0)
			close(fd);
		if (f && unpacked)
			f->modified = true;
		return r == -EBADMSG ? -EIO : r;
	}
	/* Served as it is; but it may be one of ours whose id was damaged,
	 * so it is said (FORMAT.md 2.1, "The limit"). */
	if (sq_ctr_is_lookalike(ctr) && !atomic_exchange(&ino->lookalike_said,
							  true))
		sq_log(SQ_LOG_WARN, "inode %llu: a plain file that looks like "
		       "a squeezefs container of another backing directory "
		       "(or one of this one whose header is damaged): served "
		       "as it is; squeezefs fsck names it",
		       (unsigned long long)ino->src_ino);
	if (f) {
		sq_ctr_close(f->ctr);
		if (f->fd >= 0)
			close(f->fd);
	} else {
		f = calloc(1, sizeof(*f));
		if (!f)
			goto nomem;
		f->mtime = st.st_mtim;
		if (sq_an_file_new(&f->af)) {
			free(f);
			goto nomem;
		}
		pthread_cond_init(&f->idle, NULL);
	}
	f->fd = fd;
	f->ctr = ctr;
	f->writable = rw;
	if (rw && fd >= 0) {
		char spec[SQ_PIN_MAX];

		/* The inode's copy (pin.h) when known: reading the xattrs on
		 * every open for writing showed on copy-in. */
		if (ino->pin_state == 2) {
			memcpy(spec, ino->pin, SQ_PIN_MAX);
			r = 0;
		} else if (ino->pin_state == 1) {
			r = -ENODATA;
		} else {
			r = sq_pin_get(fs, fd, NULL, spec);
			if (!r || r == -ENODATA) {
				ino->pin_state = r ? 1 : 2;
				if (!r)
					memcpy(ino->pin, spec, SQ_PIN_MAX);
			}
		}
		atomic_store(&f->pin, r ? NULL : sq_pin_an(fs->pins, spec));
	}
	f->lazy_write = plen && want_write;
	f->packed_blocks = plen ? (blkcnt_t)((plen + 511) / 512) : 0;
	if (unpacked)
		f->modified = true;
	f->bsize = sq_ctr_block_size(f->ctr);
	f->bshift = sq_ctr_block_shift(f->ctr);
	ino->file = f;
	return 0;
nomem:
	sq_ctr_close(ctr);
	if (fd >= 0)
		close(fd);
	return -ENOMEM;
}

int sq_file_open(struct sq_fs *fs, struct sq_inode *ino, int mode,
		 int rwfd)
{
	return open_locked(fs, ino, mode & ~SQ_OPEN_NOW, rwfd,
			   !(mode & SQ_OPEN_NOW));
}

/* Whether @f may be changed: writable now, or at its first change. */
static bool changeable(const struct sq_file *f)
{
	return f->writable || f->lazy_write;
}

/*
 * Before any change to an open file.  A packed file opened for writing
 * stays packed and is read from memory until its first change, which
 * puts its image back into its container first (a write and an
 * fdatasync): opening with O_RDWR and closing unchanged (SQLite, touch)
 * writes nothing and leaves it packed.  May wait (and drop ino->lock) for
 * readers of the image.  Returns 0 when ino->file is writable.
 */
static int make_writable(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;

	if (!f)
		return -EIO;
	if (!changeable(f))
		return -EBADF;
	if (f->writable)
		return 0;
	return open_locked(fs, ino, SQ_OPEN_WRITE, -1, false);
}

int sq_file_close(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;
	int r = 0, e;

	if (!f)
		return 0;
	if (f->writable) {
		r = flush_locked(fs, ino);
		/* Free the slots of replaced versions now rather than never:
		 * that needs them durable first, hence the sync. */
		if (sq_ctr_has_stale(f->ctr)) {
			e = sq_ctr_sync(f->ctr);
			f->touched = true;
			if (!r)
				r = e;
			e = restore_mtime(f);
			if (!r)
				r = e;
		}
	}
	drain(ino);
	/* None at the last release (the kernel sends it after the file's
	 * reads complete) nor at unmount; kept so that a reader can never
	 * use a closed fd. */
	while (f->readers)
		pthread_cond_wait(&f->idle, &ino->lock);
	dirty_cut(fs, f, 0);
	sq_ctr_close(f->ctr);
	if (f->fd >= 0)		/* none for a packed file read from memory */
		close(f->fd);
	pthread_cond_destroy(&f->idle);
	sq_an_file_free(f->af);
	free(f);
	ino->file = NULL;
	return r;
}

/* ---- requests ---- */

/*
 * At a read's first cache miss (block @idx; the request ends in block
 * @last): the backing's readahead is off for containers, so ask for what
 * the request needs at once, slot headers and then payloads, rather than
 * one synchronous disk read after another; for a sequential reader, the
 * headers of the next SQ_READ_AHEAD blocks too.
 */
static void prefetch(struct sq_file *f, uint64_t idx, uint64_t last,
		     bool sequential)
{
	struct sq_ctr_loc loc;

	sq_ctr_prefetch(f->ctr, idx, last - idx + 1 +
			(sequential ? SQ_READ_AHEAD : 0));
	if (last == idx)
		return;
	/* Locating waits for those headers, all on their way at once. */
	for (uint64_t j = idx + 1; j <= last; j++)
		(void)sq_ctr_locate(f->ctr, j, &loc);
	sq_ctr_prefetch(f->ctr, idx + 1, last - idx);
}

static ssize_t file_read(struct sq_fs *fs, struct sq_inode *ino, void *buf,
			 size_t len, off_t off)
{
	struct sq_file *f;
	uint64_t size, pos = (uint64_t)off, end;
	bool sequential, fetched = false;
	uint8_t *dst = buf;
	ssize_t r = 0;

	pthread_mutex_lock(&ino->lock);
	f = ino->file;
	if (!f) {
		r = -EIO;
		goto out;
	}
	size = fsize(f);
	if (pos >= size)
		goto out;
	end = size - pos < len ? size : pos + len;
	sequential = pos == 0 || (pos >> f->bshift) == f->ra_next ||
		     (pos >> f->bshift) + 1 == f->ra_next;
	f->ra_next = ((end - 1) >> f->bshift) + 1;
	while (pos < end) {
		uint64_t idx = pos >> f->bshift;
		size_t boff = pos & (f->bsize - 1);
		size_t n = f->bsize - boff;
		struct sq_dirty_block *d = dirty_find(f, idx);

		if (n > end - pos)
			n = end - pos;
		if (d) {
			memcpy(dst, d->buf + boff, n);
		} else if (!sq_cache_read(fs->cache, ino->serial, idx, boff,
					  n, dst)) {
			uint8_t *blk = sq_cache_buf_get(fs->cache, f->bsize);
			size_t valid;
			int e;

			if (!fetched) {
				fetched = true;
				prefetch(f, idx, (end - 1) >> f->bshift,
					 sequential);
			}
			if (!blk) {
				r = -ENOMEM;
				goto out;
			}
			e = load_unlocked(fs, ino, idx, blk, &valid);
			if (e) {
				sq_cache_buf_put(fs->cache, blk, f->bsize);
				/* The whole request fails: FUSE takes a short
				 * read for the end of the file.  The kernel
				 * retries page by page, so the good blocks
				 * around a damaged one still read. */
				r = e;
				goto out;
			}
			d = dirty_find(f, idx);
			if (d) {
				/* Written while we read: that is newer. */
				memcpy(dst, d->buf + boff, n);
				sq_cache_buf_put(fs->cache, blk, f->bsize);
			} else {
				size_t have = boff < valid ? valid - boff : 0;

				if (have > n)
					have = n;
				memcpy(dst, blk + boff, have);
				memset(dst + have, 0, n - have);
				sq_cache_put(fs->cache, ino->serial, idx, blk,
					     f->bsize, valid);
			}
		}
		dst += n;
		pos += n;
		r += (ssize_t)n;
	}
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

/*
 * Bounds memory no matter how many files are written.  Past the soft
 * limits the file's dirty blocks go to the workers and the writer goes
 * on (it reads and patches the next blocks while they compress, which
 * random writes need); past twice those it waits for them.
 */
static int limit_dirty(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;
	size_t mine = sq_dirty_count(&f->dirty) * f->bsize;
	size_t all = atomic_load(&fs->dirty_bytes);

	if (mine <= SQ_FILE_DIRTY_MAX && all <= SQ_TOTAL_DIRTY_MAX)
		return 0;
	if (mine > 2 * SQ_FILE_DIRTY_MAX || all > 2 * SQ_TOTAL_DIRTY_MAX)
		return writeback_all(fs, ino);
	return queue_all(fs, ino);
}

static ssize_t file_write(struct sq_fs *fs, struct sq_inode *ino,
			  const void *buf, size_t len, off_t off)
{
	struct sq_file *f;
	const uint8_t *src = buf;
	uint64_t pos = (uint64_t)off, end = pos + len, size;
	ssize_t r = 0;
	int e;

	pthread_mutex_lock(&ino->lock);
	if (off < 0 || end > SQ_MAX_FILE_SIZE || end < pos) {
		r = -EFBIG;
		goto out;
	}
	r = make_writable(fs, ino);
	if (r)
		goto out;
	f = ino->file;
	f->modified = true;
	size = fsize(f);
	if (end > size) {
		e = clear_tail(fs, ino, size);
		if (e) {
			r = e;
			goto out;
		}
	}
	while (pos < end) {
		uint64_t idx = pos >> f->bshift;
		size_t boff = pos & (f->bsize - 1);
		size_t n = f->bsize - boff;
		struct sq_dirty_block *d;
		bool whole;

		if (n > end - pos)
			n = end - pos;
		wait_block(ino, idx);
		/* Nothing to keep when the write covers the block, or all of
		 * it that exists. */
		size = fsize(f);
		whole = (boff == 0 && (n == f->bsize || pos + n >= size)) ||
			(idx << f->bshift) >= size;
		e = dirty_get(fs, ino, idx, whole, boff, n, &d);
		if (e) {
			r = r ? r : e;
			break;
		}
		memcpy(d->buf + boff, src, n);
		src += n;
		pos += n;
		r += (ssize_t)n;
		if (pos > fsize(f)) {
			e = sq_ctr_set_size(f->ctr, pos);
			if (e) {
				r = e;
				break;
			}
		}
		/* A block written up to its end is complete for a streaming
		 * writer: compress it now, while it is hot in the cache. */
		if (boff + n == f->bsize) {
			e = queue(fs, ino, d);
			if (e) {
				r = e;
				break;
			}
		}
	}
	if (r > 0) {
		now(&f->mtime);
		f->mtime_dirty = true;
		e = limit_dirty(fs, ino);
		if (e)
			r = e;
	}
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

/* A foreground request starts: background jobs yield (settle.h). */
static void fg_enter(struct sq_fs *fs)
{
	atomic_fetch_add(&fs->fg_active, 1);
}

static void fg_leave(struct sq_fs *fs)
{
	atomic_store(&fs->fg_last_ns, sq_wq_now_ns());
	atomic_fetch_sub(&fs->fg_active, 1);
}

ssize_t sq_file_read(struct sq_fs *fs, struct sq_inode *ino, void *buf,
		     size_t len, off_t off)
{
	ssize_t r;

	fg_enter(fs);
	r = file_read(fs, ino, buf, len, off);
	fg_leave(fs);
	if (r > 0)
		sq_track_io(fs->track, ino, false, (uint64_t)r);
	return r;
}

ssize_t sq_file_write(struct sq_fs *fs, struct sq_inode *ino,
		      const void *buf, size_t len, off_t off)
{
	ssize_t r;

	fg_enter(fs);
	r = file_write(fs, ino, buf, len, off);
	fg_leave(fs);
	if (r > 0)
		sq_track_io(fs->track, ino, true, (uint64_t)r);
	return r;
}

static int truncate_locked(struct sq_fs *fs, struct sq_inode *ino,
			   uint64_t size)
{
	struct sq_file *f = ino->file;
	uint64_t old, nblocks;
	int r;

	if (size > SQ_MAX_FILE_SIZE)
		return -EFBIG;
	drain(ino);
	old = fsize(f);
	if (size == old)
		goto out;
	if (size < old) {
		/* The size record first: if it fails, the file must be as it
		 * was, pending writes included. */
		r = sq_ctr_set_size(f->ctr, size);
		if (r)
			return r;
		nblocks = (size + f->bsize - 1) >> f->bshift;
		dirty_cut(fs, f, nblocks);
		if (size & (f->bsize - 1)) {
			struct sq_dirty_block *d =
				dirty_find(f, size >> f->bshift);

			if (d)
				zero_past(f, d->idx, d->buf, size, f->bsize);
		}
		/* The cached partial block holds the old tail. */
		sq_cache_drop(fs->cache, ino->serial, size >> f->bshift);
	} else {
		r = clear_tail(fs, ino, old);
		if (!r)
			r = sq_ctr_set_size(f->ctr, size);
		if (r)
			return r;
	}
	f->touched = true;
out:
	now(&f->mtime);
	f->mtime_dirty = true;
	return 0;
}

int sq_file_truncate(struct sq_fs *fs, struct sq_inode *ino, uint64_t size)
{
	int r;

	pthread_mutex_lock(&ino->lock);
	r = make_writable(fs, ino);
	if (!r) {
		ino->file->modified = true;
		r = truncate_locked(fs, ino, size);
	}
	pthread_mutex_unlock(&ino->lock);
	return r;
}

static int flush_locked(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f = ino->file;
	int r, e;

	if (!f->writable)
		return 0;
	r = writeback_all(fs, ino);
	/* Only a write moves the container's mtime: a file that was only
	 * read closes without a system call here. */
	if (sq_ctr_size_pending(f->ctr)) {
		e = sq_ctr_write_size(f->ctr);
		if (!r)
			r = e;
		if (!e)
			f->touched = true;
	}
	e = restore_mtime(f);
	return r ? r : e;
}

int sq_file_start_flush(struct sq_fs *fs, struct sq_inode *ino)
{
	struct sq_file *f;
	int r = 0;

	pthread_mutex_lock(&ino->lock);
	f = ino->file;
	if (f && f->writable)
		r = queue_all(fs, ino);
	pthread_mutex_unlock(&ino->lock);
	return r;
}

int sq_file_flush_locked(struct sq_fs *fs, struct sq_inode *ino)
{
	return flush_locked(fs, ino);
}

int sq_file_flush(struct sq_fs *fs, struct sq_inode *ino)
{
	int r = 0;

	pthread_mutex_lock(&ino->lock);
	if (ino->file)
		r = flush_locked(fs, ino);
	pthread_mutex_unlock(&ino->lock);
	return r;
}

int sq_file_fsync(struct sq_fs *fs, struct sq_inode *ino, bool datasync)
{
	struct sq_file *f;
	int r;

	pthread_mutex_lock(&ino->lock);
	f = ino->file;
	if (!f) {
		r = -EIO;
		goto out;
	}
	if (!f->writable) {
		/* A packed file read from memory has nothing to sync: the
		 * packer synced its image before the file pointed at it. */
		r = f->fd >= 0 && fsync(f->fd) ? -errno : 0;
		goto out;
	}
	r = flush_locked(fs, ino);
	if (r)
		goto out;
	if (sq_ctr_has_stale(f->ctr))
		f->touched = true;	/* freeing slots changes the mtime */
	r = sq_ctr_sync(f->ctr);
	if (r)
		goto out;
	r = restore_mtime(f);
	/* fdatasync() covered data and size; fsync() adds the times. */
	if (!r && !datasync && fsync(f->fd))
		r = -errno;
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

int sq_file_punch(struct sq_fs *fs, struct sq_inode *ino, uint64_t off,
		  uint64_t len)
{
	struct sq_file *f;
	uint64_t end, size, first, last;
	int r = 0;

	pthread_mutex_lock(&ino->lock);
	/* A punch past the end changes nothing: it need not unpack. */
	if (ino->file && changeable(ino->file) && off >= fsize(ino->file))
		goto out;
	r = make_writable(fs, ino);
	if (r)
		goto out;
	f = ino->file;
	f->modified = true;
	drain(ino);
	size = fsize(f);
	end = off + len < off || off + len > size ? size : off + len;
	if (off >= end)
		goto out;
	/* Whole blocks become holes; partial ones are zeroed in memory. */
	first = (off + f->bsize - 1) >> f->bshift;
	last = end == size ? (end + f->bsize - 1) >> f->bshift
			   : end >> f->bshift;
	for (uint64_t pos = off; pos < end;) {
		uint64_t idx = pos >> f->bshift;
		size_t boff = pos & (f->bsize - 1);
		size_t n = f->bsize - boff;
		struct sq_dirty_block *d;

		if (n > end - pos)
			n = end - pos;
		if (idx >= first && idx < last) {
			d = dirty_find(f, idx);
			if (d)
				dirty_drop(fs, f, d);
			sq_cache_buf_put(fs->cache,
					 sq_cache_take(fs->cache, ino->serial,
						       idx), f->bsize);
		} else {
			r = dirty_get(fs, ino, idx, false, 0, 0, &d);
			if (r)
				goto out;
			memset(d->buf + boff, 0, n);
		}
		pos += n;
	}
	if (last > first) {
		r = sq_ctr_punch_blocks(f->ctr, first, last - first);
		if (r)
			goto out;
		f->touched = true;
	}
	now(&f->mtime);
	f->mtime_dirty = true;
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

/* Lowest dirty block index above @after, UINT64_MAX when none. */
static uint64_t next_dirty(struct sq_file *f, uint64_t after);

/*
 * What writing every byte of [@off, @off + @len) could take on BACKING
 * beyond what the file holds now: each block of the range that holds no
 * data yet, stored raw (no compression can be counted on ahead), with a
 * page for its record.  Negative errno on I/O.
 */
static int room_needed(struct sq_file *f, uint64_t off, uint64_t len,
		       uint64_t *need)
{
	uint64_t first = off >> f->bshift;
	uint64_t end = ((off + len - 1) >> f->bshift) + 1;
	uint64_t holes = end - first, idx = first, bytes, pages;
	uint64_t fblocks = (fsize(f) + f->bsize - 1) >> f->bshift;

	while (idx < end) {
		int64_t next;
		uint64_t nd;

		if (dirty_find(f, idx)) {
			holes--;
			idx++;
			continue;
		}
		next = sq_ctr_next_data(f->ctr, idx);
		if (next < 0)
			return (int)next;
		/* It answers the block count, which may lie below @idx,
		 * when no data follows. */
		if ((uint64_t)next >= fblocks)
			next = INT64_MAX;
		nd = next_dirty(f, idx);
		if (nd < (uint64_t)next)
			next = (int64_t)nd;
		if ((uint64_t)next >= end)
			break;
		holes--;
		idx = (uint64_t)next + 1;
	}
	/* In whole blocks, but no more than the range and its two edge
	 * blocks; saturating, for ranges of exabytes. */
	bytes = holes > (UINT64_MAX >> f->bshift) ? UINT64_MAX
						   : holes << f->bshift;
	if (len < UINT64_MAX - 4096 - 2 * (uint64_t)f->bsize &&
	    bytes > ((len + 4095) & ~4095ull) + 2 * (uint64_t)f->bsize)
		bytes = ((len + 4095) & ~4095ull) + 2 * (uint64_t)f->bsize;
	if (__builtin_mul_overflow(holes, 4096, &pages) ||
	    __builtin_add_overflow(bytes, pages, need))
		*need = UINT64_MAX;
	return 0;
}

int sq_file_allocate(struct sq_fs *fs, struct sq_inode *ino, uint64_t off,
		     uint64_t len, bool keep_size)
{
	struct statvfs sv;
	uint64_t need = 0;
	int r = 0;

	pthread_mutex_lock(&ino->lock);
	if (!ino->file)
		r = -EIO;
	else if (!changeable(ino->file))
		r = -EBADF;
	else if (off + len < off || off + len > (uint64_t)INT64_MAX)
		r = -EFBIG;
	if (r)
		goto out;
	/*
	 * Compressed space cannot be reserved ahead: how much a block takes
	 * is known only once it is written.  What a caller of fallocate()
	 * wants to learn now is whether the data will fit, so a range that
	 * could not fit even raw fails at once, as on a local filesystem,
	 * instead of its writes failing later.  (Others may still fill the
	 * disk meanwhile: this checks, it does not reserve.)
	 */
	r = room_needed(ino->file, off, len, &need);
	if (r)
		goto out;
	if (need > 0) {
		if (fstatvfs(ino->fd, &sv)) {
			r = -errno;
			goto out;
		}
		if (need > (uint64_t)sv.f_bavail * sv.f_frsize) {
			r = -ENOSPC;
			goto out;
		}
	}
	if (!keep_size && off + len > fsize(ino->file)) {
		/* What callers rely on is the new size.  make_writable() and
		 * drain() may wait, and a write may grow the file meanwhile:
		 * decide after them, so that this only ever grows it. */
		r = make_writable(fs, ino);
		if (!r) {
			drain(ino);
			if (off + len > fsize(ino->file)) {
				ino->file->modified = true;
				r = truncate_locked(fs, ino, off + len);
			}
		}
	}
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

static bool has_data(struct sq_file *f, uint64_t idx)
{
	struct sq_ctr_block_info info;

	if (dirty_find(f, idx))
		return true;
	if (sq_ctr_block_info(f->ctr, idx, &info))
		return true;	/* damaged counts as data: reads report it */
	return info.present && !info.zero;
}

static uint64_t next_dirty(struct sq_file *f, uint64_t after)
{
	return sq_dirty_next(&f->dirty, after);
}

off_t sq_file_lseek(struct sq_fs *fs, struct sq_inode *ino, off_t off,
		    int whence)
{
	struct sq_file *f;
	uint64_t size, idx, nblocks;
	off_t r;

	(void)fs;
	pthread_mutex_lock(&ino->lock);
	f = ino->file;
	if (!f) {
		r = -EIO;
		goto out;
	}
	size = fsize(f);
	if (off < 0 || (uint64_t)off >= size) {
		r = -ENXIO;
		goto out;
	}
	nblocks = (size + f->bsize - 1) >> f->bshift;
	idx = (uint64_t)off >> f->bshift;
	if (whence == SEEK_DATA) {
		while (idx < nblocks && !has_data(f, idx)) {
			int64_t next = sq_ctr_next_data(f->ctr, idx + 1);
			uint64_t nd = next_dirty(f, idx);

			if (next < 0) {
				r = next;
				goto out;
			}
			idx = nd < (uint64_t)next ? nd : (uint64_t)next;
		}
		if (idx >= nblocks) {
			r = -ENXIO;
			goto out;
		}
		r = (idx << f->bshift) > (uint64_t)off ? (off_t)(idx << f->bshift)
						       : off;
	} else if (ino->shown_bshift > f->bshift) {
		/* Shown a coarser st_blksize than its blocks (a packed file
		 * whose blocks were not known then): a hole is a whole unit
		 * of that size with no data, so that the two agree. */
		unsigned k = ino->shown_bshift - f->bshift;
		uint64_t u = idx >> k, h;

		for (;; u++) {
			uint64_t b = u << k, e = (u + 1) << k;
			bool hole = true;

			if (b >= nblocks)
				break;
			for (uint64_t j = b; j < e && j < nblocks && hole; j++)
				hole = !has_data(f, j);
			if (hole)
				break;
		}
		h = u << ino->shown_bshift;
		r = h >= size ? (off_t)size
		    : h > (uint64_t)off ? (off_t)h : off;
	} else {
		while (idx < nblocks && has_data(f, idx))
			idx++;
		r = idx >= nblocks ? (off_t)size
		    : (idx << f->bshift) > (uint64_t)off ? (off_t)(idx << f->bshift)
							 : off;
	}
	/* Data at a coarser grain only starts earlier: zeros read as
	 * data, never data as a hole. */
	if (whence == SEEK_DATA && ino->shown_bshift > f->bshift) {
		uint64_t d = (uint64_t)r & ~((1ull << ino->shown_bshift) - 1);

		r = d > (uint64_t)off ? (off_t)d : off;
	}
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

void sq_file_stat(struct sq_inode *ino, struct stat *st)
{
	struct sq_file *f = ino->file;

	if (!f)
		return;
	st->st_size = (off_t)fsize(f);
	if (f->packed_blocks)
		st->st_blocks = f->packed_blocks;
	if (f->mtime_dirty)
		st->st_mtim = f->mtime;
}

unsigned sq_file_bshift(struct sq_inode *ino)
{
	return ino->file ? ino->file->bshift : 0;
}

uint64_t sq_file_rewrites(struct sq_inode *ino)
{
	return ino->file ? ino->file->rewrites : 0;
}

void sq_file_an_stats(struct sq_inode *ino, struct sq_an_stats *out)
{
	if (ino->file && ino->file->af)
		sq_an_file_stats_get(ino->file->af, out);
	else
		memset(out, 0, sizeof(*out));
}

bool sq_file_modified(struct sq_inode *ino)
{
	return ino->file && ino->file->modified;
}

void sq_file_set_mtime(struct sq_inode *ino, const struct timespec *mtime)
{
	struct sq_file *f = ino->file;

	if (!f)
		return;
	/* Blocks still to be stored would move the container's mtime:
	 * restore_mtime() puts this one back after them. */
	f->mtime = *mtime;
	f->mtime_dirty = true;
}

int sq_file_recompress(struct sq_fs *fs, struct sq_inode *ino,
		       const struct sq_an *an, uint64_t *blocks)
{
	struct sq_file *f;
	struct timespec mtime;
	struct stat st;
	uint64_t n;
	int r, e;

	*blocks = 0;
	pthread_mutex_lock(&ino->lock);
	r = make_writable(fs, ino);
	if (r)
		goto out;
	f = ino->file;
	/* The file's contents do not change: neither does its mtime. */
	if (f->mtime_dirty) {
		mtime = f->mtime;
	} else if (fstat(f->fd, &st) == 0) {
		mtime = st.st_mtim;
	} else {
		r = -errno;
		goto out;
	}
	atomic_store(&f->force, an);
	n = (fsize(f) + f->bsize - 1) >> f->bshift;
	for (uint64_t idx = 0; idx < n && !r; idx++) {
		struct sq_dirty_block *d;

		/* A file shrunk meanwhile (the lock is dropped below). */
		if ((idx << f->bshift) >= fsize(f))
			break;
		wait_block(ino, idx);
		if (!has_data(f, idx))
			continue;
		r = dirty_get(fs, ino, idx, false, 0, 0, &d);
		if (r)
			break;
		d->rewrite = false;	/* not the user's change */
		r = queue(fs, ino, d);
		if (!r)
			(*blocks)++;
		if (!r && atomic_load(&fs->dirty_bytes) > SQ_TOTAL_DIRTY_MAX)
			r = writeback_all(fs, ino);
	}
	/* Every block queued above is stored (or failed) before the codec
	 * goes back to the policy's. */
	e = writeback_all(fs, ino);
	if (!r)
		r = e;
	atomic_store(&f->force, NULL);
	f->modified = true;
	f->mtime = mtime;
	f->mtime_dirty = true;
	if (!r)
		r = flush_locked(fs, ino);
out:
	pthread_mutex_unlock(&ino->lock);
	return r;
}

void sq_file_set_pin(struct sq_inode *ino, const struct sq_an *an)
{
	if (ino->file)
		atomic_store(&ino->file->pin, an);
}
