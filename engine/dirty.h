/*
 * engine/dirty.h - the dirty-block table of one open file: the blocks
 * written in memory and not stored yet, by block index.  A plain data
 * structure: no locks of its own (the file's inode lock guards it), no
 * I/O, and it never frees a block (the caller owns them; what the table
 * gives back, it no longer links).
 */
#ifndef SQ_DIRTY_H
#define SQ_DIRTY_H

#include "engine/workq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_fs;
struct sq_inode;

#define SQ_DIRTY_BUCKETS 256	/* power of two */

/* A block modified in memory, not yet stored.  buf holds the whole block;
 * bytes past the logical size are always zero. */
struct sq_dirty_block {
	uint64_t idx;
	uint8_t *buf;
	bool queued;		/* with the workers: buf is read-only */
	bool rewrite;		/* stored data was read back to modify it */
	uint32_t len;		/* bytes to store, fixed when queued */
	/* While queued: the job and what it stores into (file.c's). */
	struct sq_wq_job job;
	struct sq_fs *fs;
	struct sq_inode *ino;
	/* The table's. */
	struct sq_dirty_block *next;
};

/* Zero-initialized is empty. */
struct sq_dirty {
	struct sq_dirty_block *tab[SQ_DIRTY_BUCKETS];
	size_t n;
};

/* The block of index @idx, or NULL. */
struct sq_dirty_block *sq_dirty_find(const struct sq_dirty *t, uint64_t idx);
/* Adds @b, whose index the table does not hold yet. */
void sq_dirty_add(struct sq_dirty *t, struct sq_dirty_block *b);
/* Unlinks @b (held by the table) and returns it. */
struct sq_dirty_block *sq_dirty_remove(struct sq_dirty *t,
				       struct sq_dirty_block *b);
/* How many blocks the table holds. */
size_t sq_dirty_count(const struct sq_dirty *t);
/* The least index greater than @after, or UINT64_MAX when none. */
uint64_t sq_dirty_next(const struct sq_dirty *t, uint64_t after);
/*
 * Stores into @idx (room for sq_dirty_count() entries) the indexes of the
 * blocks that are not queued, in ascending order (the order to store them
 * in: sequential backing I/O).  Returns how many.
 */
size_t sq_dirty_pending(const struct sq_dirty *t, uint64_t *idx);
/* Unlinks every block of index >= @from and hands each to @drop. */
void sq_dirty_cut(struct sq_dirty *t, uint64_t from,
		  void (*drop)(void *arg, struct sq_dirty_block *b),
		  void *arg);

#endif /* SQ_DIRTY_H */
