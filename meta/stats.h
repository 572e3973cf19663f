/*
 * meta/stats.h - the statistics store: BACKING/.squeezefs/stats.db, an
 * SQLite database of per-file and per-codec counters, the adaptation log
 * and the persisted policy tables (schema: docs/STATS.md, a public
 * interface).  The data path never calls SQLite: it fills a batch in
 * memory, and a flusher applies the batch in one transaction.
 */
#ifndef SQ_STATS_H
#define SQ_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The schema version this code writes (PRAGMA user_version). */
#define SQ_STATS_VERSION 1

/* Default busy timeout: how long a statement waits for another process's
 * lock before it fails with -EBUSY. */
#define SQ_STATS_BUSY_MS_DEFAULT 2000

/* Relative to BACKING. */
#define SQ_STATS_DB ".squeezefs/stats.db"

/* files.state.  Stored as text ("hot", ...): never rename. */
enum sq_stats_state {
	SQ_STATS_HOT = 0,	/* written lately, stored by the fast policy */
	SQ_STATS_SETTLING,	/* a settle job is recompressing it */
	SQ_STATS_SETTLED,	/* recompressed by the settle policy */
	SQ_STATS_PINNED,	/* left alone by the settle loop */
	SQ_STATS_STATE_COUNT
};

/* "hot", "settling", "settled", "pinned"; "?" for a bad value. */
const char *sq_stats_state_name(int state);
/* The reverse; -EINVAL for an unknown name. */
int sq_stats_state_parse(const char *name);

/* policy.which: the two policy tables. */
enum sq_stats_which {
	SQ_STATS_FOREGROUND = 0,	/* "foreground": the data path's */
	SQ_STATS_SETTLE,		/* "settle": cold data's */
	SQ_STATS_WHICH_COUNT
};

/*
 * An open statistics database.  Not thread-safe: the caller serializes
 * every call on one handle (one flusher job owns it).  Other processes
 * (sqlite3 on the command line) may read at any time: WAL mode lets them
 * read while we write.
 */
struct sq_stats;

/* What sq_stats_open() found, for the caller's one log line. */
struct sq_stats_open_report {
	bool created;		/* there was no database: a fresh one */
	bool damaged;		/* the old file was damaged and moved aside */
	char moved_to[64];	/* its new name, relative to BACKING */
	char why[160];		/* what was wrong with it (SQLite's words) */
	int from_version;	/* user_version found, before any migration */
};

/*
 * Opens BACKING/.squeezefs/stats.db under @backing_fd (borrowed: used only
 * during the call; the database is then reached by its path, see
 * docs/STATS.md), creating .squeezefs and the database when missing,
 * in WAL mode with a busy timeout of @busy_ms (0: the default), and
 * migrates it to SQ_STATS_VERSION one version step at a time, each step
 * in its own transaction.
 *
 * A file that is not a database, is truncated or otherwise fails PRAGMA
 * quick_check is renamed stats.db.damaged-<unix seconds>[-<n>] (its -wal
 * with it; its -shm is deleted) and a fresh database is made; @rep says so
 * (@rep may be NULL).  Statistics are advisory, so losing them beats
 * refusing to mount.
 *
 * Returns 0 and *@out (caller frees with sq_stats_close()); -EBUSY when
 * another process holds a lock longer than the busy timeout (the mount
 * runs without statistics; nothing was changed); -EPROTO when the
 * database's user_version is newer than SQ_STATS_VERSION (written by a
 * newer squeezefs: refused and left as it is, never "repaired");
 * -ENOMEM, -ENOSPC, -EACCES, -EROFS, -EIO otherwise.
 */
int sq_stats_open(int backing_fd, unsigned busy_ms, struct sq_stats **out,
		  struct sq_stats_open_report *rep);

/* Finalizes the statements and closes the database.  NULL is fine. */
void sq_stats_close(struct sq_stats *st);

/* ---- the batch: filled by the data path, applied by the flusher ---- */

/*
 * Operations gathered in memory, applied in the order they were added.
 * Every string is copied in.  Not thread-safe: the caller serializes the
 * calls on one batch.  The add functions return 0 or -ENOMEM (the batch
 * is then unchanged).
 */
struct sq_stats_batch;

int sq_stats_batch_new(struct sq_stats_batch **out);
/* NULL is fine. */
void sq_stats_batch_free(struct sq_stats_batch *b);
/* Empties the batch, keeping its memory for the next round. */
void sq_stats_batch_clear(struct sq_stats_batch *b);
/* Moves every operation of @src to the end of @dst, leaving @src empty.
 * Returns 0 or -ENOMEM (both unchanged). */
int sq_stats_batch_append(struct sq_stats_batch *dst,
			  struct sq_stats_batch *src);
/* Operations in the batch. */
size_t sq_stats_batch_count(const struct sq_stats_batch *b);

