/*
 * fs/fs_i.h - private to fs/: the mount-wide state, the inode table and the
 * per-file data state that sits between FUSE requests and a container.
 *
 * Lock order (take left before right, never the reverse):
 *
 *	sq_inode.lock  ->  sq_fs.itable_lock
 *	sq_inode.lock  ->  sq_cache.lock
 *	sq_inode.lock  ->  sq_wq.lock
 *	sq_inode.lock  ->  sq_pack.lock	(fs/pack.c: the pack files)
 *	sq_inode.lock  ->  sq_pack.idxlock	(fs/pack.c: the pack index)
 *
 * itable_lock, the cache lock, the work queue lock and the packer's queue
 * lock are leaves: nothing
 * blocking happens under them.  Workers compress with no lock held and
 * take sq_inode.lock only to store the result.  sq_inode.lock is held across backing I/O of that one file (pread,
 * pwrite, fsync of its container): it serializes the requests of one file,
 * never those of two files.  sq_pack.idxlock is held across a rename (and
 * nothing else blocking): index records must keep the order of the names
 * they follow (op_rename()).
 */
#ifndef SQ_FS_I_H
#define SQ_FS_I_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#include <fuse_lowlevel.h>

#include "meta/pack.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct sq_an;
struct sq_cache;
struct sq_codec_ctx;
struct sq_ctr;

#define SQ_RESERVED_NAME ".squeezefs"	/* BACKING/.squeezefs, hidden */

/* Defaults of the mount options. */
#define SQ_DEFAULT_BLOCK_SHIFT 17		/* 128 KiB */
#define SQ_DEFAULT_CACHE_SIZE (64u << 20)
/* Dirty (not yet compressed) bytes one file may hold before it writes back. */
#define SQ_FILE_DIRTY_MAX (4u << 20)
/* Dirty bytes across all files before writers write back everything. */
#define SQ_TOTAL_DIRTY_MAX (16u << 20)

struct sq_file;
struct sq_wq;

/* One name of an inode, as the kernel knows it (fs/prune.c). */
struct sq_iname {
	struct sq_iname *next;
	uint64_t parent;	/* fuse_ino_t of the directory */
	char name[];
};

/* A block handed to the compression workers (fs/worker.c). */
struct sq_job {
	struct sq_job *next;	/* queue link, guarded by the queue lock */
	struct sq_inode *ino;	/* kept alive: its file drains jobs first */
	struct dblock *blk;	/* immutable while queued */
};

struct sq_inode {
	/* Immutable after creation. */
	int fd;			/* O_PATH fd of the backing object */
	dev_t src_dev;
	ino_t src_ino;
	mode_t type;		/* S_IFMT bits: a file never changes type */
	uint64_t serial;	/* unique for the mount's lifetime: cache key */

	/* Guarded by sq_fs.itable_lock. */
	uint64_t nlookup;	/* kernel references (lookup - forget) */
	unsigned nopen;		/* open handles; the inode lives while > 0 */
	unsigned npin;		/* held by the packer; lives while > 0 */
	bool pack_queued;	/* waiting in the packer's queue */
	struct sq_inode *hnext;	/* hash chain */
	/* The names the kernel last looked it up by (a hard-linked file has
	 * a dentry per name: all must go for the kernel to forget it), most
	 * recent first, and when: prune.c's hints. */
	struct sq_iname *names;
	unsigned nnames;
	uint64_t used;

	/* The kernel asks for security.capability before every write():
	 * once it is known absent, we answer without the backing.  xgen
	 * moves before and after every setxattr; nocaps_gen is xgen + 1 as
	 * it was when the absence was seen (0: not known). */
	atomic_uint_fast64_t xgen, nocaps_gen;

