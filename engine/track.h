/*
 * engine/track.h - per-file statistics of a mount: the data path bumps
 * counters in memory, and a job on the background queue writes them to
 * the statistics store (meta/stats.h) in one transaction every
 * SQ_TRACK_FLUSH_SECS and at unmount.  Nothing here waits for SQLite in a
 * request: only the flush job and the settle loop (settle.h) touch the
 * database, one at a time under the tracker's database lock.
 *
 * A file's row is keyed by the inode number of its container
 * (sq_stats_file_id()), which survives renames and hard links; its path
 * is one of its names relative to BACKING (NULL when that name went and
 * another link remains).
 *
 * When the database cannot be opened (locked by another process, a
 * read-only BACKING), the mount runs without it, says so once in the log
 * and tries again at each flush; counters gathered meanwhile are kept up
 * to SQ_TRACK_MAX_PENDING files.  A database found damaged is moved aside
 * by sq_stats_open(); one deleted or damaged while mounted is noticed at
 * the next flush and made anew.  A fresh database, and one the last mount
 * did not close cleanly (BACKING/.squeezefs/stats.clean missing), is
 * filled from a scan of BACKING on the background queue.
 *
 * Locking: the tracker's lock is a leaf (it may be taken under an
 * inode's lock); the database lock is taken with no other lock held.
 */
#ifndef SQ_TRACK_H
#define SQ_TRACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct sq_fs;
struct sq_inode;
struct sq_stats;
struct sq_stats_batch;
struct sq_track;
struct sq_wq;

#define SQ_TRACK_FLUSH_SECS 5
#define SQ_TRACK_MAX_PENDING 65536

/* Relative to BACKING: present while no mount has the database open, or
 * after a clean unmount. */
#define SQ_TRACK_CLEAN ".squeezefs/stats.clean"

/*
 * Starts tracking for @fs, with flushes on @wq (fs->bg) every @flush_secs
 * (0: SQ_TRACK_FLUSH_SECS).  Never fails
 * for a database problem (logged; the mount runs without); returns
 * -ENOMEM only.  A read-only mount (fs->ro) tracks nothing: *@out NULL.
 */
int sq_track_start(struct sq_fs *fs, struct sq_wq *wq, unsigned flush_secs,
		   struct sq_track **out);
/* Once no request, job or block store can run any more (each store counts
 * in the statistics): a last flush, then the clean mark.  NULL is fine. */
void sq_track_free(struct sq_track *t);

/* A read (@write false) or write of @bytes to @i.  NULL @t is fine. */
void sq_track_io(struct sq_track *t, const struct sq_inode *i, bool write,
		 uint64_t bytes);
/*
 * The last handle of @i closed; @wrote: it changed the file, whose
 * logical size is now @logical and container takes @stored bytes.  Its
 * row goes hot (the settle loop's candidate).
 */
void sq_track_closed(struct sq_track *t, const struct sq_inode *i,
		     bool wrote, uint64_t logical, uint64_t stored);
/*
 * What storing @i's blocks since it was opened cost and found: @cls, the
 * class most of their bytes had (enum sq_an_class; < 0: none), and
 * @compress_ns, the time the codecs took, and @rewrites, the blocks
 * rewritten in place among them.  Before sq_track_closed().
 */
void sq_track_coded(struct sq_track *t, const struct sq_inode *i, int cls,
		    uint64_t compress_ns, uint64_t rewrites);
/* A regular file was made at @dirfd/@name (open as @fd) and not opened
 * through the mount (mknod): its row, empty and hot. */
void sq_track_created(struct sq_track *t, int fd, int dirfd,
		      const char *name);
/* After renameat(): the object now at @dirfd/@name was called @old_path
 * (relative to BACKING, from sq_track_path()). */
void sq_track_renamed(struct sq_track *t, const char *old_path, int dirfd,
		      const char *name);
/* The name @path of the file whose container is inode @ino went; @last:
 * it was the last link. */
void sq_track_unlinked(struct sq_track *t, ino_t ino, const char *path,
		       bool last);

/*
 * The path of @dirfd/@name (@name NULL or "": of @dirfd itself) relative
 * to BACKING, in @buf.  Returns 0, or -ENAMETOOLONG, -ENOENT (not under
 * BACKING, or gone).
 */
int sq_track_path(const struct sq_track *t, int dirfd, const char *name,
		  char *buf, size_t len);

/*
 * For the settle loop: runs @fn with the database (NULL when there is
 * none now) under the database lock, after applying what is pending.
 * @fn may add to @b, which is applied after it returns.  Returns @fn's
 * value.
 */
typedef int (*sq_track_db_fn)(void *arg, struct sq_stats *db,
			      struct sq_stats_batch *b);
int sq_track_with_db(struct sq_track *t, sq_track_db_fn fn, void *arg);

#endif /* SQ_TRACK_H */