/* Which of a file delta's "set" fields are set. */
#define SQ_STATS_SET_PATH		0x001u
#define SQ_STATS_SET_CLASS		0x002u
#define SQ_STATS_SET_LOGICAL		0x004u
#define SQ_STATS_SET_STORED		0x008u
#define SQ_STATS_SET_LAST_READ		0x010u
#define SQ_STATS_SET_LAST_WRITE		0x020u
#define SQ_STATS_SET_LAST_SETTLED	0x040u
#define SQ_STATS_SET_STATE		0x080u
/* blocks[] is the file's whole count per codec and level: it replaces
 * the file's file_blocks rows instead of adding to them. */
#define SQ_STATS_SET_BLOCKS		0x100u

/* Blocks per codec and level one delta may change. */
#define SQ_STATS_DELTA_BLOCKS 8

/*
 * A change to one file's row (created when missing, with zero counters,
 * state hot and the unset fields NULL).  The counters are added; the
 * fields flagged in @set replace the stored ones.  Times are unix seconds.
 */
struct sq_stats_file_delta {
	int64_t id;		/* sq_stats_file_id() */
	unsigned set;		/* SQ_STATS_SET_* */
	/* set */
	const char *path;	/* relative to BACKING, no leading '/' */
	const char *cls;	/* content class name ("text") */
	uint64_t logical_bytes;
	uint64_t stored_bytes;
	int64_t last_read, last_write, last_settled;
	int state;		/* enum sq_stats_state */
	/* added */
	uint64_t reads, writes;	/* operations */
	uint64_t bytes_read, bytes_written;
	uint64_t rewrites;	/* blocks rewritten in place */
	uint64_t compress_ns, decompress_ns;
	/* blocks stored per codec and level, added (negative: moved away);
	 * entries with codec < 0 or delta 0 are ignored */
	struct {
		int codec;	/* SQ_CODEC_* */
		int level;
		int64_t delta;
	} blocks[SQ_STATS_DELTA_BLOCKS];
};

/* An empty delta for file @id: nothing set, nothing added, no blocks. */
void sq_stats_file_delta_init(struct sq_stats_file_delta *d, int64_t id);

/* Counters of one class x codec x level, all added. */
struct sq_stats_codec_delta {
	const char *cls;	/* content class name */
	int codec;		/* SQ_CODEC_* */
	int level;
	uint64_t bytes_in, bytes_out;
	uint64_t compress_ns, decompress_ns;
	uint64_t blocks;
	uint64_t fallbacks;	/* blocks stored raw after this codec ran */
};

/* One adaptation decision. */
struct sq_stats_log_entry {
	int64_t time;		/* unix seconds */
	bool has_file;		/* false: file_id is NULL (mount-wide) */
	int64_t file_id;
	const char *action;	/* "settle", "policy", ... (docs/STATS.md) */
	int64_t bytes_before, bytes_after;
	const char *evidence;	/* JSON text, or NULL */
};

/* The files.id of the container whose fstat() gave @st_ino. */
int64_t sq_stats_file_id(uint64_t st_ino);

/* -EINVAL for a bad codec, state or a NULL string that is flagged set. */
int sq_stats_batch_file(struct sq_stats_batch *b,
			const struct sq_stats_file_delta *d);
/* -EINVAL for a bad codec or a NULL class. */
int sq_stats_batch_codec(struct sq_stats_batch *b,
			 const struct sq_stats_codec_delta *d);
/*
 * Codec counters gathered between two batches, per class x codec x level:
 * what sq_stats_batch_codec() then adds to the codecs table.  A plain
 * value, embedded by whoever gathers (and serializes the calls); @cls is
 * a string that outlives the tally (a class name).  A combination past
 * SQ_STATS_TALLY_MAX in one period is not counted.
 */
#define SQ_STATS_TALLY_MAX 48
struct sq_stats_tally {
	struct sq_stats_codec_delta row[SQ_STATS_TALLY_MAX];
	size_t n;
};
void sq_stats_tally_add(struct sq_stats_tally *t, const char *cls, int codec,
			int level, uint64_t bytes_in, uint64_t bytes_out,
			uint64_t compress_ns, bool fallback);
/* Adds every row to @b and empties @t: 0 or the first error. */
int sq_stats_tally_flush(struct sq_stats_tally *t, struct sq_stats_batch *b);

/* The file @id is now called @path (nothing when there is no row). */
int sq_stats_batch_rename(struct sq_stats_batch *b, int64_t id,
			  const char *path);
/* Every file under directory @from (relative to BACKING) is now under
 * @to: a directory was renamed.  -EINVAL for an empty or NULL path. */
int sq_stats_batch_rename_tree(struct sq_stats_batch *b, const char *from,
			       const char *to);
/* The name @path of file @id is gone (another link remains): the row's
 * path is cleared when it was that name. */
int sq_stats_batch_forget_name(struct sq_stats_batch *b, int64_t id,
			       const char *path);
/* The file @id is gone: its row and its file_blocks rows go.  Its log
 * rows stay. */