	pthread_mutex_t lock;
	/* Guarded by lock. */
	struct sq_file *file;	/* data state while open, else NULL */
	/* A packed file whose last name went while the kernel still knew
	 * it: its image goes with the inode (it can be opened until then,
	 * through /proc/PID/fd or a handle). */
	bool doomed;
	struct sq_pack_ref doomed_ref;
	uint64_t wgen;		/* moves at every open for writing: the
				 * packer's proof that content it read is
				 * still the file's (ctime ticks coarsely) */
	/* Logical size of a closed file, valid while the container's
	 * size/mtime/ctime still equal the cached ones. */
	bool size_cached;
	uint64_t cached_size;
	off_t cached_bsize;
	blkcnt_t cached_blocks;	/* a packed file's, else -1 */
	struct sq_pack_ref cached_ref; /* a packed file's reference */
	struct timespec cached_mtim, cached_ctim;
	/* log2 of the st_blksize shown for a regular file, fixed at its
	 * first getattr (0 before): its block size where known, else the
	 * mount's.  SEEK_DATA/SEEK_HOLE answer at least this coarsely, so
	 * the two always agree. */
	unsigned shown_bshift;
};

struct sq_fs {
	/* Immutable after mount. */
	char *backing;		/* absolute path, for messages */
	int root_fd;		/* O_PATH fd of BACKING */
	int lock_fd;		/* BACKING/.squeezefs/lock, flock'ed */
	unsigned block_shift;	/* for files created by this mount */
	size_t cache_size;
	struct sq_an *an;	/* storage policy (thread-safe) */
	struct sq_an *an_hot;	/* the same, fast policy: rewritten blocks */
	struct sq_an *an_tiny;	/* raw: files of one page; NULL: codec= */
	struct sq_cache *cache;
	double timeout;		/* entry/attr timeout, seconds */
	bool debug;
	bool writeback;		/* -o writeback_cache asked for */
	bool own_checks;	/* no default_permissions: open() checks
				 * the mode against BACKING itself */
	struct fuse_session *se; /* for notifications; set before mount */
	bool single;		/* -s: one thread answers every request */
	bool ro;		/* -o ro: BACKING is not written */
	int inval_max;		/* O_DIRECT writes that may drop pages
				 * before their reply at once (op_write) */
	atomic_int inval_busy;	/* how many do now */
	bool dont_mask;		/* set by op_init(): modes come unmasked,
				 * with the caller's umask beside them */

	struct sq_inode root;

	pthread_mutex_t itable_lock;
	/* Guarded by itable_lock. */
	struct sq_inode **itable;
	size_t itable_size;	/* buckets, power of two */
	size_t icount;
	uint64_t next_serial;

	atomic_size_t dirty_bytes; /* across all files */
	struct sq_wq *wq;	/* compression workers; NULL: store inline */
	atomic_bool backing_full; /* last store met ENOSPC: store inline */

	struct sq_pack *pack;	/* packed files; NULL only before mount */
	struct sq_prune *prune;	/* NULL: no pruning */
	atomic_size_t inode_budget; /* icount the pruner keeps below */
	uint64_t use_tick;	/* guarded by itable_lock */
};

/* ---- log.c ---- */
enum { SQ_LOG_ERR, SQ_LOG_WARN, SQ_LOG_INFO, SQ_LOG_DEBUG };
void sq_log_init(bool to_syslog, bool debug);
void sq_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- cache.c: bounded LRU of clean decompressed blocks ---- */
/* Holds at most @capacity minus *@reserved (the dirty bytes) bytes. */
int sq_cache_new(size_t capacity, const atomic_size_t *reserved,
		 struct sq_cache **out);
void sq_cache_free(struct sq_cache *c);
/*
 * Copies @len bytes at @off of block (@serial, @idx) into @dst when cached.
 * Returns true on a hit.
 */
bool sq_cache_read(struct sq_cache *c, uint64_t serial, uint64_t idx,
		   size_t off, size_t len, void *dst);
/* Block buffers of @bsize bytes: every buffer that goes into the cache, or
 * comes out of it, is one of these. */
void *sq_cache_buf_get(struct sq_cache *c, size_t bsize);
void sq_cache_buf_put(struct sq_cache *c, void *buf, size_t bsize);
/*
 * Hands @buf (from sq_cache_buf_get(), @bsize bytes) over to the cache
 * as the clean content of block (@serial, @idx), replacing any older entry.
 * Only its first @valid bytes are: the block reads as zeros past them
 * (a small file's block need not be zeroed to its end first).
 */
