/*
 * engine/engine.h - the mount-wide state of the engine: everything a
 * mounted squeezefs keeps between the front end's requests and BACKING,
 * with no FUSE in it.  The parts, each with its own header:
 *
 *	inode.h		the inode table: lookup, references, pins
 *	file.h		the data path of a regular file (dirty.h, cache.h)
 *	pack_store.h	the packs that hold small files' containers
 *	packer.h	packs closed small files in the background
 *	track.h		per-file statistics, flushed to stats.db
 *	settle.h	recompresses quiet files in the background
 *	workq.h		the work queue every background job runs on
 *	lock.h		BACKING's lock against two daemons
 *	log.h		the log
 *
 * Lock order (take left before right, never the reverse):
 *
 *	sq_inode.lock  ->  sq_fs.itable_lock
 *	sq_inode.lock  ->  the cache's locks (cache.h)
 *	sq_inode.lock  ->  a work queue's lock (workq.h)
 *	sq_inode.lock  ->  the pack store's locks (pack_store.h)
 *
 * itable_lock, the cache's, the work queues' and the packer's are leaves:
 * nothing blocking happens under them.  Workers compress with no lock
 * held and take sq_inode.lock only to store the result.  sq_inode.lock is
 * held across backing I/O of that one file (pread, pwrite, fsync of its
 * container): it serializes the requests of one file, never those of two
 * files.  The pack index's lock is held across a rename (and nothing else
 * blocking): index records must keep the order of the names they follow.
 */
#ifndef SQ_ENGINE_H
#define SQ_ENGINE_H

#include "engine/inode.h"
#include "meta/container.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_an;
struct sq_cache;
struct sq_pack;
struct sq_packer;
struct sq_pins;
struct sq_settle;
struct sq_track;
struct sq_wq;

#define SQ_RESERVED_NAME ".squeezefs"	/* BACKING/.squeezefs, hidden */

/* Defaults of the mount options. */
#define SQ_DEFAULT_BLOCK_SHIFT 17		/* 128 KiB */
#define SQ_DEFAULT_CACHE_SIZE (64u << 20)
/* Dirty (not yet compressed) bytes one file may hold before it writes back. */
#define SQ_FILE_DIRTY_MAX (4u << 20)
/* Dirty bytes across all files before writers write back everything. */
#define SQ_TOTAL_DIRTY_MAX (16u << 20)

struct sq_fs {
	/* Immutable after mount. */
	char *backing;		/* absolute path, for messages */
	int root_fd;		/* O_PATH fd of BACKING */
	int lock_fd;		/* BACKING/.squeezefs/lock (lock.h), or -1 */
	unsigned block_shift;	/* for files created by this mount */
	struct sq_vol vol;	/* BACKING's volume (meta/container.h) */
	size_t cache_size;
	struct sq_an *an;	/* storage policy (thread-safe) */
	struct sq_an *an_hot;	/* the same, fast policy: rewritten blocks */
	struct sq_an *an_tiny;	/* raw: files of one page; NULL: codec= */
	struct sq_an *an_raw;	/* raw: plain files (meta/container.h) */
	struct sq_cache *cache;
	bool ro;		/* -o ro: BACKING is not written */

	struct sq_inode root;

	pthread_mutex_t itable_lock;
	/* Guarded by itable_lock (inode.c's). */
	struct sq_inode **itable;
	size_t itable_size;	/* buckets, power of two */
	size_t icount;
	uint64_t next_serial;
	uint64_t use_tick;	/* the clock of sq_inode.used */

	atomic_size_t dirty_bytes; /* across all files */
	/* Plain files converted (their backing inode replaced) so far: see
	 * sq_inode_get(). */
	atomic_uint_fast64_t conversions;
	struct sq_wq *wq;	/* compression workers; NULL: store inline */
	struct sq_wq *bg;	/* background jobs (packer, frees), one
				 * thread; NULL: none (read-only, or stopped) */
	atomic_bool backing_full; /* last store met ENOSPC: store inline */

	struct sq_pack *pack;	/* packed files; NULL only before mount */
	struct sq_packer *packer; /* NULL: not packing */
	atomic_size_t inode_budget; /* icount the front end keeps below */

	struct sq_pins *pins;	/* codec pins' analyzers (pin.h) */
	struct sq_track *track;	/* statistics (track.h); NULL: none */
	struct sq_settle *settle; /* the settle loop; NULL: off */
	/* Foreground reads and writes in flight, and when the last one
	 * ended (sq_wq_now_ns()): background jobs yield to them. */
	atomic_uint fg_active;
	atomic_uint_fast64_t fg_last_ns;
};

#endif /* SQ_ENGINE_H */
