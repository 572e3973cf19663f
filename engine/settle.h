/*
 * engine/settle.h - the settle loop: files that have gone quiet are
 * recompressed, block by block, with the settle policy's codecs, on a
 * thread of their own at idle CPU and I/O priority.
 *
 * The foreground writes with cheap codecs (the fast policy by default);
 * a file whose row in the statistics store (track.h) is hot and was last
 * written more than settle_after seconds ago is settled: each block the
 * settle analyzer stores in fewer bytes is written again through the
 * container's two-slot protocol (the old version stays current until the
 * new one is complete), then the container is synced, which frees the old
 * slots, and its mtime put back.
 *
 * A file is settled only while no one has it open: the loop holds the
 * inode's lock for each block it reads or writes, and gives the file up
 * (to try again later) as soon as it finds it open, or opened for writing
 * since it started.  A user's write therefore always wins: the settled
 * version of a block is never written over a newer one.  After a crash
 * the file is still hot in the store and is settled again from the start
 * (blocks already settled are skipped cheaply).
 *
 * A file read as much as its size since it was written is never moved to
 * a codec that decodes more slowly (brotli, zlib) than zstd: zstd:19
 * stands in.  Packed small files stay as they are (see docs/STATS.md).
 */
#ifndef SQ_SETTLE_H
#define SQ_SETTLE_H

#include <stdbool.h>
#include <stdint.h>

struct sq_an;
struct sq_fs;
struct sq_settle;
struct sq_track;

enum sq_settle_mode { SQ_SETTLE_OFF = 0, SQ_SETTLE_BALANCED, SQ_SETTLE_MAX };

#define SQ_SETTLE_AFTER_DEFAULT 60	/* seconds */
#define SQ_SETTLE_CPU_DEFAULT 50	/* percent of one core */
#define SQ_SETTLE_MIN_SAVING_DEFAULT 0.03

struct sq_settle_opts {
	enum sq_settle_mode mode;
	unsigned after;		/* seconds without writes */
	unsigned cpu;		/* 1..100 */
	double min_saving;	/* the settle analyzer's raw fallback: as
				 * the foreground's */
	double rescore_saving;	/* a class whose settling saves less over
				 * the foreground's codecs stops settling */
};

/* "off", "balanced", "max"; -EINVAL otherwise. */
int sq_settle_parse(const char *s, enum sq_settle_mode *out);

/*
 * Starts the loop for @fs with the statistics of @t (it finds its work
 * there; NULL: nothing to do, *@out NULL).  Returns 0 or -errno.
 */
int sq_settle_start(struct sq_fs *fs, struct sq_track *t,
		    const struct sq_settle_opts *o, struct sq_settle **out);
/* Stops the loop (a file half settled stays hot and consistent).  Before
 * sq_track_free(); NULL is fine. */
void sq_settle_free(struct sq_settle *s);

/* What the settle loop has done since mount (the stats file). */
struct sq_settle_info {
	enum sq_settle_mode mode;
	unsigned after;		/* seconds */
	bool busy;		/* a round is settling files now */
	uint64_t files;		/* files recompressed */
	uint64_t bytes_before, bytes_after;	/* their allocated bytes */
	int64_t last_round;	/* unix s of the last round with work, 0 */
};
/* @s NULL (settle=off): all zero. */
void sq_settle_info(struct sq_settle *s, struct sq_settle_info *out);
const char *sq_settle_mode_name(enum sq_settle_mode m);
/* The settle policy's analyzer (its table), NULL when off. */
const struct sq_an *sq_settle_an(const struct sq_settle *s);

/*
 * Settles the file @path (relative to BACKING; its files.id @id) now, on
 * the loop's thread between its files, and waits for it.  0 (settled, or
 * left as it is: @out->why says why), -EBUSY (open: it settles later),
 * -ENOENT (gone, or another file now has the name), -EIO (not a readable
 * container: pinned), -ENOMEM.
 */
struct sq_settle_now {
	uint64_t before, after;	/* allocated bytes */
	uint64_t blocks;	/* blocks recompressed */
	const char *why;	/* static text, "" when settled */
};
int sq_settle_now(struct sq_settle *s, int64_t id, const char *path,
		  struct sq_settle_now *out);

#endif /* SQ_SETTLE_H */