void sq_cache_put(struct sq_cache *c, uint64_t serial, uint64_t idx,
		  void *buf, size_t bsize, size_t valid);
/*
 * Removes block (@serial, @idx) and returns its buffer, all @bsize bytes
 * of the block in it (caller puts it back with sq_cache_buf_put()), or
 * NULL when not cached.
 */
void *sq_cache_take(struct sq_cache *c, uint64_t serial, uint64_t idx);
/* Drops every block of @serial with index >= @from. */
void sq_cache_drop(struct sq_cache *c, uint64_t serial, uint64_t from);

/* ---- file.c: the data path of one open regular file ---- */

/* Per-thread codec context and scratch buffer (never NULL after init). */
struct sq_codec_ctx *sq_fs_thread_cctx(void);

/* How sq_file_open() opens: SQ_OPEN_TRUNC is a write whose caller then
 * truncates the file to 0 (a packed image need not be restored first);
 * SQ_OPEN_NOW with SQ_OPEN_WRITE, a write whose caller changes the file at
 * once (a packed file is unpacked now rather than at its first change). */
enum { SQ_OPEN_READ = 0, SQ_OPEN_WRITE = 1, SQ_OPEN_TRUNC = 3,
       SQ_OPEN_NOW = 4 };

/*
 * Opens the data state of @ino (whose lock the caller holds), upgrading to
 * a writable container fd when @mode has SQ_OPEN_WRITE (a packed file's
 * only at its first change).  @rwfd: a read-write fd of the container the
 * caller has already (it is consumed), or -1.  Returns 0 or -errno (-EIO
 * for a backing file that is not a valid container).
 */
int sq_file_open(struct sq_fs *fs, struct sq_inode *ino, int mode,
		 int rwfd);
/* Writes back, syncs obsolete slots away, frees.  Lock held. */
int sq_file_close(struct sq_fs *fs, struct sq_inode *ino);

ssize_t sq_file_read(struct sq_fs *fs, struct sq_inode *ino, void *buf,
		     size_t len, off_t off);
ssize_t sq_file_write(struct sq_fs *fs, struct sq_inode *ino,
		      const void *buf, size_t len, off_t off);
int sq_file_truncate(struct sq_fs *fs, struct sq_inode *ino, uint64_t size);
/* Writes every dirty block and the size; restores the logical mtime. */
int sq_file_flush(struct sq_fs *fs, struct sq_inode *ino);
/* The same with the inode lock held (it is dropped while waiting). */
int sq_file_flush_locked(struct sq_fs *fs, struct sq_inode *ino);
/*
 * close(): hands every dirty block to the workers without waiting (the
 * last close stores and records everything).  Returns an error a worker
 * met since the last flush.
 */
int sq_file_start_flush(struct sq_fs *fs, struct sq_inode *ino);
int sq_file_fsync(struct sq_fs *fs, struct sq_inode *ino, bool datasync);
int sq_file_punch(struct sq_fs *fs, struct sq_inode *ino, uint64_t off,
		  uint64_t len);
/*
 * fallocate() modes 0 and KEEP_SIZE (@keep_size): fails with -ENOSPC when
 * the part of the range that holds no data could not fit on BACKING even
 * stored raw; otherwise grows the size to @off + @len (unless @keep_size).
 * Nothing is reserved.
 */
int sq_file_allocate(struct sq_fs *fs, struct sq_inode *ino, uint64_t off,
		     uint64_t len, bool keep_size);
off_t sq_file_lseek(struct sq_fs *fs, struct sq_inode *ino, off_t off,
		    int whence);
/* Overlays the open file's logical size and pending mtime on @st. */
void sq_file_stat(struct sq_inode *ino, struct stat *st);
/* log2 of the open file's block size; 0 when not open.  Lock held. */
unsigned sq_file_bshift(struct sq_inode *ino);
/* Whether the open file was changed (written, truncated, punched). */
bool sq_file_modified(struct sq_inode *ino);
/* Sets the logical mtime (after the caller changed the container's); it
 * is applied again after blocks still pending are stored. */
