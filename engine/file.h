/*
 * engine/file.h - the data path of an open regular file: writes coalesce
 * per block in memory (dirty.h), complete blocks go to the compression
 * workers (fs->wq) or are stored inline, reads go through the shared
 * block cache (cache.h), and the logical size and mtime are kept as the
 * container stores them.  One sq_file per inode, shared by every open
 * handle of it (inode->file).
 *
 * Locking: every function below is called with the inode's lock held,
 * except sq_file_read/write/truncate/flush/start_flush/fsync/punch/
 * allocate/lseek, which take it themselves.  Functions that wait for the
 * workers drop the lock meanwhile (the inode stays alive: the caller holds
 * a reference).  Errors are -errno; a damaged block or container is
 * -EIO, with the path and block logged (sq_file_report()).
 */
#ifndef SQ_FILE_H
#define SQ_FILE_H

#include "engine/engine.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

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
struct sq_an_stats;
/* The analyzer's counters of the blocks stored since the file was opened
 * (all zero when none).  Lock held. */
void sq_file_an_stats(struct sq_inode *ino, struct sq_an_stats *out);
/* Blocks stored since the file was opened that were changed in part (a
 * block of data rewritten in place).  Lock held. */
uint64_t sq_file_rewrites(struct sq_inode *ino);
/* Whether the open file was changed (written, truncated, punched). */
bool sq_file_modified(struct sq_inode *ino);
/* Sets the logical mtime (after the caller changed the container's); it
 * is applied again after blocks still pending are stored. */
void sq_file_set_mtime(struct sq_inode *ino, const struct timespec *mtime);
/* Logs a damaged block/container with the file's backing path. */
void sq_file_report(struct sq_inode *ino, int64_t block, const char *what,
		    int err);

/*
 * Stores every block of the open file @ino again with @an (a pin's
 * analyzer: sq_pin_an()), keeping its contents and mtime; @blocks gets
 * how many.  The caller holds an open reference (the file open for
 * writing).  Takes the lock; waits for the workers.  0 or -errno.
 */
struct sq_an;
int sq_file_recompress(struct sq_fs *fs, struct sq_inode *ino,
		       const struct sq_an *an, uint64_t *blocks);

/* The open file's pin changed: its next stores use @an (NULL: the
 * mount's policy).  Lock held. */
void sq_file_set_pin(struct sq_inode *ino, const struct sq_an *an);

#endif /* SQ_FILE_H */