int sq_stats_batch_unlink(struct sq_stats_batch *b, int64_t id);
/* -EINVAL for a NULL action. */
int sq_stats_batch_log(struct sq_stats_batch *b,
		       const struct sq_stats_log_entry *e);

/*
 * Applies every operation of @b in one transaction (all or nothing) and
 * leaves @b as it was: the caller clears it after a success, and may
 * retry or drop it after a failure.  Waits for another process's write
 * lock up to the busy timeout.  Returns 0, -EBUSY (locked), -ENOSPC,
 * -ENOMEM, -EIO.
 */
int sq_stats_apply(struct sq_stats *st, const struct sq_stats_batch *b);

/* ---- readers, for the settle loop ---- */

/* One row of files. */
struct sq_stats_file {
	int64_t id;
	char *path;		/* malloc'd, NULL when never set */
	char *cls;		/* malloc'd, NULL when never set */
	uint64_t logical_bytes, stored_bytes;
	uint64_t reads, writes, bytes_read, bytes_written, rewrites;
	uint64_t compress_ns, decompress_ns;
	int64_t last_read, last_write, last_settled;	/* 0: never */
	int state;		/* enum sq_stats_state */
};

/* Frees the strings of @f (not @f itself).  Fine on a zeroed struct. */
void sq_stats_file_release(struct sq_stats_file *f);

/*
 * Reads file @id into @f (release with sq_stats_file_release()).
 * Returns 0, -ENOENT, -EBADMSG for a row a hand edit made unreadable (an
 * unknown state), -EBUSY, -EIO.
 */
int sq_stats_file_get(struct sq_stats *st, int64_t id,
		      struct sq_stats_file *f);

/*
 * Callbacks of the iterators: @row is borrowed for the call.  Return 0 to
 * go on, anything else to stop (the iterator then returns that value).
 * A callback must not call other sq_stats functions on the same handle:
 * collect what it needs and act after.
 */
typedef int (*sq_stats_file_fn)(void *arg, const struct sq_stats_file *row);

/*
 * Calls @fn for every file in state hot whose last write is before
 * @before (unix seconds), coldest first; rows never written are skipped.
 * Returns 0, @fn's nonzero value, or -errno.
 */
int sq_stats_files_cold(struct sq_stats *st, int64_t before,
			sq_stats_file_fn fn, void *arg);

/* Calls @fn for each codec and level file @id has blocks in. */
typedef int (*sq_stats_blocks_fn)(void *arg, int codec, int level,
				  int64_t blocks);
int sq_stats_file_blocks(struct sq_stats *st, int64_t id,
			 sq_stats_blocks_fn fn, void *arg);

/* One row of codecs. */
struct sq_stats_codec {
	int codec;		/* SQ_CODEC_* */
	int level;
	uint64_t bytes_in, bytes_out;
	uint64_t compress_ns, decompress_ns;
	uint64_t blocks, fallbacks;
};
typedef int (*sq_stats_codec_fn)(void *arg,
				 const struct sq_stats_codec *row);

/*
 * Calls @fn for every codec row of class @cls.  Rows naming a codec this
 * build does not know (a hand edit, a newer squeezefs) are skipped.
 * Returns 0, @fn's nonzero value, or -errno.
 */
int sq_stats_codecs_get(struct sq_stats *st, const char *cls,
			sq_stats_codec_fn fn, void *arg);

/* One entry of a policy table. */
struct sq_stats_policy {
	const char *cls;	/* content class name */
	int codec;		/* SQ_CODEC_* */
	int level;
};
typedef int (*sq_stats_policy_fn)(void *arg,
				  const struct sq_stats_policy *row);

/*
 * Replaces policy table @which with the @n entries of @rows, in one
 * transaction.  Returns 0, -EINVAL for a bad codec, level or class, or
 * -errno as sq_stats_apply().
 */
int sq_stats_policy_set(struct sq_stats *st, enum sq_stats_which which,
			const struct sq_stats_policy *rows, size_t n);
/*
 * Calls @fn for each entry of policy table @which, by class name.
 * Entries a hand edit made invalid (unknown codec, level out of range)
 * are skipped and counted in *@skipped (may be NULL): the caller keeps
 * its default for that class.  Returns 0, @fn's nonzero value, or -errno.
 */
int sq_stats_policy_get(struct sq_stats *st, enum sq_stats_which which,
			sq_stats_policy_fn fn, void *arg, size_t *skipped);

/* The files table summed per class and state (class "" for files
 * whose class is not known yet). */
struct sq_stats_state_row {
	const char *cls;
	int state;		/* enum sq_stats_state */
	uint64_t files, logical_bytes, stored_bytes;
};
typedef int (*sq_stats_state_fn)(void *arg,
				 const struct sq_stats_state_row *row);
/* Calls @fn per row (a non-zero return stops and is returned): 0 or
 * -errno as the other reads. */
int sq_stats_states(struct sq_stats *st, sq_stats_state_fn fn, void *arg);

#endif /* SQ_STATS_H */