void sq_file_set_mtime(struct sq_inode *ino, const struct timespec *mtime);
/* Logs a damaged block/container with the file's backing path. */
void sq_file_report(struct sq_inode *ino, int64_t block, const char *what,
		    int err);

/* ---- prune.c: keeps the inode table within the fd limit ---- */
int sq_prune_start(struct sq_fs *fs, struct fuse_session *se);
void sq_prune_stop(struct sq_fs *fs);
/* Inode @i was just looked up as @name in @parent (fuse replies an entry). */
void sq_prune_note(struct sq_fs *fs, struct sq_inode *i,
		   struct sq_inode *parent, const char *name);
/* The name @name of @parent is gone (unlinked, or renamed to @nparent's
 * @nname when that is not NULL): @i, found under it, forgets or moves it. */
void sq_prune_rename(struct sq_fs *fs, struct sq_inode *i,
		     struct sq_inode *parent, const char *name,
		     struct sq_inode *nparent, const char *nname);
/* Frees @i's names (the inode is dying; no lock needed). */
void sq_prune_forget(struct sq_inode *i);
/* Has the pruner's thread ask the kernel to drop the cached pages of
 * [@off, @off + @len) of @ino soon (a request must not wait for that
 * itself beyond a few at once: see op_write()). */
void sq_prune_inval_later(struct sq_fs *fs, fuse_ino_t ino, off_t off,
			  off_t len);

/* ---- pack.c: small files' containers packed together ---- */
struct sq_pack;
/*
 * Opens the packs of BACKING (@backing_fd) for reading, and for adding
 * images with @write (creating BACKING/.squeezefs/packs).  fsck uses it
 * alone; a mount through sq_pack_start().
 */
int sq_pack_open(int backing_fd, bool write, struct sq_pack **out);
void sq_pack_close(struct sq_pack *p);
/* Whether this mount packs small files. */
bool sq_pack_packing(const struct sq_pack *p);
/*
 * Sets fs->pack (always, so packed files read) and, with @enable, starts
 * packing.  Returns 0, or why packing is off (-EROFS, -EPERM, -EOPNOTSUPP).
 */
int sq_pack_start(struct sq_fs *fs, bool enable);
/* Packs what is queued, stops packing.  Reading stays possible. */
void sq_pack_stop(struct sq_fs *fs);
/* Containers allocating at most this many 512-byte units are worth a
 * look: header and block 0's record (in slot 0 or 1) in a page each. */
#define SQ_PACK_SMALL_BLOCKS 16
/* The last handle of @i that changed it was closed: pack it soon. */
void sq_pack_note(struct sq_fs *fs, struct sq_inode *i);
/*
 * The packed reference of the empty container open as @fd (or, @path
 * non-NULL, at @path).  Returns 0, -ENODATA when it is not packed,
 * -EBADMSG for a damaged reference, -errno.
 */
int sq_pack_get_ref(int fd, const char *path, struct sq_pack_ref *ref);
/* Removes the reference from the backing file open as @fd, under either
 * name (docs/FORMAT.md 13.1): 0 or -errno. */
int sq_pack_drop_ref(int fd);
/* Reads and checks an image into @image (ref->len bytes): 0, -EBADMSG
 * (the image is damaged or missing), -errno. */
int sq_pack_load(struct sq_pack *p, const struct sq_pack_ref *ref,
		 void *image);
/*
 * Starts reading the images of @refs (@n; sorted here) into the page cache
 * without waiting: a directory listing announces the files that a tar, cp
 * or rsync reads next, and a pack holds them scattered (largest first), so
 * one request for all beats a disk seek per file.  A stale reference only
 * costs a useless read.
 */
void sq_pack_willneed(struct sq_pack *p, struct sq_pack_ref *refs, size_t n);
/* A memfd holding @image: fsck checks a packed file through it. */
int sq_pack_memfd(const void *image, uint32_t len);
/* The file of @ref is gone or unpacked: punch its image out.  NULL-safe;
 * a reference that does not match the pack's bytes frees nothing. */
void sq_pack_free(struct sq_pack *p, const struct sq_pack_ref *ref);

/* The same from a request: the packer thread punches it soon. */
void sq_pack_free_later(struct sq_pack *p, const struct sq_pack_ref *ref);

/*
 * The pack index (docs/FORMAT.md 13.7) follows names through renames and
 * links, so that `fsck --repair` finds a lost stub's image by its path.
 * Whether this mount keeps it (it packs):
 */
bool sq_pack_indexing(const struct sq_pack *p);
/* Held across a rename of a directory or of a (maybe) packed file and its
 * sq_pack_index_move(): records keep the order of the names they follow. */
void sq_pack_index_lock(struct sq_pack *p);
void sq_pack_index_unlock(struct sq_pack *p);
/* What was @from in the directory open as @from_dir (O_PATH), or below it,
 * is now @to in @to_dir.  Index lock held. */
void sq_pack_index_move(struct sq_fs *fs, int from_dir, const char *from,
			int to_dir, const char *to);
/* @name in @dir is a new link to the packed image @ref (mtime @mtime). */
void sq_pack_index_link(struct sq_fs *fs, int dir, const char *name,
			const struct sq_pack_ref *ref,
			const struct timespec *mtime);

/* ops.c: frees what outlives a dying inode @i (a doomed packed image). */
void sq_inode_dead(struct sq_fs *fs, struct sq_inode *i);
/* Opens @i's backing file anew (i->fd is O_PATH) with @flags | O_CLOEXEC;
 * O_NOATIME is dropped where the kernel refuses it (a file the daemon
 * does not own).  Returns the fd or -1 with errno set. */
int sq_inode_open(const struct sq_inode *i, int flags);
/*
 * A packed file's reference as the attribute cache has it, if the
 * container (its attributes now in *@st) is still the one the cache
 * describes; -ENODATA when the cache cannot tell.  i->lock held.
 */
int sq_inode_cached_ref(struct sq_inode *i, struct stat *st,
			struct sq_pack_ref *ref);
/* Remembers @size (and a packed file's @blocks, else -1) as the logical
 * size of the closed file @i whose container @st describes; sets them in
 * @st.  i->lock held. */
void sq_inode_cache_size(struct sq_inode *i, struct stat *st, uint64_t size,
			 blkcnt_t blocks);
/* ops.c: drops the packer's pin of @i (freeing it when nothing else holds
 * it). */
void sq_inode_unpin(struct sq_fs *fs, struct sq_inode *i);

/* ---- worker.c ---- */
int sq_wq_start(struct sq_fs *fs, unsigned nthreads);
void sq_wq_push(struct sq_fs *fs, struct sq_job *job);
/* Runs every queued job, then joins the workers.  NULL-safe. */
void sq_wq_stop(struct sq_fs *fs);
/* file.c: compresses and stores one queued block. */
void sq_file_run_job(struct sq_fs *fs, struct sq_job *job);

/* ---- fsck.c, export.c: the commands that need no mount ---- */
int sq_fsck_main(int argc, char **argv);
int sq_export_main(int argc, char **argv);
/*
 * main.c: flocks BACKING/.squeezefs/lock (made if missing) as a mount
 * does, waiting while a daemon that is no longer mounted still holds it
 * (storing its last blocks; after a second it says so on stderr, prefixed
 * with @who, unless that is NULL).  @backing: BACKING's canonical path,
 * to see whether a holder is still mounted.  Returns the fd, or -errno:
 * -EWOULDBLOCK when BACKING is mounted, -ETIMEDOUT when the holder does
 * not let go within minutes.
 */
int sq_take_lock(int root_fd, const char *backing, const char *who);
/* main.c: marks (or, @on false, unmarks) BACKING as served by a live
 * mount, on the fd sq_take_lock() returned. */
int sq_lock_serve(int fd, bool on);

#endif /* SQ_FS_I_H */
